"""Fine-tuning the shipped column U-Net on an exported training set (tiny runs, seconds)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_stem_defects import model_registry as reg  # noqa: E402
from napari_stem_defects.annotations.training_set_export import export_training_set
from napari_stem_defects.annotations.twins import twin_annotations  # noqa: E402
from napari_stem_defects.cli import main  # noqa: E402
from napari_stem_defects.columns import detect_columns  # noqa: E402
from napari_stem_defects.columns.unet import (  # noqa: E402
    CANONICAL_NN_PX, build_column_unet, default_weights_path, load_column_model,
)
from napari_stem_defects.simulate import ImagingParams, simulate_twin  # noqa: E402
from napari_stem_defects.training.column_sets import annotation_sites, canonical_example  # noqa: E402
from napari_stem_defects.training.finetune_columns import finetune_column_unet, load_shipped_column_unet  # noqa: E402
from napari_stem_defects.training.model_files import file_sha256  # noqa: E402
from napari_stem_defects.training.splits import choose_crop, heldout_mask, heldout_tiles, training_windows  # noqa: E402

FAST = {"steps": 4, "batch": 4, "n_twins": 2, "n_val_twins": 1, "threads": 1, "eval_every": 2}
TINY = ["--steps", "3", "--batch", "4", "--twins", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def twin():
    return simulate_twin("MoS2", (200, 200), 0.11, rotation_deg=None, defects={"V_X1": 0.06, "V_M": 0.04},
                         imaging=ImagingParams(dose=1e5), seed=7_400_001)


@pytest.fixture(scope="module")
def dataset(twin, tmp_path_factory):
    ann, _ = twin_annotations(twin, "column twin")
    ann.cells.features["verified"] = True
    folder = tmp_path_factory.mktemp("colset")
    export_training_set([(twin.image, ann)], folder)
    return folder


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(reg.ENV_VAR, str(tmp_path / "models"))
    return tmp_path / "models"


def test_tiny_run_writes_a_loadable_version_from_the_shipped_weights(dataset, tmp_path):
    shipped = default_weights_path()
    digest = file_sha256(shipped)
    seen = []
    result = finetune_column_unet([dataset], tmp_path / "cols", progress=seen.append, command="pytest", **FAST)
    assert file_sha256(shipped) == digest  # the shipped model is never written
    assert result.path == tmp_path / "cols.pt" and result.card == tmp_path / "cols.md"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cols.md", "cols.pt"]
    model = load_column_model(result.path)  # weights_only=True inside
    meta = model.metadata
    assert meta["kind"] == "columns" and meta["base_model"] == "shipped" and meta["base_sha256"] == digest
    assert meta["canonical_nn_px"] == CANONICAL_NN_PX and meta["settings"]["steps"] == 4
    assert meta["n_train"] == result.n_train > 0 and meta["n_val"] == result.n_val > 0
    assert meta["images"][0]["heldout_tiles"] and meta["datasets"][0]["images"][0]["name"] == "column twin"
    # before/after on the held-out tiles with the detection metrics; the shipped model finds these columns
    for m in (result.before, result.after):
        assert set(m) >= {"precision", "recall", "f1", "empty_with_peak", "n_sites", "n_tiles"}
        assert m["n_sites"] > 0 and 0 <= m["f1"] <= 1
    assert result.before["f1"] > 0.9
    assert meta["twins"]["before"]["n_sites"] > 0 and "f1" in meta["twins"]["after"]
    # progress: training records and evaluations (step 0 is the shipped model)
    train = [d for d in seen if "loss" in d]
    evals = [d for d in seen if "val_f1" in d]
    assert train and train[-1]["step"] == 4 and all(d["steps"] == 4 for d in seen)
    assert all(0 <= d["dice"] <= 1 for d in train)
    assert [d["step"] for d in evals] == [0, 2, 4]
    assert evals[0]["val_f1"] == pytest.approx(result.before["f1"])
    assert evals[-1]["val_f1"] == pytest.approx(result.after["f1"])
    card = result.card.read_text()
    assert "shipped" in card and "held-out tiles" in card and "`pytest`" in card
    # it started from the shipped weights: a few small steps stay close to them, far from a new network
    base, _, _ = load_shipped_column_unet()
    fresh = build_column_unet(1, meta["arch"]["channels"])
    tuned = dict(model.named_parameters())
    near = max(float((p - tuned[k]).detach().abs().max()) for k, p in base.named_parameters())
    far = max(float((p - tuned[k]).detach().abs().max()) for k, p in fresh.named_parameters())
    assert 0 < near < 0.01 < far


def test_cancel_returns_none_and_writes_nothing(dataset, tmp_path):
    stop = threading.Event()

    def progress(d):
        if d.get("step", 0) >= 1:
            stop.set()

    out = tmp_path / "cancelled.pt"
    assert finetune_column_unet([dataset], out, progress=progress, cancel=stop, **{**FAST, "eval_every": 1}) is None
    assert stop.is_set() and list(tmp_path.iterdir()) == []
    early = threading.Event()
    early.set()
    assert finetune_column_unet([dataset], out, cancel=early, **FAST) is None
    assert list(tmp_path.iterdir()) == []


def test_refuses_the_packaged_folder_and_bad_settings(dataset, tmp_path):
    with pytest.raises(ValueError, match="never overwritten"):
        finetune_column_unet([dataset], default_weights_path(), **FAST)
    with pytest.raises(ValueError, match="twin_fraction"):
        finetune_column_unet([dataset], tmp_path / "x.pt", twin_fraction=1.0, **FAST)
    with pytest.raises(ValueError, match="held-out fraction"):
        finetune_column_unet([dataset], tmp_path / "x.pt", val_fraction=1.0, **FAST)
    with pytest.raises(ValueError, match="training set"):
        finetune_column_unet([tmp_path], tmp_path / "x.pt", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_targets_follow_the_annotated_sites(twin):
    ann, _ = twin_annotations(twin, "t")
    feats = ann.sites.features
    yx, occ = annotation_sites(ann)
    assert np.array_equal(occ, feats["species"].to_numpy() != "empty") and (~occ).any()
    nn = twin.material.a / np.sqrt(3) / twin.pixel_size
    # a person moves a metal column by 0.5 nn and marks another X2 column empty
    moved = int(np.flatnonzero(occ & (feats["sublattice"].to_numpy() == "M")
                               & (np.abs(yx - 100).max(axis=1) < 40))[0])
    emptied = int(np.flatnonzero(occ & (feats["sublattice"].to_numpy() == "X")
                                 & (np.abs(yx - 100).max(axis=1) < 40))[0])
    data = np.array(ann.sites.data, dtype=float)
    data[moved] = yx[moved] + (0.5 * nn, 0.0)
    ann.sites.data = data
    feats.loc[emptied, "species"] = "empty"
    yx2, occ2 = annotation_sites(ann)
    assert not occ2[emptied] and np.allclose(yx2[moved], yx[moved] + (0.5 * nn, 0))
    ex = canonical_example(twin.image, yx2, occ2, nn)
    z = ex["image"].shape[0] / twin.image.shape[0]
    assert ex["image"].shape == ex["target"].shape and abs(z - CANONICAL_NN_PX / nn) < 0.01

    def at(p):
        q = np.round((np.asarray(p) + 0.5) * z - 0.5).astype(int)
        return float(ex["target"][q[0], q[1]]), float(ex["weight"][q[0], q[1]])

    assert at(yx2[moved])[0] > 0.9 and at(yx[moved])[0] < 0.2  # the blob moved with the point
    t, w = at(yx[emptied])
    assert t < 0.05 and w > 3  # no blob on the emptied column, a heavier loss around it


def test_training_crops_never_touch_heldout_tiles():
    tiles = heldout_tiles([(128, 128), (130, 260)], 64, 0.25, seed=1)
    assert sum(len(t) for t in tiles) == 3 and all(tiles)  # 12 tiles, 3 held out, spread over both images
    assert tiles == heldout_tiles([(128, 128), (130, 260)], 64, 0.25, seed=1)
    assert tiles != heldout_tiles([(128, 128), (130, 260)], 64, 0.25, seed=2)
    masks = [heldout_mask(s, t) for s, t in zip([(128, 128), (130, 260)], tiles)]
    crop, windows = choose_crop(masks, 96)
    assert crop % 8 == 0 and 32 <= crop <= 96 and any(len(w) for w in windows)
    for mask, w in zip(masks, windows):
        gy, gx = np.unravel_index(w, (mask.shape[0] - crop + 1, mask.shape[1] - crop + 1))
        assert all(not mask[y:y + crop, x:x + crop].any() for y, x in zip(gy, gx))
        # and every window left out does touch a held-out pixel
        free = np.zeros((mask.shape[0] - crop + 1, mask.shape[1] - crop + 1), bool)
        free.flat[w] = True
        ys, xs = np.nonzero(~free)
        assert all(mask[y:y + crop, x:x + crop].any() for y, x in zip(ys[::97], xs[::97]))
    assert training_windows(np.ones((50, 50), bool), 32).size == 0
    with pytest.raises(ValueError, match="too small"):
        choose_crop([np.zeros((20, 20), bool)], 96)


def test_cli_train_columns_named_version_then_detect_and_analyze(dataset, twin, tmp_path, models_dir, capsys):
    assert main(["train", str(dataset), "--what", "columns", "--name", "cols-test", *TINY]) == 0
    out = capsys.readouterr().out
    assert "held-out column precision" in out and "shipped -> fine-tuned" in out
    assert list(reg.list_models("columns")) == ["shipped", "cols-test"]
    assert list(reg.list_models("cells")) == ["shipped"]
    path = reg.model_path("columns", "cols-test")
    assert path.with_suffix(".md").is_file() and load_column_model(path).metadata["name"] == "cols-test"
    assert main(["train", str(dataset), "--what", "columns", "--name", "cols-test", *TINY]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["train", str(dataset), "--what", "columns", "--out", str(reg.shipped_path("columns")),
                 *TINY]) == 2
    assert "never overwritten" in capsys.readouterr().err
    # detection with the new version (a path, or a loaded model) runs and finds the columns
    result = detect_columns(twin.image, method="deep", material="MoS2", pixel_size=0.11, model=path)
    shipped = detect_columns(twin.image, method="deep", material="MoS2", pixel_size=0.11)
    assert abs(len(result.sites) - len(shipped.sites)) <= 4
    assert not np.array_equal(result.detection_map, shipped.detection_map)  # another network ran
    same = detect_columns(twin.image, method="deep", material="MoS2", pixel_size=0.11,
                          model=load_column_model(path))
    assert np.array_equal(same.detection_map, result.detection_map)
    # analyze --column-model NAME
    image = tmp_path / "scan.npy"
    np.save(image, twin.image)
    assert main(["analyze", str(image), "--material", "MoS2", "--pixel-size", "0.11", "--method", "deep",
                 "--classifier", "physics", "--column-model", "cols-test", "--out", str(tmp_path / "ana")]) == 0
    settings = json.loads((tmp_path / "ana" / "analysis.json").read_text())["settings"]
    assert settings["column_model"] == "cols-test" and settings["method"] == "deep"
    assert main(["analyze", str(image), "--material", "MoS2", "--pixel-size", "0.11", "--method", "deep",
                 "--column-model", "nope", "--out", str(tmp_path / "ana2")]) == 2
    assert "no columns model named 'nope'" in capsys.readouterr().err
