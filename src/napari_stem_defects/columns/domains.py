"""Which phase and hollow each lattice site has: 2H domains, mirror twins and 1T/1T' regions.

Within a grain (:mod:`.grains`; where the crystal is: :mod:`.territories`), every lattice site is
labelled with its local **structure**: which of the three honeycomb positions is empty (the hollow
of a 2H domain; it changes across a mirror twin boundary) or whether all three hold a column
(1T/1T').

- :func:`structure_levels`: the local intensity of each site above its surroundings' floor.
- :func:`local_structure`: per site, the local intensity of the three cosets decides hollow coset
  and phase; majority votes over the neighbourhood remove specks, and a domain needs
  :data:`MIN_DOMAIN_SITES` sites to stand.
- :func:`motif_is_1t`: a candidate 1T domain must show the 1T motif in its average cell.
- :func:`domain_ids`: connected sites of one grain and one structure form a domain.

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

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


def domain_ids(positions: np.ndarray, grain: np.ndarray, hollow: np.ndarray, nn_px: float) -> np.ndarray:
    """Domain id of each site: connected sites (within 1.2 nn) of one grain and one structure; largest first.

    A site with no such neighbour (cut off by a hole or a gap in the peaks) joins the domain of the nearest
    site of its grain and structure rather than standing as a one-site domain of its own.
    """
    n = len(positions)
    pairs = cKDTree(positions).query_pairs(1.2 * nn_px, output_type="ndarray")
    same = (grain[pairs[:, 0]] == grain[pairs[:, 1]]) & (hollow[pairs[:, 0]] == hollow[pairs[:, 1]])
    pairs = pairs[same]
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = csgraph.connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    for k in np.flatnonzero(sizes[comp] == 1):
        kin = np.flatnonzero((grain == grain[k]) & (hollow == hollow[k]) & (sizes[comp] > 1))
        if len(kin):
            comp[k] = comp[kin[np.argmin(np.hypot(*(positions[kin] - positions[k]).T))]]
    sizes = np.bincount(comp, minlength=len(sizes))
    rank = np.empty(len(sizes), int)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    return rank[comp]
