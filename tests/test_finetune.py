"""Fine-tuning the shipped cell classifier on an exported training set (tiny runs, seconds)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_stem_defects.annotations.training_set_export import export_training_set
from napari_stem_defects.annotations.twins import twin_annotations  # noqa: E402
from napari_stem_defects.cells.cnn import default_weights_path, load_cell_model  # noqa: E402
from napari_stem_defects.simulate import ImagingParams, simulate_twin  # noqa: E402
from napari_stem_defects.training.finetune import finetune_cell_cnn, load_shipped_cell_cnn  # noqa: E402
from napari_stem_defects.training.model_files import file_sha256  # noqa: E402
from napari_stem_defects.training.splits import heldout_split  # noqa: E402

FAST = {"steps": 6, "batch": 16, "n_twins": 2, "threads": 1, "eval_every": 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    twin = simulate_twin("MoS2", (200, 200), 0.11, rotation_deg=None,
                         defects={"V_X1": 0.06, "V_M": 0.04, "dopant_M": 0.04}, imaging=ImagingParams(dose=1e5),
                         seed=7_200_001)
    ann, truth = twin_annotations(twin, "finetune twin")
    cells = ann.cells.features
    known = truth != ""
    cells.loc[known, "class"] = truth[known]
    cells.loc[known, "verified"] = True
    folder = tmp_path_factory.mktemp("set")
    export_training_set([(twin.image, ann)], folder)
    return folder


def test_tiny_run_writes_a_loadable_model_version_from_the_shipped_weights(dataset, tmp_path):
    shipped = default_weights_path()
    digest = file_sha256(shipped)
    seen = []
    result = finetune_cell_cnn([dataset], tmp_path / "mine.pt", lr=1e-4, progress=seen.append,
                               command="pytest", **FAST)
    assert file_sha256(shipped) == digest  # the shipped model is never written
    assert result.path == tmp_path / "mine.pt" and result.card == tmp_path / "mine.md"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.md", "mine.pt"]
    model = load_cell_model(result.path)  # weights_only=True inside
    meta = model.metadata
    assert meta["base_model"] == "shipped" and meta["base_sha256"] == digest
    assert meta["n_train"] == result.n_train and meta["n_val"] == result.n_val > 0
    assert meta["heldout"]["after"]["n_cells"] == result.n_val
    assert meta["class_counts"]["train"]["V_X1"] > 0 and meta["settings"]["steps"] == 6
    assert meta["datasets"][0]["images"][0]["name"] == "finetune twin"
    # progress: training records and evaluations, every step count within range
    train = [d for d in seen if "loss" in d]
    evals = [d for d in seen if "val_accuracy" in d]
    assert train and train[-1]["step"] == 6 and all(d["steps"] == 6 for d in seen)
    assert [d["step"] for d in evals] == [0, 3, 6] and all(0 <= d["val_macro_f1"] <= 1 for d in evals)
    assert evals[0]["val_accuracy"] == pytest.approx(result.before["accuracy"])
    card = result.card.read_text()
    assert "shipped" in card and "Held-out" in card and "`pytest`" in card
    # it started from the shipped weights: a few small steps stay close to them, far from a new network
    base, _, _ = load_shipped_cell_cnn()
    from napari_stem_defects.cells.cnn import build_cell_cnn

    fresh = build_cell_cnn()
    tuned = dict(model.named_parameters())
    near = max(float((p - tuned[k]).abs().max()) for k, p in base.named_parameters())
    far = max(float((p - tuned[k]).abs().max()) for k, p in fresh.named_parameters())
    assert 0 < near < 0.01 < far


def test_cancel_returns_none_and_writes_nothing(dataset, tmp_path):
    stop = threading.Event()

    def progress(d):
        if d.get("step", 0) >= 2:
            stop.set()

    out = tmp_path / "cancelled.pt"
    assert finetune_cell_cnn([dataset], out, progress=progress, cancel=stop, **{**FAST, "eval_every": 1}) is None
    assert list(tmp_path.iterdir()) == []
    early = threading.Event()
    early.set()
    assert finetune_cell_cnn([dataset], out, cancel=early, **FAST) is None
    assert list(tmp_path.iterdir()) == []


def test_refuses_the_packaged_folder_and_bad_settings(dataset, tmp_path):
    with pytest.raises(ValueError, match="never overwritten"):
        finetune_cell_cnn([dataset], default_weights_path(), **FAST)
    with pytest.raises(ValueError, match="twin_fraction"):
        finetune_cell_cnn([dataset], tmp_path / "x.pt", twin_fraction=1.0, **FAST)
    with pytest.raises(ValueError, match="training set"):
        finetune_cell_cnn([tmp_path], tmp_path / "x.pt", **FAST)


def test_heldout_split_is_stratified_spread_and_seeded():
    labels = np.repeat([0, 1, 2, 3], [100, 30, 10, 1])
    groups = np.tile([0, 1], 71)[: len(labels)]
    val = heldout_split(labels, groups, 0.2, seed=3)
    assert [int(val[labels == c].sum()) for c in range(4)] == [20, 6, 2, 0]
    assert abs(int(val[(labels == 0) & (groups == 0)].sum()) - 10) <= 1
    np.testing.assert_array_equal(val, heldout_split(labels, groups, 0.2, seed=3))
    assert not np.array_equal(val, heldout_split(labels, groups, 0.2, seed=4))
    assert not heldout_split(labels, groups, 0.0).any()
