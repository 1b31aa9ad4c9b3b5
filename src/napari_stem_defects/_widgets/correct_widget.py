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

This module builds the dock and follows its layers; the editing and undo are in
:mod:`.correct_edit`, saving and autosave in :mod:`.correct_save`, the export in
:mod:`.correct_export`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, ProgressBar, PushButton
from qtpy.QtCore import QTimer

from ..annotations.edits import CLASS_KEYS, species_keys
from ..annotations.history import EditHistory
from ..cells.shapes_layer import low_confidence_mask
from ..cells.statistics import defect_statistics
from ..layer_calibration import calibration_note
from ..vocabulary import CELL_CLASSES
from ._dock import Section, StemDock, adopt_material, is_grey_image, layer_choice, material_choice, pixel_size, row
from ._dock import text_label as _text
from ._annotator import store_annotator, stored_annotator
from ._jobs import JobRunner
from ._review import NEXT_KEY, PREVIOUS_KEY, REDO_KEY, UNDO_KEY, shortcut_table
from ._snapshot_writer import SnapshotWriter
from .cells_widget import column_layers, statistics_html
from .correct_edit import SPECIES_KEYS, CorrectEdits
from .correct_export import CorrectExport
from .correct_save import AUTOSAVE_MS, EXPECTED_ERRORS, CorrectSaving, WindowCloseFilter

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import napari

log = logging.getLogger(__name__)


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


class CorrectWidget(CorrectEdits, CorrectSaving, CorrectExport, StemDock):
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
        self._before_points = None  # (data, features) before a points edit in the viewer
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
        self.annotator = LineEdit(label="annotator", value=stored_annotator(),
                                  tooltip="your name, written into every annotation file you save (set it once: it "
                                          "is remembered), so several people's files can be merged by consensus")
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
            Section("Save and export", [Container(labels=True, widgets=[self.annotator]), self.save_button, self.status, self.export_others, self.export_all,
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
        self.writer.saved_by = self.annotator.value
        self.annotator.changed.connect(self._on_annotator)
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
        self._close_filter = None if window is None else WindowCloseFilter(self.native, window, self.flush)
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
            self._unbind(old, [*SPECIES_KEYS, UNDO_KEY, REDO_KEY])
        self._watched_sites = layer
        self.history.clear()
        if layer is not None:
            layer.events.data.connect(self._on_points_data)
            layer.events.features.connect(self._on_features)
            layer.selected_data.events.items_changed.connect(self._on_point_selection)
            self._known[id(layer)] = id(layer.features)
            for k, key in enumerate(SPECIES_KEYS, start=1):
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

    def _on_annotator(self, *_) -> None:
        """Remember the annotator's name and write it into the next saves."""
        store_annotator(self.annotator.value)
        self.writer.saved_by = self.annotator.value.strip() or None

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

    # ------------------------------------------------------------------ dialogs (module functions tests replace)
    def _ask_image_file(self, default: str) -> str:
        return ask_save_path(self.native, default)

    def _ask_export_folder(self, default: str) -> str:
        return ask_directory(self.native, default)

    def _ask_other_files(self, default: str) -> list[str]:
        return ask_annotation_files(self.native, default)


def _is_points(layer: Any) -> bool:
    from napari.layers import Points

    return isinstance(layer, Points)


def _is_shapes(layer: Any) -> bool:
    from napari.layers import Shapes

    return isinstance(layer, Shapes)


__all__ = ["AUTOSAVE_MS", "EXPECTED_ERRORS", "CorrectWidget", "ask_annotation_files", "ask_directory",
           "ask_save_path"]
