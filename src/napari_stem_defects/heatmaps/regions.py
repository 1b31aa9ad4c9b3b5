"""Regions of a heatmap above a threshold: contours, bounding boxes and their features.

Pure numpy / scikit-image, fast enough to run again at every move of the
threshold slider on cached maps (no network call).

A point defect lights up a disc of about half an atom spacing around its site
(0.8 nn^2, nn the metal-to-chalcogen distance). Specks much smaller than that
are noise of the maps, not defects: by default regions under
:data:`MIN_AREA_NN2` nn^2 are dropped (:func:`min_region_px`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import measure

from .classes import HEATMAP_CLASSES

#: Columns of the region table (``regions.csv``).
REGION_COLUMNS: tuple[str, ...] = (
    "region_id", "class", "y_px", "x_px", "area_px", "area_nm2", "max_probability", "mean_probability",
    "bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px",
)
#: Default smallest region, in squared metal-to-chalcogen distances (nn^2): three quarters of the
#: 0.79 nn^2 disc (radius 0.5 nn) a point defect lights up; chosen on validation twins (random
#: imaging, all materials), where it gave the best mean region F1 of the U-Net's five maps.
MIN_AREA_NN2: float = 0.6


def min_region_px(nn_px: float | None, area_nn2: float = MIN_AREA_NN2) -> int:
    """Smallest region in pixels for a lattice of ``nn_px`` pixels per metal-to-chalcogen distance.

    Parameters
    ----------
    nn_px : float or None
        Metal to chalcogen distance in pixels (None: unknown, keep every region).
    area_nn2 : float
        Smallest area in nn^2 (0 keeps every region).

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> min_region_px(11.0), min_region_px(11.0, 0.0), min_region_px(None)
    (73, 1, 1)
    """
    if area_nn2 < 0 or not np.isfinite(area_nn2):
        raise ValueError(f"the smallest region must be a non-negative area in nn^2, got {area_nn2}")
    if nn_px is None or not np.isfinite(nn_px) or nn_px <= 0:
        return 1
    return max(1, int(np.ceil(area_nn2 * float(nn_px) ** 2)))


@dataclass
class Regions:
    """Connected regions of thresholded maps.

    Attributes
    ----------
    table : DataFrame
        One row per region, :data:`REGION_COLUMNS` (positions in pixels; the
        box is half-open, ``[y0, y1) x [x0, x1)``; ``area_nm2`` is NaN without
        a pixel size).
    contours : list of ndarray
        Outline of each region, (K, 2) vertices (y, x) in pixels, in table order.
    labels : ndarray of int32, shape (C, H, W)
        Per channel, 0 outside regions and the region's ``region_id`` inside.
    threshold : float
        The threshold used.
    min_area_px : int
        Smaller regions were dropped.
    """

    table: pd.DataFrame
    contours: list[np.ndarray]
    labels: np.ndarray
    threshold: float
    min_area_px: int = 1


def find_regions(
    maps: np.ndarray,
    threshold: float = 0.5,
    *,
    pixel_size: float | tuple[float, float] | None = None,
    classes: tuple[str, ...] = HEATMAP_CLASSES,
    min_area_px: int = 1,
) -> Regions:
    """Connected regions where each map reaches ``threshold``.

    Parameters
    ----------
    maps : ndarray, shape (C, H, W)
        Probability maps in [0, 1].
    threshold : float
        Pixels with probability >= threshold belong to a region (0 < threshold <= 1).
    pixel_size : float or (float, float), optional
        Pixel size in Å (y, x), for the areas in nm^2.
    classes : tuple of str
        Name of each channel.
    min_area_px : int
        Smaller regions are dropped (:func:`min_region_px` gives the default for a lattice).

    Returns
    -------
    Regions

    Examples
    --------
    >>> m = np.zeros((1, 20, 20), np.float32); m[0, 5:9, 5:10] = 0.8; m[0, 6, 6] = 0.9
    >>> r = find_regions(m, 0.5, pixel_size=0.5, classes=("vacancy",))
    >>> r.table[["class", "area_px", "area_nm2", "max_probability"]].round(3).values.tolist()
    [['vacancy', 20, 0.05, 0.9]]
    >>> m[0, 15, 15] = 0.7  # a one-pixel speck
    >>> [len(find_regions(m, 0.5, classes=("vacancy",), min_area_px=a).table) for a in (1, 4)]
    [2, 1]
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != len(classes):
        raise ValueError(f"maps must have shape ({len(classes)}, H, W), got {maps.shape}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    min_area_px = max(1, int(min_area_px))
    if pixel_size is None:
        px_area_nm2 = float("nan")
    else:
        py, px = (pixel_size, pixel_size) if np.isscalar(pixel_size) else pixel_size
        px_area_nm2 = float(py) * float(px) / 100.0
    rows, contours = [], []
    labels = np.zeros(maps.shape, dtype=np.int32)
    next_id = 1
    for c, name in enumerate(classes):
        mask = maps[c] >= threshold
        if not mask.any():
            continue
        lab, n = ndimage.label(mask)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        area = ndimage.sum_labels(mask, lab, index).astype(int)
        peak = ndimage.maximum(maps[c], lab, index)
        mean = ndimage.mean(maps[c], lab, index)
        com = ndimage.center_of_mass(maps[c], lab, index)
        boxes = ndimage.find_objects(lab)
        for k in range(n):
            if area[k] < min_area_px:
                continue
            sl = boxes[k]
            labels[c][sl][lab[sl] == k + 1] = next_id
            rows.append((next_id, name, com[k][0], com[k][1], int(area[k]), area[k] * px_area_nm2,
                         float(peak[k]), float(mean[k]), sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
            contours.append(_outline(lab[sl] == k + 1, (sl[0].start, sl[1].start)))
            next_id += 1
    table = pd.DataFrame(rows, columns=list(REGION_COLUMNS))
    table = table.astype({"region_id": int, "y_px": float, "x_px": float, "area_px": int,
                          "area_nm2": float, "max_probability": float, "mean_probability": float,
                          "bbox_y0_px": int, "bbox_x0_px": int, "bbox_y1_px": int, "bbox_x1_px": int})
    return Regions(table, contours, labels, float(threshold), min_area_px)


def _outline(mask: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """Longest iso-contour (level 0.5) of a region's mask, in image pixels (y, x)."""
    padded = np.pad(mask.astype(np.float32), 1)
    found = measure.find_contours(padded, 0.5)
    if not found:  # cannot happen for a non-empty mask; keep a box as a fallback
        h, w = mask.shape
        return np.array([[0, 0], [0, w], [h, w], [h, 0]], float) + origin
    best = max(found, key=len)
    return best - 1.0 + np.asarray(origin, dtype=float)


def region_boxes(table: pd.DataFrame) -> list[np.ndarray]:
    """Rectangle vertices (4, 2) in pixels of each region's bounding box (pixel edges)."""
    out = []
    for y0, x0, y1, x1 in table[["bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px"]].to_numpy(float):
        out.append(np.array([[y0 - 0.5, x0 - 0.5], [y0 - 0.5, x1 - 0.5], [y1 - 0.5, x1 - 0.5], [y1 - 0.5, x0 - 0.5]]))
    return out
