"""Edits a person makes to sites and cells: pure functions on feature tables (undo/redo: :mod:`.history`).

Every edited item is marked ``verified=True`` and ``source="human"``; items
nobody touched keep ``source="model"``. A person's cell class also sets
``confidence`` to 1; the ``p_<class>`` columns keep the model's probabilities
(its opinion) untouched. Row indices are positions (0 .. N-1), as in a napari
layer's ``selected_data``. Every function returns a new table and leaves its
input as it was.

Examples
--------
>>> import pandas as pd
>>> cells = pd.DataFrame({"class": ["perfect", "V_M"], "confidence": [0.6, 0.9],
...                       "verified": [False, False], "source": ["model", "model"]})
>>> edited = set_cell_class(cells, [0], "V_X1")
>>> edited.loc[0, ["class", "confidence", "verified", "source"]].astype(str).tolist()
['V_X1', '1.0', 'True', 'human']
>>> next_uncertain(cells), next_uncertain(edited)
(0, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..columns.result import EMPTY
from ..materials import Material, parse_material
from ..simulate.defects import CELL_CLASSES

__all__ = [
    "CLASS_KEYS", "SOURCE_HUMAN", "SOURCE_MODEL", "mark_human",
    "next_uncertain", "set_cell_class", "set_site_species", "site_species_choices", "species_keys",
    "sync_positions",
]

#: ``source`` of a label set by a detector or classifier.
SOURCE_MODEL = "model"
#: ``source`` of a label a person set or checked.
SOURCE_HUMAN = "human"

#: napari key binding of each cell class, in :data:`CELL_CLASSES` order (plain digits and most
#: letters are napari's own layer shortcuts, hence Alt).
CLASS_KEYS: dict[str, str] = dict(zip(
    CELL_CLASSES,
    ("Alt-0", "Alt-1", "Alt-2", "Alt-3", "Alt-4", "Alt-5", "Alt-6", "Alt-7", "Alt-8", "Alt-9", "Alt-A"),
    strict=True))

#: Species a person may set on a hollow (adatom) site.
ADATOM = "adatom"


def species_keys(species: Sequence[str]) -> dict[str, str]:
    """Key bindings ``Alt-1`` ... ``Alt-9`` for the first nine species, bound on the sites layer.

    The cells layer binds the same keys to classes (:data:`CLASS_KEYS`); a key acts on
    the layer that is selected. (Shift cannot be added: napari reads Shift-Alt-1 as Alt-!.)

    Examples
    --------
    >>> species_keys(["Mo", "W", "empty"])
    {'Mo': 'Alt-1', 'W': 'Alt-2', 'empty': 'Alt-3'}
    """
    return {str(s): f"Alt-{k + 1}" for k, s in enumerate(list(species)[:9])}


def site_species_choices(material: str | Material) -> dict[str, list[str]]:
    """Species a person may give a site, per sublattice, most usual first.

    Parameters
    ----------
    material : str or Material
        Host material.

    Returns
    -------
    dict
        ``"M"``: host metals, dopants, the X2 antisite label, ``"empty"``;
        ``"X"``: host X2 columns, other two-atom and single-atom columns, the
        metal antisite, ``"empty"``; ``"H"``: ``"empty"``, ``"adatom"``.

    Examples
    --------
    >>> site_species_choices("MoS2")["M"]
    ['Mo', 'W', 'S2', 'empty']
    >>> site_species_choices("MoS2")["X"]
    ['S2', 'SSe', 'Se2', 'S', 'Se', 'Mo', 'empty']
    """
    from ..columns.species import candidates
    from ..materials import METALS

    mat = parse_material(material)
    out: dict[str, list[str]] = {}
    for sub in ("M", "X"):
        cands = [c for c in candidates(mat, sub) if c[0] != EMPTY]
        host = [lab for lab, _, prior in cands if prior > 0]
        metal = [lab for lab, els, _ in cands if els and all(e in METALS for e in els)]
        pairs = [lab for lab, els, _ in cands if len(els) == 2 and lab not in metal]
        singles = [lab for lab, els, _ in cands if len(els) == 1 and lab not in metal]
        if sub == "M":  # host metals, dopants, then the chalcogen antisite
            labels = host + metal + pairs + singles
        else:  # host columns, other full columns, single atoms, then the metal antisite
            labels = host + pairs + singles + metal
        out[sub] = list(dict.fromkeys(labels)) + [EMPTY]
    out["H"] = [EMPTY, ADATOM]
    return out


def _rows(features: pd.DataFrame, indices: Iterable[int] | None) -> np.ndarray:
    """Positional row indices as an int array (all rows when None), checked against the table."""
    n = len(features)
    if indices is None:
        return np.arange(n)
    rows = np.asarray(sorted({int(i) for i in indices}), dtype=np.int64)
    if rows.size and (rows[0] < 0 or rows[-1] >= n):
        raise IndexError(f"row indices {rows.tolist()} outside a table of {n} rows")
    return rows


def _set(df: pd.DataFrame, rows: np.ndarray, column: str, value: Any, default: Any) -> None:
    """Set ``column`` to ``value`` in ``rows`` (in place); a missing column is created with ``default``."""
    if column not in df:
        df[column] = pd.Series([default] * len(df), index=df.index,
                               dtype=object if isinstance(default, str) or default is None else None)
    col = df[column]
    if isinstance(col.dtype, pd.CategoricalDtype) and value not in col.cat.categories:
        df[column] = col.cat.add_categories([value])
    if not len(rows):
        return
    loc = df.columns.get_loc(column)
    if col.dtype == bool and not isinstance(value, (bool, np.bool_)):
        df[column] = col.astype(object)
    elif col.dtype.kind in "iu" and isinstance(value, float):
        df[column] = col.astype(float)
    df.iloc[rows, loc] = value


def mark_human(features: pd.DataFrame, indices: Iterable[int]) -> pd.DataFrame:
    """Mark rows as checked by a person: ``verified=True``, ``source="human"``.

    Parameters
    ----------
    features : DataFrame
        Site or cell features.
    indices : iterable of int
        Row positions.

    Returns
    -------
    DataFrame
        A new table.
    """
    out = features.copy()
    rows = _rows(out, indices)
    _set(out, rows, "verified", True, False)
    _set(out, rows, "source", SOURCE_HUMAN, SOURCE_MODEL)
    return out


def set_cell_class(features: pd.DataFrame, indices: Iterable[int], cls: str) -> pd.DataFrame:
    """A person's class for cells: ``class``, ``confidence=1.0``, ``verified=True``, ``source="human"``.

    The ``p_<class>`` columns (the model's probabilities) are left as they were.

    Parameters
    ----------
    features : DataFrame
        Cell features.
    indices : iterable of int
        Row positions of the cells.
    cls : str
        One of :data:`~napari_stem_defects.simulate.defects.CELL_CLASSES`.

    Returns
    -------
    DataFrame
        A new table.

    Raises
    ------
    ValueError
        ``cls`` is not a cell class.
    """
    if cls not in CELL_CLASSES:
        raise ValueError(f"unknown cell class {cls!r}; choose one of {', '.join(CELL_CLASSES)}")
    out = mark_human(features, indices)
    rows = _rows(out, indices)
    _set(out, rows, "class", str(cls), "perfect")
    _set(out, rows, "confidence", 1.0, np.nan)
    return out


def set_site_species(features: pd.DataFrame, indices: Iterable[int], species: str) -> pd.DataFrame:
    """A person's species for sites: ``species``, ``probability=1.0``, ``verified=True``, ``source="human"``.

    Parameters
    ----------
    features : DataFrame
        Site features.
    indices : iterable of int
        Row positions of the sites.
    species : str
        The species label (see :func:`site_species_choices`).

    Returns
    -------
    DataFrame
        A new table.
    """
    if not str(species):
        raise ValueError("a species label cannot be empty; use 'empty' for a missing column")
    out = mark_human(features, indices)
    rows = _rows(out, indices)
    _set(out, rows, "species", str(species), EMPTY)
    _set(out, rows, "probability", 1.0, np.nan)
    return out


def next_uncertain(features: pd.DataFrame, current: int | None = None, step: int = 1) -> int | None:
    """Row of the least confident cell nobody has verified, or the next one after ``current``.

    Unverified cells are ordered by ``confidence`` (missing confidence first),
    ties by row. Review goes down that list: with ``current`` the cell after
    it is returned (``current`` need not be unverified any more, e.g. just
    corrected); after the last one it starts again from the first.

    Parameters
    ----------
    features : DataFrame
        Cell features (``confidence``, ``verified``; either may be missing).
    current : int, optional
        Row of the cell being looked at.
    step : {1, -1}
        1 for the next (less uncertain) cell, -1 to go back to the previous (more uncertain) one.

    Returns
    -------
    int or None
        A row position; None when every cell is verified.

    Examples
    --------
    >>> table = pd.DataFrame({"confidence": [0.9, 0.2, 0.5, 0.1], "verified": [False, False, False, True]})
    >>> next_uncertain(table), next_uncertain(table, 1), next_uncertain(table, 2, step=-1)
    (1, 2, 1)
    >>> next_uncertain(table, 1, step=-1)  # before the first comes the last
    0
    """
    n = len(features)
    verified = features["verified"].to_numpy(bool) if "verified" in features else np.zeros(n, bool)
    confidence = (pd.to_numeric(features["confidence"], errors="coerce").to_numpy(float) if "confidence" in features
                  else np.full(n, np.nan))
    confidence = np.where(np.isnan(confidence), -np.inf, confidence)
    rows = np.flatnonzero(~verified)
    if not rows.size:
        return None
    order = rows[np.lexsort((rows, confidence[rows]))]
    if current is None:
        return int(order[0] if step > 0 else order[-1])
    cur = int(current)
    key_conf, key_row = (confidence[cur], cur) if 0 <= cur < n else (-np.inf, -1)
    conf, ranked = confidence[order], order
    after = (conf > key_conf) | ((conf == key_conf) & (ranked > key_row))
    if step > 0:
        later = np.flatnonzero(after)
        return int(order[later[0]] if later.size else order[0])
    before = np.flatnonzero(~after & ~((conf == key_conf) & (ranked == key_row)))
    return int(order[before[-1]] if before.size else order[-1])


def sync_positions(features: pd.DataFrame, data: np.ndarray, scale: Sequence[float],
                   indices: Iterable[int] | None = None) -> pd.DataFrame:
    """Positions of points from the layer data: ``y_px``, ``x_px``, physical ``y``, ``x`` (and ``frame``).

    Parameters
    ----------
    features : DataFrame
        Site features, one row per point.
    data : ndarray, shape (N, 2) or (N, 3)
        The Points layer data in pixels ((frame,) y, x).
    scale : sequence of float
        The layer scale; its last two values turn pixels into ``y`` and ``x``.
    indices : iterable of int, optional
        Rows to update (all by default).

    Returns
    -------
    DataFrame
        A new table; a ``frame`` column, if present, follows a 3D point's first coordinate.

    Raises
    ------
    ValueError
        Data and features differ in length.
    """
    pts = np.asarray(data, dtype=float)
    pts = pts.reshape(len(pts), -1) if pts.size else np.zeros((len(features), 2))
    if len(pts) != len(features):
        raise ValueError(f"{len(pts)} points but {len(features)} feature rows")
    out = features.copy()
    rows = _rows(out, indices)
    if not rows.size:
        return out
    sy, sx = (float(s) for s in tuple(scale)[-2:])
    values = {"y_px": pts[rows, -2], "x_px": pts[rows, -1], "y": pts[rows, -2] * sy, "x": pts[rows, -1] * sx}
    for column, vals in values.items():
        if column not in out:
            out[column] = np.full(len(out), np.nan)
        elif out[column].dtype.kind != "f":
            out[column] = out[column].astype(float)
        out.iloc[rows, out.columns.get_loc(column)] = vals
    if pts.shape[1] == 3 and "frame" in out:
        frames = np.round(pts[rows, 0]).astype(np.int64)
        if out["frame"].dtype.kind not in "iu":
            out["frame"] = out["frame"].astype(np.int64)
        out.iloc[rows, out.columns.get_loc("frame")] = frames
    return out
