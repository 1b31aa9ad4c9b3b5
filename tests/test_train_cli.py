"""The command line's correction loop: export-training, train (file or named version), analyze --cell-model."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_stem_defects import model_registry as reg  # noqa: E402
from napari_stem_defects.annotations.store import load_annotations, save_annotations, sidecar_path  # noqa: E402
from napari_stem_defects.annotations.training_set import read_training_set
from napari_stem_defects.annotations.twins import twin_annotations  # noqa: E402
from napari_stem_defects.cli import main  # noqa: E402
from napari_stem_defects.simulate import ImagingParams, simulate_twin  # noqa: E402

TINY = ["--steps", "4", "--batch", "16", "--twins", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """An image file with its saved annotations, some cells corrected to their true class."""
    folder = tmp_path_factory.mktemp("annotated")
    twin = simulate_twin("MoS2", (200, 200), 0.11, rotation_deg=None, defects={"V_X1": 0.06, "V_M": 0.04},
                         imaging=ImagingParams(dose=1e5), seed=7_300_001)
    image_path = folder / "scan.npy"
    np.save(image_path, twin.image)
    ann, truth = twin_annotations(twin, "scan")
    ann.image.file = str(image_path)
    cells = ann.cells.features
    rows = np.flatnonzero(truth != "")[::3]
    cells.loc[rows, "class"] = truth[rows]
    cells.loc[rows, "verified"] = True
    cells.loc[rows, "source"] = "human"
    return save_annotations(ann, sidecar_path(image_path)), len(rows)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(reg.ENV_VAR, str(tmp_path / "models"))
    return tmp_path / "models"


def test_export_training_from_annotation_files(annotated, tmp_path, capsys):
    sidecar, n_verified = annotated
    out = tmp_path / "set"
    assert main(["export-training", str(sidecar), "--out", str(out)]) == 0
    assert f"{n_verified} verified" in capsys.readouterr().out
    ts = read_training_set(out)
    assert len(ts.labels) == n_verified and ts.verified.all()
    image, ann = ts.items[0]
    assert np.array_equal(image, np.load(sidecar.parent / "scan.npy"))
    assert ann.equals(load_annotations(sidecar))
    assert main(["export-training", str(sidecar), "--out", str(tmp_path / "all"), "--all-cells"]) == 0
    classed = (ann.cells.features["class"] != "incomplete").sum()  # border cells have no class to learn
    assert len(read_training_set(tmp_path / "all").labels) == classed


def test_export_training_says_when_the_image_is_missing(annotated, tmp_path, capsys):
    sidecar, _ = annotated
    moved = tmp_path / "elsewhere.annotations.json"
    doc = json.loads(sidecar.read_text())
    doc["image"]["file"] = str(tmp_path / "gone.npy")
    moved.write_text(json.dumps(doc))
    assert main(["export-training", str(moved), "--out", str(tmp_path / "set")]) == 2
    err = capsys.readouterr().err
    assert "gone.npy is missing" in err


def test_train_a_named_version_and_analyze_with_it(annotated, tmp_path, models_dir, capsys):
    sidecar, _ = annotated
    data = tmp_path / "set"
    assert main(["export-training", str(sidecar), "--out", str(data)]) == 0
    capsys.readouterr()
    assert main(["train", str(data), "--name", "cli-test", *TINY]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "shipped -> fine-tuned" in out
    assert list(reg.list_models("cells")) == ["shipped", "cli-test"]
    path = reg.model_path("cells", "cli-test")
    assert path.with_suffix(".md").is_file()
    # the same name again is refused; a file path works too
    assert main(["train", str(data), "--name", "cli-test", *TINY]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["train", str(data), "--out", str(tmp_path / "file-model"), *TINY]) == 0
    assert (tmp_path / "file-model.pt").is_file() and (tmp_path / "file-model.md").is_file()
    assert main(["train", str(data), "--out", str(reg.shipped_path("cells")), *TINY]) == 2
    assert "never overwritten" in capsys.readouterr().err
    # analyze with the named version
    image = sidecar.parent / "scan.npy"
    assert main(["analyze", str(image), "--material", "MoS2", "--pixel-size", "0.11", "--cell-model", "cli-test",
                 "--out", str(tmp_path / "ana")]) == 0
    settings = json.loads((tmp_path / "ana" / "analysis.json").read_text())["settings"]
    assert settings["cell_model"] == "cli-test" and settings["classifier"] == "cnn+columns"
    assert main(["analyze", str(image), "--material", "MoS2", "--pixel-size", "0.11", "--cell-model", "nope",
                 "--out", str(tmp_path / "ana2")]) == 2
    assert "no cells model named 'nope'" in capsys.readouterr().err


def test_train_columns_says_when_a_folder_is_not_a_training_set(tmp_path, capsys):
    # (fine-tuning the column U-Net itself is tested in test_finetune_columns.py)
    assert main(["train", str(tmp_path), "--what", "columns", "--out", str(tmp_path / "m.pt")]) == 2
    assert "is not a training set" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
