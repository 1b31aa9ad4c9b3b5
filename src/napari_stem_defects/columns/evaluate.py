"""Scores of a column detection against reference positions (ground truth of twins, or hand-picked)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from .result import EMPTY


def match_points(pred: np.ndarray, ref: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of two point sets within ``max_distance``, minimising total distance.

    Returns
    -------
    pred_index, ref_index : ndarray of int
        Matched pairs.

    Examples
    --------
    >>> match_points(np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([[5.2, 5.0], [9.0, 9.0]]), 1.0)
    (array([1]), array([0]))
    """
    pred = np.asarray(pred, float).reshape(-1, 2)
    ref = np.asarray(ref, float).reshape(-1, 2)
    if len(pred) == 0 or len(ref) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(ref), max_distance, output_type="coo_matrix")
    if pairs.nnz == 0:
        return np.zeros(0, int), np.zeros(0, int)
    rows, cols, dist = pairs.row, pairs.col, pairs.data
    # Unmatched rows/cols through dummy nodes so a full matching always exists.
    n, m = len(pred), len(ref)
    big = 2.0 * max_distance + 1.0
    # Each (row, col) entry must appear once: csr_matrix sums duplicates, which would
    # multiply a reference's "unmatched" cost by its number of candidates.
    r = np.concatenate([rows, np.arange(n), n + np.arange(m), n + cols])
    c = np.concatenate([cols, m + np.arange(n), np.arange(m), m + rows])
    w = np.concatenate([dist + 1e-9, np.full(n, big), np.full(m, big), np.full(len(cols), 1e-9)])
    graph = csr_matrix((w, (r, c)), shape=(n + m, m + n))
    try:
        row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    except ValueError:
        dense = np.full((n, m), big)
        dense[rows, cols] = dist
        row_ind, col_ind = linear_sum_assignment(dense)
    ok = (row_ind < n) & (col_ind < m)
    row_ind, col_ind = row_ind[ok], col_ind[ok]
    d = np.linalg.norm(pred[row_ind] - ref[col_ind], axis=1)
    keep = d <= max_distance
    return row_ind[keep].astype(int), col_ind[keep].astype(int)


@dataclass
class DetectionScores:
    """Column detection scores (see :func:`score_sites`)."""

    precision: float
    recall: float
    f1: float
    rmse_pm: float
    sublattice_accuracy: float
    species_accuracy: float
    empty_recall: float
    n_pred: int
    n_ref: int

    def as_dict(self) -> dict:
        """Plain dict (for tables)."""
        return asdict(self)


def score_sites(pred: pd.DataFrame, ref: pd.DataFrame, nn_px: float, pixel_size: float | None = None) -> DetectionScores:
    """Score predicted sites against reference sites.

    Occupied columns (species not empty) are matched one to one within a
    third of the nearest-neighbour distance; precision, recall and F1 count
    those matches. RMSE is over matched columns (pm when ``pixel_size`` in Å
    is given, else pixels). Sublattice and species accuracy are over all
    reference lattice sites (empty ones included) matched to a predicted
    site; empty recall is the share of empty reference sites predicted empty.

    Parameters
    ----------
    pred : DataFrame
        y_px, x_px, and optionally sublattice and species.
    ref : DataFrame
        y_px, x_px, and optionally sublattice and species ('' or 'empty' for an empty site).
    nn_px : float
        Nearest-neighbour distance in pixels.
    pixel_size : float, optional
        Å per pixel.
    """
    def occupied(df):
        if "species" not in df:
            return np.ones(len(df), bool)
        sp = df["species"].fillna("").astype(str)
        return (sp != "") & (sp != EMPTY)

    max_d = nn_px / 3.0
    p_occ, r_occ = occupied(pred), occupied(ref)
    p_xy = pred.loc[p_occ, ["y_px", "x_px"]].to_numpy(float)
    r_xy = ref.loc[r_occ, ["y_px", "x_px"]].to_numpy(float)
    pi, ri = match_points(p_xy, r_xy, max_d)
    tp = len(pi)
    precision = tp / max(len(p_xy), 1)
    recall = tp / max(len(r_xy), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    err = np.linalg.norm(p_xy[pi] - r_xy[ri], axis=1)
    rmse = float(np.sqrt(np.mean(err**2))) if tp else float("nan")
    if pixel_size is not None:
        rmse *= 100.0 * pixel_size
    sub_acc = spc_acc = empty_rec = float("nan")
    if {"sublattice", "species"} <= set(pred) and {"sublattice", "species"} <= set(ref):
        lat_ref = ref[ref["sublattice"].isin(["M", "X"])]
        lat_pred = pred[pred["sublattice"].isin(["M", "X"])]
        a, b = match_points(lat_pred[["y_px", "x_px"]].to_numpy(float), lat_ref[["y_px", "x_px"]].to_numpy(float), max_d)
        if len(a):
            pa, rb = lat_pred.iloc[a], lat_ref.iloc[b]
            sub_acc = float(np.mean(pa["sublattice"].to_numpy() == rb["sublattice"].to_numpy()))
            ps = pa["species"].replace({EMPTY: ""}).fillna("").to_numpy()
            rs = rb["species"].replace({EMPTY: ""}).fillna("").to_numpy()
            spc_acc = float(np.mean(ps == rs))
            is_empty = rs == ""
            if is_empty.any():
                empty_rec = float(np.mean(ps[is_empty] == ""))
    return DetectionScores(precision, recall, f1, rmse, sub_acc, spc_acc, empty_rec, int(len(p_xy)), int(len(r_xy)))


def inside_border(table: pd.DataFrame, shape: tuple[int, int], margin: float) -> pd.DataFrame:
    """Rows of a position table at least ``margin`` px from every image edge.

    Reference positions picked by hand usually leave out columns cut by the
    border; score both tables on the same interior.
    """
    y, x = table["y_px"].to_numpy(float), table["x_px"].to_numpy(float)
    keep = (y >= margin) & (x >= margin) & (y <= shape[0] - 1 - margin) & (x <= shape[1] - 1 - margin)
    return table[keep]
