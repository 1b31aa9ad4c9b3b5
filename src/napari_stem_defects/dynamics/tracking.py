"""Link per-frame column tables of an image series into tracks, one per lattice site.

Every frame of a registered series gives a table of columns (empty sites
included) whose positions are already in reference (frame 0) coordinates.
:func:`track_columns` links them frame to frame by optimal assignment on
distances, sublattice by sublattice: a track is the identity of one site, so
a site that empties keeps its track, and a column missed for a few frames
(``max_gap``) picks its track up again. :func:`track_features` summarises each
track and :func:`napari_tracks_data` turns the tracks into a napari Tracks
layer.

Pure numpy/scipy/pandas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..columns.result import EMPTY

#: Columns of the table returned by :func:`track_columns`, in order.
TRACK_COLUMNS = (
    "track_id", "frame", "y_px", "x_px", "sublattice", "species", "occupied", "intensity", "probability",
    "source_site_id",
)
#: Columns of the table returned by :func:`track_features`, in order.
TRACK_FEATURE_COLUMNS = (
    "track_id", "sublattice", "first_frame", "last_frame", "n_frames", "occupied_frames", "lifetime_frames",
    "net_displacement_px", "max_step_px", "path_length_px", "n_events",
)
#: Cost of a forbidden pairing inside an assignment block.
_FORBIDDEN = 1e12
#: Largest dense block (rows x cols) handed to ``linear_sum_assignment``.
_DENSE_LIMIT = 4_000_000


def min_cost_matching(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching over candidate pairs: most pairs first, then the smallest total cost.

    The candidate pairs form a sparse bipartite graph; it is split into
    connected components, pairs alone in their component are matched
    directly (the usual case for a lattice) and every other component is
    solved exactly with :func:`scipy.optimize.linear_sum_assignment`.

    Parameters
    ----------
    rows, cols : ndarray of int
        Candidate pairs (row i may be matched to column j).
    cost : ndarray of float
        Cost of each candidate pair.

    Returns
    -------
    rows, cols : ndarray of int
        The matched pairs, sorted by row.

    Examples
    --------
    >>> min_cost_matching(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.1, 0.5, 0.2]))
    (array([0, 1]), array([1, 0]))
    """
    rows = np.asarray(rows, np.int64).ravel()
    cols = np.asarray(cols, np.int64).ravel()
    cost = np.asarray(cost, float).ravel()
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n, m = int(rows.max()) + 1, int(cols.max()) + 1
    deg_r = np.bincount(rows, minlength=n)
    deg_c = np.bincount(cols, minlength=m)
    alone = (deg_r[rows] == 1) & (deg_c[cols] == 1)
    out_r, out_c = [rows[alone]], [cols[alone]]
    rest = ~alone
    if rest.any():
        rr, rc, cc = rows[rest], cols[rest], cost[rest]
        graph = coo_matrix((np.ones(len(rr)), (rr, n + rc)), shape=(n + m, n + m))
        _, label = connected_components(graph, directed=False)
        comp = label[rr]
        order = np.argsort(comp, kind="stable")
        rr, rc, cc, comp = rr[order], rc[order], cc[order], comp[order]
        bounds = np.flatnonzero(np.diff(comp)) + 1
        for sl in np.split(np.arange(len(rr)), bounds):
            ur, ir = np.unique(rr[sl], return_inverse=True)
            uc, ic = np.unique(rc[sl], return_inverse=True)
            if len(ur) * len(uc) <= _DENSE_LIMIT:
                block = np.full((len(ur), len(uc)), _FORBIDDEN)
                block[ir, ic] = cc[sl]
                a, b = linear_sum_assignment(block)
                ok = block[a, b] < _FORBIDDEN
                a, b = a[ok], b[ok]
            else:  # only for pathological inputs (a search radius spanning many sites)
                a, b = _sparse_matching(ir, ic, cc[sl], len(ur), len(uc))
            out_r.append(ur[a])
            out_c.append(uc[b])
    r, c = np.concatenate(out_r), np.concatenate(out_c)
    order = np.argsort(r, kind="stable")
    return r[order], c[order]


def _sparse_matching(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, n: int,
                     m: int) -> tuple[np.ndarray, np.ndarray]:
    """The same matching as the dense path for a large sparse block: each row may take its own dummy column."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    big = float(cost.sum()) + 1.0  # leaving a row unmatched costs more than any set of links
    r = np.concatenate([rows, np.arange(n)])
    c = np.concatenate([cols, m + np.arange(n)])
    w = np.concatenate([cost + 1e-9, np.full(n, big)])  # explicit zeros would vanish from the sparse graph
    a, b = min_weight_full_bipartite_matching(csr_matrix((w, (r, c)), shape=(n, m + n)))
    ok = b < m
    return a[ok], b[ok]


def _frame_arrays(table: pd.DataFrame, frame: int) -> dict[str, np.ndarray]:
    """The columns tracking needs from one frame's table, with defaults for missing ones."""
    n = len(table)
    y = table["y_px"].to_numpy(float) if "y_px" in table else np.zeros(n)
    x = table["x_px"].to_numpy(float) if "x_px" in table else np.zeros(n)
    sub = table["sublattice"].astype(str).to_numpy(object) if "sublattice" in table else np.full(n, "", object)
    if "species" in table:
        species = table["species"].fillna(EMPTY).astype(str).to_numpy(object)
    else:
        species = np.full(n, "", object)
    if "occupied" in table:
        occupied = table["occupied"].fillna(False).to_numpy(bool)
    else:
        occupied = species != EMPTY
    def num(name):
        return pd.to_numeric(table[name], errors="coerce").to_numpy(float) if name in table else np.full(n, np.nan)
    source = table["site_id"].to_numpy() if "site_id" in table else np.full(n, -1)
    source = pd.to_numeric(pd.Series(source), errors="coerce").fillna(-1).to_numpy(np.int64)
    ok = np.isfinite(y) & np.isfinite(x)
    out = {"frame": np.full(n, frame, np.int64), "y_px": y, "x_px": x, "sublattice": sub, "species": species,
           "occupied": occupied, "intensity": num("intensity"), "probability": num("probability"),
           "source_site_id": source}
    return {k: v[ok] for k, v in out.items()}


def _empty_tracks() -> pd.DataFrame:
    dtypes = {"track_id": np.int64, "frame": np.int64, "y_px": float, "x_px": float, "sublattice": object,
              "species": object, "occupied": bool, "intensity": float, "probability": float,
              "source_site_id": np.int64}
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in TRACK_COLUMNS})


def track_columns(frames: Sequence[pd.DataFrame], *, max_displacement_px: float, max_gap: int = 2) -> pd.DataFrame:
    """Link the column tables of successive frames into tracks, one per lattice site.

    Frame by frame, every observation is matched to an open track of the
    same sublattice (an 'M' column never continues an 'X' track) by optimal
    one-to-one assignment: as many links as possible, then the smallest
    total distance, and no link longer than ``max_displacement_px``. A track
    is matched against its last position and stays open for ``max_gap``
    frames without an observation; an observation left over starts a new
    track. Empty sites (species 'empty') are observations like any other, so
    a site that empties or refills keeps its track.

    Parameters
    ----------
    frames : sequence of DataFrame
        One table per frame (index in the sequence = frame number), with
        columns ``y_px``, ``x_px`` in reference coordinates and, when known,
        ``sublattice``, ``species``, ``intensity``, ``probability`` and
        ``site_id`` (e.g. :attr:`~napari_stem_defects.columns.result.ColumnResult.sites`
        mapped to the reference frame). ``occupied`` is taken from the table
        when present, else it is ``species != 'empty'``.
    max_displacement_px : float
        Longest link between a track's last position and an observation.
        Keep it under half the distance between sites of one sublattice.
    max_gap : int
        Frames a track may go unobserved and still be continued.

    Returns
    -------
    DataFrame
        One row per observation, columns :data:`TRACK_COLUMNS`, sorted by
        ``track_id`` then ``frame``. ``source_site_id`` is the ``site_id`` of
        the observation in its frame's table (-1 when it had none).

    Raises
    ------
    ValueError
        If ``max_displacement_px`` is not positive or ``max_gap`` is negative.

    Examples
    --------
    >>> f0 = pd.DataFrame({"y_px": [10.0, 20.0], "x_px": [10.0, 10.0], "sublattice": ["M", "X"],
    ...                    "species": ["Mo", "S2"]})
    >>> f1 = pd.DataFrame({"y_px": [20.3, 10.2], "x_px": [9.8, 10.1], "sublattice": ["X", "M"],
    ...                    "species": ["S2", "empty"]})
    >>> tracks = track_columns([f0, f1], max_displacement_px=2.0)
    >>> tracks[["track_id", "frame", "sublattice", "species", "occupied"]]
       track_id  frame sublattice species  occupied
    0         0      0          M      Mo      True
    1         0      1          M   empty     False
    2         1      0          X      S2      True
    3         1      1          X      S2      True
    """
    if not max_displacement_px > 0:
        raise ValueError(f"max_displacement_px must be positive, got {max_displacement_px}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    max_d = float(max_displacement_px)
    codes: dict[str, int] = {}
    # Open tracks: id, last position, last frame seen, sublattice code.
    open_id = np.zeros(0, np.int64)
    open_pos = np.zeros((0, 2))
    open_last = np.zeros(0, np.int64)
    open_sub = np.zeros(0, np.int64)
    next_id = 0
    parts: list[dict[str, np.ndarray]] = []
    for t, table in enumerate(frames):
        obs = _frame_arrays(table, t)
        n = len(obs["y_px"])
        alive = (t - open_last - 1) <= max_gap
        open_id, open_pos, open_last, open_sub = open_id[alive], open_pos[alive], open_last[alive], open_sub[alive]
        names, inverse = np.unique(obs["sublattice"].astype(str), return_inverse=True)
        sub = np.array([codes.setdefault(s, len(codes)) for s in names], np.int64)[inverse.reshape(n)]
        pos = np.column_stack([obs["y_px"], obs["x_px"]]).reshape(n, 2)
        ids = np.full(n, -1, np.int64)
        for s in np.unique(sub):
            oi = np.flatnonzero(sub == s)
            ti = np.flatnonzero(open_sub == s)
            if len(ti) == 0:
                continue
            pairs = cKDTree(pos[oi]).sparse_distance_matrix(cKDTree(open_pos[ti]), max_d, output_type="ndarray")
            if len(pairs) == 0:
                continue
            pi, pj, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
            # Recently seen tracks win ties.
            cost = d + 1e-6 * (t - open_last[ti[pj]])
            a, b = min_cost_matching(pi, pj, cost)
            ids[oi[a]] = open_id[ti[b]]
            open_pos[ti[b]] = pos[oi[a]]
            open_last[ti[b]] = t
        new = np.flatnonzero(ids < 0)
        ids[new] = next_id + np.arange(len(new))
        next_id += len(new)
        open_id = np.concatenate([open_id, ids[new]])
        open_pos = np.concatenate([open_pos, pos[new]])
        open_last = np.concatenate([open_last, np.full(len(new), t, np.int64)])
        open_sub = np.concatenate([open_sub, sub[new]])
        obs["track_id"] = ids
        parts.append(obs)
    if not parts or sum(len(p["track_id"]) for p in parts) == 0:
        return _empty_tracks()
    data = {c: np.concatenate([p[c] for p in parts]) for c in TRACK_COLUMNS}
    out = pd.DataFrame(data, columns=list(TRACK_COLUMNS))
    return out.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)


def _track_bounds(tracks: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Tracks sorted by (track_id, frame), and the first and one-past-last row of each track."""
    t = tracks.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    tid = t["track_id"].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, tid[1:] != tid[:-1]]) if len(tid) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(tid)].astype(np.int64)
    return t, starts, ends


def _steps(t: pd.DataFrame) -> np.ndarray:
    """Distance from the previous observation of the same track (0 on a track's first row)."""
    tid = t["track_id"].to_numpy(np.int64)
    y, x = t["y_px"].to_numpy(float), t["x_px"].to_numpy(float)
    step = np.zeros(len(t))
    if len(t) > 1:
        same = tid[1:] == tid[:-1]
        step[1:] = np.where(same, np.hypot(np.diff(y), np.diff(x)), 0.0)
    return step


def track_features(tracks: pd.DataFrame, events: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row of summary numbers per track.

    Parameters
    ----------
    tracks : DataFrame
        From :func:`track_columns`.
    events : DataFrame, optional
        From :func:`~napari_stem_defects.dynamics.events.detect_events`;
        ``n_events`` counts the events each track takes part in (as
        ``track_id`` or ``to_track_id``). Without it ``n_events`` is 0.

    Returns
    -------
    DataFrame
        Columns :data:`TRACK_FEATURE_COLUMNS`: sublattice, first and last
        frame, number of observations (``n_frames``), how many of them are
        occupied, ``lifetime_frames`` (last - first + 1, gaps included), the
        distance between first and last position, the longest step between
        consecutive observations and the summed path, all in pixels.

    Examples
    --------
    >>> tracks = pd.DataFrame({"track_id": [0, 0, 0], "frame": [0, 1, 3], "y_px": [0.0, 3.0, 3.0],
    ...                        "x_px": [0.0, 4.0, 4.0], "sublattice": "H", "occupied": [True, True, False]})
    >>> track_features(tracks).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'track_id': 0, 'sublattice': 'H', 'first_frame': 0, 'last_frame': 3, 'n_frames': 3, 'occupied_frames': 2,
     'lifetime_frames': 4, 'net_displacement_px': 5.0, 'max_step_px': 5.0, 'path_length_px': 5.0, 'n_events': 0}
    """
    t, starts, ends = _track_bounds(tracks)
    if len(starts) == 0:
        dtypes = dict.fromkeys(TRACK_FEATURE_COLUMNS, np.int64)
        dtypes.update(sublattice=object, net_displacement_px=float, max_step_px=float, path_length_px=float)
        return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in TRACK_FEATURE_COLUMNS})
    tid = t["track_id"].to_numpy(np.int64)
    frame = t["frame"].to_numpy(np.int64)
    y, x = t["y_px"].to_numpy(float), t["x_px"].to_numpy(float)
    occ = t["occupied"].to_numpy(bool) if "occupied" in t else np.ones(len(t), bool)
    step = _steps(t)
    last = ends - 1
    ids = tid[starts]
    n_events = np.zeros(len(ids), np.int64)
    if events is not None and len(events):
        a = events["track_id"].to_numpy(np.int64)
        b = events["to_track_id"].to_numpy(np.int64) if "to_track_id" in events else np.full(len(a), -1)
        b = np.where(b == a, -1, b)  # a move inside one track counts once
        involved = np.concatenate([a, b[b >= 0]])
        counts = pd.Series(involved).value_counts()
        n_events = counts.reindex(ids, fill_value=0).to_numpy(np.int64)
    sub = t["sublattice"].to_numpy(object)[starts] if "sublattice" in t else np.full(len(ids), "", object)
    out = pd.DataFrame({
        "track_id": ids,
        "sublattice": sub,
        "first_frame": frame[starts],
        "last_frame": frame[last],
        "n_frames": (ends - starts).astype(np.int64),
        "occupied_frames": np.add.reduceat(occ.astype(np.int64), starts),
        "lifetime_frames": frame[last] - frame[starts] + 1,
        "net_displacement_px": np.hypot(y[last] - y[starts], x[last] - x[starts]),
        "max_step_px": np.maximum.reduceat(step, starts),
        "path_length_px": np.add.reduceat(step, starts),
        "n_events": n_events,
    })
    return out[list(TRACK_FEATURE_COLUMNS)]


def napari_tracks_data(tracks: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Data and per-vertex features of a napari Tracks layer.

    Parameters
    ----------
    tracks : DataFrame
        From :func:`track_columns`.

    Returns
    -------
    data : ndarray of float, shape (N, 4)
        ``[track_id, t, y, x]`` rows sorted by track_id then t, as napari requires.
    features : DataFrame
        The other columns of ``tracks`` (sublattice, species, occupied,
        intensity, probability, source_site_id), one row per vertex, in the
        same order as ``data``.

    Examples
    --------
    >>> tracks = pd.DataFrame({"track_id": [1, 0, 0], "frame": [0, 1, 0], "y_px": [5.0, 1.5, 1.0],
    ...                        "x_px": [5.0, 2.5, 2.0], "species": ["S2", "Mo", "Mo"]})
    >>> data, features = napari_tracks_data(tracks)
    >>> data
    array([[0. , 0. , 1. , 2. ],
           [0. , 1. , 1.5, 2.5],
           [1. , 0. , 5. , 5. ]])
    >>> list(features["species"])
    ['Mo', 'Mo', 'S2']
    """
    t = tracks.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    data = t[["track_id", "frame", "y_px", "x_px"]].to_numpy(float).reshape(-1, 4)
    features = t.drop(columns=["track_id", "frame", "y_px", "x_px"]).reset_index(drop=True)
    return data, features
