"""Territories: which grain each pixel belongs to, and where the film has a hole or no lattice.

- :func:`territories`: the nearest column's grain (:func:`~.grains.segment_grains`) of every pixel
  and the distance to the nearest column;
- :func:`hole_mask` and :func:`amorphous_mask` from them;
- :func:`void_regions`: holes and amorphous patches, and regions darker than the crystal's darkest
  points (:mod:`.vacuum`), as phase codes per pixel.

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .vacuum import darkest_level, void_smoothing

#: A pixel farther than this many nn from every column is empty film (a hole) ...
HOLE_DISTANCE: float = 1.25

#: ... when its region reaches this far from every column somewhere (so vacancies are not holes).
HOLE_SEED_DISTANCE: float = 2.6


def territories(shape: tuple[int, int], peaks: np.ndarray, labels: np.ndarray,
                nn_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Which grain each pixel belongs to (its nearest peak's label) and its distance to the nearest peak.

    Computed on a grid of about nn / 4 pixels (a territory is needed to a
    fraction of the column spacing) and repeated to full size.

    Returns
    -------
    grain_map : ndarray of int32, shape (H, W)
        Label of the nearest peak (-1: an unassigned peak; -2: no peak at all).
    distance : ndarray of float32, shape (H, W)
        Distance to the nearest peak in nn.
    """
    h, w = shape
    if len(peaks) == 0:
        return np.full((h, w), -2, np.int32), np.full((h, w), np.inf, np.float32)
    step = max(1, int(nn_px / 4))
    hc, wc = -(-h // step), -(-w // step)
    seed = np.full((hc, wc), -3, dtype=np.int32)
    rc = np.clip(np.floor(np.asarray(peaks) / step + 0.5).astype(int), 0, [hc - 1, wc - 1])
    seed[rc[:, 0], rc[:, 1]] = labels
    distance, (iy, ix) = ndimage.distance_transform_edt(seed == -3, return_indices=True)
    grain = np.repeat(np.repeat(seed[iy, ix], step, axis=0), step, axis=1)[:h, :w]
    far = np.repeat(np.repeat((distance * step / nn_px).astype(np.float32), step, axis=0), step, axis=1)[:h, :w]
    return grain, far


def hole_mask(distance: np.ndarray, nn_px: float) -> np.ndarray:
    """Pixels in holes of the film: far from every column, in a region that reaches a seed far from all.

    A vacancy or a small cluster of them leaves a gap of at most about 2 nn
    to the next column; a hole leaves more (:data:`HOLE_SEED_DISTANCE`). The
    hole's outline is where the distance drops below :data:`HOLE_DISTANCE`.
    """
    far = distance > HOLE_DISTANCE
    seeds = distance > HOLE_SEED_DISTANCE
    if not seeds.any():
        return np.zeros_like(far)
    labels, n = ndimage.label(far)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(labels[seeds])] = True
    keep[0] = False
    return keep[labels]


def amorphous_mask(grain_map: np.ndarray, distance: np.ndarray, nn_px: float) -> np.ndarray:
    """Pixels whose nearest columns follow no lattice (unassigned peaks), in patches of at least ~4 nn^2."""
    loose = (grain_map == -1) & (distance <= HOLE_DISTANCE)
    loose = ndimage.binary_opening(loose, iterations=max(1, int(0.3 * nn_px)))
    labels, n = ndimage.label(loose)
    if n == 0:
        return loose
    sizes = np.bincount(labels.ravel())
    keep = sizes >= 4.0 * nn_px**2
    keep[0] = False
    return keep[labels]


def void_regions(grain_map: np.ndarray, distance: np.ndarray, nn_px: float,
                 image: np.ndarray | None = None) -> np.ndarray:
    """Where the film has a hole and where its columns follow no lattice: phase codes (0 elsewhere).

    Candidates are pixels far from every column (:func:`hole_mask`) and
    patches of columns that follow no lattice (:func:`amorphous_mask`). With
    the image, a candidate patch holding vacuum (pixels darker than halfway
    between the crystal's darkest points, the 5th percentile of the smoothed
    crystal where an empty hollow still has its neighbours' tails, and the
    darkest candidate pixels) is a **hole** wherever it is darker than the
    crystal's darkest points, grown over such pixels connected to it (its
    rim); the other candidates are **amorphous** (contamination, disordered
    matter, as bright as the crystal).
    """
    from ..vocabulary import PHASE_CODES

    holes = hole_mask(distance, nn_px)
    loose = amorphous_mask(grain_map, distance, nn_px)
    out = np.zeros(grain_map.shape, np.uint8)
    out[loose] = PHASE_CODES["amorphous"]
    out[holes] = PHASE_CODES["hole"]
    if image is None or not (holes | loose).any():
        return out
    smooth = void_smoothing(image, nn_px)
    crystal = out == 0
    candidates = holes | loose
    if crystal.sum() < 100:
        return out
    low = darkest_level(smooth, crystal)
    vacuum = float(np.percentile(smooth[candidates], 5))
    out[candidates] = PHASE_CODES["amorphous"]
    if vacuum >= low:  # nothing darker than the crystal's darkest points: no vacuum
        return out
    level = 0.5 * (low + vacuum)
    dark = candidates & (smooth < level)
    dark = ndimage.binary_opening(dark, iterations=max(1, int(0.3 * nn_px)))
    if dark.any():
        # a patch holding vacuum is a hole wherever it is darker than the crystal's darkest points (its
        # rim still catches the crystal's tails); brighter parts of it are amorphous matter beside the hole
        labels, _ = ndimage.label(candidates)
        with_vacuum = np.isin(labels, np.unique(labels[dark])) & (labels > 0)
        out[with_vacuum & (smooth < low)] = PHASE_CODES["hole"]
        grown, _ = ndimage.label(smooth < low)
        keep = np.unique(grown[dark])
        out[np.isin(grown, keep[keep > 0]) & (out != PHASE_CODES["amorphous"]) | dark] = PHASE_CODES["hole"]
    return out
