"""Where the crystal is, and which grain, phase and orientation each part of it has.

Real images are not one perfect 2H grain. This module splits the detected
columns into **grains** (regions of one lattice orientation, separated by tilt
grain boundaries), finds the image's **territories** (which grain each pixel
belongs to, where the film has a hole, where the columns follow no lattice),
and labels every lattice site with its local **structure**: which of the three
honeycomb positions is empty (the hollow of a 2H domain; it changes across a
mirror twin boundary) or whether all three hold a column (1T/1T').

- :func:`local_orientation`: each peak's lattice orientation (mod 60 degrees)
  from the directions of its bonds (nearest neighbours, or second neighbours
  when the dim sublattice gave no peaks), smoothed over its neighbourhood.
- :func:`segment_grains`: neighbouring peaks of the same orientation form a
  grain; small sets are left unassigned (noise, amorphous matter).
- :func:`territories`: nearest-peak grain of every pixel and the distance to
  the nearest column; :func:`hole_mask` and :func:`amorphous_mask` from them.
- :func:`local_structure`: per site, the local intensity of the three cosets
  decides hollow coset and phase; majority votes over the neighbourhood
  remove specks, and a domain needs :data:`MIN_DOMAIN_SITES` sites to stand.

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from .vacuum import darkest_level, void_smoothing

#: Largest orientation difference (degrees, mod 60) between linked peaks of one grain.
GRAIN_ANGLE_TOLERANCE: float = 4.0
#: Smallest order (mean bond vector length on the 60-degree circle) of a peak that seeds a grain.
MIN_ORDER: float = 0.8
#: When the grains' seeds hold less than this share of the peaks, the image is one grain (too noisy to split).
FALLBACK_SHARE: float = 0.3
#: Fewest peaks a grain needs; smaller sets stay unassigned.
MIN_GRAIN_PEAKS: int = 30
#: A pixel farther than this many nn from every column is empty film (a hole) ...
HOLE_DISTANCE: float = 1.25
#: ... when its region reaches this far from every column somewhere (so vacancies are not holes).
HOLE_SEED_DISTANCE: float = 2.6
#: (dark - floor) / (mid - floor) of the three cosets' local levels above which all three hold a column (1T):
#: the hollow of 2H is the darkest point of its cell (0-0.1 on twins and real 2H images), while in 1T the
#: gaps between columns are darker than the dimmest column (0.6 on the real W(S,Te)2 image).
PHASE_OCCUPANCY: float = 0.3
#: Share of the darkest coset's nearby sites above that level that makes a neighbourhood 1T.
MIN_OCCUPIED_SHARE: float = 0.6
#: A candidate 1T domain's average cell must show its dimmer non-metal position at least this share of
#: the brighter one above the cell's darkest point (2H twins and real 2H images: 0-0.1; the real
#: W(S,Te)2 1T region: 0.6) ...
MOTIF_OCCUPANCY: float = 0.3
#: ... and its brighter non-metal position at least this share of the metal's (chalcogen columns seen
#: at all: where noise or a broad probe hides them, nothing says 1T and the stated 2H stands).
MOTIF_VISIBLE: float = 0.1
#: ... and its metal (the position unlike the other two) at least this share of the brighter one.
MOTIF_METAL: float = 0.5
#: Fewest sites a domain (hollow coset and phase) needs; smaller specks join their surroundings.
MIN_DOMAIN_SITES: int = 20
#: Radius (nn) of the neighbourhood that votes on a site's structure.
VOTE_RADIUS: float = 3.0


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


def structure_levels(image: np.ndarray, positions: np.ndarray, nn_px: float) -> np.ndarray:
    """Brightness of the image at each position above the darkest point of its unit cell.

    The image smoothed at 0.2 nn, read at the position, minus the minimum of
    the smoothed image within 1.25 nn (the floor between columns). A 2H hollow
    site is the darkest point of its cell and reads about 0; a column reads
    its own signal plus its neighbours' tails.
    """
    smooth = ndimage.gaussian_filter(np.asarray(image, np.float32), 0.2 * nn_px)
    size = max(3, int(round(2.5 * nn_px)) | 1)
    floor = ndimage.minimum_filter(smooth, size=size, mode="nearest")
    coords = np.asarray(positions, float).T
    return (ndimage.map_coordinates(smooth, coords, order=1, mode="nearest")
            - ndimage.map_coordinates(floor, coords, order=1, mode="nearest"))


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


def local_structure(positions: np.ndarray, coset: np.ndarray, level: np.ndarray, nn_px: float,
                    group: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every site, its domain's hollow coset (0-2, or -1 for 1T) from the three cosets' local levels.

    Parameters
    ----------
    positions : ndarray, shape (N, 2)
    coset : ndarray of int, shape (N,)
        ``(m + n) % 3`` of each site's lattice coordinates.
    level : ndarray, shape (N,)
        Each site's brightness above the floor of its cell (:func:`structure_levels`).
    nn_px : float
    group : ndarray of int, optional
        Sites of different groups (grains) never vote for each other.

    Returns
    -------
    hollow : ndarray of int, shape (N,)
        The empty coset of the site's 2H domain, or -1 where all three cosets
        hold a column (1T).
    occupancy : ndarray, shape (N,)
        Share of the darkest coset's sites within :data:`VOTE_RADIUS` whose
        level exceeds :data:`PHASE_OCCUPANCY` times the middle coset's mean
        (above :data:`MIN_OCCUPIED_SHARE`: three occupied cosets, 1T).
    """
    intensity = np.asarray(level, float)
    n = len(positions)
    group = np.zeros(n, int) if group is None else np.asarray(group)
    tree = cKDTree(positions)
    pairs = tree.sparse_distance_matrix(tree, VOTE_RADIUS * nn_px, output_type="coo_matrix")
    same = group[pairs.row] == group[pairs.col]
    row, col = pairs.row[same], pairs.col[same]
    row, col = np.concatenate([row, np.arange(n)]), np.concatenate([col, np.arange(n)])
    total = np.zeros((n, 3))
    count = np.zeros((n, 3))
    np.add.at(total, (row, coset[col]), intensity[col])
    np.add.at(count, (row, coset[col]), 1.0)
    overall = np.array([intensity[coset == c].mean() if np.any(coset == c) else np.inf for c in range(3)])
    local = np.where(count > 0, total / np.maximum(count, 1), overall[None, :])
    ordered = np.sort(local, axis=1)
    dark = local.argmin(axis=1)
    # the share of the darkest coset's sites nearby that hold a column: about 1 in 1T, the share of
    # adatoms (a few per cent) on the hollow coset of 2H, so a cluster of adatoms is not a phase
    is_dark = coset[col] == dark[row]
    lit = is_dark & (intensity[col] > PHASE_OCCUPANCY * ordered[row, 1])
    n_dark = np.bincount(row, weights=is_dark.astype(float), minlength=n)
    occupancy = np.bincount(row, weights=lit.astype(float), minlength=n) / np.maximum(n_dark, 1)
    state = np.where(occupancy > MIN_OCCUPIED_SHARE, 3, dark)  # 3: all occupied (1T), to be confirmed
    for _ in range(2):  # majority over the neighbourhood, twice: removes specks, keeps edges
        votes = np.zeros((n, 4))
        np.add.at(votes, (row, state[col]), 1.0)
        state = votes.argmax(axis=1)
    state = _absorb_small(state, row, col, group)
    return np.where(state == 3, -1, state), occupancy


def _absorb_small(state: np.ndarray, row: np.ndarray, col: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Connected patches of one state with fewer than MIN_DOMAIN_SITES sites take their neighbours' state."""
    n = len(state)
    link = (state[row] == state[col]) & (row != col)
    graph = sparse.coo_matrix((np.ones(link.sum()), (row[link], col[link])), shape=(n, n))
    _, comp = csgraph.connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    small = sizes[comp] < MIN_DOMAIN_SITES
    if not small.any() or small.all():
        return state
    votes = np.zeros((n, 4))
    ok = ~small[col]
    np.add.at(votes, (row[ok], state[col[ok]]), 1.0)
    fixed = state.copy()
    has = votes.sum(axis=1) > 0
    fixed[small & has] = votes[small & has].argmax(axis=1)
    for g in np.unique(group[small & ~has]):  # isolated specks: the group's commonest state
        members = group == g
        fixed[small & ~has & members] = np.bincount(state[members & ~small], minlength=4).argmax() \
            if np.any(members & ~small) else state[small & ~has & members]
    return fixed


def motif_is_1t(image: np.ndarray, metals: np.ndarray, steps_px: np.ndarray, nn_px: float,
                max_cells: int = 2000) -> tuple[bool, dict[str, float]]:
    """Confirm a candidate 1T domain on its average cell: are both non-metal positions occupied?

    The image around (at most ``max_cells``) metal sites is averaged; in the
    average the two non-metal positions (one nearest-neighbour step either
    way) are compared with the darkest point within 1.3 nn of the metal. In
    2H the hollow position is that darkest point; in 1T both positions hold
    a chalcogen column and the darkest points are the gaps between columns.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    metals : ndarray, shape (N, 2)
        The candidate domain's metal (odd-coset) positions.
    steps_px : ndarray, shape (2, 2)
        Pixel vectors of the lattice steps (1, 0) and (0, 1) of its grain.
    nn_px : float

    Returns
    -------
    is_1t : bool
    levels : dict
        ``metal, high, low`` (the non-metal positions' levels above the floor) and ``occupancy``
        (low / high) of the average cell.
    """
    img = np.asarray(image, np.float64)
    h, w = img.shape
    radius = int(np.ceil(1.4 * nn_px))
    inside = np.all((metals >= radius + 1) & (metals <= np.array([h, w]) - radius - 2), axis=1)
    centres = metals[inside]
    if len(centres) < 10:
        return False, {}
    if len(centres) > max_cells:
        centres = centres[np.linspace(0, len(centres) - 1, max_cells).astype(int)]
    offsets = np.mgrid[-radius:radius + 1, -radius:radius + 1].reshape(2, -1).T.astype(float)
    total = np.zeros(len(offsets))
    for chunk in np.array_split(centres, max(1, len(centres) // 200)):
        pts = (chunk[:, None, :] + offsets[None]).reshape(-1, 2)
        total += ndimage.map_coordinates(img, pts.T, order=1).reshape(len(chunk), -1).sum(axis=0)
    motif = ndimage.gaussian_filter((total / len(centres)).reshape(2 * radius + 1, 2 * radius + 1), 0.1 * nn_px)
    near = np.hypot(*offsets.T) <= 1.3 * nn_px
    floor = float(motif.ravel()[near].min())
    up = np.array([[1, 0], [0, 1], [-1, -1]]) @ steps_px
    centre = np.array([radius, radius], float)

    def level(points: np.ndarray) -> float:
        return float(ndimage.map_coordinates(motif, (centre + points).T, order=1).mean()) - floor

    a, b = level(up), level(-up)
    metal = float(motif[radius, radius]) - floor
    high, low = max(a, b), min(a, b)
    occupancy = low / high if high > 0 else 0.0
    visible = high >= MOTIF_VISIBLE * max(metal, high)
    centred = metal >= MOTIF_METAL * high  # the odd position is a column, not a 2H hollow between two
    return bool(occupancy >= MOTIF_OCCUPANCY and visible and centred), {"metal": metal, "high": high, "low": low,
                                                            "occupancy": occupancy}
