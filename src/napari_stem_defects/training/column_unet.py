"""Training data and loop of the column U-Net (:mod:`napari_stem_defects.columns.unet`).

Examples are fresh digital twins with random material (alloys, Janus), point defects,
imaging (dose 1e3-1e7 e/Å^2), rotation and nn distance ``CANONICAL_NN_PX * U(0.8, 1.25)``;
the target is a Gaussian blob (sigma 0.18 nn) at every occupied site. Seeds never
overlap: training from :data:`TRAIN_SEED_BASE`, validation from :data:`VAL_SEED_BASE`,
held-out test from :data:`TEST_SEED_BASE`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..columns.unet import DEFAULT_ARCH, build_column_unet, detection_map_with_model, predict_map
from ..network_inputs import CANONICAL_NN_PX, resample, resample_coordinates
from ..materials import KNOWN_MATERIALS, parse_material
from ..network_io import normalize_image, save_weights, state_snapshot  # noqa: F401  (save_weights re-exported for the scripts)
from ..simulate import DigitalTwin, random_imaging, simulate_twin
from .schedule import warmup_cosine

TRAIN_SEED_BASE = 10_000_000
VAL_SEED_BASE = 1
TEST_SEED_BASE = 1_000_000
#: Doses (e/Å^2) of the held-out evaluation.
TEST_DOSES = (1e3, 1e4, 1e5, 1e6, 1e7)
#: Width of the target blobs, in units of the nn distance.
SIGMA_FRACTION = 0.18
#: Upper bound of the fraction of cells per defect type (vacancies are frequent so that
#: the network learns not to fill in the lattice).
DEFECT_MAX = {
    "V_X1": 0.10, "V_X2": 0.10, "V_M": 0.06, "V_X1+V_M": 0.02, "V_X2+V_M": 0.02,
    "M_X": 0.01, "X_M": 0.01, "dopant_M": 0.06, "sub_X": 0.06, "adatom": 0.03,
}
#: Extra loss weight on the neighbourhood of empty (vacancy) sites.
EMPTY_WEIGHT = 4.0
_METALS = ("Mo", "W", "Nb", "Ta", "Re", "V", "Cr", "Ti", "Pt")
_ADATOMS = ("Mo", "W", "Re", "Pt", "Nb", "Se", "Te", "S")


def random_twin(
    seed: int,
    shape: tuple[int, int],
    nn_px: float,
    *,
    dose: float | None = None,
    material: str | None = None,
) -> DigitalTwin:
    """A twin with random material, defects, imaging and rotation, at a given nn distance.

    Parameters
    ----------
    seed, shape, nn_px : int, tuple of int, float
        Seed of every choice and of the simulation, image shape, and metal to
        chalcogen distance in pixels (sets the pixel size).
    dose, material : float, str, optional
        Fixed dose (e/Å^2; else log-uniform 1e3-1e7) and material (else one of
        :data:`KNOWN_MATERIALS`).

    Returns
    -------
    DigitalTwin
    """
    rng = np.random.default_rng([seed, 7])
    mat = parse_material(material or KNOWN_MATERIALS[rng.integers(len(KNOWN_MATERIALS))])
    defects = {k: float(rng.uniform(0, hi)) for k, hi in DEFECT_MAX.items() if rng.random() < 0.7}
    imaging = random_imaging(rng, (1e3, 1e7))
    if dose is not None:
        imaging = dataclasses.replace(imaging, dose=float(dose))
    return simulate_twin(
        mat, shape, mat.a / math.sqrt(3) / nn_px, rotation_deg=None, defects=defects,
        imaging=imaging, seed=seed,
        dopant=str(rng.choice([m for m in _METALS if m not in mat.metals])),
        substituent=str(rng.choice(["S", "Se", "Te"])), adatom=str(rng.choice(_ADATOMS)),
    )


def target_map(yx: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Sum of unit Gaussian blobs at positions ``yx`` (pixels), clipped to 1."""
    out = np.zeros(shape, dtype=np.float32)
    r = int(math.ceil(3 * sigma))
    for y, x in np.asarray(yx, dtype=float).reshape(-1, 2):
        iy, ix = int(round(y)), int(round(x))
        y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, shape[0]), max(ix - r, 0), min(ix + r + 1, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        gy = np.exp(-((np.arange(y0, y1) - y) ** 2) / (2 * sigma**2))
        gx = np.exp(-((np.arange(x0, x1) - x) ** 2) / (2 * sigma**2))
        out[y0:y1, x0:x1] += gy[:, None] * gx[None, :]
    return np.minimum(out, 1.0)


def make_example(seed: int, size: int, *, augment: bool = True) -> dict[str, Any]:
    """One canonical-scale example: normalised image, target and site positions.

    With probability 0.35 the twin is simulated at a coarser or finer pixel
    size and resampled (as :func:`~napari_stem_defects.columns.unet.deep_detection_map`
    does). With ``augment``, the raw image may also be gamma-distorted,
    smoothed or quantised to 8 bits with saturation (as exported real data).

    Parameters
    ----------
    seed, size : int
        Seed of the twin and of every choice; side of the example (canonical px).
    augment : bool
        Apply the raw-image distortions.

    Returns
    -------
    dict
        ``image``, ``target`` and loss ``weight`` (float32, (size, size); the
        weight is raised around empty sites), ``occupied`` and ``empty`` site
        positions (n, 2) and ``nn_px``.
    """
    rng = np.random.default_rng([seed, 11])
    nn = CANONICAL_NN_PX * float(rng.uniform(0.8, 1.25))
    pad = 16
    full = size + 2 * pad
    ratio = float(np.exp(rng.uniform(np.log(0.7), np.log(2.2)))) if rng.random() < 0.35 else 1.0
    sim = int(round(full * ratio))
    twin = random_twin(seed, (sim, sim), nn * ratio)
    img = twin.image.astype(np.float64)
    if augment:
        if rng.random() < 0.25:  # gamma distortion of the display range
            lo, hi = np.percentile(img, [0.1, 99.9])
            img = np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1) ** rng.uniform(0.6, 1.6)
        if rng.random() < 0.15:  # smoothed (filtered) data
            from scipy.ndimage import gaussian_filter

            img = gaussian_filter(img, rng.uniform(0.4, 1.2) * ratio)
        if rng.random() < 0.3:  # 8-bit export with some saturation
            lo, hi = np.percentile(img, [rng.uniform(0, 1), 100 - rng.uniform(0, 1.5)])
            img = np.round(np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1) * 255)
    if sim != full:
        img = resample(img, (full, full))
    sites = twin.sites
    yx = sites[["y_px", "x_px"]].to_numpy()
    if sim != full:
        yx = resample_coordinates(yx, (sim, sim), (full, full))
    yx = yx - pad
    occupied = sites["species"].to_numpy() != ""
    crop = img[pad : pad + size, pad : pad + size]
    return {
        "image": normalize_image(crop),
        "target": target_map(yx[occupied], (size, size), SIGMA_FRACTION * nn),
        "weight": 1 + EMPTY_WEIGHT * target_map(yx[~occupied], (size, size), 1.5 * SIGMA_FRACTION * nn),
        "occupied": _within(yx[occupied], size),
        "empty": _within(yx[~occupied], size),
        "nn_px": nn,
    }


def _within(yx: np.ndarray, size: int) -> np.ndarray:
    keep = (yx >= -0.5).all(axis=1) & (yx <= size - 0.5).all(axis=1)
    return yx[keep]


def augment_crop(example: dict[str, Any], rng: np.random.Generator, crop: int) -> list[np.ndarray]:
    """Random crop, 90-degree rotation and flip of image, target and weight; gain/offset jitter."""
    h, w = example["image"].shape
    y0, x0 = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    k, flip = int(rng.integers(4)), rng.random() < 0.5
    out = []
    for key in ("image", "target", "weight"):
        a = np.rot90(example[key][y0 : y0 + crop, x0 : x0 + crop], k)
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a, dtype=np.float32))
    out[0] = out[0] * np.float32(np.exp(rng.uniform(-0.25, 0.25))) + np.float32(rng.uniform(-0.2, 0.2))
    return out


def pick_peaks(dmap: np.ndarray, nn_px: float, threshold: float = 0.3) -> np.ndarray:
    """Local maxima of a detection map at least 0.5 nn apart and above ``threshold``; (n, 2) (y, x)."""
    from skimage.feature import peak_local_max

    return peak_local_max(
        dmap, min_distance=max(1, int(round(0.5 * nn_px))), threshold_abs=threshold, exclude_border=False
    ).astype(float)


def match_counts(
    peaks: np.ndarray, occupied: np.ndarray, empty: np.ndarray, nn_px: float, shape: tuple[int, int]
) -> dict[str, int]:
    """Match peaks to occupied sites within nn/3, away from the image edge.

    Sites and peaks closer than nn/2 to the edge are not scored: a column
    whose centre lies just outside the field of view (not in the site table)
    shows as half a column and gives a peak on the edge. A scored peak is a
    false positive when no occupied site (scored or not) lies within nn/3.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``n_empty`` (scored empty sites) and
        ``empty_hit`` (scored empty sites with a peak within nn/3).
    """
    from scipy.spatial import cKDTree

    radius, band = nn_px / 3, nn_px / 2

    def scored(yx: np.ndarray) -> np.ndarray:
        yx = np.asarray(yx, dtype=float).reshape(-1, 2)
        return (yx >= band - 0.5).all(axis=1) & (yx <= np.array(shape) - 0.5 - band).all(axis=1)

    def near(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if len(a) == 0 or len(b) == 0:
            return np.zeros(len(a), dtype=bool)
        return np.isfinite(cKDTree(b).query(a, distance_upper_bound=radius)[0])

    peaks, occupied, empty = (np.asarray(v, dtype=float).reshape(-1, 2) for v in (peaks, occupied, empty))
    occ_scored, empty_scored = occupied[scored(occupied)], empty[scored(empty)]
    tp = int(near(occ_scored, peaks).sum())
    fp = int((~near(peaks[scored(peaks)], occupied)).sum())
    return {"tp": tp, "fp": fp, "fn": len(occ_scored) - tp, "n_empty": len(empty_scored),
            "empty_hit": int(near(empty_scored, peaks).sum())}


def summarize(counts: Sequence[dict[str, int]]) -> dict[str, float]:
    """Precision, recall, F1 and the share of empty sites with a peak, from summed counts."""
    tot = {k: sum(c[k] for c in counts) for k in ("tp", "fp", "fn", "n_empty", "empty_hit")}
    p = tot["tp"] / max(tot["tp"] + tot["fp"], 1)
    r = tot["tp"] / max(tot["tp"] + tot["fn"], 1)
    return {
        "precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12),
        "empty_with_peak": tot["empty_hit"] / max(tot["n_empty"], 1), "n_sites": tot["tp"] + tot["fn"],
    }


def _loss(logits: Any, target: Any, weight: Any) -> Any:
    """Pixel-weighted binary cross-entropy plus half a soft Dice loss."""
    import torch
    import torch.nn.functional as F

    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + 0.5 * dice


def validate(model: Any, examples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Loss and detection metrics of ``model`` on canonical-scale examples (model left in eval mode)."""
    import torch

    model.eval()
    losses, counts = [], []
    with torch.no_grad():
        for ex in examples:
            x = torch.from_numpy(ex["image"][None, None])
            t, w = (torch.from_numpy(ex[k][None, None]) for k in ("target", "weight"))
            losses.append(float(_loss(model(x), t, w)))
            dmap = predict_map(model, ex["image"])
            peaks = pick_peaks(dmap, ex["nn_px"])
            counts.append(match_counts(peaks, ex["occupied"], ex["empty"], ex["nn_px"], dmap.shape))
    return {"loss": float(np.mean(losses)), **summarize(counts)}


def train(
    steps: int = 3000,
    batch: int = 8,
    size: int = 128,
    seed: int = 0,
    *,
    lr: float = 2e-3,
    n_val: int = 48,
    eval_every: int = 250,
    pool_size: int = 64,
    refresh: int = 2,
    channels: Sequence[int] = DEFAULT_ARCH["channels"],
    log: Callable[[str], None] = print,
) -> tuple[Any, dict[str, Any]]:
    """Train a column U-Net on digital twins, on one CPU thread.

    A pool of ``pool_size`` twins of ``size + 64`` pixels is kept; each step
    replaces ``refresh`` of them with fresh twins and draws ``batch`` random
    augmented crops of ``size`` pixels. Adam with warm-up and cosine decay;
    the weights with the lowest validation loss are kept.

    Parameters
    ----------
    steps, batch, size, seed : int
        Optimiser steps, crops per step, crop side (canonical px), and seed of
        initialisation, crops and twins (``TRAIN_SEED_BASE + seed * 10_000_000`` on).
    lr, n_val, eval_every, pool_size, refresh : float, int
        Peak learning rate, validation twins, steps between validations, pool size,
        twins replaced per step.
    channels, log : sequence of int, callable
        U-Net channels per level; receiver of progress lines.

    Returns
    -------
    model : torch.nn.Module
        Best model, in eval mode.
    history : dict
        Training settings, per-evaluation validation metrics, best metrics and wall time.
    """
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 3])
    t0 = time.time()
    val = [make_example(VAL_SEED_BASE + i, size + 64, augment=False) for i in range(n_val)]
    next_seed = TRAIN_SEED_BASE + seed * 10_000_000
    pool = []
    for _ in range(pool_size):
        pool.append(make_example(next_seed, size + 64))
        next_seed += 1
    log(f"data ready in {time.time() - t0:.0f} s")
    model = build_column_unet(1, channels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = warmup_cosine(opt, steps)
    history: dict[str, Any] = {"steps": steps, "batch": batch, "size": size, "seed": seed, "lr": lr, "val": []}
    best, best_state, run_loss = math.inf, None, []
    for step in range(1, steps + 1):
        for _ in range(refresh):
            pool[int(rng.integers(pool_size))] = make_example(next_seed, size + 64)
            next_seed += 1
        crops = [augment_crop(pool[int(i)], rng, size) for i in rng.integers(pool_size, size=batch)]
        x, t, w = (torch.from_numpy(np.stack([c[j] for c in crops])[:, None]) for j in range(3))
        model.train()
        loss = _loss(model(x), t, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run_loss.append(loss.item())
        if step % eval_every == 0 or step == steps:
            v = validate(model, val)
            v.update(step=step, train_loss=float(np.mean(run_loss)), elapsed_s=time.time() - t0)
            run_loss = []
            history["val"].append(v)
            log(f"step {step}: train {v['train_loss']:.4f} val {v['loss']:.4f} P {v['precision']:.4f} "
                f"R {v['recall']:.4f} F1 {v['f1']:.4f} empty {v['empty_with_peak']:.4f} ({v['elapsed_s']:.0f} s)")
            if v["loss"] < best:
                best = v["loss"]
                best_state = state_snapshot(model)
                history["best"] = v
    model.load_state_dict(best_state)
    model.eval()
    history["train_seconds"] = time.time() - t0
    history["last_train_seed"] = next_seed - 1
    return model, history


def heldout_metrics(
    model: Any,
    doses: Sequence[float] = TEST_DOSES,
    n_per_dose: int = 12,
    *,
    size: int = 256,
    nn_range: tuple[float, float] = (8.0, 22.0),
    seed_base: int = TEST_SEED_BASE,
) -> dict[float, dict[str, float]]:
    """Detection metrics per dose on held-out twins through the full inference path.

    Each twin has a random nn distance in ``nn_range`` pixels and a shape
    that is ``size`` pixels at the canonical scale; peaks are picked from
    the map (min distance 0.5 nn, threshold 0.3) and matched to occupied
    sites within nn/3 (see :func:`match_counts`). Seeds are ``seed_base + 1000 * k + i``
    for dose number k and twin i.

    Returns
    -------
    dict of float to dict
        :func:`summarize` metrics per dose.
    """
    out = {}
    for k, dose in enumerate(doses):
        counts = []
        for i in range(n_per_dose):
            s = seed_base + 1000 * k + i
            nn = float(np.random.default_rng([s, 5]).uniform(*nn_range))
            n = int(round(size * nn / CANONICAL_NN_PX))
            twin = random_twin(s, (n, n), nn, dose=dose)
            dmap = detection_map_with_model(model, twin.image, nn)
            occ = twin.sites["species"].to_numpy() != ""
            yx = twin.sites[["y_px", "x_px"]].to_numpy()
            counts.append(match_counts(pick_peaks(dmap, nn), yx[occ], yx[~occ], nn, dmap.shape))
        out[float(dose)] = summarize(counts)
    return out
