"""Editing in the "Correct labels" dock: species of sites, classes of cells, points added, moved or deleted,
the review of uncertain cells, and undo / redo.

:class:`CorrectEdits` is a part of :class:`~napari_stem_defects._widgets.correct_widget.CorrectWidget`
(its layers, dropdowns and messages live there); every edited item becomes ``verified=True``,
``source="human"`` (:mod:`napari_stem_defects.annotations.edits`) and schedules the autosave
(:mod:`._widgets.correct_save`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from ..annotations.edits import (
    mark_human, next_uncertain, set_cell_class, set_site_species, site_species_choices, species_keys, sync_positions,
)
from ..annotations.history import apply_edit
from ..columns.result import EMPTY
from ._correct_styles import restyle_cells, restyle_points
from ._review import NEXT_KEY, PREVIOUS_KEY, focus_on_cell

#: Sublattices in the order their species are offered.
SUBLATTICES = ("M", "X", "H")
#: The species shortcuts, by position in the species list (whatever keys ``species_keys`` gives).
SPECIES_KEYS = tuple(species_keys([str(k) for k in range(9)]).values())
#: What the dock says when a cell action finds no cells layer.
NO_CELLS = "Pick the cells (Shapes) layer first (classify cells to make one)."


class CorrectEdits:
    """Corrections by hand with undo: the editing half of the "Correct labels" dock.

    Uses the dock's ``sites``, ``cells``, ``material``, ``species`` and ``cell_class`` controls,
    its ``history`` (:class:`~napari_stem_defects.annotations.history.EditHistory`), ``_say``,
    ``_show_keys``, ``_show_statistics`` and ``_show_status``, and its autosave ``_timer``.
    """

    _applying: int
    _edits: int
    unsaved: bool
    _before_points: tuple[np.ndarray, pd.DataFrame] | None
    _known: dict[int, int]
    _current_cell: int | None
    _current_confidence: float | None

    # ------------------------------------------------------------------ species
    def _sublattices_of_selection(self) -> list[str]:
        points = self.sites.value
        if points is None or not len(points.selected_data) or "sublattice" not in points.features:
            return []
        rows = sorted(int(i) for i in points.selected_data if int(i) < len(points.features))
        return list(dict.fromkeys(points.features["sublattice"].astype(str).to_numpy()[rows]))

    def _species_choices(self, *_) -> list[str]:
        """Species for the sublattice of the selected points (all sublattices' when mixed or none)."""
        try:
            choices = site_species_choices(self.material.value)
        except (ValueError, KeyError):
            return [EMPTY]
        subs = [s for s in self._sublattices_of_selection() if s in choices] or list(SUBLATTICES)
        return list(dict.fromkeys(s for sub in subs for s in choices.get(sub, [])))

    def _on_point_selection(self, *_) -> None:
        self.species.reset_choices()
        self._show_keys()

    def _species_key(self, k: int) -> None:
        """The k-th species shortcut: the k-th species of the list, for the selected points."""
        choices = list(self.species.choices)
        if k - 1 < len(choices):
            self.set_species(choices[k - 1])

    def set_species(self, species: str | None = None, indices: Sequence[int] | None = None) -> bool:
        """Give the selected sites (or ``indices``) a person's species.

        Parameters
        ----------
        species : str, optional
            The species; the dropdown's by default.
        indices : sequence of int, optional
            Rows of the sites layer; its selection by default.

        Returns
        -------
        bool
            True when sites were changed.
        """
        points = self.sites.value
        species = species if species is not None else self.species.value
        rows = self._rows_to_edit(points, indices, "Pick the sites (Points) layer first.",
                                  "Select sites first (Points layer, select mode).")
        if rows is None or species is None:
            if rows is not None:
                self._say("Select sites first (Points layer, select mode).")
            return False
        features = points.features.reset_index(drop=True)
        if "sublattice" in features:
            allowed = site_species_choices(self.material.value)
            subs = features["sublattice"].astype(str).to_numpy()[rows]
            wrong = [s for s in dict.fromkeys(subs) if species not in allowed.get(s, [species])]
            if wrong:
                self._say(f"'{species}' is not a species of {', '.join(wrong)} sites in {self.material.value}.")
                return False
        after = set_site_species(features, rows, species)
        self._edit(points, "species", "sites", rows, features, after)
        self._say(f"{len(rows)} site(s) set to {species}.")
        return True

    def _rows_to_edit(self, layer, indices: Sequence[int] | None, no_layer: str, no_rows: str) -> list[int] | None:
        """The rows to edit (``indices``, or the layer's selection), or None with the message of what is missing."""
        if layer is None:
            self._say(no_layer)
            return None
        rows = sorted(int(i) for i in (layer.selected_data if indices is None else indices))
        if not rows:
            self._say(no_rows)
            return None
        return rows

    # ------------------------------------------------------------------ classes
    def set_class(self, cls: str | None = None, indices: Sequence[int] | None = None) -> bool:
        """Give the selected cells (or the rows ``indices`` of the cells layer) a person's class ``cls`` (by
        default the dropdown's); True when cells were changed. See :meth:`set_species` for the sites."""
        cells = self.cells.value
        cls = cls if cls is not None else self.cell_class.value
        rows = self._rows_to_edit(cells, indices, NO_CELLS,
                                  "Select cells first (cells layer, select mode), or press Next uncertain.")
        if rows is None:
            return False
        features = cells.features.reset_index(drop=True)
        try:
            after = set_cell_class(features, rows, cls)
        except (ValueError, IndexError) as err:
            self._say(f"Cannot set the class ({err}).")
            return False
        self._edit(cells, "class", "cells", rows, features, after)
        self._say(f"{len(rows)} cell(s) set to {cls}.")
        return True

    def next_uncertain(self, step: int = 1) -> int | None:
        """Select the least confident unverified cell (the next one after the current) and zoom to it.

        Parameters
        ----------
        step : {1, -1}
            1: the next, less uncertain cell; -1: back to the previous one.

        Returns
        -------
        int or None
            Its row in the cells layer; None when every cell is verified.
        """
        cells = self.cells.value
        if cells is None or len(cells.features) == 0:
            self._say(NO_CELLS)
            return None
        features = cells.features
        n = len(features)
        # only the two columns the order needs (no copy of the whole table: 15k cells in a few ms)
        order = pd.DataFrame({
            "confidence": (pd.to_numeric(features["confidence"], errors="coerce").to_numpy(float, copy=True)
                           if "confidence" in features else np.full(n, np.nan)),
            "verified": features["verified"].to_numpy(bool) if "verified" in features else np.zeros(n, bool)})
        selected = [int(i) for i in cells.selected_data]
        current = selected[0] if len(selected) == 1 else self._current_cell
        if current is not None and current >= n:
            current = None
        if current is not None and current == self._current_cell and self._current_confidence is not None:
            # a class set by hand makes the confidence 1: continue from where the model put this cell
            order.loc[current, "confidence"] = self._current_confidence
        row = next_uncertain(order, current, step=step)
        if row is None:
            self._say("Every cell is verified.")
            return None
        self._current_cell = row
        self._current_confidence = float(order.at[row, "confidence"])
        focus_on_cell(self._viewer, cells, row)
        cls = features["class"].iat[row] if "class" in features else "?"
        self._say(f"Cell {row}: {cls} (confidence {self._current_confidence:.2f}). Set its class with its key, or "
                  f"{NEXT_KEY} / {PREVIOUS_KEY} for the next / previous.")
        return row

    def previous_uncertain(self) -> int | None:
        """Go back to the previous uncertain cell (the one reviewed before the current); see :meth:`next_uncertain`."""
        return self.next_uncertain(step=-1)

    # ------------------------------------------------------------------ edits and undo
    @contextmanager
    def _applying_edits(self):
        self._applying += 1
        try:
            yield
        finally:
            self._applying -= 1

    def _set_features(self, layer, features: pd.DataFrame) -> None:
        with self._applying_edits():
            layer.features = features.reset_index(drop=True)
        self._known[id(layer)] = id(layer.features)

    def _edit(self, layer, kind: str, role: str, rows: Sequence[int], before: pd.DataFrame,
              after: pd.DataFrame) -> None:
        """Apply an edit of rows to a layer, remember it for undo, restyle, recount, schedule the autosave."""
        self.history.record(kind, rows, before, after, layer=role)
        self._set_features(layer, after)
        self._after_edit(role, rows)

    def _after_edit(self, role: str, rows: Sequence[int] | None = None) -> None:
        if role == "sites":
            self._restyle_points()
        else:
            self._restyle_cells(rows)
            self._show_statistics()
        self._changed()

    def _changed(self) -> None:
        self._edits += 1
        self.unsaved = True
        self._timer.start()
        self._show_status()

    def undo(self) -> bool:
        """Undo the last edit (species, class, or points added/moved/deleted)."""
        return self._step(self.history.undo(), "Undid")

    def redo(self) -> bool:
        """Redo the last undone edit."""
        return self._step(self.history.redo(), "Redid")

    def _step(self, edit, verb: str) -> bool:
        if edit is None:
            self._say("Nothing to undo." if verb == "Undid" else "Nothing to redo.")
            return False
        layer = self.sites.value if edit.layer == "sites" else self.cells.value
        if layer is None:
            self._say("The layer of that edit is gone.")
            return False
        has_data = edit.after_data is not None
        data = np.asarray(layer.data) if has_data else None
        try:
            features, data = apply_edit(edit, layer.features.reset_index(drop=True), data)
        except (IndexError, ValueError) as err:
            self._say(f"Cannot {'undo' if verb == 'Undid' else 'redo'} that edit ({err}).")
            return False
        with self._applying_edits():
            if has_data and data is not None:
                if len(data) != len(layer.data):
                    layer.selected_data = set()
                layer.data = data
            layer.features = features
        self._known[id(layer)] = id(layer.features)
        self._after_edit(edit.layer or "cells", None if edit.indices is None else list(edit.indices))
        self._say(f"{verb} {edit.kind} edit.")
        return True

    def _on_features(self, event: Any) -> None:
        """Features replaced by someone else (a new detection or classification): the undo history no longer applies."""
        layer = event.source
        if self._applying or self._known.get(id(layer)) == id(layer.features):
            return
        self._known[id(layer)] = id(layer.features)
        self.history.clear()
        self._current_cell = None
        if layer is self.cells.value:
            self._show_statistics()
        # a model's new output is not a correction: it is saved with the next edit or "Save", not autosaved

    def _on_cells_data(self, event: Any) -> None:
        """Cells added or deleted (in the viewer, or by a new classification): the undo history no longer applies."""
        if self._applying or str(getattr(event, "action", "")) not in ("added", "removed"):
            return
        self.history.clear()
        self._current_cell = None
        self._show_statistics()

    def _on_points_data(self, event: Any) -> None:
        """Points added, moved or deleted in the viewer: sync their positions, mark them, remember for undo."""
        if self._applying:
            return
        layer, action = event.source, str(getattr(event, "action", ""))
        if action in ("adding", "removing", "changing"):
            self._before_points = (np.array(layer.data, copy=True), layer.features.reset_index(drop=True).copy())
            return
        before, self._before_points = self._before_points, None
        if before is None or action not in ("added", "removed", "changed"):
            return
        data = np.asarray(layer.data)
        features = layer.features.reset_index(drop=True)
        if len(features) != len(data):
            return
        if action == "added":
            rows = list(range(len(before[0]), len(data)))
            features = self._new_sites(features, rows)
            features = sync_positions(features, data, layer.scale, rows)
        elif action == "changed":
            if len(data) != len(before[0]):
                return
            moved = np.flatnonzero(np.any(np.abs(data - before[0]) > 1e-9, axis=1))
            if not moved.size:
                return
            features = mark_human(sync_positions(features, data, layer.scale, moved), moved)
        self._set_features(layer, features)
        self.history.record_points(before[0], before[1], data, features, kind=f"points {action}", layer="sites")
        self._after_edit("sites")

    def _new_sites(self, features: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
        """Features of points a person added: the dropdown's species, no lattice site, verified, 'human'.

        They get ``site_id`` -1 and cell indices -1 (they belong to no unit cell; an
        added adatom still marks the cell it sits in, by position).
        """
        out = features.copy()
        if not rows:
            return out
        species = self.species.value or EMPTY
        choices = site_species_choices(self.material.value)
        subs = self._sublattices_of_selection()
        sub = next((s for s in subs if species in choices.get(s, [])), None) or next(
            (s for s in SUBLATTICES if species in choices.get(s, [])), "M")
        values = {"sublattice": sub, "species": species, "probability": 1.0, "intensity": np.nan,
                  "detected": species != EMPTY, "refined_by": "human", "site_id": -1, "i": -1, "j": -1}
        for column, value in values.items():
            if column not in out:
                continue
            if isinstance(out[column].dtype, pd.CategoricalDtype) and value not in out[column].cat.categories:
                out[column] = out[column].cat.add_categories([value])
            elif out[column].dtype == bool and not isinstance(value, (bool, np.bool_)):
                out[column] = out[column].astype(object)
            elif out[column].dtype.kind in "iu" and isinstance(value, float):
                out[column] = out[column].astype(float)
            out.iloc[rows, out.columns.get_loc(column)] = value
        return mark_human(out, rows)

    # ------------------------------------------------------------------ styles
    def _restyle_points(self) -> None:
        """Colours, markers and legend of the sites from their features."""
        with self._applying_edits():
            restyle_points(self.sites.value)

    def _restyle_cells(self, rows: Sequence[int] | None = None) -> None:
        """Edge and face colours, edge widths and legend of the cells (of ``rows``, or all)."""
        with self._applying_edits():
            restyle_cells(self.cells.value, rows)
