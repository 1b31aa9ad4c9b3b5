"""The heatmap dock shows probability layers and regions, redraws regions from cached maps, and exports them.

These tests check structure and behaviour; the maps' accuracy is tested in
``test_heatmaps.py`` and measured in ``benchmarks/bench_heatmaps.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects._widgets import heatmaps_widget
from napari_stem_defects._widgets.heatmaps_widget import HeatmapsWidget
from napari_stem_defects.heatmaps import engines
from napari_stem_defects.heatmaps.classes import HEATMAP_CLASSES
from napari_stem_defects.heatmaps.regions import MIN_AREA_NN2, REGION_COLUMNS, min_region_px
from napari_stem_defects.simulate import ImagingParams, simulate_twin

PIXEL = 0.2
MAP_NAMES = [f"MoS2 twin {c} probability" for c in HEATMAP_CLASSES] + ["MoS2 twin uncertainty"]  # material and family


@pytest.fixture(scope="module")
def twin():
    return simulate_twin("MoS2", (192, 192), PIXEL, defects={"V_X1": 0.05}, imaging=ImagingParams(dose=1e5), seed=7)


@pytest.fixture
def calls(monkeypatch):
    """Count (and record the arguments of) the calls to compute_heatmaps, which still runs."""
    real, seen = engines.compute_heatmaps, []

    def counting(image, material, engine="sliding-window", **kwargs):
        seen.append({"image": np.asarray(image), "material": material, "engine": engine, **kwargs})
        return real(image, material, engine, **kwargs)

    monkeypatch.setattr(engines, "compute_heatmaps", counting)
    return seen


@pytest.fixture
def setup(make_napari_viewer, twin):
    viewer = make_napari_viewer()
    image = viewer.add_image(twin.image, name="twin", scale=(PIXEL, PIXEL), units=("angstrom", "angstrom"),
                             metadata={"material": "MoS2", "pixel_size_A": (PIXEL, PIXEL)})
    widget = HeatmapsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, image, widget


def _region_pixels(shapes) -> int:
    return int(shapes.features["area_px"].sum()) if shapes.nshapes else 0


def test_run_shows_probability_and_uncertainty_layers_and_regions(setup, calls):
    viewer, image, widget = setup
    assert widget.layer.value is image and widget.material.value == "MoS2"
    run = widget.run(blocking=True)
    assert not run.error and run.result is not None and len(calls) == 1
    assert calls[0]["nn_px"] is None and calls[0]["pixel_size"] == (PIXEL, PIXEL)  # no columns layer: measured
    for name in MAP_NAMES:
        layer = viewer.layers[name]
        assert layer.data.shape == image.data.shape and layer.data.dtype == np.float32
        assert tuple(layer.contrast_limits) == (0.0, 1.0) and layer.blending == "additive"
        assert tuple(layer.scale) == pytest.approx(tuple(image.scale))
        assert tuple(layer.translate) == pytest.approx(tuple(image.translate))
        assert [str(u) for u in layer.units] == ["angstrom", "angstrom"]
    assert widget.layer.value is image  # the maps are not offered as images
    assert all(n not in [layer.name for layer in widget.layer.choices] for n in MAP_NAMES)

    shapes = viewer.layers["twin defect regions"]
    assert run.shapes is shapes and viewer.layers[-1] is shapes
    assert list(shapes.features.columns) == list(REGION_COLUMNS)
    assert shapes.nshapes == len(run.regions.table)
    assert set(shapes.shape_type) <= {"polygon"}
    assert tuple(shapes.scale) == pytest.approx(tuple(image.scale))
    assert shapes.metadata["threshold"] == pytest.approx(0.5)
    assert np.isfinite(shapes.features["area_nm2"]).all()

    text = widget.result.value
    assert "sliding-window" in text and "window 64.0 px (12.80 Å)" in text and "stride 8.0 px (1.60 Å)" in text
    for c in HEATMAP_CLASSES:
        n = int((shapes.features["class"] == c).sum()) if shapes.nshapes else 0
        assert f"{c} {n}" in text and f"{c} (" in widget.legend.value and f": {n} regions" in widget.legend.value
    assert widget.progress.value == 100 and widget.export_button.enabled


def test_threshold_and_outline_redraw_regions_from_the_cached_maps(setup, calls, qtbot):
    viewer, _, widget = setup
    widget.run(blocking=True)
    shapes = viewer.layers["twin defect regions"]
    pixels = []
    for threshold in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
        widget.threshold.value = threshold  # live: the slider redraws after a short debounce
        qtbot.waitUntil(lambda t=threshold: shapes.metadata["threshold"] == pytest.approx(t), timeout=5000)
        assert viewer.layers["twin defect regions"] is shapes
        assert shapes.nshapes == len(widget.last_run.regions.table)
        assert f"threshold {threshold:.2f}" in widget.result.value
        pixels.append(_region_pixels(shapes))
    assert pixels[0] > 0 and all(a >= b for a, b in zip(pixels, pixels[1:])), pixels
    assert len(calls) == 1  # no new inference

    widget.threshold.value = 0.35
    qtbot.waitUntil(lambda: shapes.metadata["threshold"] == pytest.approx(0.35), timeout=5000)
    nn_px = widget.last_run.result.nn_px
    counts = []
    for area in (0.0, MIN_AREA_NN2, 2.0):  # the smallest region (nn^2) also redraws live
        widget.min_area.value = area
        smallest = min_region_px(nn_px, area)
        qtbot.waitUntil(lambda m=smallest: shapes.metadata["min_area_px"] == m, timeout=5000)
        table = widget.last_run.regions.table
        assert shapes.nshapes == len(table) and (table["area_px"] >= smallest).all()
        assert f"at least {smallest} px" in widget.result.value
        counts.append(len(table))
    assert counts[0] >= counts[1] >= counts[2] and counts[0] > counts[2], counts
    assert len(calls) == 1

    widget.threshold.value = 0.05
    qtbot.waitUntil(lambda: shapes.metadata["threshold"] == pytest.approx(0.05), timeout=5000)
    widget.outline.value = "boxes"
    assert shapes.metadata["outline"] == "boxes" and set(shapes.shape_type) <= {"rectangle"}
    assert shapes.nshapes == len(widget.last_run.regions.table)
    assert list(shapes.features.columns) == list(REGION_COLUMNS)
    first = shapes.features.iloc[0]
    assert shapes.text.values[0] == f"{first['class']} {first['max_probability']:.2f}"  # labels follow the features
    widget.outline.value = "contours"
    assert set(shapes.shape_type) <= {"polygon"}
    assert len(calls) == 1


def test_channel_stack_output_replaces_the_separate_layers(setup, calls):
    viewer, image, widget = setup
    widget.run(blocking=True)
    widget.output.value = "channel stack"  # re-lays the cached maps, no new inference
    assert len(calls) == 1
    widget.run(blocking=True)
    names = [layer.name for layer in viewer.layers]
    assert sorted(n for n in names if n.startswith("MoS2 twin ") and n.endswith(("probability", "uncertainty"))) == \
        sorted(MAP_NAMES)  # replaced, not duplicated
    for name in MAP_NAMES:
        layer = viewer.layers[name]
        assert layer.data.shape == image.data.shape
        assert tuple(layer.contrast_limits) == (0.0, 1.0) and layer.blending == "additive"
        assert tuple(layer.scale) == pytest.approx(tuple(image.scale))
    assert viewer.layers["MoS2 twin defect probability"].visible and not viewer.layers["MoS2 twin vacancy probability"].visible
    assert viewer.layers[-1].name == "twin defect regions" and len(calls) == 2


def test_window_in_angstrom_columns_nn_and_attention_unet(setup, calls):
    viewer, _, widget = setup
    nn = 9.0  # MoS2 at 0.2 A/px: 1.82 A / 0.2 px; a 64 px window accepts 7-16 px
    viewer.add_points(np.array([[10.0, 10.0]]), name="twin columns", metadata={"parameters": {"nn_px": nn}})
    widget.unit.value = "Å"
    widget.window.value, widget.stride.value = 64 * PIXEL, 16 * PIXEL
    run = widget.run(blocking=True)
    assert not run.error, run.error
    assert calls[-1]["nn_px"] == pytest.approx(nn)
    assert calls[-1]["window_px"] == pytest.approx(64) and calls[-1]["stride_px"] == pytest.approx(16)
    assert run.result.stride_px == pytest.approx(16) and "stride 16.0 px (3.20 Å)" in widget.result.value
    assert "from 'twin columns'" in widget.result.value
    widget.unit.value = "px"  # converts the values
    assert widget.window.value == pytest.approx(64) and widget.stride.value == pytest.approx(16)

    widget.engine.value = "attention-unet"
    assert not widget.window.enabled
    run = widget.run(blocking=True)
    assert not run.error and run.result.engine == "attention-unet" and calls[-1]["window_px"] is None
    assert "attention-unet" in widget.result.value and "no window" in widget.result.value
    assert viewer.layers["MoS2 twin defect probability"].metadata["engine"] == "attention-unet"


def test_stack_uses_the_current_frame(make_napari_viewer, twin, calls):
    viewer = make_napari_viewer()
    stack = np.stack([twin.image, twin.image[::-1]])
    viewer.add_image(stack, name="twin", scale=(1.0, PIXEL, PIXEL), metadata={"material": "MoS2"})
    viewer.dims.set_current_step(0, 1)
    widget = HeatmapsWidget(viewer)
    run = widget.run(blocking=True)
    assert not run.error and run.frame == 1
    np.testing.assert_array_equal(calls[0]["image"], stack[1])
    assert calls[0]["pixel_size"] == (PIXEL, PIXEL)  # a scale set on the layer counts (in Å without a unit)
    assert viewer.layers["MoS2 twin defect probability"].data.shape == twin.image.shape
    assert "frame 1" in widget.result.value


def test_bad_input_gives_a_message_not_an_exception(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    widget = HeatmapsWidget(viewer)
    assert widget.run(blocking=True) is None and "image first" in widget.result.value
    assert viewer.status == widget.result.value
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)
    assert widget.layer.value is None
    assert widget.run(blocking=True) is None and "RGB" in widget.result.value

    rng = np.random.default_rng(0)
    viewer.add_image(rng.normal(size=(128, 128)).astype(np.float32), name="noise")
    assert widget.layer.value.name == "noise"
    run = widget.run(blocking=True)  # no lattice: ColumnDetectionError
    assert run.error and "Cannot compute heatmaps of 'noise'" in widget.result.value
    assert "noise defect regions" not in viewer.layers and widget.last_run is None

    widget.unit.value, widget.window.value = "Å", 12.0
    assert widget.run(blocking=True) is None and "pixel size of 'noise' is unknown" in widget.result.value
    widget.unit.value = "px"

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engines, "compute_heatmaps", broken)
    run = widget.run(blocking=True)
    assert "unexpected error (RuntimeError: boom)" in run.error and "unexpected" in widget.result.value
    assert widget.export_csv() is None and "first" in widget.result.value


def test_window_outside_the_trained_range_is_a_message(setup):
    viewer, _, widget = setup
    widget.window.value = 8.0  # far too few atom spacings
    run = widget.run(blocking=True)
    assert run.error and "trained on" in widget.result.value and "MoS2 twin defect probability" not in viewer.layers


def test_export_regions_csv_round_trip(setup, tmp_path, monkeypatch):
    viewer, _, widget = setup
    assert not widget.export_button.enabled
    widget.threshold.value = 0.05  # before any run: nothing to redraw
    run = widget.run(blocking=True)
    assert len(run.regions.table) > 0
    target = tmp_path / "out" / "regions.csv"
    monkeypatch.setattr(heatmaps_widget, "ask_save_path", lambda parent, default: str(target))
    widget.export_button.clicked.emit()
    table = pd.read_csv(target)
    assert list(table.columns) == list(REGION_COLUMNS)
    pd.testing.assert_frame_equal(table, run.regions.table.reset_index(drop=True), check_dtype=False)
    assert len(table) == viewer.layers["twin defect regions"].nshapes
    assert "written to" in widget.result.value
    monkeypatch.setattr(heatmaps_widget, "ask_save_path", lambda parent, default: "")  # cancelled dialog
    assert widget.export_csv() is None


def test_run_in_a_worker_thread_updates_the_dock(setup, qtbot):
    viewer, _, widget = setup
    worker = widget.run()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5000)
    assert "twin defect regions" in viewer.layers and widget.progress.value == 100
    assert "sliding-window" in widget.result.value


def test_cancel_stops_the_worker_without_showing_anything(setup, qtbot):
    viewer, _, widget = setup
    assert widget.run() is not None and widget.runner.busy
    widget.cancel()
    # waiting on the dock's state, not on worker.finished: the worker may finish before a wait starts
    qtbot.waitUntil(lambda: not widget.runner.busy and widget.run_button.enabled, timeout=60000)
    assert "twin defect regions" not in viewer.layers and widget.result.value == "Cancelled."


def test_regions_carry_no_text_until_asked_and_selection_describes_them(setup, calls):
    viewer, _, widget = setup
    widget.threshold.value = 0.2  # plenty of regions
    run = widget.run(blocking=True)
    widget.update_regions()
    shapes = viewer.layers["twin defect regions"]
    assert shapes.nshapes > 0
    assert not widget.label_regions.value and not shapes.text.visible  # no text over the image by default
    widget.label_regions.value = True
    assert shapes.text.visible and shapes.metadata["labels"]
    first = shapes.features.iloc[0]
    assert shapes.text.values[0] == f"{first['class']} {first['max_probability']:.2f}"
    widget.label_regions.value = False
    assert not shapes.text.visible
    shapes.selected_data = {0}
    shapes.events.highlight()  # as napari does when the selection changes
    assert f"{first['class']} region: probability up to {first['max_probability']:.2f}" in widget.selection.value
    # hovering shows the region's features in the status bar (napari's own status of a Shapes layer)
    status = shapes.get_status(tuple(shapes.data_to_world(run.regions.table.loc[0, ["y_px", "x_px"]].to_numpy(float))),
                               world=True)
    assert str(first["class"]) in str(status)


def test_cells_engine_draws_the_classified_cells_and_asks_for_them_first(setup):
    """With the 'cells' engine the dock paints the cells the Classify unit cells dock found: a vacancy map
    that is high on every site of a confident vacancy cell and low elsewhere; without cells it says
    what to do first."""
    from napari_stem_defects._widgets.cells_widget import CellsWidget
    from napari_stem_defects._widgets.columns_widget import ColumnsWidget

    viewer, image, widget = setup
    widget.engine.value = "cells"
    assert widget.run(blocking=True) is None and "classify them first" in widget.result.value
    assert ColumnsWidget(viewer).run(blocking=True).results
    cells_dock = CellsWidget(viewer)
    assert not cells_dock.run(blocking=True).error
    run = widget.run(blocking=True)
    assert run is not None and not run.error and run.result.engine == "cells"
    assert "drawn from the classified cells" in widget.result.value
    vacancy = viewer.layers["MoS2 twin vacancy probability"].data
    cells = viewer.layers["twin cells"].features
    points = viewer.layers["twin columns"]
    yx = dict(zip(points.features["site_id"], np.asarray(points.data, float)))
    sure = cells[(cells["class"] == "V_X1") & (cells["confidence"] > 0.8)]
    assert len(sure) >= 3
    for site in sure["x_site_id"]:
        y, x = np.round(yx[site]).astype(int)
        assert vacancy[y, x] > 0.8
    perfect = cells[(cells["class"] == "perfect") & (cells["confidence"] > 0.99)]
    for site in perfect["x_site_id"].head(20):
        y, x = np.round(yx[site]).astype(int)
        assert vacancy[y, x] < 0.05
    assert run.regions.table["class"].eq("vacancy").sum() >= len(sure) - 1
