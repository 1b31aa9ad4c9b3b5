"""Grains: which lattice orientation each detected column belongs to.

Real images are not one grain. Each peak's lattice orientation (mod 60 degrees) comes from the
directions of its bonds (:func:`local_orientation`: nearest neighbours, or second neighbours when the
dim sublattice gave no peaks), smoothed over its neighbourhood; neighbouring peaks of the same
orientation form a grain, separated from others by tilt grain boundaries (:func:`segment_grains`),
and small sets stay unassigned (noise, amorphous matter). Where the crystal is
(:mod:`.territories`) and which phase and hollow each site has (:mod:`.domains`) follow from them.

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

#: Largest orientation difference (degrees, mod 60) between linked peaks of one grain.
GRAIN_ANGLE_TOLERANCE: float = 4.0

#: Smallest order (mean bond vector length on the 60-degree circle) of a peak that seeds a grain.
MIN_ORDER: float = 0.8

#: When the grains' seeds hold less than this share of the peaks, the image is one grain (too noisy to split).
FALLBACK_SHARE: float = 0.3

#: Fewest peaks a grain needs; smaller sets stay unassigned.
MIN_GRAIN_PEAKS: int = 30


def local_orientation(peaks: np.ndarray, nn_px: float, smooth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Lattice orientation of every peak, in degrees in [0, 60), and how ordered its neighbourhood is.

    Parameters
    ----------
    peaks : ndarray, shape (P, 2)
        Column positions (y, x) in pixels.
    nn_px : float
        Metal to chalcogen distance in pixels.
    smooth : bool
        Average over the peaks within 3 nn (default), or each peak's own bonds only.

    Returns
    -------
    orientation : ndarray, shape (P,)
        Angle (mod 60) of the nearest-neighbour bonds around each peak,
        smoothed over the peaks within 3 nn; NaN for a peak without bonds.
    order : ndarray, shape (P,)
        Length of the mean bond vector on the 60-degree circle (1: perfect
        lattice, near 0: no common orientation).

    Examples
    --------
    >>> ij = np.mgrid[0:8, 0:8].reshape(2, -1).T.astype(float)
    >>> u, v = np.array([0.0, 10.0]), np.array([-8.66, 5.0])  # a triangular lattice at 0 degrees
    >>> theta, order = local_orientation(ij @ np.stack([u, v]), 10.0)
    >>> bool(np.allclose(theta % 60, 0, atol=0.5) | np.allclose(theta, 60, atol=0.5)), bool(order.min() > 0.99)
    (True, True)
    """
    peaks = np.asarray(peaks, float)
    n = len(peaks)
    z = np.zeros(n, complex)
    count = np.zeros(n)
    if n >= 2:
        tree = cKDTree(peaks)
        pairs = tree.query_pairs(2.05 * nn_px, output_type="ndarray")
        d = peaks[pairs[:, 1]] - peaks[pairs[:, 0]]
        length = np.hypot(*d.T) / nn_px
        angle = np.arctan2(-d[:, 0], d[:, 1])
        near = (length > 0.7) & (length < 1.3)
        far = (length > 1.55) & (length < 1.9)
        bond = np.where(near, np.exp(6j * angle), np.exp(6j * (angle - np.pi / 6)))
        keep = near | far
        for end in (0, 1):
            np.add.at(z, pairs[keep, end], bond[keep])
            np.add.at(count, pairs[keep, end], 1.0)
    if n >= 2 and smooth:
        # smooth over the neighbourhood (3 nn) so one noisy bond does not split a grain
        around = tree.sparse_distance_matrix(tree, 3.0 * nn_px, output_type="coo_matrix")
        summed = np.zeros(n, complex)
        np.add.at(summed, around.row, z[around.col])
        summed += z
        weight = np.zeros(n)
        np.add.at(weight, around.row, count[around.col])
        weight += count
        z, count = summed, weight
    mean = np.where(count > 0, z / np.maximum(count, 1), np.nan)
    orientation = np.degrees(np.angle(mean)) / 6.0 % 60.0
    return orientation, np.abs(mean)


def segment_grains(peaks: np.ndarray, nn_px: float, min_peaks: int = MIN_GRAIN_PEAKS) -> tuple[np.ndarray, np.ndarray]:
    """Grain label of every peak (0, 1, ... largest first; -1 unassigned) and each peak's orientation.

    Peaks whose neighbourhood has one clear orientation (order at least
    :data:`MIN_ORDER`) are linked to bonded neighbours whose orientation
    differs by less than :data:`GRAIN_ANGLE_TOLERANCE`; the connected sets of
    at least ``min_peaks`` are the grains. The peaks between grains, whose
    neighbourhood mixes two orientations, then join the adjacent grain that
    their own bonds match (within twice the tolerance).

    Returns
    -------
    labels : ndarray of int, shape (P,)
    orientation : ndarray, shape (P,)
        Smoothed orientation (degrees, mod 60) of each peak.
    """
    peaks = np.asarray(peaks, float)
    n = len(peaks)
    labels = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return labels, np.full(n, np.nan)
    orientation, order = local_orientation(peaks, nn_px)
    raw, _ = local_orientation(peaks, nn_px, smooth=False)
    tree = cKDTree(peaks)
    pairs = tree.query_pairs(2.05 * nn_px, output_type="ndarray")
    length = np.hypot(*(peaks[pairs[:, 1]] - peaks[pairs[:, 0]]).T) / nn_px
    bonded = ((length > 0.7) & (length < 1.3)) | ((length > 1.55) & (length < 1.9))
    core = order >= MIN_ORDER
    diff = _angle_diff(orientation[pairs[:, 0]], orientation[pairs[:, 1]])
    ok = bonded & core[pairs[:, 0]] & core[pairs[:, 1]] & (np.abs(diff) < GRAIN_ANGLE_TOLERANCE)
    link = pairs[ok]
    graph = sparse.coo_matrix((np.ones(len(link)), (link[:, 0], link[:, 1])), shape=(n, n))
    _, comp = csgraph.connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    big = (sizes[comp] >= min_peaks) & core
    if big.sum() < FALLBACK_SHARE * n:
        # too noisy to see grains (low dose, few columns): one grain, indexed as a whole
        labels[:] = 0
        return labels, orientation
    ranked = np.unique(comp[big], return_counts=True)
    order_comps = ranked[0][np.argsort(-ranked[1])]
    rank = {c: k for k, c in enumerate(order_comps)}
    labels[big] = [rank[c] for c in comp[big]]
    means = np.array([grain_orientation(orientation, labels, g) for g in range(len(order_comps))])
    # the rest join the nearest grain whose orientation their own bonds match
    for _ in range(3):
        rest = np.flatnonzero(labels < 0)
        if len(rest) == 0:
            break
        assigned = np.flatnonzero(labels >= 0)
        dist, idx = cKDTree(peaks[assigned]).query(peaks[rest], k=min(6, len(assigned)),
                                                   distance_upper_bound=2.05 * nn_px)
        dist, idx = np.atleast_2d(dist), np.atleast_2d(idx)
        changed = False
        for r, (d_row, i_row) in enumerate(zip(dist, idx)):
            own = raw[rest[r]] if np.isfinite(raw[rest[r]]) else orientation[rest[r]]
            best, best_diff = -1, 2 * GRAIN_ANGLE_TOLERANCE
            for d_, i_ in zip(d_row, i_row):
                if not np.isfinite(d_):
                    continue
                g = labels[assigned[i_]]
                gap = abs(_angle_diff(own, means[g])) if np.isfinite(own) else 0.0
                if gap < best_diff:
                    best, best_diff = g, gap
            if best >= 0:
                labels[rest[r]] = best
                changed = True
        if not changed:
            break
    return _merge_alike(labels, orientation, pairs[bonded]), orientation


def _merge_alike(labels: np.ndarray, orientation: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Join bonded grains of the same orientation (a distorted area can cut one grain's seeds apart)."""
    n_grains = int(labels.max()) + 1
    if n_grains < 2:
        return labels
    means = np.array([grain_orientation(orientation, labels, g) for g in range(n_grains)])
    a, b = labels[bonds[:, 0]], labels[bonds[:, 1]]
    touch = (a >= 0) & (b >= 0) & (a != b)
    a, b = a[touch], b[touch]
    alike = np.abs(_angle_diff(means[a], means[b])) < GRAIN_ANGLE_TOLERANCE
    graph = sparse.coo_matrix((np.ones(alike.sum()), (a[alike], b[alike])), shape=(n_grains, n_grains))
    _, joined = csgraph.connected_components(graph, directed=False)
    out = np.where(labels >= 0, joined[np.maximum(labels, 0)], -1)
    sizes = np.bincount(out[out >= 0])
    rank = np.empty(len(sizes), int)
    rank[np.argsort(-sizes)] = np.arange(len(sizes))
    return np.where(out >= 0, rank[np.maximum(out, 0)], -1)


def _angle_diff(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray | float:
    """Signed difference of orientations on the 60-degree circle, in [-30, 30)."""
    return (np.asarray(a) - np.asarray(b) + 30.0) % 60.0 - 30.0


def grain_orientation(orientation: np.ndarray, labels: np.ndarray, grain: int) -> float:
    """Mean orientation (degrees, mod 60) of one grain's peaks."""
    theta = np.radians(orientation[(labels == grain) & np.isfinite(orientation)])
    return float(np.degrees(np.angle(np.exp(6j * theta).mean())) / 6.0 % 60.0)


def rotate(vector: np.ndarray, degrees: float) -> np.ndarray:
    """Turn a (dy, dx) vector anticlockwise as displayed (y down) by ``degrees``."""
    t = np.radians(degrees)
    dy, dx = vector
    return np.array([dy * np.cos(t) - dx * np.sin(t), dx * np.cos(t) + dy * np.sin(t)])
