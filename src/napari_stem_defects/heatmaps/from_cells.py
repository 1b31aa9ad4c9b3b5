"""Heatmaps drawn from the unit-cell classification: the ``cells`` engine.

The network engines (:mod:`.engines`) map defects from the pixels alone, without columns, and can
disagree with the cells the statistics count (a WSSe alloy at 60 kV: its Se2 pairs scatter like W, and
the attention U-Net flags them as antisites where the cells, fitted on the image's own ladder, are
perfect). This engine draws the maps from the cells themselves, so heatmaps, cells and statistics give
one answer: at each site, the probability of each family is the sum of its cell's class probabilities
(``p_<class>``) whose part on that site falls in the family (``V_X1+V_M`` puts a vacancy on both sites),
painted as a disc of half the metal-to-chalcogen distance (the network engines' target). A column on a
hollow site read as an adatom paints the ``adatom`` family with its species probability. Incomplete
cells (their X2 column outside the image) paint nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..cells.site_labels import site_defects
from ..vocabulary import CELL_CLASSES, INCOMPLETE
from .classes import HEATMAP_CLASSES, SITE_FAMILY
from .engines import HeatmapResult, binary_entropy

#: The engine's name, as ``analyze --heatmaps`` spells it.
ENGINE: str = "cells"
#: Disc radius of a site, in metal-to-chalcogen distances (the networks' training target).
DISC_RADIUS_NN: float = 0.5

_METAL_PART = {"V_M": "V_M", "V_X1+V_M": "V_M", "V_X2+V_M": "V_M", "X_M": "X_M", "dopant_M": "dopant_M"}
_CHALCOGEN_PART = {"V_X1": "V_X1", "V_X2": "V_X2", "V_X1+V_M": "V_X1", "V_X2+V_M": "V_X2", "M_X": "M_X",
                   "sub_X": "sub_X"}


def part_families(part: dict[str, str]) -> np.ndarray:
    """Which heatmap channel each cell class's part on one site falls in: shape (len(CELL_CLASSES), C).

    Examples
    --------
    >>> m = part_families(_METAL_PART)
    >>> m[CELL_CLASSES.index("V_X1+V_M")].astype(int).tolist(), m[CELL_CLASSES.index("V_X1")].any()
    ([1, 1, 0, 0, 0], np.False_)
    """
    out = np.zeros((len(CELL_CLASSES), len(HEATMAP_CLASSES)), dtype=bool)
    for k, cls in enumerate(CELL_CLASSES):
        label = part.get(cls)
        if label is not None:
            out[k, 0] = True
            out[k, HEATMAP_CLASSES.index(SITE_FAMILY[label])] = True
    return out


def site_family_probabilities(sites: pd.DataFrame, cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 2) and family probabilities (N, C) of the sites the cells put a defect part on.

    Parameters
    ----------
    sites : DataFrame
        One frame's site table (``site_id``, ``y_px``, ``x_px``, ``sublattice``, ``species``,
        ``probability``).
    cells : DataFrame
        Its cell table with ``class`` and the ``p_<class>`` columns.

    Returns
    -------
    positions : ndarray, shape (N, 2)
    probabilities : ndarray, shape (N, len(HEATMAP_CLASSES))

    Examples
    --------
    >>> sites = pd.DataFrame({"site_id": [0, 1], "y_px": [5.0, 9.0], "x_px": [5.0, 9.0],
    ...                       "sublattice": ["M", "X"], "species": ["Mo", "S"], "probability": [1.0, 0.9]})
    >>> cells = pd.DataFrame({"m_site_id": [0], "x_site_id": [1], "class": ["V_X1"]})
    >>> for c in CELL_CLASSES:
    ...     cells[f"p_{c}"] = {"V_X1": 0.7, "V_X1+V_M": 0.1, "perfect": 0.2}.get(c, 0.0)
    >>> yx, p = site_family_probabilities(sites, cells)
    >>> yx.tolist(), p.round(2).tolist()
    ([[5.0, 5.0], [9.0, 9.0]], [[0.1, 0.1, 0.0, 0.0, 0.0], [0.8, 0.8, 0.0, 0.0, 0.0]])
    """
    complete = cells[cells["class"].astype(str) != INCOMPLETE]
    probs = complete[[f"p_{c}" for c in CELL_CLASSES]].to_numpy(np.float64)
    by_id = sites.reset_index(drop=True)
    row_of = pd.Series(np.arange(len(by_id)), index=by_id["site_id"].to_numpy())

    def rows(ids: np.ndarray) -> np.ndarray:
        return row_of.reindex(ids).fillna(-1).astype(int).to_numpy()

    out = np.zeros((len(by_id), len(HEATMAP_CLASSES)))
    for column, part in (("m_site_id", _METAL_PART), ("x_site_id", _CHALCOGEN_PART)):
        where = rows(complete[column].to_numpy())
        if column == "x_site_id" and "x2_site_id" in complete and (complete["x2_site_id"] >= 0).any():
            # a 1T cell's chalcogen part sits on the column its labels name: the second one when only it
            # carries the label (site_defects)
            labels = np.asarray(site_defects(by_id, cells), dtype=object)
            second = rows(complete["x2_site_id"].to_numpy())
            move = (second >= 0) & (labels[np.maximum(second, 0)] != "none") & \
                ((where < 0) | (labels[np.maximum(where, 0)] == "none"))
            where = np.where(move, second, where)
        ok = where >= 0
        np.maximum.at(out, where[ok], probs[ok] @ part_families(part))
    adatom = ((by_id["sublattice"].astype(str) == "H") & (by_id["species"].astype(str) == "adatom")).to_numpy()
    for k in (0, HEATMAP_CLASSES.index("adatom")):
        out[adatom, k] = np.maximum(out[adatom, k], by_id.loc[adatom, "probability"].to_numpy(float))
    keep = out[:, 0] > 0
    return by_id.loc[keep, ["y_px", "x_px"]].to_numpy(np.float64), np.clip(out[keep], 0.0, 1.0)


def cell_heatmaps(sites: pd.DataFrame, cells: pd.DataFrame, shape: tuple[int, int], nn_px: float) -> HeatmapResult:
    """The ``cells`` engine's maps of one frame: each site's family probabilities as discs.

    Parameters
    ----------
    sites, cells : DataFrame
        The frame's site and cell tables (:func:`site_family_probabilities`).
    shape : (int, int)
        The frame's shape.
    nn_px : float
        Metal to chalcogen distance in pixels (the discs' radius is half of it).

    Returns
    -------
    HeatmapResult
        ``engine`` 'cells'; where discs overlap, each map keeps the larger probability.

    Examples
    --------
    >>> sites = pd.DataFrame({"site_id": [0, 1], "y_px": [5.0, 9.0], "x_px": [5.0, 9.0],
    ...                       "sublattice": ["M", "X"], "species": ["empty", "S2"], "probability": [1.0, 1.0]})
    >>> cells = pd.DataFrame({"m_site_id": [0], "x_site_id": [1], "class": ["V_M"]})
    >>> for c in CELL_CLASSES:
    ...     cells[f"p_{c}"] = float(c == "V_M")
    >>> r = cell_heatmaps(sites, cells, (16, 16), 4.0)
    >>> float(r.maps[1, 5, 5]), float(r.maps[1, 9, 9]), int((r.maps[1] > 0.5).sum())
    (1.0, 0.0, 13)
    """
    if not (np.isfinite(nn_px) and nn_px > 0):
        raise ValueError(f"the lattice spacing must be a positive number of pixels, got {nn_px!r}")
    h, w = (int(v) for v in shape)
    maps = np.zeros((len(HEATMAP_CLASSES), h, w), dtype=np.float32)
    yx, probs = site_family_probabilities(sites, cells)
    r = DISC_RADIUS_NN * float(nn_px)
    ri = int(np.ceil(r))
    dy, dx = np.mgrid[-ri: ri + 1, -ri: ri + 1]
    for (y, x), p in zip(yx, probs):
        yy, xx = int(round(y)) + dy, int(round(x)) + dx
        inside = ((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        ys, xs = yy[inside], xx[inside]
        maps[:, ys, xs] = np.maximum(maps[:, ys, xs], p.astype(np.float32)[:, None])
    return HeatmapResult(maps, binary_entropy(maps[0]), ENGINE, nn_px=float(nn_px))


__all__ = ["DISC_RADIUS_NN", "ENGINE", "cell_heatmaps", "part_families", "site_family_probabilities"]
