"""Radial profiles around each defect class: displacement and metal-metal distance, mean and 95 % interval.

For every instance of a class (a cell of ``cells.csv``), the detected metal sites around its centre give two
quantities against their distance r from it: the radial displacement ``u . r_hat`` from the domain's
reference lattice (:func:`~napari_stem_defects.lattice.strain.measure_strain`; negative: towards the defect)
and the metal-metal distance of every nearest-neighbour metal pair (at its midpoint's r). Each instance's
values are averaged in rings of ``bin_cells`` lattice constants; the profile is the mean over instances with
its 95 % interval (mean +- 1.96 standard errors; a single instance gives no interval).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .strain import _neighbour_lookup, metal_rows

#: Columns of ``defect_profiles.csv``.
PROFILE_COLUMNS = ("class", "quantity", "r_pm", "mean_pm", "ci95_low_pm", "ci95_high_pm", "n_instances")
#: Quantities of a profile.
PROFILE_QUANTITIES = ("radial_displacement", "metal_metal_distance")
#: Where the defect of each class sits: the metal site, the X2 column, between them, or the cell centre.
_X_CLASSES = ("V_X1", "V_X2", "X_M", "sub_X")
_M_CLASSES = ("V_M", "M_X", "dopant_M")


def defect_centres(cells: pd.DataFrame, skip: tuple[str, ...] = ("perfect", "incomplete")) -> dict[str, np.ndarray]:
    """Centre (y, x) px of every cell of each defect class: the metal site for metal defects, the X2 column
    for chalcogen ones, the cell centre otherwise.

    Parameters
    ----------
    cells : DataFrame
        ``cells.csv`` rows (``class``, ``y_px, x_px``, optional ``m_y_px, m_x_px, x_y_px, x_x_px``).
    """
    out: dict[str, np.ndarray] = {}
    if cells is None or len(cells) == 0 or "class" not in cells:
        return out
    for name, group in cells.groupby("class"):
        if name in skip:
            continue
        cols = ["y_px", "x_px"]
        if name in _M_CLASSES and {"m_y_px", "m_x_px"} <= set(group):
            cols = ["m_y_px", "m_x_px"]
        elif name in _X_CLASSES and {"x_y_px", "x_x_px"} <= set(group):
            cols = ["x_y_px", "x_x_px"]
        out[str(name)] = group[cols].to_numpy(float)
    return out


def metal_bonds(sites: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints (y, x) and lengths (px) of the nearest-neighbour metal-metal pairs of detected metals."""
    metal = metal_rows(sites)
    sub = sites[metal]
    yx = sub[["y_px", "x_px"]].to_numpy(float)
    if len(yx) < 2:
        return np.zeros((0, 2)), np.zeros(0)
    ij = sub[["i", "j"]].to_numpy(np.int64)
    dom = sub["domain"].to_numpy(np.int64) if "domain" in sub else np.zeros(len(sub), np.int64)
    offsets = np.array([(1, 0), (0, 1), (1, -1), (1, 1)])
    nb = _neighbour_lookup(ij, dom, offsets)
    length = np.full(nb.shape, np.nan)
    for k in range(len(offsets)):
        hit = nb[:, k] >= 0
        length[hit, k] = np.linalg.norm(yx[nb[hit, k]] - yx[hit], axis=1)
    # of the diagonals (1, -1) and (1, 1) one is a nearest neighbour (60 degree basis) and one is not
    keep = [0, 1, 2 if np.nanmedian(length[:, 2]) < np.nanmedian(length[:, 3]) else 3] \
        if np.isfinite(length[:, 2:]).any() else [0, 1]
    mids, lens = [], []
    for k in keep:
        hit = nb[:, k] >= 0
        mids.append((yx[nb[hit, k]] + yx[hit]) / 2)
        lens.append(length[hit, k])
    return np.concatenate(mids), np.concatenate(lens)


def _ring_means(points: np.ndarray, values: np.ndarray, centres: np.ndarray, edges: np.ndarray,
                tree: cKDTree | None, along: np.ndarray | None = None) -> np.ndarray:
    """(n_centres, n_bins) mean of ``values`` (or of ``along . r_hat`` when given) in each ring; NaN when empty."""
    out = np.full((len(centres), len(edges) - 1), np.nan)
    if tree is None:
        return out
    for c, centre in enumerate(centres):
        idx = np.asarray(tree.query_ball_point(centre, edges[-1]), int)
        if len(idx) == 0:
            continue
        d = points[idx] - centre
        r = np.hypot(d[:, 0], d[:, 1])
        if along is not None:
            v = np.where(r > 1e-9, np.sum(along[idx] * d, axis=1) / np.maximum(r, 1e-9), np.nan)
        else:
            v = values[idx]
        b = np.digitize(r, edges) - 1
        ok = (b >= 0) & (b < len(edges) - 1) & np.isfinite(v)
        sums = np.bincount(b[ok], v[ok], len(edges) - 1)
        counts = np.bincount(b[ok], minlength=len(edges) - 1)
        out[c] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


def _summarise(per_instance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over instances (rows) of every ring, its 95 % interval (1.96 standard errors) and the count."""
    n = np.isfinite(per_instance).sum(axis=0)
    mean = np.full(per_instance.shape[1], np.nan)
    sd = np.full(per_instance.shape[1], np.nan)
    for k in np.flatnonzero(n > 0):
        col = per_instance[np.isfinite(per_instance[:, k]), k]
        mean[k] = col.mean()
        sd[k] = col.std(ddof=1) if len(col) > 1 else np.nan
    half = 1.96 * sd / np.sqrt(np.maximum(n, 1))
    return mean, mean - half, mean + half, n


def defect_profiles(sites: pd.DataFrame, strain: pd.DataFrame, centres: dict[str, np.ndarray], a_px: float,
                    pm_per_px: float | None, r_max_cells: float = 5.0, bin_cells: float = 0.5) -> pd.DataFrame:
    """Radial displacement and metal-metal distance profiles of every defect class.

    Parameters
    ----------
    sites : DataFrame
        Site table (``y_px, x_px, sublattice, i, j``, ``detected``, ``domain``).
    strain : DataFrame
        :attr:`~napari_stem_defects.lattice.strain.StrainResult.table` (``uy_px, ux_px``).
    centres : dict of str to ndarray (k, 2)
        Defect centres per class (:func:`defect_centres`).
    a_px : float
        Lattice constant in pixels (ring width and range).
    pm_per_px : float, optional
        Picometres per pixel; None writes pixels (the columns keep their ``_pm`` names; say so).
    r_max_cells, bin_cells : float
        Range and ring width in lattice constants.

    Returns
    -------
    DataFrame
        :data:`PROFILE_COLUMNS`, one row per class, quantity and ring with at least one instance.
    """
    if a_px <= 0:
        raise ValueError("the lattice constant must be positive")
    scale = 1.0 if pm_per_px is None else float(pm_per_px)
    edges = np.arange(0.0, r_max_cells + 1e-9, bin_cells) * a_px
    centre_r = (edges[:-1] + edges[1:]) / 2
    metal = metal_rows(sites)
    yx = sites.loc[metal, ["y_px", "x_px"]].to_numpy(float)
    disp = strain.loc[sites.index[metal], ["uy_px", "ux_px"]].to_numpy(float)
    disp = disp - np.nanmedian(disp, axis=0) if len(disp) else disp  # the reference origin is arbitrary
    mids, lengths = metal_bonds(sites)
    site_tree = cKDTree(yx) if len(yx) else None
    bond_tree = cKDTree(mids) if len(mids) else None
    rows = []
    for name, where in sorted(centres.items()):
        where = np.asarray(where, float).reshape(-1, 2)
        if len(where) == 0:
            continue
        per = {"radial_displacement": _ring_means(yx, disp, where, edges, site_tree, along=disp),
               "metal_metal_distance": _ring_means(mids, lengths, where, edges, bond_tree)}
        for quantity, values in per.items():
            mean, lo, hi, n = _summarise(values)
            for k in np.flatnonzero(n > 0):
                rows.append((name, quantity, centre_r[k] * scale, mean[k] * scale, lo[k] * scale, hi[k] * scale,
                             int(n[k])))
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


__all__ = ["PROFILE_COLUMNS", "PROFILE_QUANTITIES", "defect_centres", "defect_profiles", "metal_bonds"]
