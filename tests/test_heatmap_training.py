"""Training examples of the heatmap U-Net (image edges included) and continuing a training run."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_stem_defects.heatmaps.classes import HEATMAP_CLASSES  # noqa: E402
from napari_stem_defects.heatmaps.networks import UNET_TILE_MARGIN, build_attention_unet  # noqa: E402
from napari_stem_defects.network_io import packaged_weights_path, state_snapshot  # noqa: E402
from napari_stem_defects.training import heatmap_nets  # noqa: E402
from napari_stem_defects.training.heatmap_nets import UNET_CROP, unet_examples  # noqa: E402


def test_unet_examples_hold_a_defect_and_reach_across_image_edges(monkeypatch):
    """The first crop holds a defect, the second lies inside the image, the third may reach into the
    mirrored margin: there two neighbouring rows or columns are equal (the mirror line). The twins'
    resampled shapes are recorded by wrapping ``_scaled_twin``."""
    shapes = []
    real = heatmap_nets._scaled_twin

    def scaled(seed, nn_target):
        out = real(seed, nn_target)
        shapes.append(out[3])
        return out

    monkeypatch.setattr(heatmap_nets, "_scaled_twin", scaled)
    edge_crops = 0
    for seed in range(41_900_000, 41_900_012):
        x, ctx, y = unet_examples(seed)
        assert x.shape == (3, UNET_CROP, UNET_CROP) and x.dtype == np.float16
        assert y.shape == (3, len(HEATMAP_CLASSES), UNET_CROP, UNET_CROP) and y.dtype == bool
        assert ctx.shape == (3, 6)
        assert y[0, 0].any()  # the defect crop
        assert (y[:, 0] == y[:, 1:].any(axis=1)).all()  # "defect" is the union of the families
        # a crop touching the mirrored margin repeats image rows or columns in mirror order
        for k in (1, 2):
            img = x[k].astype(np.float32)
            rows = any(np.array_equal(img[i], img[i + 1]) for i in range(UNET_CROP - 1))
            cols = any(np.array_equal(img[:, i], img[:, i + 1]) for i in range(UNET_CROP - 1))
            if k == 1 and min(shapes[-1]) >= UNET_CROP:
                assert not (rows or cols), "the inside crop reached the mirrored margin"
            edge_crops += k == 2 and (rows or cols)
    assert edge_crops >= 3  # some edge crops over 12 twins (about half are expected)
    assert UNET_TILE_MARGIN == 64  # the shipped U-Net was trained with this margin


def test_training_can_continue_from_earlier_weights():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    start = build_attention_unet()
    state = state_snapshot(start)
    model, history = heatmap_nets.train("attention-unet", steps=1, batch=2, n_twins=2, n_val=2, lr=1e-9,
                                        eval_every=1, init_state=state, log=lambda s: None)
    torch.set_num_threads(threads)
    first = history["val"][0]
    assert first["step"] == 0 and len(history["val"]) == 2
    assert history["best"]["mean_f1"] >= first["mean_f1"]
    # the initial weights were loaded: one step at lr 1e-9 leaves them (nearly) where they were
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(v, state[k], atol=1e-5), k


def test_train_script_refuses_weights_of_the_other_engine(tmp_path, capsys, load_script):
    script = load_script("train_heatmap_nets")
    patch = packaged_weights_path("heatmap_patch.pt")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--engine", "attention-unet", "--init", str(patch), "--out", str(tmp_path / "x.pt")])
    assert exit_info.value.code == 2
    assert "sliding-window" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_family_weights_scale_each_familys_share_of_the_loss():
    """Even weights give the plain loss (mean BCE with positives x3 plus mean soft Dice); a family
    weighted 0 has no say in the loss, and an unknown family name is refused."""
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(0)
    k = len(HEATMAP_CLASSES)
    out = torch.randn(3, k, 16, 16, generator=g, requires_grad=True)
    y = (torch.rand(3, k, 16, 16, generator=g) < 0.1).float()
    even = heatmap_nets.training_loss(out, y, torch.ones(k), dense=True)
    p = torch.sigmoid(out)
    dice = 1 - (2 * (p * y).sum((2, 3)) + 1) / (p.sum((2, 3)) + y.sum((2, 3)) + 1)
    plain = F.binary_cross_entropy_with_logits(out, y, pos_weight=torch.full((k, 1, 1), 3.0)) + dice.mean()
    assert torch.allclose(even, plain)
    weight = torch.ones(k)
    weight[HEATMAP_CLASSES.index("substitution")] = 0.0
    heatmap_nets.training_loss(out, y, weight, dense=True).backward()
    grad = out.grad.abs().sum((0, 2, 3))
    sub = HEATMAP_CLASSES.index("substitution")
    assert grad[sub] == 0 and all(grad[c] > 0 for c in range(k) if c != sub)
    with pytest.raises(ValueError, match="substitution"):
        heatmap_nets.train("attention-unet", steps=1, batch=2, n_twins=1, n_val=1, family_weights={"subst": 2.0})


def test_time_limited_run_checkpoints_its_best_weights_and_stops_at_the_deadline():
    """A deadline already passed ends the loop after its first step, which is validated and,
    as the first score, handed to ``on_best``; ``crops`` and ``arch`` shape the data and network."""
    import time

    threads = torch.get_num_threads()
    saved, lines = [], []
    model, history = heatmap_nets.train(
        "attention-unet", steps=10_000, batch=2, n_twins=2, n_val=1, eval_every=1000, crops=2,
        arch={"channels": (8, 12, 16, 24)}, deadline=time.time(), log=lines.append,
        on_best=lambda net, hist: saved.append((hist["best"]["step"], net.training)))
    torch.set_num_threads(threads)
    assert history["steps_run"] == 1 and [r["step"] for r in history["val"]] == [1]
    assert saved == [(1, False)]  # called once, with the validated weights
    assert any(line.startswith("data: 4 train / 3 val examples") for line in lines)  # 2 twins x 2 crops
    widths = sorted({m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)})
    assert {8, 12, 16, 24} <= set(widths) and 96 not in widths
    assert next(model.parameters()).device.type == "cpu" and not model.training


def test_train_script_writes_the_network_it_was_asked_for(tmp_path, capsys, load_script):
    """``--channels`` gives a new network of that width; the file records it and loads with
    ``weights_only=True``; ``--channels`` that contradict ``--init`` are refused."""
    from napari_stem_defects.heatmaps.engines import load_heatmap_model

    script = load_script("train_heatmap_nets")
    threads = torch.get_num_threads()
    out = tmp_path / "u.pt"
    assert script.main(["--engine", "attention-unet", "--channels", "8", "12", "16", "24", "--steps", "2",
                        "--batch", "2", "--twins", "1", "--val", "1", "--crops", "2", "--eval-every", "1",
                        "--test-per", "0", "--out", str(out)]) == 0
    torch.set_num_threads(threads)
    meta = torch.load(out, weights_only=True)["metadata"]
    assert meta["arch"]["channels"] == [8, 12, 16, 24] and "checkpoint" not in meta
    assert meta["validation"]["step"] in (1, 2) and "--channels 8 12 16 24" in meta["training_command"]
    model = load_heatmap_model("attention-unet", out)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in build_attention_unet().parameters())
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--engine", "attention-unet", "--init", str(out), "--channels", "16", "32", "64", "96",
                     "--out", str(tmp_path / "y.pt")])
    assert exit_info.value.code == 2 and "--channels" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists()
