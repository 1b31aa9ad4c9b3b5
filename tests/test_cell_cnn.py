"""Unit-cell crops and the CNN cell classifier (napari_stem_defects.cells)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from napari_stem_defects.cells.crops import CANONICAL_NN_PX, CROP_SIZE, cell_crops
from napari_stem_defects.simulate import CELL_CLASSES, ImagingParams, simulate_twin


def _cells(twin):
    """Ground-truth M and X positions and classes of complete cells."""
    cells = twin.cells[(twin.cells["m_site_id"] >= 0) & (twin.cells["x_site_id"] >= 0)]
    yx = twin.sites.set_index("site_id")[["y_px", "x_px"]]
    m = yx.loc[cells["m_site_id"]].to_numpy(float)
    x = yx.loc[cells["x_site_id"]].to_numpy(float)
    return m, x, cells["class"].to_numpy()


def _nn(twin) -> float:
    return twin.material.a / math.sqrt(3) / twin.pixel_size


def test_crops_shape_dtype_and_centres():
    twin = simulate_twin("MoS2", (96, 96), 0.15, imaging=ImagingParams(dose=None), seed=5)
    m, x, _ = _cells(twin)
    crops = cell_crops(twin.image, m, x, _nn(twin))
    assert crops.shape == (len(m), 2, CROP_SIZE, CROP_SIZE)
    assert crops.dtype == np.float32
    c = (CROP_SIZE - 1) / 2
    # channel 1 peaks on the metal at the centre; channel 0 has the metal nn to the left of centre
    inner = np.all((m > 12) & (m < 84) & (x > 12) & (x < 84), axis=1)
    mean = crops[inner].mean(axis=0)
    assert np.unravel_index(mean[1].argmax(), mean[1].shape) in {(int(c), int(c)), (int(c) + 1, int(c) + 1),
                                                                  (int(c), int(c) + 1), (int(c) + 1, int(c))}
    left = mean[0][:, : int(c - CANONICAL_NN_PX / 2)]
    assert abs(np.unravel_index(left.argmax(), left.shape)[1] - (c - CANONICAL_NN_PX)) <= 1
    assert cell_crops(twin.image, np.zeros((0, 2)), np.zeros((0, 2)), _nn(twin)).shape == (0, 2, 32, 32)


def test_crops_rotation_invariant():
    """The same (perfect) cell in a lattice turned by 37 degrees gives nearly the same crop."""
    out = []
    for rot in (0.0, 37.0):
        twin = simulate_twin("WSe2", (160, 160), 0.14, rotation_deg=rot,
                             imaging=ImagingParams(dose=None, background=0.0), seed=9)
        m, x, _ = _cells(twin)
        centre = np.argmin(np.hypot(*(m - 80.0).T))
        out.append(cell_crops(twin.image, m[[centre]], x[[centre]], _nn(twin))[0])
    a, b = out
    corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert corr > 0.98
    assert np.abs(a - b).mean() < 0.05 * (a.max() - a.min())


def test_importing_crops_does_not_import_torch():
    code = ("import sys, napari_stem_defects.cells.crops, napari_stem_defects.cells.cnn; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


torch = pytest.importorskip("torch")


def test_weights_load_with_weights_only():
    from napari_stem_defects.cells.cnn import default_weights_path, load_cell_model

    payload = torch.load(default_weights_path(), weights_only=True, map_location="cpu")
    assert set(payload) == {"state_dict", "metadata"}
    model = load_cell_model()
    assert model.metadata["classes"] == list(CELL_CLASSES)
    assert default_weights_path().stat().st_size < 2e6
    with pytest.raises(FileNotFoundError, match="train_cell_cnn.py"):
        load_cell_model("/nonexistent/cell_cnn.pt")


def test_classifies_heldout_mos2_vacancies():
    """Fresh held-out MoS2 twin at 1e6 e/Å^2 (default imaging), ground-truth positions:
    accuracy >= 0.95 and no vacancy missed (10/10 seeds 3_900_001-10 give accuracy 1.0)."""
    from napari_stem_defects.cells.cnn import classify_cells

    seed = 3_900_001  # outside the training (20_000_000+) and held-out table seeds
    twin = simulate_twin("MoS2", (256, 256), 0.12, rotation_deg=None, imaging=ImagingParams(dose=1e6), seed=seed,
                         defects={"V_X1": 0.05, "V_X2": 0.05, "V_M": 0.05})
    m, x, truth = _cells(twin)
    prob = classify_cells(twin.image, m, x, _nn(twin), "MoS2")
    assert prob.shape == (len(m), len(CELL_CLASSES))
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-4)
    pred = np.asarray(CELL_CLASSES)[prob.argmax(axis=1)]
    assert (pred == truth).mean() >= 0.95
    defective = np.isin(truth, ["V_X1", "V_X2", "V_M"])
    assert defective.sum() >= 10
    assert np.all(pred[defective] != "perfect")


def test_image_prior_recovers_the_class_shares_of_an_image():
    """Balanced posteriors of a known two-class mixture (95 % / 5 %, unit-variance Gaussians
    2 apart): the EM prior finds the 95 % and calls fewer cells of the rare class."""
    from napari_stem_defects.cells.cnn import image_prior

    rng = np.random.default_rng(0)
    truth = (rng.random(20000) < 0.05).astype(int)
    feature = rng.normal(2.0 * truth, 1.0)
    lik = np.stack([np.exp(-0.5 * feature**2), np.exp(-0.5 * (feature - 2.0) ** 2)], axis=1)
    balanced = lik / lik.sum(axis=1, keepdims=True)
    post, shares = image_prior(balanced)
    assert abs(shares[0] - 0.95) < 0.01
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    errors_balanced = (balanced.argmax(1) != truth).sum()
    errors_image = (post.argmax(1) != truth).sum()
    assert errors_image < 0.5 * errors_balanced
    # a handful of cells barely moves the prior away from balanced
    _, few = image_prior(balanced[:6])
    assert np.all(np.abs(few - 0.5) < 0.3)


def test_image_prior_cuts_false_defects_on_a_noisy_mostly_perfect_twin():
    """MoS2 at 1e4 e/Å^2 with 5 % V_X1: the class-balanced output calls many perfect cells
    defective; the image prior calls far fewer wrongly, is more accurate and finds the vacancies
    with a higher F1 (it trades a little recall for much precision)."""
    from napari_stem_defects.cells.cnn import classify_cells

    twin = simulate_twin("MoS2", (384, 384), 0.12, rotation_deg=None, imaging=ImagingParams(dose=1e4),
                         seed=3_900_021, defects={"V_X1": 0.05})
    m, x, truth = _cells(twin)
    names = np.asarray(CELL_CLASSES)
    pred = {prior: names[classify_cells(twin.image, m, x, _nn(twin), "MoS2", prior=prior).argmax(1)]
            for prior in ("balanced", "image")}
    perfect, vacancy = truth == "perfect", truth == "V_X1"
    false = {k: int((p[perfect] != "perfect").sum()) for k, p in pred.items()}
    assert false["balanced"] >= 15
    assert false["image"] <= 0.4 * false["balanced"]
    assert (pred["image"] == truth).mean() > (pred["balanced"] == truth).mean()
    assert vacancy.sum() >= 8

    def f1(p):
        tp = int((p[vacancy] == "V_X1").sum())
        return 2 * tp / (2 * tp + int((p[~vacancy] == "V_X1").sum()) + int((p[vacancy] != "V_X1").sum()))

    assert f1(pred["image"]) > f1(pred["balanced"]) + 0.1
    with pytest.raises(ValueError, match="prior"):
        classify_cells(twin.image, m, x, _nn(twin), "MoS2", prior="flat")


def test_training_can_continue_from_earlier_weights():
    """train(init_state=...) scores the given weights first (step 0) and starts from them."""
    from napari_stem_defects.cells.cnn import default_weights_path
    from napari_stem_defects.network_io import read_weights
    from napari_stem_defects.training.cell_cnn import train

    threads = torch.get_num_threads()
    state, _ = read_weights(default_weights_path(), "cell classifier", "scripts/train_cell_cnn.py")
    model, history = train(1, 8, n_twins=2, n_val=2, lr=1e-9, eval_every=1, init_state=state, log=lambda s: None)
    torch.set_num_threads(threads)
    first = history["val"][0]
    assert first["step"] == 0 and len(history["val"]) == 2
    assert history["best"]["macro_f1"] >= first["macro_f1"] > 0.5  # the shipped weights, not random ones
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(v, state[k], atol=1e-5), k


def test_train_script_refuses_weights_of_another_architecture(tmp_path, capsys, load_script):
    from napari_stem_defects.cells.cnn import build_cell_cnn
    from napari_stem_defects.network_io import save_weights

    script = load_script("train_cell_cnn")
    other = tmp_path / "other.pt"
    save_weights(build_cell_cnn(hidden=64), other, {"arch": {"hidden": 64}})
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--init", str(other), "--out", str(tmp_path / "x.pt")])
    assert exit_info.value.code == 2
    assert "another architecture" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_time_limited_training_checkpoints_its_best_weights():
    """A deadline already passed ends the loop after its first step, which is validated and handed to
    ``on_best`` (as a script's checkpoint); the model comes back on the CPU in eval mode."""
    import time

    from napari_stem_defects.training.cell_cnn import train

    threads = torch.get_num_threads()
    saved = []
    model, history = train(10_000, 8, n_twins=2, n_val=1, eval_every=1000, deadline=time.time(),
                           log=lambda s: None, on_best=lambda net, hist: saved.append(hist["best"]["step"]))
    torch.set_num_threads(threads)
    assert history["steps_run"] == 1 and saved == [1]
    assert next(model.parameters()).device.type == "cpu" and not model.training


def test_save_weights_is_atomic(tmp_path, monkeypatch):
    """A save that fails half-way leaves the earlier file as it was and no temporary file behind."""
    from napari_stem_defects.cells.cnn import build_cell_cnn
    from napari_stem_defects.network_io import read_weights, save_weights

    path = tmp_path / "w.pt"
    save_weights(build_cell_cnn(), path, {"arch": {}, "note": "first"})
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_weights(build_cell_cnn(), path, {"arch": {}, "note": "second"})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.pt"]
    monkeypatch.undo()
    assert read_weights(path, "cell classifier", "scripts/train_cell_cnn.py")[1]["note"] == "first"


def test_training_twins_mix_the_calibrated_table_without_moving_the_heldout_seeds():
    from napari_stem_defects.training.cell_cnn import TABLE_SHARE, random_cell_twin, twin_examples

    assert 0.0 < TABLE_SHARE < 1.0
    kinds = [random_cell_twin(s, 64, table_share=TABLE_SHARE).imaging.column_model for s in range(20_000, 20_040)]
    assert 0.2 < kinds.count("table") / len(kinds) < 0.8, kinds
    # the draw has its own stream: a Z-power twin is the same with or without the option
    zpower = next(s for s, k in zip(range(20_000, 20_040), kinds) if k == "zpower")
    np.testing.assert_array_equal(random_cell_twin(zpower, 64, table_share=TABLE_SHARE).image,
                                  random_cell_twin(zpower, 64).image)
    table = next(s for s, k in zip(range(20_000, 20_040), kinds) if k == "table")
    twin = random_cell_twin(table, 64, table_share=TABLE_SHARE)
    assert twin.imaging.microscope is not None and twin.imaging.gamma is None
    crops, context, mask, labels = twin_examples(table)
    assert len(crops) == len(context) == len(mask) == len(labels) > 0


def test_table_imaged_training_twins_leave_out_antisites_that_look_like_the_host():
    """A training twin imaged through the multislice table where W on an X2 site of WSSe scatters like the
    alloy's Se2 pairs holds no M_X cell: no reader can count them there, and teaching them would teach
    the networks to flag the alloy's own Se2 columns. Where the microscope sets them apart they stay."""
    from napari_stem_defects.cells.alike_pairs import hidden_antisite_classes
    from napari_stem_defects.training.cell_cnn import random_cell_twin

    kept, left_out = 0, 0
    for seed in range(40):
        twin = random_cell_twin(seed, size=128, material="WSSe", table_share=1.0)
        classes = set(twin.cells["class"])
        hidden = hidden_antisite_classes("WSSe", twin.imaging.microscope)
        if hidden:
            left_out += 1
            assert not classes & hidden, (seed, classes & hidden)
        else:
            kept += "M_X" in classes
    assert left_out >= 3 and kept >= 3, (left_out, kept)
