"""Peaks that hold no film: noise in a hole, darker than the crystal's darkest points.

A hole in the film is vacuum plus shot noise, and the column detector finds
peaks in that noise. One that happens to sit a bond's length from the film's
edge can join a grain (:func:`~.grains.segment_grains`), and a grain's peak
is film: its surroundings then count as crystal, the hole stops short of it
and the crystal's darkest level, by which holes are told from amorphous
matter (:func:`~.territories.void_regions`), falls. A film column, even one
chalcogen atom, reads above the empty hollows between columns; a peak that
reads below them is vacuum.

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Percentile of the crystal's smoothed pixels taken as its darkest points.
DARKEST_PERCENTILE: float = 5.0


def void_smoothing(image: np.ndarray, nn_px: float) -> np.ndarray:
    """The image smoothed at 0.3 nn, as holes are told from crystal and amorphous matter (float32)."""
    return ndimage.gaussian_filter(np.asarray(image, np.float32), 0.3 * nn_px)


def darkest_level(smooth: np.ndarray, crystal: np.ndarray) -> float:
    """The crystal's darkest points: :data:`DARKEST_PERCENTILE` of the smoothed crystal pixels (where an
    empty hollow still has its neighbours' tails)."""
    return float(np.percentile(smooth[crystal], DARKEST_PERCENTILE))


def peaks_in_vacuum(image: np.ndarray | None, peaks: np.ndarray, grains: np.ndarray, regions: np.ndarray,
                    nn_px: float) -> np.ndarray:
    """Which grain peaks read darker than the crystal's darkest points (:func:`darkest_level`).

    Parameters
    ----------
    image : ndarray, shape (H, W), or None
    peaks : ndarray, shape (P, 2)
        Peak positions (y, x) in pixels.
    grains : ndarray of int, shape (P,)
        Grain label of each peak (-1: none).
    regions : ndarray of uint8, shape (H, W)
        :func:`~.territories.void_regions` (0: crystal).
    nn_px : float

    Returns
    -------
    ndarray of bool, shape (P,)
        True for a grain peak below the crystal's darkest level; False for the others, and for
        all when there is no image or no hole or amorphous region was found (then nothing says
        where vacuum is).

    Examples
    --------
    >>> yy, xx = np.mgrid[:60, :60]
    >>> image = 5.0 + 20 * ((yy // 6 + xx // 6) % 2)  # a bright pattern ...
    >>> image[30:, 30:] = 1.0  # ... with a dark corner
    >>> regions = np.zeros((60, 60), np.uint8); regions[35:, 35:] = 3
    >>> peaks_in_vacuum(image, np.array([[9.0, 9.0], [50.0, 50.0]]), np.array([0, 0]), regions, 6.0).tolist()
    [False, True]
    """
    peaks = np.asarray(peaks, float).reshape(-1, 2)
    out = np.zeros(len(peaks), bool)
    crystal = np.asarray(regions) == 0
    if image is None or not len(peaks) or crystal.all() or crystal.sum() < 100:
        return out
    smooth = void_smoothing(image, nn_px)
    level = ndimage.map_coordinates(smooth, peaks.T, order=1, mode="nearest")
    return (np.asarray(grains) >= 0) & (level < darkest_level(smooth, crystal))


__all__ = ["DARKEST_PERCENTILE", "darkest_level", "peaks_in_vacuum", "void_smoothing"]
