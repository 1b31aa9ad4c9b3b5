"""Scores of tracks and events against the ground truth of a simulated image series.

The simulator (:mod:`napari_stem_defects.simulate.stack`) gives one row per
(frame, lattice site) in ``sites`` and the true changes in ``events``, both
in reference coordinates (``y_ref``, ``x_ref``). :func:`match_events` scores
found events (precision, recall, F1 per kind) and :func:`tracking_accuracy`
how completely and how faithfully the tracks follow the true sites.
Pure numpy/scipy/pandas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..columns.evaluate import match_points
from .events import EVENT_KINDS
from .tracking import min_cost_matching

#: Columns of the table returned by :func:`match_events`, in order.
EVENT_SCORE_COLUMNS = ("kind", "n_found", "n_truth", "tp", "precision", "recall", "f1")


def _event_xy(table: pd.DataFrame, y: str, x: str, to_y: str, to_x: str) -> tuple[np.ndarray, np.ndarray]:
    """From and to positions of events (to: NaN when the table has none)."""
    src = table[[y, x]].to_numpy(float).reshape(-1, 2)
    if to_y in table and to_x in table:
        dst = table[[to_y, to_x]].to_numpy(float).reshape(-1, 2)
    else:
        dst = np.full_like(src, np.nan)
    return src, dst


def pair_events(found: pd.DataFrame, truth: pd.DataFrame, *, tol_px: float,
                frame_tol: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs of found and true events of the same kind, close in time and space.

    Two events can pair when their kinds are equal, their frames differ by
    at most ``frame_tol`` and their positions by at most ``tol_px`` (for a
    'moved' event both the start and, where both have one, the end). Among
    those, the matching with the most pairs and then the smallest total of
    ``distance / tol_px + |frame difference|`` is chosen.

    Parameters
    ----------
    found : DataFrame
        From :func:`~napari_stem_defects.dynamics.events.detect_events`
        (``frame, kind, y_px, x_px, to_y_px, to_x_px``).
    truth : DataFrame
        The simulator's events (``frame, kind, y_ref, x_ref, to_y_ref, to_x_ref``).
    tol_px : float
        Largest distance in pixels.
    frame_tol : int
        Largest frame difference.

    Returns
    -------
    found_index, truth_index : ndarray of int
        Row positions (not labels) of the paired events.

    Examples
    --------
    >>> found = pd.DataFrame({"frame": [3, 5], "kind": ["emptied", "filled"], "y_px": [10.2, 40.0],
    ...                       "x_px": [20.0, 40.0]})
    >>> truth = pd.DataFrame({"frame": [3, 5], "kind": ["emptied", "emptied"], "y_ref": [10.0, 40.0],
    ...                       "x_ref": [20.0, 40.0]})
    >>> pair_events(found, truth, tol_px=1.0)
    (array([0]), array([0]))
    """
    f_src, f_dst = _event_xy(found, "y_px", "x_px", "to_y_px", "to_x_px")
    t_src, t_dst = _event_xy(truth, "y_ref", "x_ref", "to_y_ref", "to_x_ref")
    f_kind, t_kind = found["kind"].astype(str).to_numpy(), truth["kind"].astype(str).to_numpy()
    f_frame, t_frame = found["frame"].to_numpy(np.int64), truth["frame"].to_numpy(np.int64)
    out_f, out_t = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for kind in np.intersect1d(f_kind, t_kind):
        fi, ti = np.flatnonzero(f_kind == kind), np.flatnonzero(t_kind == kind)
        ok_f, ok_t = np.isfinite(f_src[fi]).all(1), np.isfinite(t_src[ti]).all(1)
        fi, ti = fi[ok_f], ti[ok_t]
        if len(fi) == 0 or len(ti) == 0:
            continue
        pairs = cKDTree(f_src[fi]).sparse_distance_matrix(cKDTree(t_src[ti]), tol_px, output_type="ndarray")
        a, b, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"].astype(float)
        fa, tb = fi[a], ti[b]
        dframe = np.abs(f_frame[fa] - t_frame[tb])
        d_end = np.linalg.norm(f_dst[fa] - t_dst[tb], axis=1)
        d_end = np.where(np.isfinite(d_end), d_end, 0.0)  # an end missing on either side is not compared
        ok = (dframe <= frame_tol) & (d_end <= tol_px)
        if not ok.any():
            continue
        cost = np.maximum(d[ok], d_end[ok]) / tol_px + dframe[ok]
        r, c = min_cost_matching(a[ok], b[ok], cost)
        out_f.append(fi[r])
        out_t.append(ti[c])
    return np.concatenate(out_f), np.concatenate(out_t)


def match_events(found: pd.DataFrame, truth: pd.DataFrame, *, tol_px: float, frame_tol: int = 0) -> pd.DataFrame:
    """Precision, recall and F1 of found events against the true ones, per kind and for all.

    Events are paired with :func:`pair_events` (same kind, frames within
    ``frame_tol``, positions within ``tol_px``).

    Parameters
    ----------
    found : DataFrame
        Found events (:data:`~napari_stem_defects.dynamics.events.EVENT_COLUMNS`).
    truth : DataFrame
        True events (simulator columns ``frame, kind, y_ref, x_ref, to_y_ref, to_x_ref``).
    tol_px : float
        Largest distance in pixels between paired events.
    frame_tol : int
        Largest frame difference between paired events.

    Returns
    -------
    DataFrame
        Columns :data:`EVENT_SCORE_COLUMNS`, one row per kind (the four
        event kinds, then any other kind present) and a last row 'all'.
        ``tp`` counts pairs; precision is NaN without found events, recall
        NaN without true events, and F1 = 2 tp / (n_found + n_truth) (NaN
        when both are 0).

    Examples
    --------
    >>> found = pd.DataFrame({"frame": [3, 5], "kind": ["emptied", "filled"], "y_px": [10.2, 40.0],
    ...                       "x_px": [20.0, 40.0]})
    >>> truth = pd.DataFrame({"frame": [3], "kind": ["emptied"], "y_ref": [10.0], "x_ref": [20.0]})
    >>> scores = match_events(found, truth, tol_px=1.0)
    >>> scores[scores["kind"].isin(["emptied", "filled", "all"])]
          kind  n_found  n_truth  tp  precision  recall        f1
    0  emptied        1        1   1        1.0     1.0  1.000000
    1   filled        1        0   0        0.0     NaN  0.000000
    4      all        2        1   1        0.5     1.0  0.666667
    """
    fi, ti = pair_events(found, truth, tol_px=tol_px, frame_tol=frame_tol)
    f_kind = found["kind"].astype(str).to_numpy() if len(found) else np.zeros(0, str)
    t_kind = truth["kind"].astype(str).to_numpy() if len(truth) else np.zeros(0, str)
    kinds = list(EVENT_KINDS) + sorted((set(f_kind) | set(t_kind)) - set(EVENT_KINDS))
    rows = []
    for kind in [*kinds, "all"]:
        if kind == "all":
            nf, nt, tp = len(f_kind), len(t_kind), len(fi)
        else:
            nf, nt = int((f_kind == kind).sum()), int((t_kind == kind).sum())
            tp = int((f_kind[fi] == kind).sum())
        rows.append({
            "kind": kind, "n_found": nf, "n_truth": nt, "tp": tp,
            "precision": tp / nf if nf else np.nan,
            "recall": tp / nt if nt else np.nan,
            "f1": 2 * tp / (nf + nt) if nf + nt else np.nan,
        })
    return pd.DataFrame(rows, columns=list(EVENT_SCORE_COLUMNS))


def tracking_accuracy(tracks: pd.DataFrame, truth_sites: pd.DataFrame, *, tol_px: float) -> dict[str, float]:
    """How completely and faithfully tracks follow the true sites of a simulated series.

    In every frame, the tracked observations are matched one to one to the
    true sites of that frame (inside the field of view) within ``tol_px``,
    minimising the total distance. True rows that cannot be seen are left
    out: sites outside the frame, and unoccupied hollow ('H') sites (an
    empty lattice site is a row of the tracks, an empty hollow is not).

    Parameters
    ----------
    tracks : DataFrame
        From :func:`~napari_stem_defects.dynamics.tracking.track_columns`.
    truth_sites : DataFrame
        The simulator's ``sites`` (``frame, site_id, y_ref, x_ref`` and,
        when present, ``inside``, ``sublattice``, ``occupied``).
    tol_px : float
        Largest distance between an observation and its true site.

    Returns
    -------
    dict
        ``completeness``: fraction of true site-frames matched by an
        observation; ``purity``: per true site, the fraction of its matched
        observations carried by its most frequent track, averaged over
        sites; ``switch_fraction``: fraction of tracks (with a match) whose
        observations match more than one true site; ``tracks_per_site``:
        mean number of tracks covering a true site; ``observation_precision``:
        fraction of observations matched to a true site; and the counts
        ``n_tracks``, ``n_truth_sites``, ``n_truth_rows``, ``n_matched``.

    Examples
    --------
    >>> truth = pd.DataFrame({"frame": [0, 0, 1, 1], "site_id": [7, 8, 7, 8], "y_ref": [0.0, 0.0, 0.0, 0.0],
    ...                       "x_ref": [0.0, 10.0, 0.0, 10.0]})
    >>> tracks = pd.DataFrame({"track_id": [0, 0, 1], "frame": [0, 1, 0], "y_px": [0.1, 0.0, 0.0],
    ...                        "x_px": [0.0, 9.9, 10.0]})
    >>> acc = tracking_accuracy(tracks, truth, tol_px=1.0)
    >>> acc["completeness"], acc["purity"], acc["switch_fraction"]
    (0.75, 0.75, 0.5)
    """
    truth = truth_sites
    keep = np.ones(len(truth), bool)
    if "inside" in truth:
        keep &= truth["inside"].to_numpy(bool)
    if "sublattice" in truth and "occupied" in truth:
        keep &= ~((truth["sublattice"].astype(str) == "H").to_numpy() & ~truth["occupied"].to_numpy(bool))
    truth = truth[keep]
    t_frame = truth["frame"].to_numpy(np.int64)
    t_xy = truth[["y_ref", "x_ref"]].to_numpy(float).reshape(-1, 2)
    t_site = truth["site_id"].to_numpy(np.int64)
    f_frame = tracks["frame"].to_numpy(np.int64)
    f_xy = tracks[["y_px", "x_px"]].to_numpy(float).reshape(-1, 2)
    f_track = tracks["track_id"].to_numpy(np.int64)
    pair_track, pair_site = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for fr in np.intersect1d(f_frame, t_frame):
        fi, ti = np.flatnonzero(f_frame == fr), np.flatnonzero(t_frame == fr)
        a, b = match_points(f_xy[fi], t_xy[ti], float(tol_px))
        pair_track.append(f_track[fi[a]])
        pair_site.append(t_site[ti[b]])
    pairs = pd.DataFrame({"track": np.concatenate(pair_track), "site": np.concatenate(pair_site)})
    n_matched = len(pairs)
    n_tracks = int(tracks["track_id"].nunique()) if len(tracks) else 0
    n_sites = int(np.unique(t_site).size)
    if n_matched:
        per = pairs.groupby(["site", "track"]).size()
        by_site = per.groupby(level="site")
        purity = float((by_site.max() / by_site.sum()).mean())
        tracks_per_site = float(by_site.size().mean())
        switch = float((pairs.groupby("track")["site"].nunique() > 1).mean())
    else:
        purity = tracks_per_site = switch = float("nan")
    return {
        "completeness": n_matched / len(truth) if len(truth) else float("nan"),
        "purity": purity,
        "switch_fraction": switch,
        "tracks_per_site": tracks_per_site,
        "observation_precision": n_matched / len(tracks) if len(tracks) else float("nan"),
        "n_tracks": n_tracks,
        "n_truth_sites": n_sites,
        "n_truth_rows": int(len(truth)),
        "n_matched": int(n_matched),
    }
