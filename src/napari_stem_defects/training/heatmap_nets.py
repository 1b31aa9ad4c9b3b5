"""Training data, loops and held-out evaluation of the two heatmap networks
(:mod:`napari_stem_defects.heatmaps.networks`).

Twins come from :func:`napari_stem_defects.training.cell_cnn.random_cell_twin`,
the cell classifier's randomisation: any of KNOWN_MATERIALS (alloys and Janus
layers included), nn 8-22 px, random rotation, every imaging parameter drawn
by ``random_imaging`` (Z exponent, probe size, shape and tail, background,
texture, scan jitter, drift, dose 1e4-1e7, gain, read noise; half of the twins with columns and
probe from the multislice-calibrated table at a random microscope) and every defect
type the material allows at 0.5-4.5 % of the cells.

- **Patch classifier**: each twin is resampled so that nn is uniform in
  :data:`~napari_stem_defects.heatmaps.engines.PATCH_NN_RANGE` network
  pixels; windows of 64 px are cut centred on every defective site (moved by
  up to 0.5 nn) and on as many random points; a window is positive for a
  family when one of its defects lies within 0.9 nn of the centre.
- **Attention U-Net**: each twin is resampled to the canonical scale (nn 11 px
  +- 5 %) and mirrored beyond its edges as at inference; three 128 px crops
  per twin (one on a defect of a family drawn evenly, one inside, one that may
  cross an edge); targets are discs of 0.5 nn around the defective sites
  (:func:`~napari_stem_defects.heatmaps.classes.target_maps`).

Seeds never overlap with the cell classifier's or each other's: training from
:data:`TRAIN_SEED_BASE`, validation from :data:`VAL_SEED_BASE`, held-out tests
from :data:`TEST_SEED_BASE`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from ..heatmaps.classes import HEATMAP_CLASSES, defect_sites, target_maps
from ..heatmaps.engines import PATCH_NN_RANGE, heatmap_context
from ..heatmaps.networks import CENTRE_RADIUS_NN, UNET_TILE_MARGIN, WINDOW
from ..network_inputs import CANONICAL_NN_PX, flatten_and_normalize, resample, resample_coordinates
from .cell_cnn import TABLE_SHARE, random_cell_twin, twin_nn_px
from .scratch_loop import train_keeping_best

TRAIN_SEED_BASE = 40_000_000
VAL_SEED_BASE = 4_500_000
TEST_SEED_BASE = 5_000_000
#: Crop side of the U-Net's training examples (network pixels).
UNET_CROP = 128
#: Radius of the U-Net's target discs, in nn.
TARGET_RADIUS_NN = 0.5


def _scaled_twin(seed: int, nn_target: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]:
    """A training twin resampled so that nn = ``nn_target`` px: prepared image, defect positions
    and families, all site positions, and the twin (imaged through the calibrated table with chance
    :data:`~.cell_cnn.TABLE_SHARE`)."""
    twin = random_cell_twin(seed, table_share=TABLE_SHARE)
    nn = twin_nn_px(twin)
    shape = twin.image.shape
    net_shape = (int(round(shape[0] * nn_target / nn)), int(round(shape[1] * nn_target / nn)))
    x = flatten_and_normalize(resample(twin.image, net_shape), nn_target)
    yx, fam = defect_sites(twin.sites)
    return x, resample_coordinates(yx, shape, net_shape), fam, net_shape, twin


def patch_examples(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows (float16, (N, 64, 64)), contexts (N, 6) and labels (N, 5) of one twin."""
    rng = np.random.default_rng([seed, 3])
    nn_net = float(rng.uniform(*PATCH_NN_RANGE))
    x, yx, fam, shape, twin = _scaled_twin(seed, nn_net)
    half = WINDOW // 2
    padded = np.pad(x, half, mode="symmetric")
    n_rand = max(16, len(yx))
    r = 0.5 * nn_net * np.sqrt(rng.random(len(yx)))
    t = rng.uniform(0, 2 * np.pi, len(yx))
    centres = np.concatenate([yx + np.stack([r * np.sin(t), r * np.cos(t)], 1),
                              rng.uniform(0, 1, (n_rand, 2)) * np.array(shape)])
    ci = np.clip(np.round(centres).astype(int), 0, np.array(shape) - 1)
    # window starting at ci - 32 has its centre at ci - 0.5 (pixel centres), as in predict_windows
    win = np.stack([padded[i : i + WINDOW, j : j + WINDOW] for i, j in ci])
    labels = np.zeros((len(ci), len(HEATMAP_CLASSES)), dtype=np.float32)
    if len(yx):
        d = np.hypot(*(yx[None, :, :] - (ci[:, None, :] - 0.5)).transpose(2, 0, 1))
        near = d <= CENTRE_RADIUS_NN * nn_net
        labels = (near.astype(np.float32) @ fam.astype(np.float32) > 0).astype(np.float32)
    ctx = np.broadcast_to(heatmap_context(twin.material, nn_net), (len(ci), 6))
    return win.astype(np.float16), ctx.astype(np.float32), labels


def unet_examples(seed: int, crops: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops (float16, (n, 128, 128)), contexts (n, 6) and target maps (bool, (n, 5, 128, 128)) of one twin.

    The twin is mirrored :data:`~napari_stem_defects.heatmaps.networks.UNET_TILE_MARGIN`
    px beyond its edges, as the tiler does at inference, targets included. The
    first crop holds a defect (of a family drawn evenly among those the twin
    has, so that rare families are seen as often as vacancies), the second lies
    inside the image and the others may reach into the mirrored margin, so that
    the network sees image edges and learns that a mirror line is not a defect.
    """
    rng = np.random.default_rng([seed, 4])
    nn_net = CANONICAL_NN_PX * float(rng.uniform(0.95, 1.05))
    x, yx, fam, shape, twin = _scaled_twin(seed, nn_net)
    sites = twin.sites.copy()
    sites[["y_px", "x_px"]] = resample_coordinates(sites[["y_px", "x_px"]].to_numpy(float), twin.image.shape, shape)
    target = target_maps(sites, shape, TARGET_RADIUS_NN * nn_net)
    c, m = UNET_CROP, UNET_TILE_MARGIN
    pad = [(m, m + max(0, c - s - 2 * m)) for s in shape]
    x = np.pad(x, pad, mode="symmetric")
    target = np.pad(target, [(0, 0)] + pad, mode="symmetric")
    inner = [(m, max(m, m + s - c)) for s in shape]  # crop origins inside the image (as far as it allows)
    imgs, tgts = [], []
    for k in range(crops):
        if k == 0 and len(yx):  # one crop holds a defect of a family drawn evenly among the twin's
            family = rng.choice(np.flatnonzero(fam[:, 1:].any(axis=0))) + 1
            cy, cx = yx[rng.choice(np.flatnonzero(fam[:, family]))] + m
            y0 = int(np.clip(cy - rng.uniform(16, c - 16), 0, x.shape[0] - c))
            x0 = int(np.clip(cx - rng.uniform(16, c - 16), 0, x.shape[1] - c))
        elif k <= 1:
            y0, x0 = (int(rng.integers(lo, hi + 1)) for lo, hi in inner)
        else:
            y0, x0 = int(rng.integers(0, x.shape[0] - c + 1)), int(rng.integers(0, x.shape[1] - c + 1))
        imgs.append(x[y0 : y0 + c, x0 : x0 + c])
        tgts.append(target[:, y0 : y0 + c, x0 : x0 + c])
    ctx = np.broadcast_to(heatmap_context(twin.material, nn_net), (crops, 6))
    return np.stack(imgs).astype(np.float16), ctx.astype(np.float32), np.stack(tgts)


def _examples_of(args: tuple[str, Sequence[int], int]) -> tuple[np.ndarray, ...]:
    engine, seeds, crops = args
    if engine == "sliding-window":
        parts = [patch_examples(int(s)) for s in seeds]
    else:
        parts = [unet_examples(int(s), crops) for s in seeds]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def build_dataset(engine: str, seeds: Sequence[int], workers: int = 1,
                  log: Callable[[str], None] = print, crops: int = 3) -> dict[str, np.ndarray]:
    """Examples of many twins for one engine, simulated in ``workers`` processes
    (``crops`` U-Net crops per twin)."""
    seeds = list(seeds)
    chunks = [(engine, seeds[k : k + 50], crops) for k in range(0, len(seeds), 50)]
    t0 = time.time()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_examples_of, chunks))
    else:
        parts = [_examples_of(c) for c in chunks]
    log(f"  {len(seeds)} twins -> examples in {time.time() - t0:.0f} s")
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(("x", "context", "y"))}


def _augment(x: Any, y: Any, rng: np.random.Generator, dense: bool) -> tuple[Any, Any]:
    """Random flips, 90-degree turns, gain and offset of a batch (the targets turn with the images)."""
    import torch

    k = int(rng.integers(4))
    if k:
        x = torch.rot90(x, k, (-2, -1))
        y = torch.rot90(y, k, (-2, -1)) if dense else y
    if rng.random() < 0.5:
        x = x.flip(-1)
        y = y.flip(-1) if dense else y
    b = x.shape[0]
    gain = torch.from_numpy(rng.uniform(0.8, 1.25, (b, 1, 1, 1)).astype(np.float32)).to(x.device)
    offset = torch.from_numpy(rng.normal(0, 0.05, (b, 1, 1, 1)).astype(np.float32)).to(x.device)
    return x * gain + offset, y


def pixel_f1(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """F1 per channel of boolean maps (C, ...) (NaN where neither has a positive)."""
    p = pred.reshape(pred.shape[0], -1)
    t = truth.reshape(truth.shape[0], -1)
    tp = (p & t).sum(1).astype(float)
    denom = p.sum(1) + t.sum(1)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def train(
    engine: str,
    steps: int,
    batch: int,
    seed: int = 0,
    *,
    n_twins: int = 2000,
    n_val: int = 100,
    lr: float = 2e-3,
    eval_every: int = 500,
    max_minutes: float = 1e9,
    workers: int = 1,
    threads: int = 1,
    init_state: dict[str, Any] | None = None,
    family_weights: dict[str, float] | None = None,
    crops: int = 3,
    arch: dict[str, Any] | None = None,
    device: str = "cpu",
    on_best: Callable[[Any, dict[str, Any]], None] | None = None,
    deadline: float | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Any, dict[str, Any]]:
    """Train one engine's network; keep the weights with the best validation mean F1.

    The loss is the binary cross-entropy of each family (positives weighted
    x3 for the U-Net, whose positives are a few % of the pixels) plus, for the
    U-Net, a soft Dice term per channel. Adam with warm-up and cosine decay;
    random flips, 90-degree turns, gain and offset. ``init_state`` (a state
    dict of the same architecture) continues an earlier training run; it is
    scored on the validation set first and kept if no later step beats it.
    ``family_weights`` (family name -> factor, default 1) scales each family's
    share of the loss, to spend more of the network on a weak family.

    ``crops`` is the number of U-Net crops cut from each twin, ``arch``
    overrides entries of the engine's architecture (e.g. ``channels``) and
    ``device`` is where the network trains ("cpu", "cuda"). On a GPU all the
    examples are moved to its memory and the network runs in bfloat16
    autocast (the loss in float32). The loop, the time budget
    (``max_minutes``, ``deadline``: set before the twins are simulated) and
    ``on_best`` are those of
    :func:`~napari_stem_defects.training.scratch_loop.train_keeping_best`.

    Returns
    -------
    model, history
    """
    import torch

    from ..heatmaps.networks import build_attention_unet, build_patch_net

    dense = engine == "attention-unet"
    weight = family_weight_vector(family_weights).to(device)
    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 9])
    t0 = time.time()
    base = TRAIN_SEED_BASE + (1_000_000 if dense else 0) + seed * 100_000
    data = build_dataset(engine, range(base, base + n_twins), workers, log, crops=crops)
    val = build_dataset(engine, range(VAL_SEED_BASE, VAL_SEED_BASE + n_val), workers, log)
    log(f"data: {len(data['x'])} train / {len(val['x'])} val examples; positives per family "
        f"{np.asarray(data['y']).reshape(len(data['y']), len(HEATMAP_CLASSES), -1).mean(axis=(0, 2)).round(4).tolist()}")
    xs, cs, ys = (torch.from_numpy(np.ascontiguousarray(data[k])) for k in ("x", "context", "y"))
    on_gpu = str(device).startswith("cuda")
    if on_gpu:  # batches are gathered on the GPU, which holds all the examples
        xs, cs, ys = xs.to(device), cs.to(device), ys.to(device)
        torch.backends.cudnn.benchmark = True
    model = build_attention_unet(**(arch or {})) if dense else build_patch_net(**(arch or {}))
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    history: dict[str, Any] = {"engine": engine, "steps": steps, "batch": batch, "n_twins": n_twins, "val": [],
                               "family_weights": dict(family_weights or {})}

    def batch_loss() -> Any:
        idx = torch.from_numpy(rng.integers(len(xs), size=batch)).to(xs.device)
        x = xs[idx].to(device).float()[:, None]
        y = ys[idx].to(device).float()
        x, y = _augment(x, y, rng, dense)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            out = model(x, cs[idx].to(device))
        return training_loss(out.float(), y, weight, dense)

    def evaluate(initial: bool) -> tuple[dict[str, Any], str]:
        f1 = validate(model, val, dense)
        mean = float(np.nanmean(f1))
        return {"f1": f1.tolist(), "mean_f1": mean}, f"val F1 {np.round(f1, 3).tolist()} mean {mean:.4f}"

    return train_keeping_best(model, history, steps=steps, lr=lr, eval_every=eval_every, batch_loss=batch_loss,
                              evaluate=evaluate, score="mean_f1", initial=init_state is not None,
                              max_minutes=max_minutes, deadline=deadline, on_best=on_best, log=log, t0=t0)


def family_weight_vector(family_weights: dict[str, float] | None) -> Any:
    """One loss factor per family of :data:`HEATMAP_CLASSES` (default 1), scaled to mean 1.

    Raises
    ------
    ValueError
        An unknown family name, or factors that are not finite, negative, or all 0.

    Examples
    --------
    >>> family_weight_vector({"substitution": 4.0}).tolist()
    [0.625, 0.625, 0.625, 0.625, 2.5]
    """
    import torch

    unknown = set(family_weights or {}) - set(HEATMAP_CLASSES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; the families are {list(HEATMAP_CLASSES)}")
    weight = torch.tensor([float((family_weights or {}).get(c, 1.0)) for c in HEATMAP_CLASSES])
    if not (torch.isfinite(weight).all() and (weight >= 0).all() and weight.sum() > 0):
        raise ValueError(f"family weights must be finite, >= 0 and not all 0, not {family_weights}")
    return weight / weight.mean()


def training_loss(out: Any, y: Any, weight: Any, dense: bool) -> Any:
    """The training loss of a batch: per-family binary cross-entropy (positives x3 for
    the U-Net) plus, for the U-Net, a soft Dice term per family, each family's terms
    scaled by ``weight`` (a tensor of one factor per family, mean 1).

    Parameters
    ----------
    out : torch.Tensor
        Logits, (B, C, H, W) for the U-Net or (B, C, 1, 1) for the patch net.
    y : torch.Tensor
        Targets in [0, 1], (B, C, H, W) or (B, C).
    weight : torch.Tensor
        (C,) factors.
    dense : bool
        True for the U-Net.
    """
    import torch
    from torch.nn import functional as F

    if not dense:
        bce = F.binary_cross_entropy_with_logits(out[:, :, 0, 0], y, reduction="none")
        return (bce.mean(0) * weight).mean()
    pos_weight = torch.full((out.shape[1], 1, 1), 3.0, device=out.device)
    bce = F.binary_cross_entropy_with_logits(out, y, pos_weight=pos_weight, reduction="none")
    p = torch.sigmoid(out)
    inter = (p * y).sum((2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((2, 3)) + y.sum((2, 3)) + 1)
    return (bce.mean((0, 2, 3)) * weight).mean() + (dice.mean(0) * weight).mean()


def validate(model: Any, val: dict[str, np.ndarray], dense: bool) -> np.ndarray:
    """F1 per family at threshold 0.5 on a validation set (pixels for the U-Net, windows for the patch net)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    preds = []
    with torch.no_grad():
        for k in range(0, len(val["x"]), 256):
            x = torch.from_numpy(val["x"][k : k + 256].astype(np.float32))[:, None].to(device)
            c = torch.from_numpy(val["context"][k : k + 256]).to(device)
            out = torch.sigmoid(model(x, c)).cpu().numpy()
            preds.append(out if dense else out[:, :, 0, 0])
    pred = np.concatenate(preds) >= 0.5
    truth = np.asarray(val["y"]) > 0.5
    return pixel_f1(np.moveaxis(pred, 1, 0), np.moveaxis(truth, 1, 0))
