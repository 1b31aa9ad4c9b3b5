"""Reviewing cells in the Correct labels dock: next / previous uncertain cell zoom to it, and the shortcut
table follows the active layer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects._widgets._review import CELLS_ACROSS, NEXT_KEY, PREVIOUS_KEY, canvas_size, shortcut_table
from napari_stem_defects._widgets.cells_widget import CellsWidget
from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects._widgets.correct_widget import CorrectWidget
from napari_stem_defects.annotations.edits import CLASS_KEYS, species_keys
from napari_stem_defects.simulate.presets import mos2_vacancies


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_STEM_DEFECTS_MODELS", str(tmp_path / "models"))


@pytest.fixture(scope="module")
def sample_image() -> np.ndarray:
    return np.ascontiguousarray(mos2_vacancies().image[:256, :256])


@pytest.fixture
def reviewed(make_napari_viewer, sample_image):
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(sample_image, name="scan", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                             metadata={"material": "MoS2"})
    columns, cells = ColumnsWidget(viewer), CellsWidget(viewer)
    widget = CorrectWidget(viewer)
    for dock in (columns, cells, widget):
        viewer.window.add_dock_widget(dock)
    assert columns.run(blocking=True).results and not cells.run(blocking=True).error
    return viewer, image, widget


def test_next_and_previous_uncertain_zoom_to_a_few_cells_and_select(reviewed):
    viewer, _, widget = reviewed
    cells = viewer.layers["scan cells"]
    viewer.reset_view()
    overview = _camera(viewer).zoom
    confidence = cells.features["confidence"].to_numpy(float)
    order = np.lexsort((np.arange(len(confidence)), confidence))
    first = widget.next_uncertain()
    assert first == order[0] and cells.selected_data == {first}
    assert viewer.layers.selection.active is cells
    centre = cells.features.loc[first, ["y_px", "x_px"]].to_numpy(float) * 0.12
    assert tuple(_camera(viewer).center[-2:]) == pytest.approx(tuple(centre))
    # zoomed in: about CELLS_ACROSS cells across the shorter side of the canvas
    a_world = np.hypot(*cells.metadata["a1_px"]) * 0.12
    across = min(canvas_size(viewer)) / _camera(viewer).zoom / a_world
    assert _camera(viewer).zoom > 2 * overview and across == pytest.approx(CELLS_ACROSS, rel=0.05)
    second = widget.next_uncertain()
    third = widget.next_uncertain()
    assert [second, third] == list(order[1:3])
    assert widget.previous_uncertain() == second and cells.selected_data == {second}
    assert widget.previous_uncertain() == first
    # the keys: Alt-P goes back too
    assert NEXT_KEY in widget.keys.value and PREVIOUS_KEY in widget.keys.value


def test_the_shortcut_table_shows_the_keys_of_the_active_layer_only(reviewed):
    viewer, _, widget = reviewed
    cells, sites = viewer.layers["scan cells"], viewer.layers["scan columns"]
    viewer.layers.selection.active = cells
    text = widget.keys.value
    assert "cells layer" in text and all(key in text for key in CLASS_KEYS.values())
    assert "species" not in text  # one table: no Alt-1 listed twice with two meanings
    viewer.layers.selection.active = sites
    text = widget.keys.value
    assert "sites layer" in text and "V_M" not in text
    for species, key in species_keys(list(widget.species.choices)).items():
        assert f"species {species}" in text and key in text
    assert text.count("Alt-1<") == 1
    viewer.layers.selection.active = viewer.layers["scan"]
    assert "select the cells layer" in widget.keys.value


def test_shortcut_table_lists_each_key_once():
    text = shortcut_table("cells", CLASS_KEYS, ["Mo"], {"Mo": "Alt-1"})
    assert text.count("<b>Alt-1</b>") == 1 and "species" not in text
