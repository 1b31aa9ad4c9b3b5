"""The column-detection dock finds the twin's columns, re-thresholds from its cache, and explains failures."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects.columns import pipeline
from napari_stem_defects.columns.points_layer import SPECIES_COLOURS
from napari_stem_defects.simulate import ImagingParams, simulate_twin

REQUIRED_FEATURES = {"y", "x", "y_px", "x_px", "sublattice", "species", "probability", "intensity", "detected",
                     "refined_by", "i", "j", "site_id", "verified"}


def _twin(seed: int = 3):
    return simulate_twin("MoS2", shape=(256, 256), pixel_size=0.12, defects={"V_X2": 0.03, "V_M": 0.02},
                         imaging=ImagingParams(dose=1e6), seed=seed)


@pytest.fixture
def twin():
    return _twin()


@pytest.fixture
def setup(make_napari_viewer, twin):
    viewer = make_napari_viewer()
    layer = viewer.add_image(twin.image, name="twin", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                             metadata=twin.metadata)
    widget = ColumnsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, layer, widget


@pytest.fixture
def map_calls(monkeypatch):
    """Count calls of compute_detection_map (the widget calls it through the pipeline module)."""
    calls = []
    real = pipeline.compute_detection_map

    def spy(*args, **kwargs):
        calls.append(args[1] if len(args) > 1 else kwargs.get("method"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compute_detection_map", spy)
    return calls


def test_widget_finds_the_twins_columns_as_a_points_layer(setup, twin):
    viewer, image, widget = setup
    assert widget.layer.value is image and widget.material.value == "MoS2"
    run = widget.run(blocking=True)
    assert not run.errors and run.results
    points = viewer.layers["twin columns"]
    assert run.layer is points
    assert REQUIRED_FEATURES <= set(points.features.columns)
    assert tuple(points.scale) == pytest.approx(tuple(image.scale))
    assert [str(u) for u in points.units] == ["angstrom", "angstrom"]
    np.testing.assert_allclose(points.features["y"], 0.12 * points.features["y_px"])
    assert not points.features["verified"].any()

    nn = run.results[None].nn_px
    truth = twin.sites[twin.sites["sublattice"].isin(["M", "X"])]
    gt_xy = truth[["y_px", "x_px"]].to_numpy()
    dist, idx = cKDTree(gt_xy).query(points.data)
    assert np.mean(dist < nn / 3) > 0.97  # points sit on true sites
    back, _ = cKDTree(points.data).query(gt_xy)
    assert np.all(back < nn / 3)  # every true site has a point

    empty = points.features["species"].to_numpy() == "empty"
    assert empty.sum() >= 3
    assert np.all(truth["n_atoms"].to_numpy()[idx[empty]] == 0)  # the empty points are the vacancies
    assert np.all(points.face_color[empty, 3] == 0) and np.all(points.border_color[empty, 3] > 0)
    assert np.all(points.face_color[~empty, 3] > 0)
    assert "empty: " in widget.legend.value and SPECIES_COLOURS["Mo"] in widget.legend.value
    assert "sites" in widget.result.value and widget.progress.value == 100


def test_rerunning_replaces_the_layer_instead_of_adding_one(setup):
    viewer, _, widget = setup
    widget.run(blocking=True)
    widget.refine.value = "com"
    run = widget.run(blocking=True)
    names = [layer.name for layer in viewer.layers]
    assert names.count("twin columns") == 1 and names.count("twin phases") == 1 and len(viewer.layers) == 3
    assert set(viewer.layers["twin columns"].features["refined_by"]) <= {"com", "lattice"}
    assert run.layer.metadata["parameters"]["refine"] == "com"


def test_threshold_change_reuses_the_cached_detection_map(setup, map_calls, qtbot):
    viewer, _, widget = setup
    first = widget.run(blocking=True)
    assert map_calls == ["classical"]
    n_detected = int(first.layer.features["detected"].sum())
    widget.threshold.value = 0.4  # re-runs in a thread_worker, after a short debounce
    points = viewer.layers["twin columns"]
    qtbot.waitUntil(lambda: points.metadata["parameters"]["threshold"] == 0.4 and widget._worker is None,
                    timeout=20000)
    assert map_calls == ["classical"]
    assert 0 < points.features["detected"].sum() < n_detected  # fewer peaks pass the higher threshold
    widget.threshold.value = 0.2
    widget.run(blocking=True)
    assert map_calls == ["classical"] and points.metadata["parameters"]["threshold"] == 0.2
    assert points.features["detected"].sum() == n_detected
    widget.method.value = "deep"  # another method needs its own map, so nothing runs by itself
    assert widget.threshold.value == pytest.approx(pipeline.DEFAULT_THRESHOLD["deep"])
    qtbot.wait(400)
    assert map_calls == ["classical"]


def test_run_button_works_in_a_thread_and_cancel_stops_it(setup, monkeypatch, qtbot):
    viewer, _, widget = setup
    with qtbot.waitSignal(widget.run().finished, timeout=20000):
        pass
    assert "twin columns" in viewer.layers
    viewer.layers.remove("twin columns")
    widget._cache.clear()

    def endless(image, method="classical", *, progress=None, cancel=None, **_):
        while not cancel():
            time.sleep(0.01)  # runs in the worker thread
        raise InterruptedError("cancelled")

    monkeypatch.setattr(pipeline, "compute_detection_map", endless)
    worker = widget.run()
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    with qtbot.waitSignal(worker.finished, timeout=5000):
        widget.cancel_button.clicked.emit()
    assert "Cancelled" in widget.result.value
    assert "twin columns" not in viewer.layers
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_all_frames_of_a_stack_give_points_on_their_frames(make_napari_viewer):
    viewer = make_napari_viewer()
    stack = np.stack([_twin(seed).image for seed in (1, 2, 3)])
    image = viewer.add_image(stack, name="stack", scale=(1.0, 0.12, 0.12),
                             metadata={"pixel_size_A": (0.12, 0.12), "calibrated": True})
    widget = ColumnsWidget(viewer)
    assert widget.all_frames.enabled
    viewer.dims.set_current_step(0, 2)
    run = widget.run(blocking=True)  # the current frame only
    assert list(run.results) == [2]
    points = viewer.layers["stack columns"]
    assert points.ndim == 3 and set(points.data[:, 0]) == {2.0}
    widget.all_frames.value = True
    run = widget.run(blocking=True)
    assert sorted(run.results) == [0, 1, 2]
    assert viewer.layers["stack columns"] is points
    assert sorted(set(points.data[:, 0])) == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(points.features["frame"], points.data[:, 0])
    assert tuple(points.scale) == pytest.approx(tuple(image.scale))
    frame1 = points.data[points.data[:, 0] == 1, 1:]
    truth = _twin(2).sites
    dist, _ = cKDTree(truth[["y_px", "x_px"]].to_numpy()).query(frame1)
    assert np.mean(dist < run.results[1].nn_px / 3) > 0.97


@pytest.mark.parametrize("bad", ["constant", "nan", "tiny"])
def test_bad_images_give_a_message_not_an_exception(make_napari_viewer, bad):
    viewer = make_napari_viewer()
    data = {"constant": np.full((128, 128), 5.0), "nan": np.full((128, 128), np.nan),
            "tiny": np.random.default_rng(0).random((10, 10))}[bad]
    viewer.add_image(data, name="bad")
    widget = ColumnsWidget(viewer)
    run = widget.run(blocking=True)
    assert run.errors and not run.results
    assert widget.result.value.startswith("Cannot detect columns")
    assert viewer.status.startswith("Cannot detect columns")
    assert "bad columns" not in viewer.layers


def test_no_image_gives_a_message(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = ColumnsWidget(viewer)
    assert widget.run(blocking=True) is None
    assert "image" in widget.result.value


def test_histogram_shows_each_fitted_component(setup):
    viewer, _, widget = setup
    run = widget.run(blocking=True)
    fits = run.results[None].species_fits
    axes = widget.figure.axes
    assert [ax.get_title() for ax in axes] == ["M sites", "X sites"]
    for ax, key in zip(axes, ("M", "X"), strict=True):
        fit = fits[key]
        curves = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert [line.get_label().split()[0] for line in curves] == list(fit.labels)
        for line, pdf in zip(curves, fit.component_pdf(curves[0].get_xdata()), strict=True):
            np.testing.assert_allclose(line.get_ydata(), pdf)
        assert len(ax.patches) > 0  # the histogram bars
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert [t.split()[0] for t in legend] == list(fit.labels)
    mo = next(line for line in axes[0].get_lines() if line.get_label().startswith("Mo "))
    assert mo.get_color().upper() == SPECIES_COLOURS["Mo"]
    assert mo.get_label() == f"Mo ({fits['M'].weights[fits['M'].labels.index('Mo')]:.0%})"
    shot = viewer.screenshot(canvas_only=False)
    assert shot.ndim == 3 and shot.shape[2] == 4 and shot.std() > 0


def test_cancelling_a_stack_keeps_the_frames_already_done(make_napari_viewer, monkeypatch, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([_twin(seed).image for seed in (1, 2, 3)]), name="stack", scale=(1.0, 0.12, 0.12))
    widget = ColumnsWidget(viewer)
    widget.all_frames.value = True
    real, calls = pipeline.compute_detection_map, []

    def cancel_on_second_frame(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            widget._job.cancel.set()  # as the Cancel button does, from inside the worker's second frame
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compute_detection_map", cancel_on_second_frame)
    with qtbot.waitSignal(widget.run().finished, timeout=20000):
        pass
    assert len(calls) == 2  # frame 2 was never started
    points = viewer.layers["stack columns"]
    assert set(points.data[:, 0]) == {0.0}
    assert "Cancelled." in widget.result.value and "Frame 0:" in widget.result.value


def test_widget_opens_from_the_plugin_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-stem-defects", "Detect atom columns")
    assert isinstance(widget, ColumnsWidget)


def test_deep_method_uses_the_chosen_column_model_version(setup, map_calls, tmp_path, monkeypatch):
    import shutil

    from napari_stem_defects.columns.unet import default_weights_path
    from napari_stem_defects.model_registry import SHIPPED

    models = tmp_path / "models"
    monkeypatch.setenv("NAPARI_STEM_DEFECTS_MODELS", str(models))
    (models / "columns").mkdir(parents=True)
    shutil.copy(default_weights_path(), models / "columns" / "copy-v1.pt")  # a valid version, same weights
    _, _, widget = setup
    widget.model.refresh()
    assert list(widget.model.choices) == [SHIPPED, "copy-v1"]
    assert not widget.model.enabled  # classical method: no network
    widget.method.value = "deep"
    assert widget.model.enabled
    shipped = widget.run(blocking=True)
    widget.model.value = "copy-v1"
    seen = {}
    real = pipeline.compute_detection_map

    def spy(*args, **kwargs):
        seen["model"] = kwargs.get("model")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compute_detection_map", spy)
    version = widget.run(blocking=True)  # another model: a new map, not the cached one
    assert seen["model"] == models / "columns" / "copy-v1.pt"
    assert map_calls == ["deep", "deep"]  # one map per model version
    widget.run(blocking=True)
    assert map_calls == ["deep", "deep"]  # the same version again: its cached map
    (a,), (b,) = shipped.results.values(), version.results.values()
    assert np.array_equal(a.sites[["y_px", "x_px"]].to_numpy(), b.sites[["y_px", "x_px"]].to_numpy())


def test_species_by_context_runs_the_context_classifier(setup, twin):
    viewer, image, widget = setup
    widget.species_by.value = "context"
    run = widget.run(blocking=True)
    assert not run.errors and any("context-encoder" in m for m in run.results[None].messages)
    points = viewer.layers["twin columns"]
    truth = twin.sites[twin.sites["sublattice"].isin(["M", "X"])]
    _, idx = cKDTree(truth[["y_px", "x_px"]].to_numpy()).query(points.data)
    empty = points.features["species"].to_numpy() == "empty"
    # the classifier's empty columns are the twin's vacancies, and it finds them all
    assert np.all(truth["n_atoms"].to_numpy()[idx[empty]] == 0)
    assert empty.sum() == np.sum(truth["n_atoms"].to_numpy()[np.unique(idx)] == 0)
