"""The docks on real-sample structure: the image check before any layer, phase maps, one answer per column."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects._widgets.cells_widget import CellsWidget
from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects.cells.joint import contradictions
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.regions import Disc, Grain, Hole, PhaseRegion
from napari_stem_defects.simulate.sample import simulate_sample
from napari_stem_defects.vocabulary import PHASE_CODES


def _viewer_with(make_napari_viewer, image, pixel=0.12):
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="scan", scale=(pixel, pixel), units=("angstrom", "angstrom"))
    columns = ColumnsWidget(viewer)
    viewer.window.add_dock_widget(columns)
    return viewer, layer, columns


def test_wrong_material_is_refused_before_any_layer_unless_analysed_anyway(make_napari_viewer):
    twin = simulate_twin("MoS2", shape=(256, 256), pixel_size=0.12, seed=5, imaging=ImagingParams(dose=1e5))
    viewer, _, columns = _viewer_with(make_napari_viewer, twin.image)
    columns.material.value = "MoTe2"
    run = columns.run(blocking=True)
    assert not run.check.ok and not run.results
    assert "Is this MoS2?" in columns.result.value and "analyse anyway" in columns.result.value
    assert [layer.name for layer in viewer.layers] == ["scan"]  # nothing added
    columns.force.value = True
    run = columns.run(blocking=True)
    assert run.results and "scan columns" in viewer.layers and "scan phases" in viewer.layers
    assert "Is this MoS2?" in columns.result.value  # the finding stays in sight


def test_typed_formulas_are_checked_in_the_material_box(make_napari_viewer):
    viewer, _, columns = _viewer_with(make_napari_viewer, np.zeros((64, 64), np.float32))
    native = columns.material.native
    native.setCurrentText("W(S,Te)2")
    native.lineEdit().editingFinished.emit()
    assert columns.material.value == "W(S,Te)2"
    native.setCurrentText("MoS3")
    native.lineEdit().editingFinished.emit()
    assert columns.material.value == "W(S,Te)2" and "not an MX2 formula" in native.toolTip()


@pytest.fixture(scope="module")
def sample():
    regions = [Grain(None, rotation_deg=4.0), PhaseRegion(Disc((150.0, 330.0), 95.0), "1T"),
               Hole(Disc((330.0, 120.0), 75.0))]
    return simulate_sample("MoS2", (448, 448), 0.12, regions=regions, seed=11,
                           defects={"V_X1": 0.03, "V_M": 0.01}, imaging=ImagingParams(dose=2e5))


def test_phase_map_boundaries_and_one_answer_in_the_viewer(make_napari_viewer, sample):
    viewer, image, columns = _viewer_with(make_napari_viewer, sample.image)
    run = columns.run(blocking=True)
    assert run.check.ok, run.check.message
    phases = viewer.layers["scan phases"]
    truth = sample.extra["phase_map"]
    for name in ("1T", "hole"):  # each phase is found over most of its true area
        code = PHASE_CODES[name]
        assert (phases.data[truth == code] == code).mean() > 0.7, name
    assert (phases.data[truth == PHASE_CODES["2H"]] == PHASE_CODES["2H"]).mean() > 0.95
    np.testing.assert_allclose(phases.scale, image.scale)
    points = viewer.layers["scan columns"]
    assert set(points.features["phase"]) == {"2H", "1T"}
    assert viewer.layers.selection.active is points  # the columns stay the layer a person corrects
    cells = CellsWidget(viewer)
    viewer.window.add_dock_widget(cells)
    cells.run(blocking=True)
    table = viewer.layers["scan cells"].features
    assert table["boundary"].any() and (table["class"] == "incomplete").any()
    assert set(table.loc[~table["boundary"] & (table["class"] != "incomplete"), "phase"]) == {"2H", "1T"}
    assert contradictions(points.features, table, "MoS2") == 0  # species and classes tell one story


def test_a_painted_mask_leaves_no_sites_under_it(make_napari_viewer, sample):
    viewer, image, columns = _viewer_with(make_napari_viewer, sample.image)
    paint = np.zeros(sample.image.shape, np.uint8)
    paint[:150, :150] = 1
    viewer.add_labels(paint, name="not this", scale=image.scale)
    columns.mask.value = viewer.layers["not this"]
    run = columns.run(blocking=True)
    sites = run.results[None].sites
    assert len(sites) and not ((sites["y_px"] < 148) & (sites["x_px"] < 148)).any()
    assert (viewer.layers["scan phases"].data[:150, :150] == PHASE_CODES["masked"]).all()
    viewer.add_labels(np.zeros((10, 10), np.uint8), name="wrong size")
    columns.mask.value = viewer.layers["wrong size"]
    assert columns.run(blocking=True) is None and "Cannot use the mask" in columns.result.value


def test_a_drawn_mask_covers_the_pixels_it_shows_over_whatever_its_layer_scale():
    from napari.layers import Image, Shapes

    from napari_stem_defects._widgets._structure import mask_of

    image = Image(np.zeros((100, 100)), scale=(0.1, 0.1))
    in_pixels = Shapes([np.array([[10, 10], [10, 40], [30, 40], [30, 10]])], shape_type="ellipse", scale=(0.1, 0.1))
    in_world = Shapes([np.array([[1.0, 1.0], [1.0, 4.0], [3.0, 4.0], [3.0, 1.0]])], shape_type="ellipse")
    drawn = mask_of(in_pixels, (100, 100), None, image=image)
    assert np.array_equal(drawn, mask_of(in_pixels, (100, 100), None))  # same scale: the layer's own pixels
    assert 400 < drawn.sum() < 520 and drawn[20, 25] and not drawn[11, 11]  # an ellipse, not its box
    assert np.array_equal(mask_of(in_world, (100, 100), None, image=image), drawn)
