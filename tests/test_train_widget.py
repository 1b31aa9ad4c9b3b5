"""The "Train a model" dock: a tiny fine-tuning run gives a model version the classify dock lists and uses."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects._widgets import train_widget
from napari_stem_defects._widgets.cells_widget import CellsWidget
from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects._widgets.train_widget import TrainWidget
from napari_stem_defects.annotations.edits import set_cell_class
from napari_stem_defects.annotations.training_set_export import export_training_set
from napari_stem_defects.annotations.twins import twin_annotations
from napari_stem_defects.model_registry import SHIPPED, list_models, model_card_path
from napari_stem_defects.simulate import ImagingParams, simulate_twin


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch):
    """Model versions go to a temporary folder, never the user's."""
    folder = tmp_path / "user" / "models"
    monkeypatch.setenv("NAPARI_STEM_DEFECTS_MODELS", str(folder))
    return folder


@pytest.fixture(scope="module")
def twin():
    return simulate_twin("MoS2", shape=(256, 256), pixel_size=0.12, rotation_deg=None,
                         defects={"V_X1": 0.05, "V_X2": 0.04, "V_M": 0.04}, imaging=ImagingParams(dose=1e6), seed=4)


@pytest.fixture(scope="module")
def dataset(twin, tmp_path_factory):
    """A training set of the twin with some cells of every class present verified (true classes)."""
    ann, truth = twin_annotations(twin)
    features = ann.cells.features
    for cls in sorted(set(truth) - {""}):
        features = set_cell_class(features, np.flatnonzero(truth == cls)[:12], cls)
    ann.cells.features = features
    out = tmp_path_factory.mktemp("sets") / "twin set"
    export_training_set([(np.asarray(twin.image), ann)], out)
    return out


def test_tiny_training_gives_a_model_the_classify_dock_lists_and_uses(make_napari_viewer, twin, dataset,
                                                                      user_models, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(twin.image, name="twin", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                     metadata=twin.metadata)
    columns, cells, train = ColumnsWidget(viewer), CellsWidget(viewer), TrainWidget(viewer)
    for dock in (columns, cells, train):
        viewer.window.add_dock_widget(dock)
    assert columns.run(blocking=True).results
    assert list(cells.model.choices) == [SHIPPED] and cells.model.value == SHIPPED
    shipped = cells.run(blocking=True)
    assert not shipped.error and viewer.layers["twin cells"].metadata["model"] == SHIPPED

    assert train.train(blocking=True) is None and "training set" in train.result.value
    assert not train.add_dataset(dataset.parent) and "not a training set" in train.result.value
    monkeypatch.setattr(train_widget, "ask_directory", lambda parent, default: str(dataset))
    train.add_button.clicked.emit()
    assert list(train.datasets.choices) == [str(dataset)]
    assert train.train(blocking=True) is None and "name" in train.result.value
    train.name.value = "shipped"
    assert train.train(blocking=True) is None and "Cannot use the name" in train.result.value
    train.name.value = "tiny-v1"
    train.steps.value, train.n_twins.value = 4, 2
    result = train.train(blocking=True)
    assert result is not None, train.result.value
    path = user_models / "cells" / "tiny-v1.pt"
    assert result.path == path and path.is_file() and model_card_path(path).is_file()
    assert list(list_models("cells")) == [SHIPPED, "tiny-v1"]
    assert "tiny-v1" in train.result.value and "Held-out accuracy" in train.result.value
    assert train.progress.value == 100
    lines = [line for ax in train.figure.axes for line in ax.get_lines()]
    assert len(lines) >= 2 and len(lines[0].get_xdata()) == 4  # loss per step, and the held-out accuracy

    assert list(cells.model.choices) == [SHIPPED, "tiny-v1"]  # told by the training
    cells.model.value = "tiny-v1"
    tuned = cells.run(blocking=True)
    assert not tuned.error, tuned.error
    layer = viewer.layers["twin cells"]
    assert layer.metadata["model"] == "tiny-v1" and "model tiny-v1" in cells.result.value
    p_shipped = shipped.cells.filter(like="p_").to_numpy(float)
    p_tuned = tuned.cells.filter(like="p_").to_numpy(float)
    assert p_tuned.shape == p_shipped.shape and not np.allclose(p_tuned, p_shipped)  # the new weights are used

    train.name.value = "tiny-v1"
    assert train.train(blocking=True) is None and "exists already" in train.result.value  # never overwritten


def test_training_in_a_worker_can_be_cancelled(make_napari_viewer, dataset, user_models, qtbot):
    viewer = make_napari_viewer()
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    assert train.add_dataset(dataset)
    train.name.value = "cancelled"
    train.steps.value, train.n_twins.value = 5000, 2
    worker = train.train()
    assert not train.train_button.enabled and train.cancel_button.enabled
    qtbot.waitUntil(lambda: any("loss" in r for r in train.history), timeout=60000)  # live records arrive
    train.cancel_button.clicked.emit()
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: train.train_button.enabled, timeout=5000)
    assert "Cancelled" in train.result.value
    assert not (user_models / "cells" / "cancelled.pt").exists() and list(list_models("cells")) == [SHIPPED]


def test_both_docks_open_from_the_plugin_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    from napari_stem_defects._widgets.correct_widget import CorrectWidget

    for title, cls in (("Correct labels", CorrectWidget), ("Train a model", TrainWidget)):
        _, widget = viewer.window.add_plugin_dock_widget("napari-stem-defects", title)
        assert isinstance(widget, cls)
