"""Events of a tracked image series: sites that empty, fill, change species, and columns that move.

A track (see :mod:`.tracking`) is the identity of one site over time. Its
state in a frame is its species, 'empty' when the site is unoccupied. The
changes of state are the events:

- ``emptied``: occupied -> empty in one track, or an occupied track that
  ends before the last frame away from the field-of-view edge (an adatom
  leaving);
- ``filled``: empty -> occupied, or an occupied track that starts after the
  first frame away from the edge (an adatom arriving);
- ``moved``: a site emptying and a site of the same sublattice within a hop
  distance filling in the same frame, reported once from -> to (pairs with
  the shortest total distance, a site receiving the content the other lost
  preferred); or an
  occupied track whose position steps further than a threshold between
  consecutive observations (an adatom gliding);
- ``species_changed``: occupied -> occupied with another species (S2 -> S).

A new state must last ``min_persistence`` observations (or up to the last
frame of the series) to count, so a one-frame misclassification is no event.
Pure numpy/scipy/pandas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..columns.result import EMPTY
from .tracking import _track_bounds, min_cost_matching

#: Columns of the table returned by :func:`detect_events`, in order.
EVENT_COLUMNS = (
    "event_id", "frame", "kind", "sublattice", "track_id", "to_track_id", "y_px", "x_px", "to_y_px", "to_x_px",
    "species_before", "species_after",
)
#: The kinds of event, in the order they are reported.
EVENT_KINDS = ("emptied", "filled", "moved", "species_changed")

#: A validity test: a boolean mask (H, W) over reference pixels, or a callable ``points (n, 2) -> bool (n,)``.
Valid = Union[np.ndarray, Callable[[np.ndarray], np.ndarray]]


def is_valid(valid: Valid | None, points: np.ndarray) -> np.ndarray:
    """Evaluate a validity test at (y, x) points.

    Parameters
    ----------
    valid : ndarray of bool, callable or None
        Mask over reference pixels (points are rounded to the nearest pixel;
        outside the mask is invalid), or a callable returning one bool per
        point. None: everything is valid.
    points : ndarray, shape (n, 2)
        (y, x) positions in pixels.

    Returns
    -------
    ndarray of bool, shape (n,)

    Examples
    --------
    >>> mask = np.zeros((4, 4), bool); mask[1:3, 1:3] = True
    >>> is_valid(mask, np.array([[1.2, 1.9], [0.0, 2.0], [9.0, 9.0]]))
    array([ True, False, False])
    """
    pts = np.asarray(points, float).reshape(-1, 2)
    if valid is None:
        return np.ones(len(pts), bool)
    if callable(valid):
        return np.asarray(valid(pts), bool).reshape(len(pts))
    mask = np.asarray(valid, bool)
    if mask.ndim != 2:
        raise ValueError(f"valid must be a 2D mask or a callable, got an array of shape {mask.shape}")
    idx = np.rint(np.nan_to_num(pts, nan=-1.0)).astype(np.int64)
    ok = (idx[:, 0] >= 0) & (idx[:, 0] < mask.shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < mask.shape[1])
    out = np.zeros(len(pts), bool)
    out[ok] = mask[idx[ok, 0], idx[ok, 1]]
    return out


def _empty_events() -> pd.DataFrame:
    dtypes = {"event_id": np.int64, "frame": np.int64, "kind": object, "sublattice": object, "track_id": np.int64,
              "to_track_id": np.int64, "y_px": float, "x_px": float, "to_y_px": float, "to_x_px": float,
              "species_before": object, "species_after": object}
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in EVENT_COLUMNS})


def _common_interior(t: pd.DataFrame, margin: float) -> Callable[[np.ndarray], np.ndarray]:
    """Inside the box every frame's observations cover, ``margin`` px in from its edges."""
    box = t.groupby("frame").agg(y0=("y_px", "min"), y1=("y_px", "max"), x0=("x_px", "min"), x1=("x_px", "max"))
    y0, y1 = box["y0"].max() + margin, box["y1"].min() - margin
    x0, x1 = box["x0"].max() + margin, box["x1"].min() - margin

    def inside(points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, float).reshape(-1, 2)
        return (p[:, 0] >= y0) & (p[:, 0] <= y1) & (p[:, 1] >= x0) & (p[:, 1] <= x1)
    return inside


def _pair_hops(src: np.ndarray, dst: np.ndarray, src_species: np.ndarray, dst_species: np.ndarray,
               hop: float) -> tuple[np.ndarray, np.ndarray]:
    """Pair emptied (src) and filled (dst) sites within ``hop``: shortest total, same content preferred."""
    pairs = cKDTree(src).sparse_distance_matrix(cKDTree(dst), hop, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    cost = pairs["v"] + hop * (src_species[i] != dst_species[j])
    return min_cost_matching(i, j, cost)


def detect_events(
    tracks: pd.DataFrame,
    *,
    hop_distance_px: float,
    move_threshold_px: float,
    min_persistence: int = 1,
    valid: Valid | None = None,
) -> pd.DataFrame:
    """Find the events of a tracked series: sites emptied, filled, moved, and species changes.

    Parameters
    ----------
    tracks : DataFrame
        From :func:`~napari_stem_defects.dynamics.tracking.track_columns`
        (columns ``track_id, frame, y_px, x_px, sublattice, species, occupied``).
    hop_distance_px : float
        A site emptying and another of its sublattice filling within this
        distance in the same frame make one 'moved' event (about one lattice
        constant: the nearest sites of the same sublattice).
    move_threshold_px : float
        An occupied track stepping further than this between consecutive
        observations is a 'moved' event (with ``min_persistence`` > 1, only
        when both the old and the new position last that long).
    min_persistence : int
        Observations a new state (species, or position for a step) must last
        to count; a state reaching the last frame of the series always
        counts. 1: every change counts; 2: one-frame flickers are ignored.
        A track's first state must last as long, else the track starts in
        its first lasting state (a misclassified first frame is no event).
    valid : ndarray of bool or callable, optional
        Where sites can be trusted, e.g. the part of the reference frame seen
        in every frame (see :func:`is_valid`): events of tracks whose mean
        position is not valid are left out (but a move between such a track
        and a valid one is kept), and so are appearances and disappearances
        at invalid positions. Without it, a track appearing or disappearing
        mid-series only counts inside the box covered by every frame, one
        ``hop_distance_px`` in from its edges.

    Returns
    -------
    DataFrame
        Columns :data:`EVENT_COLUMNS`, sorted by frame. ``frame`` is the
        first frame showing the new state; (``y_px``, ``x_px``) is where the
        site is (for 'moved', where the column came from, and ``to_*`` where
        it went; elsewhere ``to_track_id`` is -1 and ``to_*`` NaN).

    Raises
    ------
    ValueError
        If ``min_persistence`` < 1 or a distance is not positive.

    Examples
    --------
    A site that empties at frame 4 after a one-frame flicker at frame 2, which is ignored:

    >>> tracks = pd.DataFrame({"track_id": 0, "frame": [0, 1, 2, 3, 4, 5], "y_px": 5.0, "x_px": 5.0,
    ...                        "sublattice": "X", "species": ["S2", "S2", "S", "S2", "empty", "empty"]})
    >>> tracks["occupied"] = tracks["species"] != "empty"
    >>> ev = detect_events(tracks, hop_distance_px=10.0, move_threshold_px=1.0, min_persistence=2)
    >>> ev[["frame", "kind", "track_id", "species_before", "species_after"]]
       frame     kind  track_id species_before species_after
    0      4  emptied         0             S2         empty
    """
    if min_persistence < 1:
        raise ValueError(f"min_persistence must be >= 1, got {min_persistence}")
    if not (hop_distance_px > 0 and move_threshold_px > 0):
        raise ValueError("hop_distance_px and move_threshold_px must be positive")
    p = int(min_persistence)
    t, starts, ends = _track_bounds(tracks)
    if len(t) == 0:
        return _empty_events()
    first_frame, last_frame = int(t["frame"].min()), int(t["frame"].max())
    if valid is not None:
        mean = t.groupby("track_id", sort=True)[["y_px", "x_px"]].mean()
        valid_ids = set(mean.index.to_numpy()[is_valid(valid, mean.to_numpy(float))].tolist())

        def interior(points: np.ndarray) -> np.ndarray:
            return is_valid(valid, points)
    else:
        valid_ids = None
        interior = _common_interior(t, float(hop_distance_px))

    tid = t["track_id"].to_numpy(np.int64)
    frame = t["frame"].to_numpy(np.int64)
    pos = t[["y_px", "x_px"]].to_numpy(float)
    sub = t["sublattice"].astype(str).to_numpy(object) if "sublattice" in t else np.full(len(t), "", object)
    occ = t["occupied"].to_numpy(bool) if "occupied" in t else (t["species"] != EMPTY).to_numpy()
    state = np.where(occ, t["species"].fillna(EMPTY).astype(str).to_numpy(object), EMPTY).astype(object)
    code = pd.factorize(state)[0]
    n = len(t)
    track_of_row = np.repeat(np.arange(len(starts)), ends - starts)
    track_end = ends[track_of_row]  # one past the last row of each row's track
    records: list[dict] = []

    def add(rows, kind, before, after, to_rows=None, frames=None):
        rows = np.asarray(rows, np.int64)
        for k, r in enumerate(rows):
            rec = {"frame": int(frame[r]) if frames is None else int(frames[k]), "kind": kind,
                   "sublattice": sub[r], "track_id": int(tid[r]), "to_track_id": -1,
                   "y_px": pos[r, 0], "x_px": pos[r, 1], "to_y_px": np.nan, "to_x_px": np.nan,
                   "species_before": before[k], "species_after": after[k]}
            if to_rows is not None:
                q = int(to_rows[k])
                rec.update(to_track_id=int(tid[q]), to_y_px=pos[q, 0], to_x_px=pos[q, 1])
            records.append(rec)

    # Runs of one state inside a track; a run counts when long enough or when it reaches the last frame.
    new_run = np.r_[True, (tid[1:] != tid[:-1]) | (code[1:] != code[:-1])]
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], n]
    run_track = track_of_row[run_start]
    ok = ((run_end - run_start) >= p) | ((run_end == track_end[run_start]) & (frame[run_end - 1] == last_frame))
    acc_start, acc_track = run_start[ok], run_track[ok]
    # State changes between consecutive accepted runs of a track.
    same = acc_track[1:] == acc_track[:-1]
    prev_state, new_state = state[acc_start[:-1]], state[acc_start[1:]]
    change = same & (prev_state != new_state)
    rows, before, after = acc_start[1:][change], prev_state[change], new_state[change]
    was_empty, is_empty = before == EMPTY, after == EMPTY
    transitions = {
        "emptied": ~was_empty & is_empty,
        "filled": was_empty & ~is_empty,
        "species_changed": ~was_empty & ~is_empty,
    }
    state_events = {k: (rows[m], before[m], after[m]) for k, m in transitions.items()}

    # Tracks appearing after the first frame or vanishing before the last one, occupied, inside.
    has_acc = np.zeros(len(starts), bool)
    has_acc[acc_track] = True
    first_acc = np.full(len(starts), -1, np.int64)
    last_acc = np.full(len(starts), -1, np.int64)
    _, first_i = np.unique(acc_track, return_index=True)  # acc_track is sorted
    first_acc[acc_track[first_i]] = acc_start[first_i]
    last_i = np.r_[first_i[1:], len(acc_track)] - 1
    last_acc[acc_track[last_i]] = acc_start[last_i]
    tr = np.flatnonzero(has_acc)
    appear = tr[(frame[starts[tr]] > first_frame) & (state[first_acc[tr]] != EMPTY)]
    appear = appear[interior(pos[starts[appear]])]
    vanish = tr[(frame[ends[tr] - 1] < last_frame) & (state[last_acc[tr]] != EMPTY)]
    vanish = vanish[interior(pos[ends[vanish] - 1])]
    e_rows = np.concatenate([state_events["emptied"][0], ends[vanish] - 1])
    e_frames = np.concatenate([frame[state_events["emptied"][0]], frame[ends[vanish] - 1] + 1])
    e_before = np.concatenate([state_events["emptied"][1], state[last_acc[vanish]]])
    f_rows = np.concatenate([state_events["filled"][0], starts[appear]])
    f_after = np.concatenate([state_events["filled"][2], state[first_acc[appear]]])

    # Emptied + filled of one sublattice within a hop, same frame: one move.
    e_used = np.zeros(len(e_rows), bool)
    f_used = np.zeros(len(f_rows), bool)
    f_frames = frame[f_rows]
    for fr in np.intersect1d(e_frames, f_frames):
        for s in np.unique(sub[e_rows[e_frames == fr]]):
            ei = np.flatnonzero((e_frames == fr) & (sub[e_rows] == s))
            fi = np.flatnonzero((f_frames == fr) & (sub[f_rows] == s))
            if len(fi) == 0:
                continue
            a, b = _pair_hops(pos[e_rows[ei]], pos[f_rows[fi]], e_before[ei], f_after[fi], float(hop_distance_px))
            e_used[ei[a]] = True
            f_used[fi[b]] = True
            add(e_rows[ei[a]], "moved", e_before[ei[a]], f_after[fi[b]], to_rows=f_rows[fi[b]],
                frames=np.full(len(a), fr))
    add(e_rows[~e_used], "emptied", e_before[~e_used], np.full((~e_used).sum(), EMPTY, object),
        frames=e_frames[~e_used])
    add(f_rows[~f_used], "filled", np.full((~f_used).sum(), EMPTY, object), f_after[~f_used])
    add(*state_events["species_changed"][:1], "species_changed", *state_events["species_changed"][1:])

    # Steps of an occupied column further than the threshold that do not come back.
    if n > 1:
        same_prev = np.r_[False, tid[1:] == tid[:-1]]
        prev_occ = np.r_[False, occ[:-1]]
        step = np.zeros(n)
        step[1:] = np.hypot(*(pos[1:] - pos[:-1]).T)
        cand = np.flatnonzero(same_prev & occ & prev_occ & (step > move_threshold_px))
        track_start = starts[track_of_row]
        keep = np.ones(len(cand), bool)
        for k in range(1, p):
            # The new position lasts (does not come back near the old one) ...
            r = cand + k
            inside = r < track_end[cand]
            d = np.full(len(cand), np.inf)
            d[inside] = np.hypot(*(pos[r[inside]] - pos[cand[inside] - 1]).T)
            cut = ~inside & (frame[track_end[cand] - 1] != last_frame)
            keep &= (d > move_threshold_px) & ~cut
            # ... and so had the old one (the step is no return from an outlier).
            r = cand - 1 - k
            inside = r >= track_start[cand]
            d = np.full(len(cand), np.inf)
            d[inside] = np.hypot(*(pos[r[inside]] - pos[cand[inside]]).T)
            cut = ~inside & (frame[track_start[cand]] != first_frame)
            keep &= (d > move_threshold_px) & ~cut
        cand = cand[keep]
        add(cand - 1, "moved", state[cand - 1], state[cand], to_rows=cand, frames=frame[cand])

    if valid_ids is not None:  # a move into or out of the valid region still counts
        records = [r for r in records if r["track_id"] in valid_ids or r["to_track_id"] in valid_ids]
    if not records:
        return _empty_events()
    out = pd.DataFrame.from_records(records)
    order = {k: i for i, k in enumerate(EVENT_KINDS)}
    out["_k"] = out["kind"].map(order)
    out = out.sort_values(["frame", "_k", "track_id"], kind="stable").drop(columns="_k").reset_index(drop=True)
    out.insert(0, "event_id", np.arange(len(out), dtype=np.int64))
    return out[list(EVENT_COLUMNS)]
