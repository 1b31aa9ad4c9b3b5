"""The "Dynamics" dock analyses the sample series in a real viewer: layers, summary, files, failures, cancel."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest
from napari.layers import Image, Points, Shapes, Tracks

from napari_stem_defects._widgets import dynamics_widget
from napari_stem_defects._widgets.dynamics_widget import DynamicsWidget
from napari_stem_defects.dynamics import pipeline
from napari_stem_defects.dynamics.evaluate import match_events
from napari_stem_defects.dynamics.pipeline import SITE_INSTABILITY_COLUMNS
from napari_stem_defects.simulate.stack import simulate_stack

NAME = "dynamics_stack"
OUTPUT_FILES = {"drift.csv", "tracks.csv", "track_features.csv", "events.csv", "instability.csv",
                "instability.npy", "clusters.csv", "defect_counts.csv", "dynamics.json"}


@pytest.fixture
def short_training(monkeypatch):
    """The widget's analysis with a short autoencoder training (everything else as in the dock)."""
    monkeypatch.setattr(pipeline, "analyze_stack", functools.partial(pipeline.analyze_stack, epochs=3))


@pytest.fixture
def sample(make_napari_viewer):
    viewer = make_napari_viewer()
    layer, _truth = viewer.open_sample("napari-stem-defects", "dynamics_stack")
    widget = DynamicsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, layer, widget


def _new_layers(viewer, image) -> list:
    """The layers the analysis made (not the series, not its ground truth)."""
    return [layer for layer in viewer.layers if layer is not image and not layer.metadata.get("ground_truth")]


def test_sample_series_gives_every_layer_in_the_images_scale(sample, short_training, tmp_path, monkeypatch):
    viewer, image, widget = sample
    assert image.ndim == 3 and tuple(image.scale) == pytest.approx((1.0, 0.12, 0.12))
    assert widget.layer.value is image and widget.material.value == "MoS2"
    n_frames = 5  # the first frames of the sample keep the test short
    image.data = image.data[:n_frames]
    truth_shifts = np.asarray(image.metadata["shifts_px"])[:n_frames]
    truth_events = pd.DataFrame(image.metadata["events"])
    truth_events = truth_events[truth_events["frame"] < n_frames]
    assert len(truth_events) >= 10

    result = widget.run(blocking=True)
    assert isinstance(result, pipeline.DynamicsResult) and widget.last_result is result
    assert widget.layer.choices == (image,)  # the outputs are not offered as a series to analyse

    registered = viewer.layers[f"{NAME} registered"]
    assert isinstance(registered, Image) and registered.data.shape == image.data.shape
    assert tuple(registered.scale) == pytest.approx(tuple(image.scale))
    np.testing.assert_allclose(registered.metadata["shifts_px"], truth_shifts, atol=0.2)

    tracks = viewer.layers[f"{NAME} tracks"]
    assert isinstance(tracks, Tracks) and tuple(tracks.scale) == pytest.approx(tuple(image.scale))
    assert len(np.unique(tracks.data[:, 0])) == len(result.track_features)
    assert {"sublattice", "species"} <= set(tracks.features.columns)

    events = viewer.layers[f"{NAME} events"]
    assert isinstance(events, Points) and events.ndim == 3
    assert tuple(events.scale) == pytest.approx(tuple(image.scale))
    assert "kind" in events.features and len(events.data) == len(result.events)
    np.testing.assert_array_equal(events.data[:, 0], events.features["frame"])
    moved = (events.features["kind"] == "moved").to_numpy()
    np.testing.assert_allclose(events.data[~moved, 1:], events.features.loc[~moved, ["y_px", "x_px"]])
    np.testing.assert_allclose(events.data[moved, 1:], events.features.loc[moved, ["to_y_px", "to_x_px"]])
    scores = match_events(events.features, truth_events, tol_px=0.4 * result.nn_px).set_index("kind")
    assert scores.loc["all", "f1"] >= 0.8, scores

    inst = viewer.layers[f"{NAME} instability"]
    assert isinstance(inst, Image) and inst.data.shape == image.data.shape[1:]
    assert tuple(inst.scale) == pytest.approx(tuple(image.scale)[1:])
    sites = viewer.layers[f"{NAME} site instability"]
    assert isinstance(sites, Points) and sites.ndim == 2 and len(sites.data) == len(result.site_table)
    assert tuple(sites.scale) == pytest.approx(tuple(image.scale)[1:])
    assert tuple(sites.features.columns) == SITE_INSTABILITY_COLUMNS
    scored = result.site_table["instability"].notna().to_numpy()
    assert scored.mean() > 0.9
    assert np.all(sites.face_color[scored, 3] > 0) and np.all(sites.face_color[~scored, 3] == 0)
    assert len({tuple(c) for c in sites.face_color[scored]}) > 1  # coloured by instability

    expected = 6 if len(result.clusters.polygons) else 5
    assert len(_new_layers(viewer, image)) == expected
    if expected == 6:
        clusters = viewer.layers[f"{NAME} unstable clusters"]
        assert isinstance(clusters, Shapes) and len(clusters.data) == len(result.clusters.table)
        assert tuple(clusters.scale) == pytest.approx(tuple(image.scale)[1:])
        assert "area_nm2" in clusters.features
    for layer in _new_layers(viewer, image):
        assert [str(u) for u in layer.units][-2:] == ["angstrom", "angstrom"], layer.name

    text = widget.result.value
    assert f"{n_frames} frames" in text and f"{len(result.track_features)} tracks" in text
    n_emptied = int((result.events["kind"] == "emptied").sum())
    assert f"emptied {n_emptied}" in text and f"{result.site_table['instability'].notna().sum()} sites" in text
    assert widget.save_button.enabled and widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.progress.value == 100
    assert len(widget.figure.axes) == 2 and len(widget.figure.axes[0].get_lines()) == 2

    # a result with unscored sites and no clusters replaces every layer of the previous one
    table = result.site_table.copy()
    table.loc[:2, "instability"] = np.nan
    none = dataclasses.replace(result.clusters, table=result.clusters.table.iloc[:0], polygons=[],
                               labels=np.full(len(table), -1))
    widget._apply(widget._job, dataclasses.replace(result, site_table=table, clusters=none))
    assert f"{NAME} unstable clusters" not in viewer.layers and len(_new_layers(viewer, image)) == 5
    colours = viewer.layers[f"{NAME} site instability"].face_color
    scored = table["instability"].notna().to_numpy()
    assert np.all(colours[~scored, 3] == 0) and np.all(colours[scored, 3] > 0)  # NaN sites alone are blank
    assert "0 clusters" in widget.result.value and f"{scored.sum()} sites" in widget.result.value
    widget._apply(widget._job, result)

    paths = widget.save(str(tmp_path / "out"))
    assert {p.name for p in paths.values()} == OUTPUT_FILES
    assert {p.name for p in (tmp_path / "out").iterdir()} == OUTPUT_FILES
    assert f"{len(OUTPUT_FILES)} files written" in widget.result.value
    monkeypatch.setattr(dynamics_widget, "ask_directory", lambda *_: "")  # the dialog was cancelled
    assert widget.save() is None
    (tmp_path / "a_file").write_text("")
    assert widget.save(str(tmp_path / "a_file")) is None and "Cannot write into" in widget.result.value


def test_a_single_image_is_not_a_series(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((128, 128)), name="flat")
    widget = DynamicsWidget(viewer)
    assert widget.layer.value is None
    assert widget.run(blocking=True) is None
    assert "needs an image series" in widget.result.value and "'flat' is a single image" in widget.result.value
    assert list(viewer.layers) == [viewer.layers["flat"]]
    monkeypatch.setattr(dynamics_widget, "ask_directory", lambda *_: pytest.fail("no dialog without a result"))
    assert widget.save() is None and "Analyse a series first" in widget.result.value
    assert not widget.save_button.enabled


def test_worker_thread_run_finishes_and_a_cancel_leaves_no_layers(make_napari_viewer, short_training, qtbot):
    viewer = make_napari_viewer()
    twin = simulate_stack("MoS2", n_frames=4, shape=(192, 192), dose=1e6, events_per_frame=3.0, seed=1)
    image = viewer.add_image(twin.frames, name="small", scale=(1.0, 0.12, 0.12),
                             units=("", "angstrom", "angstrom"), metadata=twin.metadata)
    widget = DynamicsWidget(viewer)
    widget.nonrigid.value, widget.classifier.value = False, "none"
    assert widget.encoder.value == "intensity"  # the default: no network
    widget.encoder.value = "autoencoder"  # the encoder path of the dock, trained in the worker thread
    worker = widget.run()
    assert widget.runner.busy and widget.cancel_button.enabled and not widget.run_button.enabled
    assert widget.run() is worker  # a second click while it runs starts nothing
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert "small registered" in viewer.layers and "small events" in viewer.layers
    assert "'small': 4 frames" in widget.result.value
    assert widget.last_result.settings["nonrigid"] is False and len(widget.last_result.defect_counts) == 0
    assert widget.last_result.settings["encoder"] == "autoencoder" and widget.last_result.settings["score"] == "fused"
    assert widget.last_result.site_table["latent_change"].notna().mean() > 0.9
    # rigid only: the unmodelled non-rigid warp (0.3 px RMS) pulls the shifts a little
    np.testing.assert_allclose(widget.last_result.registration.shifts, twin.shifts, atol=0.4)
    assert widget.run_button.enabled and not widget.cancel_button.enabled

    for layer in _new_layers(viewer, image):
        viewer.layers.remove(layer)
    widget.last_result = None
    worker = widget.run()
    qtbot.waitUntil(lambda: 0 < widget.progress.value, timeout=30000)
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=30000)
    assert widget.progress.value < 100
    assert "Cancelled" in widget.result.value
    assert list(viewer.layers) == [image] and widget.last_result is None
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_cancel_stops_the_sample_analysis_mid_run(sample, short_training, qtbot):
    viewer, image, widget = sample
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=30000)  # 2 frames registered
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=30000)
    assert 2 <= widget.progress.value < 15  # stopped in the registration
    assert widget.result.value == "Cancelled."
    assert _new_layers(viewer, image) == [] and widget.last_result is None and not widget.save_button.enabled


def test_widget_opens_from_the_plugin_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-stem-defects", "Dynamics")
    assert isinstance(widget, DynamicsWidget)
