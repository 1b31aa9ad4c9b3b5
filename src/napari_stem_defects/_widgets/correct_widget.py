"""Dock widget "Correct labels": fix the sites' species and the cells' classes, save them, export them.

The model's layers are a first draft: the sites Points layer of "Detect atom
columns" and the cells Shapes layer of "Classify unit cells". Here a person sets
the species of the selected points and the class of the selected cells (dropdowns,
or one key per class / species, shown in the dock), adds, moves and deletes
points in the viewer, undoes and redoes (Ctrl-Z, Ctrl-Shift-Z), and reviews the
least confident cells first ("Next uncertain", Alt-N; "Previous", Alt-P: the view zooms to a
few cells around it, :mod:`._review`). Every edited item becomes
``verified=True``, ``source="human"`` (:mod:`napari_stem_defects.annotations.edits`).

"Save annotations" writes the layers next to the image file
(:func:`~napari_stem_defects.annotations.store.sidecar_path`, atomically); an
image without a file is first written as ``<name>.npy`` where the person says.
Every edit is autosaved after a short pause (to the same file, or to the
``autosave`` folder beside the user models folder), and when the layers are
removed or the viewer closes, so no correction is lost; an earlier annotation
file that could not be read is kept aside, never overwritten, and the dock says
where. "Export training set" writes the verified cells as a dataset for "Train
a model".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, Container, ProgressBar, PushButton
from qtpy.QtCore import QEvent, QObject, QTimer

from ..annotations.edits import (
    CLASS_KEYS, mark_human, next_uncertain, set_cell_class,
    set_site_species, site_species_choices, species_keys, sync_positions,
)
from ..annotations.history import EditHistory, apply_edit
from ..annotations.store import AnnotationFileError, load_annotations, sidecar_path
from ..annotations.training_set_export import safe_name
from ..cells.shapes_layer import low_confidence_mask
from ..cells.statistics import defect_statistics
from ..columns.result import EMPTY
from ..layer_calibration import calibration_note
from ..simulate.defects import CELL_CLASSES
from ._dock import Section, StemDock, adopt_material, is_grey_image, layer_choice, material_choice, pixel_size, row
from ._dock import text_label as _text
from ._jobs import JobRunner
from ._correct_styles import restyle_cells, restyle_points
from ._review import NEXT_KEY, PREVIOUS_KEY, REDO_KEY, UNDO_KEY, focus_on_cell, shortcut_table
from ._snapshot_writer import SnapshotWriter
from .cells_widget import column_layers, statistics_html

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)
#: Errors that mean "this cannot be saved / exported / read", shown as a message in the dock.
EXPECTED_ERRORS = (ValueError, AnnotationFileError, FileNotFoundError, KeyError, IndexError, OSError)
#: Pause after the last edit before the autosave, in milliseconds.
AUTOSAVE_MS = 2000
#: Keys of the other actions (napari key names): NEXT_KEY, PREVIOUS_KEY, UNDO_KEY, REDO_KEY from ``_review``.
#: Sublattices in the order their species are offered.
_SUBLATTICES = ("M", "X", "H")
#: The species shortcuts, by position in the species list (whatever keys ``species_keys`` gives).
_SPECIES_KEYS = tuple(species_keys([str(k) for k in range(9)]).values())


def ask_save_path(parent: Any, default: str) -> str:
    """Ask where to write an image that has no file, as ``.npy`` ("" when cancelled); tests replace this."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, "Save the image and its annotations as", default,
                                          "NumPy image (*.npy)")
    return str(path or "")


def ask_directory(parent: Any, default: str) -> str:
    """Ask for the training-set folder ("" when cancelled); tests replace this function."""
    from qtpy.QtWidgets import QFileDialog

    return str(QFileDialog.getExistingDirectory(parent, "Export the training set into", default) or "")


def ask_annotation_files(parent: Any, default: str) -> list[str]:
    """Ask for other annotation files to export with this image ([] when cancelled); tests replace this."""
    from qtpy.QtWidgets import QFileDialog

    paths, _ = QFileDialog.getOpenFileNames(parent, "Other annotated images to export", default,
                                            "Annotations (*.annotations.json)")
    return [str(p) for p in paths or ()]


class _WindowCloseFilter(QObject):
    """Calls ``callback`` when the watched window is about to close (owned by the dock, gone with it)."""

    def __init__(self, owner: Any, window: Any, callback: Callable[[], None]) -> None:
        super().__init__(owner)
        self._callback = callback
        window.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close:
            try:
                self._callback()
            except Exception:  # closing must never fail
                log.exception("saving the annotations on close failed")
        return False


class CorrectWidget(StemDock):
    """Correct sites and cells by hand, with undo, review by uncertainty, saving and export.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image, sites (Points) and cells (Shapes) layers are offered.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        # napari hands plugin docks a proxy that makes a new wrapper per access; this dock follows layers by
        # identity (the layers' own events carry the real objects) and redraws edited cells through the shape
        # list, so it works on the viewer itself
        viewer = getattr(viewer, "__wrapped__", viewer)
        super().__init__(viewer)
        self.history = EditHistory()
        self.unsaved = False
        self.saved_to: Path | None = None
        self._kept: list[str] = []  # messages of earlier annotation files kept aside by the last save
        self.writer = SnapshotWriter()
        self._edits = 0  # corrections made so far: a snapshot is "saved" only if none came after it
        self._files: dict[str, Path] = {}  # image layer id -> the .npy written for an image without a file
        self._applying = 0
        self._before_points: tuple[np.ndarray, pd.DataFrame] | None = None
        self._known: dict[int, int] = {}  # id(layer) -> id(layer.features) as this widget last set them
        self._watched_sites = self._watched_cells = None
        self._current_cell: int | None = None
        self._current_confidence: float | None = None

        self.image = layer_choice(viewer, is_grey_image, tooltip="the image being corrected (its file is where the "
                                  "annotations are saved)")
        self.sites = layer_choice(viewer, _is_points, label="sites", nullable=True,
                                  tooltip="the atom columns to correct (Points layer; default '<image> columns')")
        self.cells = layer_choice(viewer, _is_shapes, label="cells", nullable=True,
                                  tooltip="the unit cells to correct (Shapes layer; default '<image> cells')")
        self.material = material_choice()
        self.species = ComboBox(label="species", choices=self._species_choices,
                                tooltip="species for the selected sites (the list fits their sublattice); also "
                                        "the species of points you add")
        self.set_species_button = PushButton(text="Set", tooltip="give the selected sites the species on the left "
                                             "(or press its key, see Keys)")
        self.cell_class = ComboBox(label="class", choices=list(CELL_CLASSES), value="perfect",
                                   tooltip="class for the selected cells")
        self.set_class_button = PushButton(text="Set", tooltip="give the selected cells the class on the left (or "
                                           "press its key, see Keys)")
        self.previous_button = PushButton(text=f"\u25c0 Previous ({PREVIOUS_KEY})",
                                          tooltip="go back to the previous uncertain cell: select it and zoom to it")
        self.next_button = PushButton(text=f"Next uncertain ({NEXT_KEY}) \u25b6",
                                      tooltip="select the next least confident cell nobody has verified and zoom to "
                                              "a few cells around it")
        self.undo_button = PushButton(text="Undo (Ctrl-Z)", tooltip="undo the last correction (species, class, "
                                      "points added, moved or deleted)")
        self.redo_button = PushButton(text="Redo (Ctrl-Shift-Z)", tooltip="redo the last undone correction")
        self.keys = _text(tooltip="the keys of the active layer (select the cells or the sites layer)")
        self.statistics = _text(tooltip="counts and concentrations of the cells as corrected, and which "
                                        "calibration they used")
        self.save_button = PushButton(text="Save annotations",
                                      tooltip="write the corrections beside the image file (<image>.annotations.json); "
                                              "they are also autosaved a moment after each edit")
        self.export_others = CheckBox(text="export other annotated images too", value=False,
                                      tooltip="also pick other .annotations.json files to put in the training set")
        self.export_all = CheckBox(text="export unverified cells too", value=False,
                                   tooltip="by default only the cells a person verified become training labels")
        self.export_button = PushButton(text="Export training set...",
                                        tooltip="write the verified cells as a training set folder for 'Train a "
                                                "model'")
        self.progress = ProgressBar(label="export", min=0, max=100, value=0, tooltip="how much of the export is done")
        self.status = _text(tooltip="whether the corrections are written, and where")
        self.result = _text(tooltip="the last action's outcome")
        layers = Container(labels=True, widgets=[self.image, self.sites, self.cells, self.material])
        self.species.label = self.cell_class.label = ""  # the rows carry the labels
        correct = Container(labels=True, widgets=[row(self.species, self.set_species_button, label="species"),
                                                  row(self.cell_class, self.set_class_button, label="class")])
        self.extend([
            Section("Layers", [layers], expanded=True, labels=False, tooltip="what is being corrected"),
            Section("Correct", [correct, row(self.previous_button, self.next_button),
                                row(self.undo_button, self.redo_button), self.result], expanded=True, labels=False,
                    tooltip="set species and classes, review the uncertain cells, undo"),
            Section("Keys", [self.keys], expanded=True, labels=False, tooltip="the keys of the active layer"),
            Section("Statistics", [self.statistics], expanded=False, labels=False,
                    tooltip="counts and concentrations of the corrected cells"),
            Section("Save and export", [self.save_button, self.status, self.export_others, self.export_all,
                                        self.export_button, self.progress], expanded=True, labels=False,
                    tooltip="save the corrections; export them as training data"),
        ])
        self.finish()
        self.exporter = JobRunner(self.native, self.export_button, None, self.progress, self._say)
        self._timer = QTimer(self.native, singleShot=True, interval=AUTOSAVE_MS)
        self._timer.timeout.connect(lambda: self.autosave(blocking=False))

        self.set_species_button.changed.connect(lambda *_: self.set_species())
        self.set_class_button.changed.connect(lambda *_: self.set_class())
        self.next_button.changed.connect(lambda *_: self.next_uncertain())
        self.previous_button.changed.connect(lambda *_: self.previous_uncertain())
        self.undo_button.changed.connect(lambda *_: self.undo())
        self.redo_button.changed.connect(lambda *_: self.redo())
        self.save_button.changed.connect(lambda *_: self.save())
        self.export_button.changed.connect(lambda *_: self.export_training_set())
        self.image.changed.connect(self._on_image)
        self.sites.changed.connect(self._on_sites)
        self.cells.changed.connect(self._on_cells)
        self.material.changed.connect(self._on_material)
        self.species.changed.connect(self._show_keys)
        viewer.layers.events.removing.connect(self._on_removing)
        viewer.layers.events.inserted.connect(self._auto_pick)
        viewer.layers.selection.events.active.connect(self._show_keys)
        window = getattr(getattr(viewer, "window", None), "_qt_window", None)
        self._close_filter = None if window is None else _WindowCloseFilter(self.native, window, self.flush)
        for combo in (self.image, self.sites, self.cells):
            combo.reset_choices()
        self._on_image()
        self._show_status()

    # ------------------------------------------------------------------ layers
    def _auto_pick(self, *_) -> None:
        """Pick ``<image> columns`` and ``<image> cells`` when they exist and nothing else is picked."""
        image = self.image.value
        if image is None:
            return
        found = {"columns": column_layers(self._viewer, image),
                 "cells": [x for x in self._viewer.layers if x.name == f"{image.name} cells"]}
        for combo, suffix in ((self.sites, "columns"), (self.cells, "cells")):
            current = combo.value
            if found[suffix] and (current is None or current not in found[suffix]):
                layer = found[suffix][0]
                if layer in combo.choices and (current is None or not current.name.startswith(image.name)):
                    combo.value = layer

    def _on_image(self, *_) -> None:
        self._auto_pick()
        self._adopt_material()
        self._show_status()

    def _adopt_material(self) -> None:
        """Take the material from the cells, the sites or the image, whichever names one first."""
        for layer in (self.cells.value, self.sites.value, self.image.value):
            if layer is None:
                continue
            meta = layer.metadata
            if adopt_material(self.material, meta.get("material") or meta.get("parameters", {}).get("material")):
                return

    def _on_sites(self, *_) -> None:
        layer = self.sites.value
        old = self._watched_sites
        if old is layer:
            return
        if old is not None:
            self._disconnect(old, self._on_points_data, self._on_features)
            try:
                old.selected_data.events.items_changed.disconnect(self._on_point_selection)
            except (RuntimeError, ValueError, TypeError):
                pass
            self._unbind(old, [*_SPECIES_KEYS, UNDO_KEY, REDO_KEY])
        self._watched_sites = layer
        self.history.clear()
        if layer is not None:
            layer.events.data.connect(self._on_points_data)
            layer.events.features.connect(self._on_features)
            layer.selected_data.events.items_changed.connect(self._on_point_selection)
            self._known[id(layer)] = id(layer.features)
            for k, key in enumerate(_SPECIES_KEYS, start=1):
                layer.bind_key(key, lambda _layer, k=k: self._species_key(k), overwrite=True)
            self._bind_undo(layer)
        self._adopt_material()
        self.species.reset_choices()
        self._show_keys()

    def _on_cells(self, *_) -> None:
        layer = self.cells.value
        old = self._watched_cells
        if old is layer:
            return
        if old is not None:
            self._disconnect(old, self._on_cells_data, self._on_features)
            self._unbind(old, [*CLASS_KEYS.values(), NEXT_KEY, PREVIOUS_KEY, UNDO_KEY, REDO_KEY])
        self._watched_cells = layer
        self.history.clear()
        self._current_cell = None
        if layer is not None:
            layer.events.data.connect(self._on_cells_data)
            layer.events.features.connect(self._on_features)
            self._known[id(layer)] = id(layer.features)
            for cls, key in CLASS_KEYS.items():
                layer.bind_key(key, lambda _layer, cls=cls: self.set_class(cls), overwrite=True)
            layer.bind_key(NEXT_KEY, lambda _layer: self.next_uncertain(), overwrite=True)
            layer.bind_key(PREVIOUS_KEY, lambda _layer: self.previous_uncertain(), overwrite=True)
            self._bind_undo(layer)
        self._adopt_material()
        self._show_statistics()
        self._show_keys()

    def _bind_undo(self, layer) -> None:
        layer.bind_key(UNDO_KEY, lambda _layer: self.undo(), overwrite=True)
        layer.bind_key(REDO_KEY, lambda _layer: self.redo(), overwrite=True)

    @staticmethod
    def _unbind(layer, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                layer.bind_key(key, None, overwrite=True)
            except (KeyError, ValueError, TypeError):
                pass

    @staticmethod
    def _disconnect(layer, on_data, on_features) -> None:
        for event, callback in ((layer.events.data, on_data), (layer.events.features, on_features)):
            try:
                event.disconnect(callback)
            except (RuntimeError, ValueError, TypeError):
                pass

    def _on_material(self, *_) -> None:
        self.species.reset_choices()
        self._show_statistics()
        self._show_keys()

    def _on_removing(self, event: Any) -> None:
        """Save now when a layer with unsaved corrections (or its image) is about to go."""
        try:
            layer = self._viewer.layers[event.index]
        except (IndexError, AttributeError, TypeError):
            return
        if self.unsaved and layer in (self.image.value, self.sites.value, self.cells.value):
            self.flush()

    # ------------------------------------------------------------------ messages
    def _say(self, message: str) -> None:
        self.say(message)

    def _show_status(self) -> None:
        """Where the annotations go, and whether the last corrections are written."""
        target = self._target(autosave=True)
        where = "nowhere yet" if target is None else str(target)
        state = "unsaved corrections (autosave in a moment)" if self.unsaved else "all corrections written"
        mark = "\u25cf " if self.unsaved else ""
        self.status.value = f"{mark}{state}; annotations file: {where}"

    def _show_keys(self, *_) -> None:
        """The shortcut table of the active layer: classes on the cells layer, species on the sites layer."""
        active = self._viewer.layers.selection.active
        role = ("cells" if active is not None and active is self.cells.value
                else "sites" if active is not None and active is self.sites.value else None)
        species = list(self.species.choices)
        self.keys.value = shortcut_table(role, CLASS_KEYS, species, species_keys(species))

    def _show_statistics(self) -> None:
        """Counts and concentrations of the cells as they are now (recomputed after every edit)."""
        cells = self.cells.value
        if cells is None or len(cells.features) == 0 or "class" not in cells.features:
            self.statistics.value = ""
            return
        features = cells.features
        try:
            stats = defect_statistics(features, self.material.value, pixel_size(self.image.value)
                                      if self.image.value is not None else None)
        except (ValueError, KeyError) as err:
            self.statistics.value = f"No statistics ({err})."
            return
        n = len(features)
        verified = int(features["verified"].astype(bool).sum()) if "verified" in features else 0
        threshold = float(cells.metadata.get("low_confidence", {}).get("threshold", 0.8))
        n_low = int(low_confidence_mask(features, threshold).sum())
        self.statistics.value = (f"{verified} of {n} cells verified by a person; {n_low} uncertain left "
                                 f"(confidence &lt; {threshold:.2f}).<br>"
                                 f"{statistics_html(stats, calibration_note(self.image.value))}")

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
        subs = [s for s in self._sublattices_of_selection() if s in choices] or list(_SUBLATTICES)
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
        if points is None:
            self._say("Pick the sites (Points) layer first.")
            return False
        species = species if species is not None else self.species.value
        rows = sorted(int(i) for i in (points.selected_data if indices is None else indices))
        if not rows or species is None:
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

    # ------------------------------------------------------------------ classes
    def set_class(self, cls: str | None = None, indices: Sequence[int] | None = None) -> bool:
        """Give the selected cells (or ``indices``) a person's class.

        Parameters
        ----------
        cls : str, optional
            The class; the dropdown's by default.
        indices : sequence of int, optional
            Rows of the cells layer; its selection by default.

        Returns
        -------
        bool
            True when cells were changed.
        """
        cells = self.cells.value
        if cells is None:
            self._say("Pick the cells (Shapes) layer first (classify cells to make one).")
            return False
        cls = cls if cls is not None else self.cell_class.value
        rows = sorted(int(i) for i in (cells.selected_data if indices is None else indices))
        if not rows:
            self._say("Select cells first (cells layer, select mode), or press Next uncertain.")
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
            self._say("Pick the cells (Shapes) layer first (classify cells to make one).")
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
            (s for s in _SUBLATTICES if species in choices.get(s, [])), "M")
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

    # ------------------------------------------------------------------ saving
    def _image_file(self, image) -> Path | None:
        """The image's file: where it was read from, or the .npy written for it here."""
        from ..annotations.layers import image_path_of

        if image is None:
            return None
        path = image_path_of(image)
        return Path(path) if path is not None else self._files.get(image.unique_id)

    def _target(self, autosave: bool = False) -> Path | None:
        """The annotation file: beside the image file, or (autosave only) in the autosave folder."""
        image = self.image.value
        if image is None:
            return None
        try:
            file = self._image_file(image)
        except (ImportError, AttributeError):
            file = None
        if file is not None:
            return sidecar_path(file)
        if not autosave:
            return None
        return sidecar_path(_autosave_folder() / f"{safe_name(image.name, max_length=None)}.npy")

    def _annotations(self, image_file: Path | None):
        from ..annotations.layers import annotations_from_layers

        return annotations_from_layers(self.image.value, self.sites.value, self.cells.value,
                                       material=self.material.value, image_file=image_file)

    def save(self, image_file: str | Path | None = None) -> Path | None:
        """Write the annotations beside the image file (atomically).

        Parameters
        ----------
        image_file : str or Path, optional
            Only for an image without a file (sample data, a computed image): the
            ``.npy`` file to write the image to first (asked with a dialog when not
            given). The annotations go beside it.

        Returns
        -------
        Path or None
            The annotation file written, None when nothing was written (the reason is shown).
        """
        from ..io.atomic import atomic_save_npy

        image = self.image.value
        if image is None:
            self._say("Open or select an image first.")
            return None
        if self.sites.value is None and self.cells.value is None:
            self._say("Nothing to save: detect columns or classify cells first.")
            return None
        file = self._image_file(image)
        if file is None:
            if image_file is None:
                image_file = ask_save_path(self.native, str(Path.home() / f"{safe_name(image.name, max_length=None)}.npy"))
            if not image_file:
                return None
            file = Path(image_file)
            if file.suffix.lower() != ".npy":
                file = file.with_name(file.name + ".npy")
            try:
                atomic_save_npy(file, np.asarray(image.data))
            except OSError as err:
                self._say(f"Cannot write the image to {file} ({err}).")
                return None
            self._files[image.unique_id] = file
        target = self._write(sidecar_path(file), file)
        if target is not None:
            self._say(" ".join([f"Annotations saved to {target}.", *self._kept]))
        return target

    def _write(self, target: Path, image_file: Path | None, blocking: bool = True) -> Path | Any | None:
        """Snapshot the layers here and write them to ``target``: now, or in the background.

        Returns
        -------
        Path, worker or None
            ``target`` once written (blocking), the started worker, or None on failure (shown).
        """
        def failed(err: Exception) -> None:
            self._say(f"Cannot save the annotations to {target} ({err}).")

        try:
            ann = self._annotations(image_file)
        except EXPECTED_ERRORS as err:
            return failed(err)
        number, edits = self.writer.take(), self._edits
        if not blocking:
            return self.writer.start(ann, target, number, lambda _: self._written(target, edits), failed)
        try:
            self.writer.store(ann, target, number)
        except EXPECTED_ERRORS as err:
            return failed(err)
        return self._written(target, edits)

    def _written(self, target: Path, edits: int) -> Path:
        """A snapshot taken after ``edits`` corrections is on disk: saved, unless more came since."""
        self._kept = self.writer.take_notes()
        if self._kept:  # an earlier file that could not be read was kept aside: say where, where it stays seen
            from napari.utils.notifications import show_warning

            self._say(" ".join(self._kept))
            show_warning(" ".join(self._kept))
        self.saved_to = target
        if edits == self._edits:
            self.unsaved = False
            self.history.mark_saved()
            self._timer.stop()
        self._show_status()
        return target

    def autosave(self, blocking: bool = True) -> Path | Any | None:
        """Write the corrections now, to the image's annotation file or the autosave folder.

        An image without a file is written once as ``<name>.npy`` in the autosave
        folder, so opening that file with the plugin restores the corrections.

        Parameters
        ----------
        blocking : bool
            Write on the calling thread and return the file (closing, scripts,
            tests). Otherwise (the autosave timer) only the snapshot of the
            layers is taken here and the writing runs in a background worker,
            which is returned; corrections made meanwhile stay "unsaved" and go
            with the next autosave.
        """
        self._timer.stop()
        image = self.image.value
        if not self.unsaved or image is None or (self.sites.value is None and self.cells.value is None):
            return None
        if not blocking and self.writer.busy:  # one background write at a time: try again after the pause
            self._timer.start()
            return self.writer.worker
        try:
            file = self._image_file(image)
        except (ImportError, AttributeError):
            file = None
        if file is None:
            from ..io.atomic import atomic_save_npy

            file = _autosave_folder() / f"{safe_name(image.name, max_length=None)}.npy"
            try:
                atomic_save_npy(file, np.asarray(image.data))
            except OSError as err:
                self._say(f"Cannot autosave to {file.parent} ({err}).")
                return None
            self._files[image.unique_id] = file
        target = self._write(sidecar_path(file), file, blocking)
        if isinstance(target, Path):
            self._viewer.status = f"Corrections autosaved to {target}."
        return target

    def flush(self) -> None:
        """Autosave now if corrections are waiting (closing the viewer, removing the layers)."""
        if self.unsaved:
            self.autosave()

    # ------------------------------------------------------------------ training set
    def export_training_set(self, out_dir: str | Path | None = None, others: Sequence[str | Path] | None = None,
                            *, blocking: bool = False) -> Path | Any | None:
        """Export the verified cells of this image (and of other annotation files) as a training set.

        Parameters
        ----------
        out_dir : str or Path, optional
            Dataset folder (new, empty, or a training set to replace); asked with a dialog when not given.
        others : sequence of str or Path, optional
            Annotation files of other images to export too; asked with a dialog when not
            given and "export other annotated images too" is ticked.
        blocking : bool
            Work on the calling thread and return the manifest path; otherwise start a worker.

        Returns
        -------
        Path, worker or None
            The manifest (blocking), the started worker, or None when nothing was exported.
        """
        if self.exporter.busy:
            return self.exporter.worker
        image = self.image.value
        if image is None or self.cells.value is None:
            self._say("Classify cells (and verify some) before exporting a training set.")
            return None
        if out_dir is None:
            out_dir = ask_directory(self.native, str(Path.home()))
        if not out_dir:
            return None
        if others is None:
            others = ask_annotation_files(self.native, str(Path.home())) if self.export_others.value else []
        try:
            sources = [(np.asarray(image.data), self._annotations(self._image_file(image)))]
            sources += [_annotated_image(path) for path in others]
        except EXPECTED_ERRORS as err:
            self._say(f"Cannot export ({err}).")
            return None
        job = {"sources": sources, "out": Path(out_dir), "verified_only": not self.export_all.value}
        self._say(f"Exporting {len(sources)} image(s) to {out_dir}...")
        return self.exporter.start(_export_work, job, self._export_done, blocking=blocking, what="The export")

    def _export_done(self, job: dict[str, Any], result: Any) -> Path | None:
        if isinstance(result, str):
            self._say(result)
            return None
        self._say(f"Training set written to {Path(result).parent} ({len(job['sources'])} image(s)); "
                  "train with the 'Train a model' dock.")
        return Path(result)


def _export_work(job: dict[str, Any], report: Callable[[float], None]) -> Generator[float, None, Any]:
    """Write the training set; returns the manifest path or a message."""
    from ..annotations.training_set_export import export_training_set

    yield 0.0
    try:
        manifest = export_training_set(job["sources"], job["out"], verified_only=job["verified_only"],
                                       progress=lambda done, n: report(done / max(n, 1)))
    except EXPECTED_ERRORS as err:
        return f"Cannot export the training set ({err})."
    except Exception as err:  # a bug, not bad input: log it, never a traceback dialog
        log.exception("training set export failed")
        return f"The export failed unexpectedly ({type(err).__name__}: {err}); details in the log."
    yield 1.0
    return manifest


def _annotated_image(path: str | Path) -> tuple[np.ndarray, Any]:
    """An annotation file and the image it refers to (read with the plugin's reader).

    Raises
    ------
    FileNotFoundError
        The image file is missing (the message names it).
    AnnotationFileError
        The annotation file cannot be read.
    """
    from ..io.rsciio_reader import read_stem_file

    ann = load_annotations(path)
    if not ann.image.file:
        raise FileNotFoundError(f"{path} names no image file")
    file = Path(ann.image.file)
    if not file.is_file():
        raise FileNotFoundError(f"the image of {path} is missing ({file})")
    images = read_stem_file(file)
    shape = tuple(ann.image.shape)
    match = next((im for im in images if tuple(np.shape(im.data)) == shape), None)
    if match is None:
        raise ValueError(f"{file} holds no image of shape {shape} (the one {path} was made on)")
    return np.asarray(match.data), ann


def _autosave_folder() -> Path:
    """``autosave`` beside the user models folder."""
    from ..model_registry import user_models_dir

    return user_models_dir().parent / "autosave"


def _is_points(layer: Any) -> bool:
    from napari.layers import Points

    return isinstance(layer, Points)


def _is_shapes(layer: Any) -> bool:
    from napari.layers import Shapes

    return isinstance(layer, Shapes)


__all__ = ["CorrectWidget", "ask_annotation_files", "ask_directory", "ask_save_path"]
