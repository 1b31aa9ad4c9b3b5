"""Fine-tune the shipped column U-Net on exported training sets, mixed with fresh digital twins.

The column half of the correction loop: a person adds, moves and deletes
sites (and sets species, "empty" for a vacancy) in the viewer, exports the
annotations (:func:`~napari_stem_defects.annotations.training_set_export.export_training_set`),
and :func:`finetune_column_unet` makes a new version of the column detector
(:mod:`napari_stem_defects.columns.unet`) from them.

- Targets are made exactly as for the shipped model, at its canonical scale
  (:mod:`napari_stem_defects.training.column_sets`). Every site of an exported
  image is a label: the sites a person did not touch count as accepted.
- It always starts from the SHIPPED weights, never from an earlier fine-tuned
  model, and ``twin_fraction`` of every batch are crops of fresh digital twins
  (the shipped model's training distribution): what it knew is not forgotten.
- The held-out split is by image region: each canonical image is cut into
  tiles of about ``val_tile`` pixels and ``val_fraction`` of the tiles (spread
  over the images, seeded) are held out. Training crops never contain a
  held-out pixel (not even as context); the shipped and the fine-tuned model
  are scored on the held-out tiles with the shipped model's own column
  detection metrics (peaks matched to occupied sites within nn/3:
  :func:`~napari_stem_defects.training.column_unet.match_counts`).
  A few fresh twins are scored before and after too, to show what the model
  still does on its training distribution.
- The fine-tuned weights are the last ones (not the best on the held-out
  tiles, which would make the held-out numbers optimistic).

Weights are written atomically in the
:func:`~napari_stem_defects.network_io.save_weights` format (loadable by
:func:`~napari_stem_defects.columns.unet.load_column_model`, ``weights_only=True``)
with a model card (``.md``) beside them; the shipped file is never written.

The loop, evaluation, cancelling and model writing are those every fine-tuning
shares (:func:`~napari_stem_defects.training.loop.run_finetune`); this module
holds the column U-Net's part of it (:class:`ColumnTask`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .loop import (
    FINETUNE_SEED_BASE, FinetuneResult, FinetuneTask, check_settings, run_finetune, shared_parameters, twin_share,
)
from .column_sets import load_column_datasets, twin_examples
from .model_files import card_dataset_lines, card_provenance_lines, dataset_summary
from .splits import choose_crop, heldout_mask, heldout_tiles

#: Per-image manifest entries a column model's card records of each training set.
COLUMN_IMAGE_KEYS = ("name", "source_file", "sha256", "material", "pixel_size_A", "nn_px", "n_sites")

#: First seed of the twins mixed into column fine-tuning batches (``+ 10_000 * seed``); inside the
#: fine-tuning range (60_000_000-60_999_999) that no shipped network's training uses, apart from
#: the cell fine-tuning twins (``FINETUNE_SEED_BASE + 10_000 * seed``, seed < 50).
COLUMN_TWIN_SEED_BASE = FINETUNE_SEED_BASE + 500_000
#: Offset of the twins scored before/after (never in a batch).
VAL_TWIN_OFFSET = 9_000
#: Default number of twins in the pool mixed into batches.
DEFAULT_N_TWINS = 16
#: Default number of fresh twins scored before and after fine-tuning.
DEFAULT_N_VAL_TWINS = 4


# --------------------------------------------------------------------------- model and metrics


def load_shipped_column_unet() -> tuple[Any, dict[str, Any], Path]:
    """A fresh (uncached, trainable) copy of the shipped column U-Net, its metadata and its path."""
    from ..columns.unet import _build_from_metadata, default_weights_path
    from ..network_io import read_weights

    path = default_weights_path()
    state, meta = read_weights(path, "column U-Net", "scripts/train_column_unet.py")
    model = _build_from_metadata(meta)
    model.load_state_dict(state)
    model.eval()
    return model, meta, path


def heldout_metrics(model: Any, examples: Sequence[dict[str, Any]],
                    tiles: Sequence[Sequence[tuple[int, int, int, int]]]) -> dict[str, Any]:
    """Column detection metrics of ``model`` on the held-out tiles (model left in eval mode).

    The map of each whole canonical image is computed (inference may look at
    any pixel; only training must not), peaks are picked as for the shipped
    model's validation (:func:`~napari_stem_defects.training.column_unet.pick_peaks`)
    and each held-out tile is scored on its own with
    :func:`~napari_stem_defects.training.column_unet.match_counts` (sites and
    peaks within nn/2 of a tile's edge are not scored).

    Returns
    -------
    dict
        :func:`~napari_stem_defects.training.column_unet.summarize` metrics
        (``precision``, ``recall``, ``f1``, ``empty_with_peak``, ``n_sites``) plus
        ``n_tiles``; empty when there are no held-out tiles.
    """
    from ..columns.unet import predict_map
    from .column_unet import match_counts, pick_peaks, summarize

    counts, n_tiles = [], 0
    model.eval()
    for ex, its in zip(examples, tiles):
        if not its:
            continue
        dmap = predict_map(model, ex["image"])
        peaks = pick_peaks(dmap, ex["nn_px"])
        for y0, y1, x0, x1 in its:
            o = np.array([y0, x0], float)
            counts.append(match_counts(peaks - o, ex["occupied"] - o, ex["empty"] - o, ex["nn_px"],
                                       (y1 - y0, x1 - x0)))
            n_tiles += 1
    if not counts:
        return {}
    return {**summarize(counts), "n_tiles": n_tiles}


def _twin_metrics(model: Any, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from .column_unet import validate

    return validate(model, examples) if examples else {}


# --------------------------------------------------------------------------- fine-tuning


class ColumnTask(FinetuneTask):
    """The column U-Net's part of :func:`~napari_stem_defects.training.loop.run_finetune`: crops of the
    training part of the images and of twins, the shipped model's loss, held-out detection metrics
    and fresh twins scored before and after (the arguments are those of :func:`finetune_column_unet`)."""

    kind = "columns"
    rng_stream = 31
    base_keys = ("canonical_nn_px", "target_sigma_nn", "output")

    def __init__(self, datasets: Sequence[str | Path], *, steps: int, batch: int, twin_fraction: float,
                 val_fraction: float, lr: float, seed: int, crop: int, val_tile: int, n_twins: int,
                 n_val_twins: int) -> None:
        self.datasets, self.steps, self.batch, self.lr, self.seed = datasets, steps, batch, lr, seed
        self.twin_fraction, self.val_fraction = float(twin_fraction), float(val_fraction)
        self.crop, self.val_tile, self.n_twins, self.n_val_twins = crop, val_tile, n_twins, n_val_twins

    def prepare(self, cancel: threading.Event | None) -> bool:
        self.examples, self.manifests = load_column_datasets(self.datasets)
        self.tiles = heldout_tiles([ex["image"].shape for ex in self.examples], self.val_tile, self.val_fraction,
                                   self.seed)
        masks = [heldout_mask(ex["image"].shape, t) for ex, t in zip(self.examples, self.tiles)]
        self.crop, self.windows = choose_crop(masks, self.crop)
        n_val, n_train = 0, 0
        for ex, m in zip(self.examples, masks):
            iy, ix = np.clip(np.round(ex["occupied"]).astype(int), 0, np.array(m.shape) - 1).T
            inside = m[iy, ix]
            n_val += int(inside.sum())
            n_train += int((~inside).sum())
        self.n_train, self.n_val = n_train, n_val
        self.n_twin_batch = min(twin_share(self.batch, self.twin_fraction, self.n_twins), self.batch - 1)
        self.twin_base = COLUMN_TWIN_SEED_BASE + 10_000 * int(self.seed)
        self.twins = twin_examples(self.n_twins if self.n_twin_batch else 0, self.crop + 32, self.twin_base,
                                   cancel=cancel)
        if self.twins is None:
            return False
        self.val_twins = twin_examples(self.n_val_twins, max(self.crop, 96) + 64, self.twin_base + VAL_TWIN_OFFSET,
                                       augment=False, cancel=cancel)
        return self.val_twins is not None

    def load_model(self) -> tuple[Any, dict[str, Any], Path]:
        return load_shipped_column_unet()

    def evaluate(self, model: Any) -> dict[str, Any]:
        return heldout_metrics(model, self.examples, self.tiles)

    def eval_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"val_precision": metrics["precision"], "val_recall": metrics["recall"], "val_f1": metrics["f1"]}

    def begin(self, model: Any) -> None:
        self.twins_before = _twin_metrics(model, self.val_twins)
        counts = np.array([len(w) for w in self.windows], float)
        self.p_image = counts / counts.sum()
        self.dices: list[float] = []

    def batch_loss(self, model: Any, rng: np.random.Generator) -> Any:
        import torch

        from .column_unet import _loss, augment_crop

        crop, crops = self.crop, []
        for k in rng.choice(len(self.examples), size=self.batch - self.n_twin_batch, p=self.p_image):
            ex, w = self.examples[k], self.windows[k]
            y0, x0 = np.unravel_index(w[rng.integers(len(w))], (ex["image"].shape[0] - crop + 1,
                                                               ex["image"].shape[1] - crop + 1))
            window = {key: ex[key][y0:y0 + crop, x0:x0 + crop] for key in ("image", "target", "weight")}
            crops.append(augment_crop(window, rng, crop))
        for k in rng.integers(len(self.twins), size=self.n_twin_batch) if self.n_twin_batch else []:
            crops.append(augment_crop(self.twins[int(k)], rng, crop))
        x, t, wt = (torch.from_numpy(np.stack([c[j] for c in crops])[:, None]) for j in range(3))
        logits = model(x)
        with torch.no_grad():
            p = torch.sigmoid(logits)
            self.dices.append(float((2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)))
        return _loss(logits, t, wt)

    def tally(self) -> dict[str, Any]:
        rec = {"dice": float(np.mean(self.dices))}
        self.dices = []
        return rec

    def end(self, model: Any) -> None:
        self.twins_after = _twin_metrics(model, self.val_twins)

    def metadata(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        base, n_twins, n_val_twins = self.twin_base, self.n_twins, self.n_val_twins
        settings = {"steps": self.steps, "batch": self.batch, "twin_fraction": self.twin_fraction,
                    "val_fraction": self.val_fraction, "lr": self.lr, "seed": self.seed, "crop": self.crop,
                    "val_tile": self.val_tile, "n_twins": int(n_twins) if self.n_twin_batch else 0,
                    "n_val_twins": int(n_val_twins),
                    "twin_seeds": [base, base + n_twins - 1] if self.n_twin_batch else None,
                    "val_twin_seeds": [base + VAL_TWIN_OFFSET, base + VAL_TWIN_OFFSET + n_val_twins - 1]
                    if n_val_twins else None}
        return {
            "settings": settings,
            "datasets": [dataset_summary(m, COLUMN_IMAGE_KEYS, totals=False) for m in self.manifests],
            "images": [{"name": ex["name"], "dataset": ex["dataset"], "canonical_shape": list(ex["image"].shape),
                        "n_occupied": int(len(ex["occupied"])), "n_empty": int(len(ex["empty"])),
                        "heldout_tiles": [list(t) for t in ts]} for ex, ts in zip(self.examples, self.tiles)],
            "n_train": self.n_train,
            "n_val": self.n_val,
            "heldout": {"before": before, "after": after},
            "twins": {"before": self.twins_before, "after": self.twins_after},
        }

    def card(self, meta: dict[str, Any]) -> str:
        return model_card(meta)


@shared_parameters
def finetune_column_unet(
    datasets: Sequence[str | Path],
    out: str | Path,
    *,
    steps: int = 200,
    batch: int = 8,
    twin_fraction: float = 0.5,
    val_fraction: float = 0.2,
    lr: float = 3e-4,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
    crop: int = 96,
    val_tile: int = 64,
    n_twins: int = DEFAULT_N_TWINS,
    n_val_twins: int = DEFAULT_N_VAL_TWINS,
    eval_every: int | None = None,
    name: str | None = None,
    command: str | None = None,
    overwrite: bool = False,
) -> FinetuneResult | None:
    """Fine-tune the shipped column U-Net on training sets mixed with digital twins.

    The held-out part is ``val_fraction`` of the images' tiles
    (:func:`~napari_stem_defects.training.splits.heldout_tiles`). Training
    records hold ``loss`` and ``dice`` (the soft Dice overlap of the batches),
    evaluations ``val_precision``, ``val_recall`` and ``val_f1``.

    Parameters
    ----------
    {shared_parameters}
    crop : int
        Side of the training crops in canonical pixels (lowered, down to
        :data:`~napari_stem_defects.training.splits.MIN_CROP`, when the images
        leave no room outside the held-out tiles).
    val_tile : int
        Side, about, of the tiles the held-out split is made of (canonical pixels).
    n_val_twins : int
        Fresh twins scored before and after (what the shipped model was trained
        for; 0 to skip).

    Returns
    -------
    FinetuneResult or None
        ``before``/``after`` hold the held-out detection metrics; ``n_train`` and
        ``n_val`` count the occupied sites in the training part and in the
        held-out tiles. None when cancelled.

    Raises
    ------
    {shared_raises}
    """
    check_settings(steps, batch, twin_fraction)
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), not {val_fraction}")
    task = ColumnTask(datasets, steps=steps, batch=batch, twin_fraction=twin_fraction, val_fraction=val_fraction,
                      lr=lr, seed=seed, crop=crop, val_tile=val_tile, n_twins=n_twins, n_val_twins=n_val_twins)
    return run_finetune(task, out, steps=steps, lr=lr, seed=seed, threads=threads, progress=progress,
                        cancel=cancel, eval_every=eval_every, name=name, command=command, overwrite=overwrite)


# --------------------------------------------------------------------------- model card


def _row(label: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    if not before or not after:
        return []
    return [f"| {label} | {after['n_sites']:.0f} | {before['precision']:.3f} / {before['recall']:.3f} / "
            f"{before['f1']:.3f} | {after['precision']:.3f} / {after['recall']:.3f} / {after['f1']:.3f} | "
            f"{before['empty_with_peak']:.3f} -> {after['empty_with_peak']:.3f} |"]


def model_card(meta: dict[str, Any]) -> str:
    """Markdown model card of a fine-tuned column U-Net from its metadata."""
    s = meta["settings"]
    before, after = meta["heldout"]["before"], meta["heldout"]["after"]
    lines = [
        f"# Column detector `{meta['name']}`",
        "",
        "A fine-tuned version of the shipped column U-Net (napari-stem-defects `columns.unet`, the `deep` "
        "detection method).",
        "",
        *card_provenance_lines(meta),
        f"- **Settings**: {s['steps']} steps, batch {s['batch']} crops of {s['crop']} canonical px, twin fraction "
        f"{s['twin_fraction']:g} ({s['n_twins']} twins), held-out fraction {s['val_fraction']:g} of "
        f"~{s['val_tile']} px tiles, lr {s['lr']:g}, seed {s['seed']}",
        f"- **Sites**: {meta['n_train']} occupied sites in the training part of the images, {meta['n_val']} in "
        "the held-out tiles",
        f"- **Time**: {meta['train_seconds']:.0f} s",
        "",
        "Targets: a Gaussian blob (sigma 0.18 nn) at every occupied site of the annotations (species not "
        "'empty'; every site of an exported image counts, the ones nobody touched as accepted), at the "
        "canonical scale (nn = 11 px), as for the shipped model; the loss weight is raised around empty sites.",
        "",
        "## Datasets",
        "",
        *card_dataset_lines(meta, lambda img: f"{img['name']} ({img['material']}, {img.get('n_sites')} sites, nn "
                            f"{float(img['nn_px'] or 0):.2f} px; file {img['source_file']}, "
                            f"sha256 {str(img['sha256'])[:12]}...)"),
    ]
    lines += ["", "## Column detection: shipped versus fine-tuned", ""]
    rows = [*_row(f"held-out tiles ({after.get('n_tiles', 0)})", before, after),
            *_row(f"fresh twins ({s['n_val_twins']})", meta["twins"]["before"], meta["twins"]["after"])]
    if not before:
        lines += ["No held-out split (held-out fraction 0): nothing measured on the datasets.", ""]
    if rows:
        lines += [
            "Peaks of the detection map (threshold 0.3, at least 0.5 nn apart) matched to occupied sites within "
            "nn/3; 'empty with peak' is the share of empty sites (vacancies) with a peak (lower is better).",
            "",
            "| examples | sites | shipped P / R / F1 | fine-tuned P / R / F1 | empty with peak |",
            "|---|---:|---|---|---|",
            *rows,
        ]
    lines += [
        "",
        "## Use and limits",
        "",
        "Select it as the column model of the deep method (`detect_columns(..., method='deep', model=PATH)`, or "
        f"`napari-stem-defects analyze --method deep --column-model {meta['name']}`). It is meant for images like "
        "those of its datasets; the held-out tiles come from the same images as the training part, so they "
        "measure fitting to those images more than to new ones. Check a new kind of image against corrected "
        "sites before trusting it.",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "COLUMN_TWIN_SEED_BASE", "ColumnTask", "DEFAULT_N_TWINS", "DEFAULT_N_VAL_TWINS", "finetune_column_unet",
    "heldout_metrics", "load_shipped_column_unet", "model_card",
]
