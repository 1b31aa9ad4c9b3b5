"""Edits a person makes to sites and cells: pure functions on feature tables, and an undo history.

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

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..columns.result import EMPTY
from ..materials import Material, parse_material
from ..simulate.defects import CELL_CLASSES

__all__ = [
    "CLASS_KEYS", "SOURCE_HUMAN", "SOURCE_MODEL", "Edit", "EditHistory", "apply_edit", "mark_human",
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


# --- undo / redo -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One step of the history, as the state to apply.

    :meth:`EditHistory.undo` and :meth:`EditHistory.redo` return an ``Edit``
    whose ``after`` (and ``after_data``) is what the layer must show now, and
    whose ``before`` is what it shows before applying it; use
    :func:`apply_edit`.

    Attributes
    ----------
    kind : str
        What was done ("class", "species", "points"...).
    indices : ndarray of int or None
        Rows the edit touched (``before``/``after`` hold those rows, in that
        order); None when ``before``/``after`` are whole tables (points added
        or deleted).
    before, after : DataFrame
        Features before and after.
    before_data, after_data : ndarray or None
        Layer data (rows ``indices`` or whole), for point edits.
    layer : str or None
        Which layer, when one history serves several.
    """

    kind: str
    indices: np.ndarray | None
    before: pd.DataFrame
    after: pd.DataFrame
    before_data: np.ndarray | None = None
    after_data: np.ndarray | None = None
    layer: str | None = None
    serial: int = 0

    def reversed(self) -> Edit:
        """The same edit undone: before and after swapped."""
        return Edit(self.kind, self.indices, self.after, self.before, self.after_data, self.before_data,
                    self.layer, self.serial)

    @property
    def n_rows(self) -> int:
        """Rows held (memory accounting)."""
        return len(self.before) + len(self.after)


def apply_edit(edit: Edit, features: pd.DataFrame, data: np.ndarray | None = None
               ) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Features (and data) with ``edit.after`` applied.

    Parameters
    ----------
    edit : Edit
        From :meth:`EditHistory.undo` or :meth:`EditHistory.redo`.
    features : DataFrame
        The layer's current features.
    data : ndarray, optional
        The layer's current data.

    Returns
    -------
    features, data
        New objects; ``data`` is returned unchanged when the edit holds none.
    """
    if edit.indices is None:
        new_data = data if edit.after_data is None else np.array(edit.after_data, copy=True)
        return edit.after.copy().reset_index(drop=True), new_data
    out = features.copy()
    rows = np.asarray(edit.indices, dtype=np.int64)
    for column in edit.after.columns:
        values = edit.after[column]
        if column not in out:
            out[column] = pd.Series([None] * len(out), index=out.index, dtype=values.dtype
                                    if not isinstance(values.dtype, pd.CategoricalDtype) else object)
        if isinstance(out[column].dtype, pd.CategoricalDtype):
            missing = [v for v in pd.unique(values.dropna()) if v not in out[column].cat.categories]
            if missing:
                out[column] = out[column].cat.add_categories(missing)
        elif out[column].dtype != values.dtype and not isinstance(values.dtype, pd.CategoricalDtype):
            out[column] = out[column].astype(values.dtype)
        if len(rows):
            out.iloc[rows, out.columns.get_loc(column)] = values.to_numpy()
    new_data = data
    if edit.after_data is not None and data is not None:
        new_data = np.array(data, copy=True)
        new_data[rows] = edit.after_data
    return out, new_data


class EditHistory:
    """Undo and redo of feature and point edits (napari has none for Points/Shapes features).

    Parameters
    ----------
    depth : int
        Edits kept (the oldest are forgotten).
    max_rows : int
        Table rows kept over all edits (a bound on memory for huge layers).

    Examples
    --------
    >>> import pandas as pd
    >>> h = EditHistory()
    >>> before = pd.DataFrame({"class": ["perfect"]})
    >>> after = pd.DataFrame({"class": ["V_M"]})
    >>> h.record("class", [0], before, after)
    >>> h.dirty, h.undo().after["class"].tolist(), h.dirty
    (True, ['perfect'], False)
    """

    def __init__(self, depth: int = 100, max_rows: int = 5_000_000) -> None:
        self.depth = int(depth)
        self.max_rows = int(max_rows)
        self._undo: deque[Edit] = deque()
        self._redo: list[Edit] = []
        self._serial = 0
        self._saved = 0

    # state
    @property
    def can_undo(self) -> bool:
        """True when there is an edit to undo."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """True when there is an undone edit to redo."""
        return bool(self._redo)

    @property
    def dirty(self) -> bool:
        """True when the current state differs from the last :meth:`mark_saved` (or the start)."""
        return self._current() != self._saved

    def mark_saved(self) -> None:
        """The current state is saved (``dirty`` becomes False)."""
        self._saved = self._current()

    def clear(self) -> None:
        """Forget every edit (the current state counts as saved)."""
        self._undo.clear()
        self._redo.clear()
        self._saved = 0

    def __len__(self) -> int:
        return len(self._undo)

    def _current(self) -> int:
        return self._undo[-1].serial if self._undo else 0

    # recording
    def record(self, kind: str, indices: Iterable[int] | None, before: pd.DataFrame, after: pd.DataFrame, *,
               layer: str | None = None) -> None:
        """Remember a feature edit of rows ``indices`` (before and after).

        Parameters
        ----------
        kind : str
            What was done ("class", "species"...).
        indices : iterable of int or None
            Rows edited; None when ``before``/``after`` are whole tables.
        before, after : DataFrame
            The rows ``indices`` (in sorted order) before and after the edit,
            or the whole tables (then only those rows are kept).
        layer : str, optional
            Which layer.
        """
        if indices is None:
            self._push(Edit(kind, None, before.copy(), after.copy(), layer=layer))
            return
        rows = np.asarray(sorted({int(i) for i in indices}), dtype=np.int64)
        self._push(Edit(kind, rows, _take(before, rows), _take(after, rows), layer=layer))

    def record_points(self, before_data: np.ndarray, before_features: pd.DataFrame, after_data: np.ndarray,
                      after_features: pd.DataFrame, *, kind: str = "points", layer: str | None = None) -> None:
        """Remember points added, moved or deleted: whole layer states before and after.

        When the number of points did not change (a move), only the rows that
        changed are kept.
        """
        bd, ad = np.asarray(before_data), np.asarray(after_data)
        if bd.shape == ad.shape and before_features.shape == after_features.shape and \
                list(before_features.columns) == list(after_features.columns):
            changed = _changed_rows(bd, ad, before_features, after_features)
            self._push(Edit(kind, changed, before_features.iloc[changed].reset_index(drop=True).copy(),
                            after_features.iloc[changed].reset_index(drop=True).copy(),
                            bd[changed].copy(), ad[changed].copy(), layer=layer))
            return
        self._push(Edit(kind, None, before_features.copy().reset_index(drop=True),
                        after_features.copy().reset_index(drop=True), bd.copy(), ad.copy(), layer=layer))

    def _push(self, edit: Edit) -> None:
        self._serial += 1
        edit = Edit(edit.kind, edit.indices, edit.before, edit.after, edit.before_data, edit.after_data,
                    edit.layer, self._serial)
        self._undo.append(edit)
        self._redo.clear()
        while len(self._undo) > self.depth or (len(self._undo) > 1 and
                                               sum(e.n_rows for e in self._undo) > self.max_rows):
            self._undo.popleft()

    # undo / redo
    def undo(self) -> Edit | None:
        """The last edit, reversed (apply its ``after``); None when there is nothing to undo."""
        if not self._undo:
            return None
        edit = self._undo.pop()
        self._redo.append(edit)
        return edit.reversed()

    def redo(self) -> Edit | None:
        """The last undone edit (apply its ``after``); None when there is nothing to redo."""
        if not self._redo:
            return None
        edit = self._redo.pop()
        self._undo.append(edit)
        return edit


def _take(table: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Rows ``rows`` of a whole table, or a copy of the table when it holds just those rows."""
    if len(table) != len(rows):
        return table.iloc[rows].copy().reset_index(drop=True)
    return table.copy().reset_index(drop=True)


def _changed_rows(bd: np.ndarray, ad: np.ndarray, bf: pd.DataFrame, af: pd.DataFrame) -> np.ndarray:
    n = len(bd)
    changed = np.zeros(n, bool)
    if bd.size:
        b2, a2 = bd.reshape(n, -1), ad.reshape(n, -1)
        changed |= ~((b2 == a2) | (_isnan(b2) & _isnan(a2))).all(axis=1)
    for column in bf.columns:
        b, a = bf[column].reset_index(drop=True), af[column].reset_index(drop=True)
        try:
            equal = (b == a).to_numpy(bool)
        except (TypeError, ValueError):  # e.g. categoricals of different categories
            equal = (b.astype(object) == a.astype(object)).to_numpy(bool)
        same = equal | (b.isna() & a.isna()).to_numpy(bool)
        changed |= ~same
    return np.flatnonzero(changed)


def _isnan(a: np.ndarray) -> np.ndarray:
    return np.isnan(a) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
