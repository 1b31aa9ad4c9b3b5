"""Fine-tune the shipped cell classifier on exported training sets, mixed with fresh digital twins.

This is the last step of the correction loop: a person corrects the model's
labels in the viewer, exports them
(:func:`~napari_stem_defects.annotations.training_set.export_training_set`),
and :func:`finetune_cell_cnn` makes a new model version from them.

- It always starts from the SHIPPED weights
  (:func:`~napari_stem_defects.cells.cnn.default_weights_path`), never from an
  earlier fine-tuned model, and every batch mixes fresh digital-twin cells
  (``twin_fraction`` of it, the shipped model's own training distribution)
  with the dataset's: what the shipped model knew is not forgotten.
- A held-out split of the datasets' cells (stratified by class and spread over
  the images, seeded) measures the shipped and the fine-tuned model on the same
  cells; both numbers go into the model card.
- Batches are class-balanced (a class drawn uniformly, then one of its cells),
  as for the shipped model, so the ``prior`` of
  :func:`~napari_stem_defects.cells.cnn.probabilities` keeps its meaning. Crops are
  mirrored about the M-X axis and given a random gain and offset (the strength
  part of the context too), as in :func:`napari_stem_defects.training.cell_cnn.train`.
- The fine-tuned weights are the last ones (not the best on the held-out
  split, which would make the held-out numbers optimistic).

The result is written atomically, weights (the
:func:`~napari_stem_defects.network_io.save_weights` format, loadable by
:func:`~napari_stem_defects.cells.cnn.load_cell_model`) and a model card
(``.md``) beside them; the shipped file is never written.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_write, atomic_write_text, json_default
from ..provenance import provenance
from ..simulate.defects import CELL_CLASSES

#: First seed of the digital twins mixed into fine-tuning batches (``+ 10_000 * seed``); no
#: training, validation or test seed of the shipped networks falls in 60_000_000-60_999_999.
FINETUNE_SEED_BASE = 60_000_000
#: Default number of twins in the pool mixed into batches.
DEFAULT_N_TWINS = 24


@dataclass
class FinetuneResult:
    """What :func:`finetune_cell_cnn` wrote and measured.

    Attributes
    ----------
    path : Path
        The weights file.
    card : Path
        The model card (``.md``) beside it.
    history : list of dict
        Training records (``step``, ``loss``, ``accuracy``) and evaluations
        (``step``, ``val_accuracy``, ``val_macro_f1``), in order.
    before, after : dict
        Metrics on the held-out split of the shipped and of the fine-tuned model
        (:func:`~napari_stem_defects.training.cell_cnn.class_metrics` plus
        ``confusion``); empty when there is no held-out split.
    n_train, n_val : int
        Dataset cells trained on and held out.
    metadata : dict
        The metadata stored in the weights file.
    """

    path: Path
    card: Path
    history: list[dict[str, Any]]
    before: dict[str, Any]
    after: dict[str, Any]
    n_train: int
    n_val: int
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def load_cell_datasets(datasets: Sequence[str | Path]) -> dict[str, Any]:
    """Concatenate the cells of several training sets.

    Returns
    -------
    dict
        ``crops`` (float32, (N, 2, 32, 32)), ``context`` (float32, (N, 12)),
        ``mask`` (bool, (N, C): the classes each cell's material allows),
        ``labels`` (int64, (N,)), ``group`` (int64, (N,): one number per
        (dataset, image)) and ``manifests`` (list of dict).

    Raises
    ------
    ValueError
        No dataset, an unreadable one, or no cells.
    """
    from ..annotations.training_set import read_cells
    from ..composition import class_mask

    if not datasets:
        raise ValueError("give at least one training set folder")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("crops", "context", "mask", "labels", "group")}
    manifests = []
    n_groups = 0
    for path in datasets:
        manifest, arrays = read_cells(path)
        manifests.append({**manifest, "path": str(Path(path).expanduser().resolve())})
        materials = [entry["material"] for entry in manifest["images"]]
        masks = np.stack([class_mask(m) for m in materials]) if materials else np.ones((0, len(CELL_CLASSES)), bool)
        image = arrays["image"].astype(np.int64)
        parts["crops"].append(arrays["crops"].astype(np.float32, copy=False))
        parts["context"].append(arrays["context"].astype(np.float32, copy=False))
        parts["mask"].append(masks[image])
        parts["labels"].append(arrays["label"].astype(np.int64))
        parts["group"].append(image + n_groups)
        n_groups += len(materials)
    out: dict[str, Any] = {k: np.concatenate(v) for k, v in parts.items()}
    if len(out["labels"]) == 0:
        raise ValueError("the training sets hold no cells")
    bad = ~out["mask"][np.arange(len(out["labels"])), out["labels"]]
    if bad.any():
        raise ValueError(f"{int(bad.sum())} cell label(s) are classes their material does not allow")
    out["manifests"] = manifests
    return out


def heldout_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int = 0) -> np.ndarray:
    """Which examples to hold out: ``val_fraction`` of each class, spread over the images, seeded.

    The examples of a class are ordered by image (then randomly within an
    image) and every ``1 / val_fraction``-th one, from a random start, is held
    out: each class loses ``floor`` or ``ceil`` of ``val_fraction`` of its
    examples and each image its share of them. A class with a single
    example stays in training.

    Parameters
    ----------
    labels, groups : ndarray of int, shape (N,)
        Class and image of each example.
    val_fraction : float
        Share held out, in [0, 1).
    seed : int
        Seed of the choice.

    Returns
    -------
    ndarray of bool, shape (N,)

    Examples
    --------
    >>> val = heldout_split(np.repeat([0, 1], 10), np.zeros(20, int), 0.2)
    >>> int(val[:10].sum()), int(val[10:].sum())
    (2, 2)
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), not {val_fraction}")
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    rng = np.random.default_rng([int(seed), 17])
    val = np.zeros(len(labels), bool)
    if val_fraction == 0:
        return val
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        if len(idx) < 2:
            continue
        idx = idx[np.lexsort((rng.random(len(idx)), groups[idx]))]
        start = rng.random()
        k = np.floor(np.arange(1, len(idx) + 1) * val_fraction + start) - np.floor(
            np.arange(len(idx)) * val_fraction + start)
        val[idx[k > 0]] = True
        if val[idx].all():  # keep at least one example of the class to learn from
            val[idx[0]] = False
    return val


def twin_pool(n_twins: int, seed: int = 0, cancel: threading.Event | None = None) -> dict[str, np.ndarray] | None:
    """Cells of ``n_twins`` fresh training twins
    (:func:`~napari_stem_defects.training.cell_cnn.twin_examples`); None when cancelled."""
    from .cell_cnn import twin_examples

    parts = []
    base = FINETUNE_SEED_BASE + 10_000 * int(seed)
    for k in range(int(n_twins)):
        if cancel is not None and cancel.is_set():
            return None
        parts.append(twin_examples(base + k, copies=1, perfect_per_twin=12))
    names = ("crops", "context", "mask", "labels")
    if not parts:
        return {"crops": np.zeros((0, 2, 32, 32), np.float32), "context": np.zeros((0, 12), np.float32),
                "mask": np.zeros((0, len(CELL_CLASSES)), bool), "labels": np.zeros(0, np.int64)}
    out = {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(names)}
    out["crops"] = out["crops"].astype(np.float32)
    out["labels"] = out["labels"].astype(np.int64)
    return out


def _subset(data: dict[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: data[k][rows] for k in ("crops", "context", "mask", "labels")}


def _by_class(labels: np.ndarray) -> list[np.ndarray]:
    return [b for b in (np.flatnonzero(labels == k) for k in range(len(CELL_CLASSES))) if len(b)]


# --------------------------------------------------------------------------- training pieces


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


def load_shipped_cell_cnn() -> tuple[Any, dict[str, Any], Path]:
    """A fresh (uncached, trainable) copy of the shipped cell classifier, its metadata and its path."""
    from ..cells.cnn import build_cell_cnn, default_weights_path
    from ..network_io import read_weights

    path = default_weights_path()
    state, meta = read_weights(path, "cell classifier", "scripts/train_cell_cnn.py")
    model = build_cell_cnn(**meta.get("arch", {}))
    model.load_state_dict(state)
    return model, meta, path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _metrics(model: Any, data: dict[str, np.ndarray]) -> dict[str, Any]:
    from .cell_cnn import class_metrics, confusion

    if len(data["labels"]) == 0:
        return {}
    cm = confusion(model, data)
    return {**class_metrics(cm), "confusion": cm.tolist()}


def _plain(obj: Any) -> Any:
    """Plain python (for a weights_only-loadable file and JSON): numpy values become python ones."""
    return json.loads(json.dumps(obj, default=json_default))


def _check_out(out: Path, overwrite: bool = False) -> Path:
    """Refuse to write over the packaged weights, or over an existing file unless ``overwrite``."""
    from ..network_io import packaged_weights_path

    shipped_dir = packaged_weights_path("x").parent.resolve()
    target = out.expanduser()
    if target.suffix != ".pt":
        target = target.with_suffix(".pt") if target.suffix == "" else target.with_name(target.name + ".pt")
    if target.resolve().parent == shipped_dir:
        raise ValueError(f"{target} is inside the packaged models folder; the shipped models are never "
                         "overwritten. Choose another path, or a model name (--name)")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists already; a trained model is never replaced without asking. "
                              "Choose another path, or give --overwrite to replace it")
    return target


# --------------------------------------------------------------------------- fine-tuning


@contextmanager
def torch_session(threads: int | None, seed: int) -> Iterator[None]:
    """torch's thread count set (restored afterwards) and its RNG seeded, without touching the caller's RNG."""
    import torch

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            yield
    finally:
        torch.set_num_threads(old_threads)


def base_provenance(kind: str, name: str | None, target: Path, base_meta: dict[str, Any], base_path: Path,
                    command: str | None) -> dict[str, Any]:
    """Metadata entries every fine-tuned model carries: what it is, what it started from, who made it."""
    return {
        "kind": kind,
        "name": name or target.stem,
        "base_model": "shipped",
        "base_file": base_path.name,
        "base_sha256": file_sha256(base_path),
        "base_metadata": {k: v for k, v in base_meta.items() if k not in ("history",)},
        **provenance(),
        "command": command,
    }


def write_model(model: Any, target: Path, meta: dict[str, Any], card_text: str) -> Path:
    """Write the model card (``.md``) and the weights atomically; return the card's path.

    Raises
    ------
    ValueError
        The weights hold NaN or infinite values (the training diverged); nothing is written.
    """
    from ..network_io import save_weights

    import torch

    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"the trained weights hold NaN or infinite values ({', '.join(bad[:3])}...): the training "
                         "diverged (check the training set and the learning rate); nothing was written")
    card = target.with_suffix(".md")
    atomic_write_text(card, card_text)
    atomic_write(target, lambda tmp: save_weights(model, tmp, meta))
    return card


def finetune_cell_cnn(
    datasets: Sequence[str | Path],
    out: str | Path,
    *,
    steps: int = 400,
    batch: int = 64,
    twin_fraction: float = 0.5,
    val_fraction: float = 0.2,
    lr: float = 3e-4,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
    n_twins: int = DEFAULT_N_TWINS,
    eval_every: int | None = None,
    name: str | None = None,
    command: str | None = None,
    overwrite: bool = False,
) -> FinetuneResult | None:
    """Fine-tune the shipped cell classifier on training sets mixed with digital twins.

    Parameters
    ----------
    datasets : sequence of str or Path
        Training set folders (:func:`~napari_stem_defects.annotations.training_set.export_training_set`).
    out : str or Path
        Weights file to write (``.pt`` added if missing); the model card goes
        beside it (``.md``). Never the packaged models folder.
    steps, batch : int
        Optimiser steps and cells per batch.
    twin_fraction : float
        Share of each batch drawn from fresh digital-twin cells, in [0, 1).
    val_fraction : float
        Share of the datasets' cells held out (per class, spread over images), in [0, 1).
    lr : float
        Peak learning rate (Adam, warm-up then cosine decay).
    seed : int
        Seed of the split, the twins, the batches and torch.
    threads : int, optional
        torch threads while training (restored afterwards).
    progress : callable, optional
        Called with ``{"step", "steps", "loss", "accuracy"}`` every few steps
        (mean training loss and batch accuracy since the last call) and with
        ``{"step", "steps", "val_accuracy", "val_macro_f1"}`` at each evaluation
        of the held-out split.
    cancel : threading.Event, optional
        When set, training stops and nothing is written.
    n_twins : int
        Twins in the pool mixed into batches (ignored when ``twin_fraction`` is 0).
    eval_every : int, optional
        Steps between evaluations (default ``steps // 5``).
    name : str, optional
        Model version name for the card (default the file's stem).
    command : str, optional
        The command line or action that started the run, recorded in the card.
    overwrite : bool
        Replace an existing file at ``out`` (default: refuse, before any training).

    Returns
    -------
    FinetuneResult or None
        None when cancelled.

    Raises
    ------
    ValueError
        Bad settings, unreadable datasets, the packaged folder as ``out``, or weights
        that came out NaN (nothing is written).
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    if steps < 1 or batch < 2:
        raise ValueError("steps must be at least 1 and batch at least 2")
    if not 0.0 <= float(twin_fraction) < 1.0:
        raise ValueError(f"twin_fraction must be in [0, 1), not {twin_fraction}")
    target = _check_out(Path(out), overwrite)
    t0 = time.time()
    data = load_cell_datasets(datasets)
    val = heldout_split(data["labels"], data["group"], val_fraction, seed)
    train_rows, val_rows = np.flatnonzero(~val), np.flatnonzero(val)
    if len(train_rows) == 0:
        raise ValueError("no dataset cell is left to train on; lower the held-out fraction")
    train_set, val_set = _subset(data, train_rows), _subset(data, val_rows)
    n_twin_batch = int(round(batch * float(twin_fraction))) if n_twins > 0 else 0
    twins = twin_pool(n_twins if n_twin_batch else 0, seed, cancel)
    if twins is None:
        return None
    if n_twin_batch and len(twins["labels"]) == 0:
        n_twin_batch = 0
    eval_every = max(1, int(eval_every) if eval_every else max(1, steps // 5))
    report_every = max(1, min(10, steps // 20))

    with torch_session(threads, seed):
        run = _train(train_set, val_set, twins, n_twin_batch, steps=steps, batch=batch, lr=lr, seed=seed,
                     eval_every=eval_every, report_every=report_every, progress=progress, cancel=cancel)
    if run is None:
        return None
    model, history, before, after, base_meta, base_path = run
    if cancel is not None and cancel.is_set():
        return None

    settings = {"steps": steps, "batch": batch, "twin_fraction": float(twin_fraction),
                "val_fraction": float(val_fraction), "lr": lr, "seed": seed, "n_twins": int(n_twins),
                "twin_seeds": [FINETUNE_SEED_BASE + 10_000 * seed, FINETUNE_SEED_BASE + 10_000 * seed + n_twins - 1]
                if n_twin_batch else None}
    counts = {c: int(n) for c, n in zip(CELL_CLASSES, np.bincount(train_set["labels"], minlength=len(CELL_CLASSES)))}
    val_counts = {c: int(n) for c, n in zip(CELL_CLASSES, np.bincount(val_set["labels"], minlength=len(CELL_CLASSES)))}
    meta = _plain({
        **{k: base_meta[k] for k in ("classes", "canonical_nn_px", "crop_size", "context", "output") if k in base_meta},
        "arch": base_meta.get("arch", {}),
        **base_provenance("cells", name, target, base_meta, base_path, command),
        "settings": settings,
        "datasets": [dataset_summary(m) for m in data["manifests"]],
        "class_counts": {"train": counts, "heldout": val_counts},
        "n_train": int(len(train_rows)),
        "n_val": int(len(val_rows)),
        "n_twin_cells": int(len(twins["labels"])) if n_twin_batch else 0,
        "heldout": {"before": before, "after": after},
        "history": history,
        "train_seconds": time.time() - t0,
    })
    card = write_model(model, target, meta, model_card(meta))
    return FinetuneResult(target, card, history, before, after, int(len(train_rows)), int(len(val_rows)), meta)


def _train(train_set: dict[str, np.ndarray], val_set: dict[str, np.ndarray], twins: dict[str, np.ndarray],
           n_twin_batch: int, *, steps: int, batch: int, lr: float, seed: int, eval_every: int, report_every: int,
           progress: Callable[[dict[str, Any]], None] | None, cancel: threading.Event | None) -> tuple | None:
    """The training loop of :func:`finetune_cell_cnn` (torch's RNG already seeded)."""
    import torch

    from .schedule import warmup_cosine

    rng = np.random.default_rng([int(seed), 29])
    model, base_meta, base_path = load_shipped_cell_cnn()
    before = _metrics(model, val_set)
    history: list[dict[str, Any]] = []
    if before:
        rec = {"step": 0, "steps": steps, "val_accuracy": before["accuracy"], "val_macro_f1": before["macro_f1"]}
        history.append(rec)
        if progress is not None:
            progress(dict(rec))
    sources = [(train_set, batch - n_twin_batch)]
    if n_twin_batch:
        sources.append((twins, n_twin_batch))
    tensors = [({k: torch.from_numpy(np.ascontiguousarray(s[k])) for k in ("crops", "context", "mask", "labels")},
                _by_class(s["labels"]), n) for s, n in sources]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    sched = warmup_cosine(opt, steps)
    n_cls = len(CELL_CLASSES)
    losses, correct, seen = [], 0, 0
    for step in range(1, steps + 1):
        if cancel is not None and cancel.is_set():
            return None
        idx_parts = []
        for t, by_class, n in tensors:
            cls = rng.integers(len(by_class), size=n)
            idx_parts.append((t, torch.from_numpy(np.array([by_class[c][rng.integers(len(by_class[c]))]
                                                            for c in cls], dtype=np.int64))))
        crops = torch.cat([t["crops"][i] for t, i in idx_parts])
        ctx = torch.cat([t["context"][i] for t, i in idx_parts])
        allowed = torch.cat([t["mask"][i] for t, i in idx_parts])
        y = torch.cat([t["labels"][i] for t, i in idx_parts])
        x, ctx = augment(crops, ctx, rng)
        model.train()
        out = model(x, ctx)
        loss = cell_loss(out, y, allowed)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
        pred = out[:, :n_cls].detach().masked_fill(~allowed, -1e4).argmax(1)
        correct += int((pred == y).sum())
        seen += len(y)
        if step % report_every == 0 or step == steps:
            rec = {"step": step, "steps": steps, "loss": float(np.mean(losses)), "accuracy": correct / max(seen, 1)}
            history.append(rec)
            losses, correct, seen = [], 0, 0
            if progress is not None:
                progress(dict(rec))
        if len(val_set["labels"]) and (step % eval_every == 0 or step == steps):
            m = _metrics(model, val_set)
            rec = {"step": step, "steps": steps, "val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"]}
            history.append(rec)
            if progress is not None:
                progress(dict(rec))
    model.eval()
    after = _metrics(model, val_set)
    return model, history, before, after, base_meta, base_path


#: Per-image manifest entries a cell model's card records of each training set.
CELL_IMAGE_KEYS = ("name", "source_file", "sha256", "material", "pixel_size_A", "n_exported", "n_verified")


def dataset_summary(manifest: dict[str, Any], image_keys: Sequence[str] = CELL_IMAGE_KEYS,
                    totals: bool = True) -> dict[str, Any]:
    """What a fine-tuned model's card records of one training set: where and when it was made, by
    whom, the ``image_keys`` entries of each image and (with ``totals``) the set's totals."""
    out = {
        "path": manifest.get("path"),
        "created": manifest.get("created"),
        "created_by": manifest.get("created_by"),
        "images": [{k: e.get(k) for k in image_keys} for e in manifest.get("images", [])],
    }
    if totals:
        out["totals"] = manifest.get("totals")
    return out


# --------------------------------------------------------------------------- model card


def model_card(meta: dict[str, Any]) -> str:
    """Markdown model card of a fine-tuned cell classifier from its metadata."""
    before, after = meta["heldout"]["before"], meta["heldout"]["after"]
    s = meta["settings"]
    lines = [
        f"# Cell classifier `{meta['name']}`",
        "",
        "A fine-tuned version of the shipped unit-cell classifier (napari-stem-defects `cells.cnn`).",
        "",
        f"- **Base model**: the shipped `{meta['base_file']}` (sha256 `{meta['base_sha256'][:16]}...`); "
        "fine-tuning always starts from it, never from an earlier fine-tuned model.",
        f"- **Created**: {meta['created']} by {meta.get('created_by') or 'unknown'} with {meta['software']}",
        f"- **Command**: `{meta['command']}`" if meta.get("command") else "- **Command**: (not recorded)",
        f"- **Settings**: {s['steps']} steps, batch {s['batch']}, twin fraction {s['twin_fraction']:g} "
        f"({s['n_twins']} twins), held-out fraction {s['val_fraction']:g}, lr {s['lr']:g}, seed {s['seed']}",
        f"- **Training cells**: {meta['n_train']} from the datasets, {meta['n_twin_cells']} from digital twins; "
        f"held out: {meta['n_val']}",
        f"- **Time**: {meta['train_seconds']:.0f} s",
        "",
        "## Datasets",
        "",
    ]
    for d in meta["datasets"]:
        lines.append(f"- `{d['path']}` (created {d.get('created')} by {d.get('created_by')})")
        for img in d["images"]:
            lines.append(f"  - {img['name']} ({img['material']}, {img['n_exported']} cells, "
                         f"{img['n_verified']} verified; file {img['source_file']}, "
                         f"sha256 {str(img['sha256'])[:12]}...)")
    lines += ["", "## Cells per class", "", "| class | train | held out |", "|---|---:|---:|"]
    for c in CELL_CLASSES:
        tr, va = meta["class_counts"]["train"][c], meta["class_counts"]["heldout"][c]
        if tr or va:
            lines.append(f"| {c} | {tr} | {va} |")
    lines += ["", "## Held-out cells: shipped versus fine-tuned", ""]
    if not before:
        lines.append("No held-out split (held-out fraction 0): no measurement.")
    else:
        lines += [
            f"Accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, macro-F1 "
            f"{before['macro_f1']:.3f} -> {after['macro_f1']:.3f} on {after['n_cells']} held-out cells "
            "(single mode, class-balanced output).",
            "",
            "| class | support | F1 shipped | F1 fine-tuned |",
            "|---|---:|---:|---:|",
        ]
        for c in CELL_CLASSES:
            pb, pa = before["per_class"][c], after["per_class"][c]
            if pa["support"]:
                lines.append(f"| {c} | {pa['support']} | {pb['f1']:.3f} | {pa['f1']:.3f} |")
    lines += [
        "",
        "## Use and limits",
        "",
        "Select it as the `model` of the Classify cells widget, or `napari-stem-defects analyze --cell-model "
        f"{meta['name']}`. It is meant for images like those of its datasets; the held-out cells come from the "
        "same images as the training cells, so they measure fitting to those images more than to new ones. "
        "Check a new kind of image against corrected labels before trusting it.",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_N_TWINS", "FINETUNE_SEED_BASE", "FinetuneResult", "augment", "cell_loss", "finetune_cell_cnn",
    "heldout_split", "load_cell_datasets", "load_shipped_cell_cnn", "model_card", "twin_pool",
]
