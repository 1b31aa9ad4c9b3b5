"""Scattering cross-section of every column (StatSTEM's measure): its Voronoi cell's intensity in units of the
incident beam.

Each pixel belongs to its nearest column (all detected columns, within one nn distance); a column's
integrated intensity is the sum of (image - local background) over its cell. When the metadata say how the
image relates to the incident beam, that sum becomes a cross-section in Å^2 (the area of incident beam the
column scatters onto the detector):

* a digital twin's ``imaging`` (``dose`` e/Å^2, ``gain``, ``offset``): ``sigma = sum (I - b) / gain / dose``;
* a detector scan's ``detector_black_level`` and ``detector_vacuum_level`` (image values of no beam and of
  the whole incident beam on the detector): ``sigma = sum (I - b) / (vacuum - black) * pixel_area``.

Otherwise the cross-section is NaN and :func:`beam_normalisation` says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

#: Column added to ``sites.csv`` by ``analyze --strain`` (Å^2; NaN without a beam normalisation).
CROSS_SECTION_COLUMN = "cross_section_A2"


def beam_normalisation(metadata: Mapping[str, Any], pixel_size: tuple[float, float] | None) -> tuple[float, str]:
    """Factor from a Voronoi sum of background-corrected image values to Å^2, and where it came from.

    Returns
    -------
    factor : float
        NaN when the metadata do not allow it.
    source : str
        'dose' (a twin's imaging), 'detector levels', or a sentence saying what is missing.
    """
    imaging = metadata.get("imaging") if isinstance(metadata, Mapping) else None
    if isinstance(imaging, Mapping) and imaging.get("dose"):
        gain = float(imaging.get("gain", 1.0) or 1.0)
        return 1.0 / (gain * float(imaging["dose"])), "dose"
    black, vacuum = metadata.get("detector_black_level"), metadata.get("detector_vacuum_level")
    if black is not None and vacuum is not None and pixel_size is not None:
        span = float(vacuum) - float(black)
        if span > 0:
            return float(pixel_size[0]) * float(pixel_size[1]) / span, "detector levels"
    missing = "a calibrated pixel size and " if pixel_size is None else ""
    return float("nan"), (f"no cross-sections: the file gives no {missing}incident-beam normalisation "
                          "(dose, or detector_black_level and detector_vacuum_level)")


def voronoi_sums(image: np.ndarray, background: np.ndarray, positions: np.ndarray, nn_px: float) -> np.ndarray:
    """Sum of (image - background) over each column's Voronoi cell, cut at ``nn_px`` from it.

    Examples
    --------
    >>> img = np.zeros((20, 20)); img[5, 5] = 3.0; img[5, 15] = 2.0
    >>> voronoi_sums(img, np.zeros_like(img), np.array([[5.0, 5.0], [5.0, 15.0]]), 4.0).tolist()
    [3.0, 2.0]
    """
    img = np.asarray(image, np.float64)
    pos = np.asarray(positions, float).reshape(-1, 2)
    if len(pos) == 0:
        return np.zeros(0)
    h, w = img.shape
    seeds = np.zeros((h, w), bool)
    owner = np.full((h, w), -1, np.int64)
    r = np.rint(pos).astype(int)
    inside = (r[:, 0] >= 0) & (r[:, 0] < h) & (r[:, 1] >= 0) & (r[:, 1] < w)
    seeds[r[inside, 0], r[inside, 1]] = True
    owner[r[inside, 0], r[inside, 1]] = np.flatnonzero(inside)
    dist, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    label = owner[iy, ix]
    signal = img - np.asarray(background, np.float64)
    keep = (dist <= nn_px) & (label >= 0) & np.isfinite(signal)
    return np.bincount(label[keep], signal[keep], minlength=len(pos))


def column_cross_sections(image: np.ndarray, sites: pd.DataFrame, nn_px: float, metadata: Mapping[str, Any],
                          pixel_size: tuple[float, float] | None) -> tuple[np.ndarray, str]:
    """Cross-section (Å^2) of every site in ``sites`` (empty ones and those placed by the lattice too; NaN
    without a normalisation).

    Returns
    -------
    ndarray of shape (len(sites),), str
        The cross-sections and the normalisation's source (or why there is none).
    """
    from ..columns.intensity import background_map

    factor, source = beam_normalisation(metadata, pixel_size)
    img = np.asarray(image, np.float64)
    img = np.where(np.isfinite(img), img, np.nanmedian(img))
    if not np.isfinite(factor) or len(sites) == 0:
        return np.full(len(sites), np.nan), source
    sums = voronoi_sums(img, background_map(img, nn_px), sites[["y_px", "x_px"]].to_numpy(float), nn_px)
    return sums * factor, source


__all__ = ["CROSS_SECTION_COLUMN", "beam_normalisation", "column_cross_sections", "voronoi_sums"]
