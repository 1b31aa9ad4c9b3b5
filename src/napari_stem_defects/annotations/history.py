"""Undo and redo of a person's edits: a bounded history of before/after states of a layer's features and data.

The edits themselves are the pure functions of :mod:`.edits`; :class:`EditHistory`
records what each one changed and :func:`apply_edit` puts a recorded state back
on a features table (and the layer's data).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd


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


__all__ = ["Edit", "EditHistory", "apply_edit"]
