"""Training data, loop and held-out evaluation of the unit-cell classifier
(:mod:`napari_stem_defects.cells.cnn`).

Examples are cells of fresh digital twins: random material from
:data:`~napari_stem_defects.materials.KNOWN_MATERIALS` (alloys and Janus
included; the materials users name most, :data:`FOCUS_MATERIALS`, twice as
often as the others), nn distance 8-22 px, random rotation, imaging from
``random_imaging(rng, (1e4, 1e7))`` (half of the twins through the multislice-calibrated
table, :data:`TABLE_SHARE`) and every defect type at 1.5-4.5 % of the
cells, so each class is well represented; perfect cells are subsampled and
batches are drawn class-balanced. Cell positions are the ground-truth site
positions plus a random error of up to 0.1 nn (as from a column detector).

Only the classes the material allows are simulated and scored
(:func:`~napari_stem_defects.composition.allowed_classes`: no ``dopant_M``
in metal alloys, no ``sub_X`` in chalcogen alloys and Janus layers). Dopants
are drawn from the clearly visible ones of the host
(``dopant_elements(material, CLEAR_CONTRAST)``: heavy metals in MoS2, light
ones in MoTe2), substituents from ``substituent_elements``.

Seeds never overlap: training from :data:`TRAIN_SEED_BASE`, validation from
:data:`VAL_SEED_BASE`, held-out test from :data:`TEST_SEED_BASE`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from ..composition import CLEAR_CONTRAST, allowed_classes, class_mask, dopant_elements, substituent_elements
from ..cells.cnn import build_cell_cnn, classify_cells, context_vector, predict_logits, probabilities
from ..cells.crops import CANONICAL_NN_PX, cell_crops, prepare_image, strength_context
from ..materials import KNOWN_MATERIALS, Material, parse_material
from ..network_io import save_weights  # noqa: F401  (re-exported: cells.cnn names training.cell_cnn.save_weights)
from ..simulate import CELL_CLASSES, DigitalTwin, random_imaging, simulate_twin
from .scratch_loop import train_keeping_best

TRAIN_SEED_BASE = 20_000_000
VAL_SEED_BASE = 2_500_000
TEST_SEED_BASE = 3_000_000
#: Doses (e/Å^2) and materials of the held-out evaluation.
TEST_DOSES = (1e4, 1e5, 1e6)
TEST_MATERIALS = ("MoS2", "WSe2", "MoTe2", "MoWSSe")
#: Range of the fraction of cells given each defect type.
DEFECT_RANGE = (0.005, 0.045)
#: Largest error of a crop centre, in units of nn (uniform in a disc).
JITTER_NN = 0.1
_ADATOMS = ("Mo", "W", "Re", "Pt", "Se", "Te")
#: Share of training and validation twins whose columns and probe come from the multislice-calibrated table
#: (``random_imaging(column_model="table")``: 60-300 kV, any convergence and detector) instead of ``sum Z**gamma``.
TABLE_SHARE: float = 0.5
#: Materials drawn twice as often as the other KNOWN_MATERIALS for training.
FOCUS_MATERIALS = ("MoS2", "WSe2", "MoTe2", "MoWSSe")


def material_weights() -> np.ndarray:
    """Probability of each of KNOWN_MATERIALS in a training twin (FOCUS_MATERIALS count twice)."""
    w = np.array([2.0 if m in FOCUS_MATERIALS else 1.0 for m in KNOWN_MATERIALS])
    return w / w.sum()


def defect_plan(mat: Material, rng: np.random.Generator) -> dict[str, Any]:
    """Defect fractions and elements of one training twin (see the module docstring)."""
    allowed = allowed_classes(mat)
    dopants = dopant_elements(mat, CLEAR_CONTRAST) or dopant_elements(mat)
    subs = substituent_elements(mat)
    return {
        "defects": {k: float(rng.uniform(*DEFECT_RANGE)) for k in allowed[1:]},
        "dopant": str(rng.choice(dopants)) if dopants else None,
        "substituent": str(rng.choice(subs)) if subs else None,
        "adatom": str(rng.choice(_ADATOMS)),
    }


def random_cell_twin(
    seed: int,
    size: int = 192,
    *,
    nn_px: float | None = None,
    dose: float | None = None,
    material: str | None = None,
    nn_range: tuple[float, float] = (8.0, 22.0),
    max_texture: float | None = None,
    table_share: float = 0.0,
) -> DigitalTwin:
    """A twin with random material, defects, imaging, rotation and scale.

    Parameters
    ----------
    seed : int
        Seed of every choice and of the simulation.
    size : int
        Image side at the canonical scale (the image has ``size * nn_px / 11`` pixels a side).
    nn_px, dose, material : optional
        Fixed nn distance (else uniform in ``nn_range``), dose (else
        log-uniform 1e4-1e7 e/Å^2) and material (else drawn with :func:`material_weights`).
    max_texture : float, optional
        Cap on the amorphous texture amplitude of the random imaging.
    table_share : float
        Chance that the columns and probe come from the multislice-calibrated table at a random
        microscope (drawn from its own stream, so the other draws of a seed do not change). Such a
        twin holds no antisite that scatters like the host's own column at that microscope
        (:func:`~napari_stem_defects.cells.alike_pairs.hidden_antisite_classes`: W on an X2 site of
        WSSe at 60 kV and low angles looks like its Se2 pairs).

    Returns
    -------
    DigitalTwin
    """
    rng = np.random.default_rng([seed, 11])
    mat = parse_material(material or KNOWN_MATERIALS[rng.choice(len(KNOWN_MATERIALS), p=material_weights())])
    nn = float(nn_px) if nn_px is not None else float(rng.uniform(*nn_range))
    plan = defect_plan(mat, rng)
    table = np.random.default_rng([seed, 12]).random() < table_share
    imaging = random_imaging(rng, (1e4, 1e7), column_model="table" if table else "zpower")
    if table:
        # an antisite that scatters like the host's own column at this microscope cannot be read: not taught
        from ..cells.alike_pairs import hidden_antisite_classes

        hidden = hidden_antisite_classes(mat, imaging.microscope)
        plan = {**plan, "defects": {c: f for c, f in plan["defects"].items() if c not in hidden}}
    if dose is not None:
        imaging = dataclasses.replace(imaging, dose=float(dose))
    if max_texture is not None and imaging.texture > max_texture:
        # keep the draw's position within the clean range 10^-4.5 .. max_texture
        lo = -4.5
        frac = (math.log10(imaging.texture) - lo) / (-2.8 - lo)
        imaging = dataclasses.replace(imaging, texture=10 ** (lo + frac * (math.log10(max_texture) - lo)))
    n = int(round(size * nn / CANONICAL_NN_PX))
    return simulate_twin(
        mat, (n, n), mat.a / math.sqrt(3) / nn, rotation_deg=None, defects=plan["defects"],
        imaging=imaging, seed=seed, dopant=plan["dopant"], substituent=plan["substituent"],
        adatom=plan["adatom"],
    )


def twin_cells(twin: DigitalTwin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth metal and X2 positions (N, 2) and class indices (N,) of the twin's complete cells."""
    cells = twin.cells
    ok = (cells["m_site_id"].to_numpy() >= 0) & (cells["x_site_id"].to_numpy() >= 0)
    cells = cells[ok]
    yx = twin.sites.set_index("site_id")[["y_px", "x_px"]]
    m = yx.loc[cells["m_site_id"].to_numpy()].to_numpy(dtype=float)
    x = yx.loc[cells["x_site_id"].to_numpy()].to_numpy(dtype=float)
    index = {c: i for i, c in enumerate(CELL_CLASSES)}
    labels = np.array([index[c] for c in cells["class"]], dtype=np.int64)
    return m, x, labels


def twin_nn_px(twin: DigitalTwin) -> float:
    """Metal to chalcogen distance of a twin, in pixels."""
    return twin.nn_px


def jitter(points: np.ndarray, nn_px: float, rng: np.random.Generator, amount: float = JITTER_NN) -> np.ndarray:
    """Move points uniformly within a disc of radius ``amount * nn_px``."""
    r = amount * nn_px * np.sqrt(rng.random(len(points)))
    t = rng.uniform(0, 2 * np.pi, len(points))
    return points + np.stack([r * np.sin(t), r * np.cos(t)], axis=1)


def twin_examples(
    seed: int, *, copies: int = 2, perfect_per_twin: int = 12, table_share: float = TABLE_SHARE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Crops (float16), context vectors, allowed-class masks and labels of one training twin.

    The twin is imaged through the calibrated table with chance ``table_share``
    (:func:`random_cell_twin`). All defective cells are kept and ``perfect_per_twin`` perfect ones; each
    cell gives ``copies`` crops with independent centre errors (and a +-3 %
    error of the scale, as a calibration or lattice fit would make). The
    strength part of the context comes from all the twin's cells.
    """
    rng = np.random.default_rng([seed, 7])
    twin = random_cell_twin(seed, table_share=table_share)
    nn = twin_nn_px(twin)
    m_all, x_all, labels = twin_cells(twin)
    perfect = np.flatnonzero(labels == 0)
    keep = np.concatenate([np.flatnonzero(labels > 0),
                           rng.choice(perfect, min(len(perfect), perfect_per_twin), replace=False)])
    img = prepare_image(twin.image, nn)
    mask = class_mask(twin.material)
    crops, contexts = [], []
    for _ in range(copies):
        scale = nn * float(rng.uniform(0.97, 1.03))
        m, x = jitter(m_all, nn, rng), jitter(x_all, nn, rng)
        ctx = context_vector(twin.material, scale, strength_context(img, m, x, scale))
        crops.append(cell_crops(img, m[keep], x[keep], scale, prepared=True))
        contexts.append(np.broadcast_to(ctx, (len(keep), len(ctx))))
    n = len(keep) * copies
    return (np.concatenate(crops).astype(np.float16), np.concatenate(contexts).astype(np.float32),
            np.broadcast_to(mask, (n, len(mask))).copy(), np.tile(labels[keep], copies))


def _examples_of(args: tuple[Sequence[int], dict[str, Any]]) -> tuple[np.ndarray, ...]:
    seeds, kw = args
    parts = [twin_examples(int(s), **kw) for s in seeds]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))


def build_dataset(
    seeds: Sequence[int], log: Callable[[str], None] = print, workers: int = 1, **kw: Any,
) -> dict[str, np.ndarray]:
    """Concatenate :func:`twin_examples` of many twins (in ``workers`` processes)."""
    seeds = list(seeds)
    chunks = [seeds[k : k + 100] for k in range(0, len(seeds), 100)]
    t0 = time.time()
    parts = []
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for k, part in enumerate(pool.map(_examples_of, [(c, kw) for c in chunks])):
                parts.append(part)
                if (k + 1) % 5 == 0:
                    log(f"  {100 * (k + 1)}/{len(seeds)} twins ({time.time() - t0:.0f} s)")
    else:
        parts = [_examples_of((c, kw)) for c in chunks]
    names = ("crops", "context", "mask", "labels")
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(names)}


def confusion(model: Any, data: dict[str, np.ndarray], mode: str = "single") -> np.ndarray:
    """Confusion matrix (true x predicted) of the model on a dataset."""
    logits = predict_logits(model, data["crops"].astype(np.float32), data["context"])
    pred = probabilities(logits, data["mask"], mode).argmax(1)
    k = len(CELL_CLASSES)
    return np.bincount(data["labels"] * k + pred, minlength=k * k).reshape(k, k)


def class_metrics(cm: np.ndarray) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, accuracy and macro-F1 over classes with support."""
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    prec = tp / np.maximum(cm.sum(0), 1)
    rec = tp / np.maximum(support, 1)
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    per = {c: {"precision": prec[i], "recall": rec[i], "f1": f1[i], "support": int(support[i])}
           for i, c in enumerate(CELL_CLASSES)}
    present = support > 0
    return {"per_class": per, "macro_f1": float(f1[present].mean()), "accuracy": float(tp.sum() / cm.sum()),
            "n_cells": int(cm.sum())}


def augment(crops: Any, context: Any, rng: np.random.Generator) -> tuple[Any, Any]:
    """Mirror about the M-X axis (p = 1/2), random gain (x0.8-1.25) and offset (sd 0.05) of a batch;
    the strength part of the context (entries 6:) gets the same gain and offset.

    Parameters
    ----------
    crops : torch.Tensor, shape (B, 2, S, S)
    context : torch.Tensor, shape (B, 12)
    rng : numpy.random.Generator

    Returns
    -------
    crops, context : torch.Tensor
        New tensors.
    """
    import torch

    b = crops.shape[0]
    x = crops.float().clone()
    flip = torch.from_numpy(rng.random(b) < 0.5)
    x[flip] = x[flip].flip(-2)
    gain = torch.from_numpy(rng.uniform(0.8, 1.25, (b, 1)).astype(np.float32))
    offset = torch.from_numpy(rng.normal(0, 0.05, (b, 1)).astype(np.float32))
    x = x * gain[:, :, None, None] + offset[:, :, None, None]
    ctx = context.float().clone()
    ctx[:, 6:] = ctx[:, 6:] * gain + offset
    return x, ctx


def cell_loss(out: Any, labels: Any, allowed: Any) -> Any:
    """The shipped classifier's loss: cross-entropy over the allowed classes (label smoothing 0.02
    spread over them) plus half the binary cross-entropy of the "defective" output."""
    from torch.nn import functional as F

    n_cls = len(CELL_CLASSES)
    logp = F.log_softmax(out[:, :n_cls].masked_fill(~allowed, -1e4), dim=1).masked_fill(~allowed, 0.0)
    target = 0.98 * F.one_hot(labels, n_cls).float() + 0.02 * allowed.float() / allowed.sum(1, keepdim=True)
    loss = -(target * logp).sum(1).mean()
    if out.shape[1] > n_cls:
        loss = loss + 0.5 * F.binary_cross_entropy_with_logits(out[:, n_cls], (labels > 0).float())
    return loss


def train(
    steps: int,
    batch: int,
    seed: int = 0,
    *,
    n_twins: int = 2500,
    n_val: int = 120,
    lr: float = 2e-3,
    eval_every: int = 1000,
    max_minutes: float = 1e9,
    workers: int = 1,
    threads: int = 1,
    log: Callable[[str], None] = print,
    init_state: dict[str, Any] | None = None,
    device: str = "cpu",
    on_best: Callable[[Any, dict[str, Any]], None] | None = None,
    deadline: float | None = None,
    table_share: float = TABLE_SHARE,
) -> tuple[Any, dict[str, Any]]:
    """Train the classifier on cells of ``n_twins`` training twins.

    ``table_share`` of the training and validation twins are imaged through the
    multislice-calibrated table (:func:`twin_examples`; 0 gives the shipped stage-1 data).

    Batches draw a class uniformly, then a crop of it; crops are flipped
    about the M-X axis (a mirror of the lattice) with probability 1/2 and
    given a random gain (x0.8-1.25) and offset (+-0.05), applied to the
    strength part of the context too. The loss is the cross-entropy over the
    classes the material allows, plus half the binary cross-entropy of the
    "defective" output. Adam with warm-up and cosine decay; the weights with
    the best validation macro-F1 (single mode) are kept.

    ``init_state`` (a state dict, e.g. of the shipped weights) starts the
    network from earlier weights instead of at random; they are scored before
    the first step and kept if no later step beats them.

    ``device`` is where the network trains ("cpu", "cuda"; the crops stay in
    memory on the CPU and go to the device a batch at a time). The loop, the
    time budget (``max_minutes``, ``deadline``: set before the twins are
    simulated) and ``on_best`` are those of
    :func:`~napari_stem_defects.training.scratch_loop.train_keeping_best`.

    Returns
    -------
    model, history
    """
    import torch

    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 5])
    t0 = time.time()
    base = TRAIN_SEED_BASE + seed * 1_000_000
    data = build_dataset(range(base, base + n_twins), log=log, workers=workers, table_share=table_share)
    val = build_dataset(range(VAL_SEED_BASE, VAL_SEED_BASE + n_val), log=log, workers=workers,
                        copies=1, perfect_per_twin=40, table_share=table_share)
    log(f"data: {len(data['labels'])} train / {len(val['labels'])} val crops, "
        f"per class {np.bincount(data['labels'], minlength=len(CELL_CLASSES)).tolist()} ({time.time() - t0:.0f} s)")
    by_class = [np.flatnonzero(data["labels"] == k) for k in range(len(CELL_CLASSES))]
    by_class = [b for b in by_class if len(b)]
    crops_t = torch.from_numpy(data["crops"])
    ctx_t = torch.from_numpy(data["context"])
    mask_t = torch.from_numpy(data["mask"])
    labels_t = torch.from_numpy(data["labels"])
    model = build_cell_cnn()
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    history: dict[str, Any] = {"steps": steps, "batch": batch, "seed": seed, "lr": lr, "n_twins": n_twins,
                               "table_share": float(table_share),
                               "n_train_crops": int(len(data["labels"])), "val": []}

    def batch_loss() -> Any:
        cls = rng.integers(len(by_class), size=batch)
        idx = torch.from_numpy(np.array([by_class[c][rng.integers(len(by_class[c]))] for c in cls]))
        x, ctx = augment(crops_t[idx], ctx_t[idx], rng)
        x, ctx, y, allowed = (t.to(device) for t in (x, ctx, labels_t[idx], mask_t[idx]))
        return cell_loss(model(x, ctx), y, allowed)

    def evaluate(initial: bool) -> tuple[dict[str, Any], str]:
        v = class_metrics(confusion(model, val))
        if initial:
            return ({"macro_f1": v["macro_f1"], "accuracy": v["accuracy"]},
                    f"val macro-F1 {v['macro_f1']:.4f} acc {v['accuracy']:.4f}")
        v2 = class_metrics(confusion(model, val, "two-stage"))
        return ({"macro_f1": v["macro_f1"], "accuracy": v["accuracy"], "macro_f1_two_stage": v2["macro_f1"]},
                f"val macro-F1 {v['macro_f1']:.4f} (two-stage {v2['macro_f1']:.4f}) acc {v['accuracy']:.4f}")

    return train_keeping_best(model, history, steps=steps, lr=lr, eval_every=eval_every, batch_loss=batch_loss,
                              evaluate=evaluate, score="macro_f1", initial=init_state is not None,
                              max_minutes=max_minutes, deadline=deadline, on_best=on_best, log=log, t0=t0)


def heldout_twin(material: str, dose: float, index: int, *, size: int = 256, seed_base: int = TEST_SEED_BASE,
                 imaging: str = "random") -> tuple[DigitalTwin, int]:
    """Held-out twin number ``index`` of a material and dose, and its seed.

    The seed is ``seed_base + 10000 * (material number in TEST_MATERIALS or 9)
    + 1000 * (dose number in TEST_DOSES or 9) + index``, never a training or
    validation seed. ``imaging='clean'`` keeps the amorphous texture below
    10^-3.5 (a single S atom stays visible above it), as in the column benchmark.
    """
    a = TEST_MATERIALS.index(material) if material in TEST_MATERIALS else 9
    k = TEST_DOSES.index(dose) if dose in TEST_DOSES else 9
    s = seed_base + 10000 * a + 1000 * k + index
    twin = random_cell_twin(s, size, dose=dose, material=material,
                            max_texture=10 ** -3.5 if imaging == "clean" else None)
    return twin, s


def heldout_metrics(
    model: Any,
    doses: Sequence[float] = TEST_DOSES,
    materials: Sequence[str] = TEST_MATERIALS,
    n_per: int = 10,
    *,
    size: int = 256,
    seed_base: int = TEST_SEED_BASE,
    mode: str = "single",
    imaging: str = "random",
    prior: str | float = "image",
) -> dict[str, dict[float, dict[str, Any]]]:
    """Per-class metrics per material and dose on held-out twins (:func:`heldout_twin`), from
    ground-truth positions with a detector-like error (uniform within 0.1 nn), through
    :func:`~napari_stem_defects.cells.cnn.classify_cells` exactly as users call it
    (one call per twin, with its class ``prior``).
    """
    out: dict[str, dict[float, dict[str, Any]]] = {}
    k_cls = len(CELL_CLASSES)
    for mat in materials:
        out[mat] = {}
        for dose in doses:
            cm = np.zeros((k_cls, k_cls), dtype=np.int64)
            for i in range(n_per):
                twin, s = heldout_twin(mat, dose, i, size=size, seed_base=seed_base, imaging=imaging)
                nn = twin_nn_px(twin)
                m, x, labels = twin_cells(twin)
                rng = np.random.default_rng([s, 1])
                p = classify_cells(twin.image, jitter(m, nn, rng), jitter(x, nn, rng), nn, twin.material,
                                   model=model, mode=mode, prior=prior)
                cm += np.bincount(labels * k_cls + p.argmax(1), minlength=k_cls * k_cls).reshape(k_cls, k_cls)
            out[mat][float(dose)] = {**class_metrics(cm), "confusion": cm.tolist()}
    return out
