"""Unit cells from a site table: one cell per metal site with its partner X2 column."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Columns of a cell table (see :func:`cells_from_sites`).
CELL_COLUMNS = (
    "cell_id", "i", "j", "m_site_id", "x_site_id", "y_px", "x_px", "m_y_px", "m_x_px", "x_y_px", "x_x_px",
    "m_species", "x_species", "adatom",
)
#: Columns that say where a cell sits in a real specimen, after every other column of a cell table:
#: its domain, phase ('2H', '1T'), whether it touches another domain, a hole, an amorphous or a masked
#: area (``boundary``), and in a 1T domain the chalcogen column opposite its partner (``x2_site_id``,
#: -1 in 2H, and ``x2_species``).
CELL_STRUCTURE_COLUMNS = ("domain", "phase", "boundary", "x2_site_id", "x2_species")


def cells_from_sites(sites: pd.DataFrame) -> pd.DataFrame:
    """One cell per metal site, paired with the X2 column of the same cell indices (i, j).

    The partner sits in a fixed lattice direction, ``M + (a1 + a2) / 3`` in the
    site table's convention, so every cell has the same shape. A cell whose
    X site falls outside the image keeps ``x_site_id = -1`` and is centred on
    its metal. A column found on the cell's hollow site sets ``adatom``.

    Parameters
    ----------
    sites : DataFrame
        Site table of :func:`napari_stem_defects.columns.detect_columns`
        (site_id, y_px, x_px, sublattice, species, i, j; optional frame).

    Returns
    -------
    DataFrame
        Columns :data:`CELL_COLUMNS` (plus ``frame`` first when the sites have one).

    Examples
    --------
    >>> sites = pd.DataFrame({"site_id": [0, 1, 2], "y_px": [10.0, 12.0, 30.0], "x_px": [10.0, 20.0, 40.0],
    ...                       "sublattice": ["M", "X", "M"], "species": ["Mo", "S2", "empty"],
    ...                       "i": [0, 0, 1], "j": [0, 0, 0]})
    >>> cells_from_sites(sites)[["cell_id", "m_site_id", "x_site_id", "x_species", "y_px"]]
       cell_id  m_site_id  x_site_id x_species  y_px
    0        0          0          1        S2  11.0
    1        1          2         -1            30.0
    """
    sites = with_structure(sites)
    keys = [k for k in ("frame", "domain") if k in sites] + ["i", "j"]
    m = sites[sites["sublattice"] == "M"]
    x = sites[sites["sublattice"] == "X"]
    h = sites[(sites["sublattice"] == "H") & (sites["species"] != "empty")]
    cells = m[keys + ["site_id", "y_px", "x_px", "species", "phase", "boundary"]].rename(
        columns={"site_id": "m_site_id", "y_px": "m_y_px", "x_px": "m_x_px", "species": "m_species"})
    partner, opposite = _partner_and_opposite(m, x, keys)
    cells = cells.merge(partner, on=keys, how="left").merge(opposite, on=keys, how="left")
    for col in ("x_site_id", "x2_site_id"):
        cells[col] = cells[col].fillna(-1).astype(np.int64)
    for col in ("x_species", "x2_species"):
        cells[col] = cells[col].fillna("").astype(object)
    cells["boundary"] = (cells["boundary"].astype(bool) | cells["x_boundary"].fillna(False).astype(bool)
                         | cells["x2_boundary"].fillna(False).astype(bool))
    has_x = cells["x_site_id"] >= 0
    cells["y_px"] = np.where(has_x, (cells["m_y_px"] + cells["x_y_px"]) / 2, cells["m_y_px"])
    cells["x_px"] = np.where(has_x, (cells["m_x_px"] + cells["x_x_px"]) / 2, cells["m_x_px"])
    cells = cells.sort_values(keys).reset_index(drop=True)
    cells["boundary"] = cells["boundary"].to_numpy(bool) | _distorted(cells)
    cells["adatom"] = _has_adatom(cells, h)
    cells.insert(0, "cell_id", np.arange(len(cells)))
    columns = (["frame"] if "frame" in sites else []) + list(CELL_COLUMNS) + list(CELL_STRUCTURE_COLUMNS)
    return cells[columns]


def _distorted(cells: pd.DataFrame, tolerance: float = 0.3) -> np.ndarray:
    """Cells whose metal-to-partner distance is more than ``tolerance`` off the median: strained or
    squeezed at a boundary, so boundary cells."""
    has_x = cells["x_site_id"].to_numpy() >= 0
    out = np.zeros(len(cells), bool)
    if has_x.sum() < 3:
        return out
    step = np.hypot(cells["x_y_px"].to_numpy(float) - cells["m_y_px"].to_numpy(float),
                    cells["x_x_px"].to_numpy(float) - cells["m_x_px"].to_numpy(float))
    typical = float(np.median(step[has_x]))
    out[has_x] = np.abs(step[has_x] / typical - 1.0) > tolerance
    return out


def with_structure(sites: pd.DataFrame) -> pd.DataFrame:
    """The site table with ``domain``, ``phase`` and ``boundary`` (0, '2H', False where missing).

    Site tables from before these columns existed (old annotation files, hand-made tables) are one
    2H domain.
    """
    missing = {"domain": 0, "phase": "2H", "boundary": False}
    missing = {k: v for k, v in missing.items() if k not in sites}
    return sites.assign(**missing) if missing else sites


def _partner_and_opposite(metals: pd.DataFrame, chalcogens: pd.DataFrame, keys: list[str]
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each cell's partner X column and, in 1T, the one opposite it (both carry the cell's keys).

    Of the X columns of one cell, the partner is the one whose direction from the metal is closest
    to +x as displayed (:mod:`napari_stem_defects.cell_convention`).
    """
    from ..cell_convention import screen_angle

    cols = keys + ["site_id", "y_px", "x_px", "species", "boundary"]
    both = chalcogens[cols].merge(metals[keys + ["y_px", "x_px"]].rename(columns={"y_px": "_my", "x_px": "_mx"}),
                                  on=keys, how="left")
    angle = np.abs(screen_angle(np.column_stack([both["y_px"] - both["_my"], both["x_px"] - both["_mx"]])))
    both["_rank"] = np.where(np.isfinite(angle), angle, 0.0)
    both = both.sort_values(keys + ["_rank"])
    first = ~both.duplicated(keys)
    partner = both[first][cols].rename(columns={"site_id": "x_site_id", "y_px": "x_y_px", "x_px": "x_x_px",
                                                "species": "x_species", "boundary": "x_boundary"})
    second = both[~first].drop_duplicates(keys)[keys + ["site_id", "species", "boundary"]].rename(
        columns={"site_id": "x2_site_id", "species": "x2_species", "boundary": "x2_boundary"})
    return partner, second


def _has_adatom(cells: pd.DataFrame, hollow_sites: pd.DataFrame) -> np.ndarray:
    """Whether a column was found on each cell's hollow site, one M-X step beyond its X2 column."""
    from scipy.spatial import cKDTree

    out = np.zeros(len(cells), bool)
    if hollow_sites.empty:
        return out
    has_x = cells["x_site_id"].to_numpy() >= 0
    m = cells[["m_y_px", "m_x_px"]].to_numpy(float)
    x = cells[["x_y_px", "x_x_px"]].to_numpy(float)
    step = np.linalg.norm(x[has_x] - m[has_x], axis=1)
    if not has_x.any():
        return out
    hollow = 2 * x - m
    frames_c = cells["frame"].to_numpy() if "frame" in cells else np.zeros(len(cells), int)
    frames_h = hollow_sites["frame"].to_numpy() if "frame" in hollow_sites else np.zeros(len(hollow_sites), int)
    for f in np.unique(frames_h):
        rows = np.flatnonzero(has_x & (frames_c == f))
        if len(rows) == 0:
            continue
        tree = cKDTree(hollow_sites.loc[frames_h == f, ["y_px", "x_px"]].to_numpy(float))
        dist, _ = tree.query(hollow[rows])
        out[rows] = dist < float(np.median(step)) / 3
    return out


def cell_polygons(cells: pd.DataFrame, a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """Corners (y, x) of each cell's parallelogram, spanned by its lattice vectors around its centre; shape (N, 4, 2).

    The parallelogram has the area of one unit cell and holds the cell's
    metal and X2 column. Cells of a table with domains (grains of other
    orientations, mirror domains) are drawn with their own domain's lattice
    vectors, from the median metal-to-partner step of its complete cells
    (``a1 + a2 = 3 d``, 60 degrees apart), so the cells of two grains do not
    overlap; ``a1`` and ``a2`` serve cells without such a step.
    """
    a1 = np.asarray(a1, float)
    a2 = np.asarray(a2, float)
    centre = cells[["y_px", "x_px"]].to_numpy(float)[:, None, :]
    corners = np.broadcast_to(np.stack([-a1 - a2, a1 - a2, a1 + a2, -a1 + a2]) / 2.0, (len(cells), 4, 2)).copy()
    if "domain" in cells and cells["domain"].nunique() > 1 and {"x_y_px", "m_y_px"} <= set(cells.columns):
        complete = cells["x_site_id"].to_numpy() >= 0
        step = cells[["x_y_px", "x_x_px"]].to_numpy(float) - cells[["m_y_px", "m_x_px"]].to_numpy(float)
        domain = cells["domain"].to_numpy()
        for d in np.unique(domain):
            rows = domain == d
            if not (rows & complete).any():
                continue
            s = np.median(step[rows & complete], axis=0)
            b1, b2 = np.sqrt(3.0) * _turn(s, -30.0), np.sqrt(3.0) * _turn(s, 30.0)
            corners[rows] = np.stack([-b1 - b2, b1 - b2, b1 + b2, -b1 + b2]) / 2.0
    return centre + corners


def _turn(vector: np.ndarray, degrees: float) -> np.ndarray:
    """A (dy, dx) vector turned by ``degrees`` (either sense; used in pairs +-)."""
    t = np.radians(degrees)
    dy, dx = vector
    return np.array([dy * np.cos(t) - dx * np.sin(t), dx * np.cos(t) + dy * np.sin(t)])


def cell_area_A2(a_A: float) -> float:
    """Area of one 2H-MX2 unit cell in Å^2 (``sqrt(3) / 2 * a^2``)."""
    return float(np.sqrt(3.0) / 2.0 * a_A**2)
