"""Classical detection map: smoothing matched to the column spacing, minus the local background."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def local_background(smoothed: np.ndarray, nn_px: float) -> np.ndarray:
    """Slowly varying background under the columns of a smoothed image.

    The minimum over a window a little wider than the column spacing always
    falls on an empty (hollow) position of the honeycomb; smoothing those
    minima gives the background carbon, contamination or detector offset add
    under every column.
    """
    size = max(3, int(round(1.6 * nn_px)) | 1)
    floor = ndimage.minimum_filter(smoothed, size=size, mode="reflect")
    # The floor varies on the scale of the column spacing: smooth it on a coarse grid.
    step = max(1, int(nn_px // 4))
    coarse = ndimage.gaussian_filter(floor[::step, ::step], sigma=0.8 * nn_px / step, mode="reflect")
    zoom = (floor.shape[0] / coarse.shape[0], floor.shape[1] / coarse.shape[1])
    out = ndimage.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)
    return out[: floor.shape[0], : floor.shape[1]]


def classical_detection_map(image: np.ndarray, nn_px: float) -> tuple[np.ndarray, np.ndarray]:
    """A map with a peak on every column, scaled so the brightest columns are near 1.

    Parameters
    ----------
    image : ndarray of float, shape (H, W)
    nn_px : float
        Nearest-neighbour (metal to chalcogen) distance in pixels, from the lattice.

    Returns
    -------
    detection_map : ndarray of float32, shape (H, W)
        Smoothed image minus its local background, divided by a robust
        maximum (the 99.5th percentile).
    background : ndarray of float32, shape (H, W)
        The local background in image units (for intensity integration).

    Examples
    --------
    >>> from napari_stem_defects.simulate import simulate_twin
    >>> twin = simulate_twin("MoS2", shape=(128, 128), pixel_size=0.12, seed=0)
    >>> dmap, _ = classical_detection_map(twin.image, nn_px=1.84 / 0.12)
    >>> dmap.shape, bool(0.5 < dmap.max() < 2)
    ((128, 128), True)
    """
    img = np.asarray(image, dtype=np.float32)
    smoothed = ndimage.gaussian_filter(img, sigma=max(0.5, 0.12 * nn_px), mode="reflect")
    background = local_background(smoothed, nn_px)
    signal = smoothed - background
    scale = float(np.percentile(signal, 99.5))
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.max(signal)) or 1.0
    return (signal / scale).astype(np.float32), background.astype(np.float32)
