"""Fine-tune the shipped cell classifier on exported training sets, mixed with fresh digital twins.

This is the last step of the correction loop: a person corrects the model's
labels in the viewer, exports them
(:func:`~napari_stem_defects.annotations.training_set_export.export_training_set`),
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

The loop, evaluation, cancelling and model writing are those every fine-tuning
shares (:func:`~napari_stem_defects.training.loop.run_finetune`); this module
holds the cells' part of it (:class:`CellTask`): data, batches, loss, metrics and card.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..simulate.defects import CELL_CLASSES
from .cell_cnn import augment, cell_loss
from .loop import (
    FINETUNE_SEED_BASE, FinetuneResult, FinetuneTask, check_settings, run_finetune, shared_parameters, twin_share,
)
from .model_files import card_dataset_lines, card_provenance_lines, dataset_summary
from .splits import heldout_split

#: Default number of twins in the pool mixed into batches.
DEFAULT_N_TWINS = 24


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


_KEYS = ("crops", "context", "mask", "labels")


def _subset(data: dict[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: data[k][rows] for k in _KEYS}


def _by_class(labels: np.ndarray) -> list[np.ndarray]:
    return [b for b in (np.flatnonzero(labels == k) for k in range(len(CELL_CLASSES))) if len(b)]


def load_shipped_cell_cnn() -> tuple[Any, dict[str, Any], Path]:
    """A fresh (uncached, trainable) copy of the shipped cell classifier, its metadata and its path."""
    from ..cells.cnn import build_cell_cnn, default_weights_path
    from ..network_io import read_weights

    path = default_weights_path()
    state, meta = read_weights(path, "cell classifier", "scripts/train_cell_cnn.py")
    model = build_cell_cnn(**meta.get("arch", {}))
    model.load_state_dict(state)
    return model, meta, path


def _metrics(model: Any, data: dict[str, np.ndarray]) -> dict[str, Any]:
    from .cell_cnn import class_metrics, confusion

    if len(data["labels"]) == 0:
        return {}
    cm = confusion(model, data)
    return {**class_metrics(cm), "confusion": cm.tolist()}


# --------------------------------------------------------------------------- the task


class CellTask(FinetuneTask):
    """The cell classifier's part of :func:`~napari_stem_defects.training.loop.run_finetune`: class-balanced
    batches of dataset and twin cells, :func:`~napari_stem_defects.training.cell_cnn.cell_loss`, held-out
    accuracy and macro-F1 (the arguments are those of :func:`finetune_cell_cnn`)."""

    kind = "cells"
    rng_stream = 29
    weight_decay = 1e-5
    base_keys = ("classes", "canonical_nn_px", "crop_size", "context", "output")

    def __init__(self, datasets: Sequence[str | Path], *, steps: int, batch: int, twin_fraction: float,
                 val_fraction: float, lr: float, seed: int, n_twins: int) -> None:
        self.datasets, self.steps, self.batch, self.lr, self.seed = datasets, steps, batch, lr, seed
        self.twin_fraction, self.val_fraction, self.n_twins = float(twin_fraction), float(val_fraction), n_twins

    def prepare(self, cancel: threading.Event | None) -> bool:
        self.data = load_cell_datasets(self.datasets)
        val = heldout_split(self.data["labels"], self.data["group"], self.val_fraction, self.seed)
        train_rows, val_rows = np.flatnonzero(~val), np.flatnonzero(val)
        if len(train_rows) == 0:
            raise ValueError("no dataset cell is left to train on; lower the held-out fraction")
        self.train_set, self.val_set = _subset(self.data, train_rows), _subset(self.data, val_rows)
        self.n_train, self.n_val = int(len(train_rows)), int(len(val_rows))
        self.n_twin_batch = twin_share(self.batch, self.twin_fraction, self.n_twins)
        self.twins = twin_pool(self.n_twins if self.n_twin_batch else 0, self.seed, cancel)
        if self.twins is None:
            return False
        if self.n_twin_batch and len(self.twins["labels"]) == 0:
            self.n_twin_batch = 0
        return True

    def load_model(self) -> tuple[Any, dict[str, Any], Path]:
        return load_shipped_cell_cnn()

    def evaluate(self, model: Any) -> dict[str, Any]:
        return _metrics(model, self.val_set)

    def eval_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"]}

    def begin(self, model: Any) -> None:
        import torch

        sources = [(self.train_set, self.batch - self.n_twin_batch)]
        if self.n_twin_batch:
            sources.append((self.twins, self.n_twin_batch))
        self.tensors = [({k: torch.from_numpy(np.ascontiguousarray(s[k])) for k in _KEYS}, _by_class(s["labels"]), n)
                        for s, n in sources]
        self.correct, self.seen = 0, 0

    def batch_loss(self, model: Any, rng: np.random.Generator) -> Any:
        import torch

        idx_parts = []
        for t, by_class, n in self.tensors:
            cls = rng.integers(len(by_class), size=n)
            idx_parts.append((t, torch.from_numpy(np.array([by_class[c][rng.integers(len(by_class[c]))]
                                                            for c in cls], dtype=np.int64))))
        crops, ctx, allowed, y = (torch.cat([t[k][i] for t, i in idx_parts]) for k in _KEYS)
        x, ctx = augment(crops, ctx, rng)
        out = model(x, ctx)
        loss = cell_loss(out, y, allowed)
        pred = out[:, :len(CELL_CLASSES)].detach().masked_fill(~allowed, -1e4).argmax(1)
        self.correct += int((pred == y).sum())
        self.seen += len(y)
        return loss

    def tally(self) -> dict[str, Any]:
        rec = {"accuracy": self.correct / max(self.seen, 1)}
        self.correct, self.seen = 0, 0
        return rec

    def metadata(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        seed, n_twins = self.seed, self.n_twins
        settings = {"steps": self.steps, "batch": self.batch, "twin_fraction": self.twin_fraction,
                    "val_fraction": self.val_fraction, "lr": self.lr, "seed": seed, "n_twins": int(n_twins),
                    "twin_seeds": [FINETUNE_SEED_BASE + 10_000 * seed, FINETUNE_SEED_BASE + 10_000 * seed + n_twins - 1]
                    if self.n_twin_batch else None}

        def counts(labels: np.ndarray) -> dict[str, int]:
            return {c: int(n) for c, n in zip(CELL_CLASSES, np.bincount(labels, minlength=len(CELL_CLASSES)))}

        return {
            "settings": settings,
            "datasets": [dataset_summary(m) for m in self.data["manifests"]],
            "class_counts": {"train": counts(self.train_set["labels"]), "heldout": counts(self.val_set["labels"])},
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_twin_cells": int(len(self.twins["labels"])) if self.n_twin_batch else 0,
            "heldout": {"before": before, "after": after},
        }

    def card(self, meta: dict[str, Any]) -> str:
        return model_card(meta)


@shared_parameters
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

    The held-out part is ``val_fraction`` of the datasets' cells, per class and
    spread over the images (:func:`~napari_stem_defects.training.splits.heldout_split`).
    Training records hold ``loss`` and ``accuracy`` (of the batches), evaluations
    ``val_accuracy`` and ``val_macro_f1``.

    Parameters
    ----------
    {shared_parameters}

    Returns
    -------
    FinetuneResult or None
        ``before``/``after`` hold :func:`~napari_stem_defects.training.cell_cnn.class_metrics`
        plus ``confusion``; ``n_train`` and ``n_val`` count dataset cells. None when cancelled.

    Raises
    ------
    {shared_raises}
    """
    check_settings(steps, batch, twin_fraction, min_batch=2)
    task = CellTask(datasets, steps=steps, batch=batch, twin_fraction=twin_fraction, val_fraction=val_fraction,
                    lr=lr, seed=seed, n_twins=n_twins)
    return run_finetune(task, out, steps=steps, lr=lr, seed=seed, threads=threads, progress=progress,
                        cancel=cancel, eval_every=eval_every, name=name, command=command, overwrite=overwrite)


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
        *card_provenance_lines(meta),
        f"- **Settings**: {s['steps']} steps, batch {s['batch']}, twin fraction {s['twin_fraction']:g} "
        f"({s['n_twins']} twins), held-out fraction {s['val_fraction']:g}, lr {s['lr']:g}, seed {s['seed']}",
        f"- **Training cells**: {meta['n_train']} from the datasets, {meta['n_twin_cells']} from digital twins; "
        f"held out: {meta['n_val']}",
        f"- **Time**: {meta['train_seconds']:.0f} s",
        "",
        "## Datasets",
        "",
        *card_dataset_lines(meta, lambda img: f"{img['name']} ({img['material']}, {img['n_exported']} cells, "
                            f"{img['n_verified']} verified; file {img['source_file']}, "
                            f"sha256 {str(img['sha256'])[:12]}...)"),
    ]
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
    "DEFAULT_N_TWINS", "CellTask", "finetune_cell_cnn", "load_cell_datasets", "load_shipped_cell_cnn",
    "model_card", "twin_pool",
]
