"""The "Correct labels" dock in a real viewer: shortcuts, undo, points edits, saving, reopening, export."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from napari.layers import Points, Shapes
from napari.utils.key_bindings import coerce_keybinding

from napari_stem_defects._widgets import correct_widget
from napari_stem_defects._widgets.cells_widget import CellsWidget
from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects._widgets.correct_widget import CorrectWidget
from napari_stem_defects.annotations.edits import CLASS_KEYS, species_keys
from napari_stem_defects.annotations.store import load_annotations, sidecar_path
from napari_stem_defects.annotations.training_set import import_training_set, read_training_set
from napari_stem_defects.cells.shapes_layer import CLASS_COLOURS
from napari_stem_defects.columns.points_layer import SPECIES_COLOURS, hex_to_rgba
from napari_stem_defects.simulate.presets import mos2_vacancies

PLUGIN = "napari-stem-defects"


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch):
    """Model versions and autosaves go to a temporary folder, never the user's."""
    folder = tmp_path / "user" / "models"
    monkeypatch.setenv("NAPARI_STEM_DEFECTS_MODELS", str(folder))
    return folder


@pytest.fixture(scope="module")
def sample_image() -> np.ndarray:
    """The 'MoS2 with vacancies' sample image (a quarter of it, to keep the test short)."""
    return np.ascontiguousarray(mos2_vacancies().image[:256, :256])


@pytest.fixture
def opened(make_napari_viewer, sample_image, tmp_path):
    """The sample saved as .npy, opened with the plugin, columns detected and cells classified."""
    path = tmp_path / "scan.npy"
    np.save(path, sample_image)
    viewer = make_napari_viewer()
    (image,) = viewer.open(path, plugin=PLUGIN)
    docks = [ColumnsWidget(viewer), CellsWidget(viewer)]
    for dock in docks:
        viewer.window.add_dock_widget(dock)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct labels")  # as a person opens it
    assert isinstance(widget, CorrectWidget)
    assert docks[0].run(blocking=True).results
    cells_run = docks[1].run(blocking=True)
    assert not cells_run.error, cells_run.error
    return viewer, image, widget, path


def type_key(viewer, layer, key: str, *modifiers: str) -> bool:
    """A key typed on the canvas, as vispy reports it (key name and modifier keys), with ``layer`` active."""
    from types import SimpleNamespace

    from vispy.util import keys

    viewer.layers.selection.active = layer
    event = SimpleNamespace(key=keys.Key(key), modifiers=tuple(getattr(keys, m.upper()) for m in modifiers),
                            native=None, handled=False)
    viewer.window._qt_viewer._key_map_handler.on_key_press(event)
    return event.handled


def press(viewer, layer, key: str) -> None:
    """Press a key as the canvas does: through the key map handler, with ``layer`` active."""
    viewer.layers.selection.active = layer
    handler = viewer.window._qt_viewer._key_map_handler
    assert handler.press_key(key), f"{key} is not bound"
    handler.release_key(key)


@pytest.mark.filterwarnings("error::FutureWarning")  # no private napari access through the plugin proxy
def test_shortcut_correction_is_saved_and_restored_on_reopening(opened):
    viewer, image, widget, path = opened
    cells, sites = viewer.layers["scan cells"], viewer.layers["scan columns"]
    assert widget.image.value is image and widget.sites.value is sites and widget.cells.value is cells
    assert coerce_keybinding(CLASS_KEYS["V_M"]) in cells.keymap  # bound on the cells layer
    assert "Alt-3" in widget.keys.value and "V_M" in widget.keys.value
    features = cells.features
    assert set(features["source"]) == {"model"} and not features["verified"].any()
    row = int(np.flatnonzero((features["class"] == "perfect").to_numpy() & features["complete"].to_numpy())[0])
    before_stats = widget.statistics.value

    cells.selected_data = {row}
    assert CLASS_KEYS["V_M"] == "Alt-3"
    assert type_key(viewer, cells, "3", "alt")  # Alt+3 typed on the canvas
    edited = cells.features.loc[row]
    assert edited["class"] == "V_M" and edited["verified"] and edited["source"] == "human"
    assert edited["confidence"] == 1.0
    others = cells.features.drop(index=row)
    assert set(others["source"]) == {"model"} and not others["verified"].any()
    assert np.allclose(cells.edge_color[row], hex_to_rgba(CLASS_COLOURS["V_M"]))
    assert cells.metadata["legend"]["V_M"]["count"] == int((cells.features["class"] == "V_M").sum())
    assert widget.statistics.value != before_stats and "1 of" in widget.statistics.value
    assert widget.unsaved

    target = widget.save()
    assert target == sidecar_path(path) and target.is_file() and not widget.unsaved
    saved = pd.DataFrame(cells.features).copy()
    json.loads(target.read_text())  # human-readable JSON

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    layers = viewer.open(path, plugin=PLUGIN)
    names = [layer.name for layer in layers]
    assert names == ["scan", "scan columns", "scan cells"]
    restored = viewer.layers["scan cells"]
    assert isinstance(restored, Shapes) and isinstance(viewer.layers["scan columns"], Points)
    row_back = restored.features.loc[row]
    assert row_back["class"] == "V_M" and bool(row_back["verified"]) and row_back["source"] == "human"
    pd.testing.assert_frame_equal(pd.DataFrame(restored.features), saved, check_exact=True)
    # the dock follows the reopened layers
    assert widget.cells.value is restored and widget.image.value is viewer.layers["scan"]


def test_species_edits_points_edits_and_undo(opened):
    viewer, _, widget, path = opened
    sites = viewer.layers["scan columns"]
    features = sites.features
    shape = viewer.layers["scan"].data.shape
    inner = ((features["y_px"] > 30) & (features["y_px"] < shape[0] - 30) & (features["x_px"] > 30)
             & (features["x_px"] < shape[1] - 30)).to_numpy()  # a whole cell, not one the image edge cuts
    metal = int(np.flatnonzero((features["sublattice"] == "M").to_numpy()
                               & (features["species"] == "Mo").to_numpy() & inner)[0])
    sites.selected_data = {metal}
    assert list(widget.species.choices)[0] == "Mo" and "empty" in widget.species.choices  # the metal's choices
    key = species_keys(list(widget.species.choices))["empty"]  # 'empty' is last
    assert key in widget.keys.value and key.startswith("Alt-")
    assert type_key(viewer, sites, key.split("-")[1], "alt")  # typed on the canvas, the sites layer active
    row = sites.features.loc[metal]
    assert row["species"] == "empty" and row["verified"] and row["source"] == "human" and row["probability"] == 1.0
    assert np.allclose(sites.face_color[metal], 0.0)  # empty sites are hollow rings
    assert np.allclose(sites.border_color[metal], hex_to_rgba(SPECIES_COLOURS["empty"]))
    assert widget.set_species("adatom") is False and "not a species of M" in widget.result.value

    press(viewer, sites, "Control-Z")
    assert sites.features.loc[metal, "species"] == "Mo" and not sites.features.loc[metal, "verified"]
    assert sites.features.loc[metal, "source"] == "model"
    press(viewer, sites, "Control-Shift-Z")
    assert sites.features.loc[metal, "species"] == "empty"

    # a point moved in the viewer: its positions follow, it is marked as a person's
    n = len(sites.data)
    moved = (metal + 5) % n
    sites.events.data(value=sites.data, action="changing", data_indices=(moved,), vertex_indices=((),))
    data = np.array(sites.data)
    data[moved] += (1.5, -2.0)
    sites.data[:] = data
    sites.events.data(value=sites.data, action="changed", data_indices=(moved,), vertex_indices=((),))
    row = sites.features.loc[moved]
    assert (row["y_px"], row["x_px"]) == pytest.approx(tuple(data[moved])) and row["source"] == "human"

    # a point added by hand: the dropdown's species, no lattice site, verified
    sites.selected_data = set()
    widget.species.value = "adatom"
    sites.add([[30.0, 40.0]])
    assert len(sites.data) == n + 1
    new = sites.features.iloc[-1]
    assert new["species"] == "adatom" and new["sublattice"] == "H" and new["site_id"] == -1
    assert new["verified"] and new["source"] == "human" and (new["y_px"], new["x_px"]) == (30.0, 40.0)
    assert widget.undo() and len(sites.data) == n and len(sites.features) == n  # undo the addition
    assert widget.undo() and sites.features.loc[moved, "source"] == "model"  # undo the move
    assert tuple(sites.data[moved]) == pytest.approx(tuple(data[moved] - (1.5, -2.0)))

    # deleting points is remembered too
    sites.selected_data = {0, 1}
    sites.remove_selected()
    assert len(sites.data) == n - 2
    assert widget.undo() and len(sites.data) == n and len(sites.features) == n
    assert sites.features.loc[metal, "species"] == "empty"  # the earlier species edit is still there

    # cells reclassified from the edited sites: the emptied metal is a metal vacancy
    cells_widget = CellsWidget(viewer)
    viewer.window.add_dock_widget(cells_widget)
    run = cells_widget.run(blocking=True)
    site_id = sites.features.loc[metal, "site_id"]
    assert run.cells.set_index("m_site_id").loc[site_id, "class"] in {"V_M", "V_X1+V_M", "V_X2+V_M"}
    assert widget.history.can_undo is False  # new cells: old row numbers no longer apply


def test_next_uncertain_selects_and_centres_the_least_confident_cell(opened):
    viewer, _, widget, _ = opened
    cells = viewer.layers["scan cells"]
    confidence = cells.features["confidence"].to_numpy(float)
    first = widget.next_uncertain()
    assert first == int(np.argmin(confidence)) and cells.selected_data == {first}
    centre = cells.features.loc[first, ["y_px", "x_px"]].to_numpy(float) * np.asarray(cells.scale)
    assert tuple(viewer.camera.center[-2:]) == pytest.approx(tuple(centre))
    press(viewer, cells, "Alt-N")
    second = next(iter(cells.selected_data))
    assert second != first and confidence[second] >= confidence[first]
    widget.set_class("perfect")
    assert cells.features.loc[second, "verified"]
    assert widget.next_uncertain() not in (first, second) or cells.features["verified"].sum() == len(cells.features)


def test_autosave_and_removing_layers_keep_every_correction(make_napari_viewer, sample_image, user_models, qtbot):
    """An image without a file: edits are autosaved (and flushed when its layers go), and 'Save' asks for a file."""
    viewer = make_napari_viewer()
    viewer.add_image(sample_image, name="sample twin", metadata={"material": "MoS2"})
    docks = [ColumnsWidget(viewer), CellsWidget(viewer), CorrectWidget(viewer)]
    for dock in docks:
        viewer.window.add_dock_widget(dock)
    docks[0].run(blocking=True)
    docks[1].run(blocking=True)
    widget = docks[2]
    cells = viewer.layers["sample twin cells"]
    autosave_dir = user_models.parent / "autosave"
    assert "autosave" in widget.status.value
    assert widget.set_class("V_X1", [3])
    assert "unsaved" in widget.status.value
    qtbot.waitUntil(lambda: not widget.unsaved, timeout=3 * correct_widget.AUTOSAVE_MS + 2000)
    auto = autosave_dir / "sample_twin.npy.annotations.json"
    assert auto.is_file() and np.array_equal(np.load(autosave_dir / "sample_twin.npy"), sample_image)
    assert load_annotations(auto).cells.features.loc[3, "class"] == "V_X1"

    assert widget.set_class("V_M", [4]) and widget.unsaved
    viewer.layers.remove(cells)  # before the autosave timer fires: flushed at once
    assert load_annotations(auto).cells.features.loc[4, "class"] == "V_M"
    assert widget.cells.value is None and widget.set_class("V_M") is False and "cells" in widget.result.value


def test_background_autosave_keeps_later_corrections_and_never_overwrites_a_newer_save(opened, qtbot, monkeypatch):
    """The timer's autosave writes in a worker. A correction made while it writes stays unsaved and is
    written by the next autosave; an explicit Save of newer corrections, made while an older snapshot is
    still being written, is not overwritten when that slow write ends."""
    import threading

    viewer, image, widget, path = opened
    target = sidecar_path(path)
    gate = threading.Event()
    real_store = widget.writer.store

    def held_store(ann, file, number):  # a background write starts only when the test lets it go
        if threading.current_thread() is not threading.main_thread():
            assert gate.wait(10)
        return real_store(ann, file, number)

    monkeypatch.setattr(widget.writer, "store", held_store)
    assert widget.set_class("V_X1", [3])
    worker = widget.autosave(blocking=False)
    assert worker is not None and widget.writer.busy and widget.unsaved
    assert widget.set_class("V_M", [4])  # while the snapshot of the first correction is being written
    assert widget.autosave(blocking=False) is worker  # one background write at a time
    gate.set()
    qtbot.waitUntil(lambda: not widget.writer.busy, timeout=10_000)
    assert widget.unsaved and load_annotations(target).cells.features.loc[4, "class"] != "V_M"
    qtbot.waitUntil(lambda: not widget.unsaved, timeout=3 * correct_widget.AUTOSAVE_MS + 5000)
    qtbot.waitUntil(lambda: not widget.writer.busy, timeout=10_000)
    saved = load_annotations(target).cells.features
    assert saved.loc[3, "class"] == "V_X1" and saved.loc[4, "class"] == "V_M"

    gate.clear()
    assert widget.set_class("V_X2", [5])
    worker = widget.autosave(blocking=False)  # an older snapshot, held back ...
    assert widget.set_class("V_X2+V_M", [6])
    assert widget.save() == target  # ... while Save writes the newer one on the GUI thread
    gate.set()
    qtbot.waitUntil(lambda: not widget.writer.busy, timeout=10_000)
    saved = load_annotations(target).cells.features
    assert saved.loc[5, "class"] == "V_X2" and saved.loc[6, "class"] == "V_X2+V_M"
    assert not widget.unsaved


def test_save_asks_for_a_file_for_an_image_without_one(make_napari_viewer, sample_image, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(sample_image, name="twin", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                     metadata={"material": "MoS2"})
    columns, widget = ColumnsWidget(viewer), CorrectWidget(viewer)
    viewer.window.add_dock_widget(columns)
    viewer.window.add_dock_widget(widget)
    columns.run(blocking=True)
    assert widget.cells.value is None and widget.sites.value is viewer.layers["twin columns"]
    monkeypatch.setattr(correct_widget, "ask_save_path", lambda parent, default: "")
    assert widget.save() is None  # cancelled dialog: nothing written
    target = tmp_path / "out" / "twin"
    monkeypatch.setattr(correct_widget, "ask_save_path", lambda parent, default: str(target))
    written = widget.save()
    assert written == tmp_path / "out" / "twin.npy.annotations.json"
    assert np.array_equal(np.load(tmp_path / "out" / "twin.npy"), sample_image)
    ann = load_annotations(written)
    assert ann.cells is None and ann.image.scale == (0.12, 0.12)
    assert ann.image.file == str(tmp_path / "out" / "twin.npy")
    assert widget.export_training_set(tmp_path / "set", [], blocking=True) is None  # no cells: a message
    assert "Classify cells" in widget.result.value


def test_export_training_set_round_trips(opened, tmp_path, monkeypatch):
    viewer, image, widget, path = opened
    out = tmp_path / "training"
    assert widget.export_training_set(out, [], blocking=True) is None  # nothing verified yet
    assert "verified" in widget.result.value
    widget.set_class("V_X1", [2, 5])
    widget.set_class("perfect", [7])
    monkeypatch.setattr(correct_widget, "ask_directory", lambda parent, default: str(out))
    manifest = widget.export_training_set(blocking=True)
    assert manifest == out / "manifest.json" and "Training set written" in widget.result.value
    training = read_training_set(out)
    assert len(training.labels) == 3 and training.verified.all()
    ((array, ann),) = import_training_set(out)
    assert np.array_equal(array, image.data) and array.dtype == image.data.dtype
    assert ann.cells.features.loc[[2, 5, 7], "class"].tolist() == ["V_X1", "V_X1", "perfect"]
    assert ann.cells.features.loc[[2, 5, 7], "source"].tolist() == ["human"] * 3

    # with another annotated image (this one's saved file): two images in the set
    widget.save()
    manifest = widget.export_training_set(out, [sidecar_path(path)], blocking=True)
    assert manifest is not None and len(read_training_set(out).labels) == 6
    missing = tmp_path / "gone.npy.annotations.json"
    assert widget.export_training_set(out, [missing], blocking=True) is None and "Cannot export" in widget.result.value
