"""Fine-tune the shipped column U-Net on exported training sets, mixed with fresh digital twins.

The column half of the correction loop: a person adds, moves and deletes
sites (and sets species, "empty" for a vacancy) in the viewer, exports the
annotations (:func:`~napari_stem_defects.annotations.training_set.export_training_set`),
and :func:`finetune_column_unet` makes a new version of the column detector
(:mod:`napari_stem_defects.columns.unet`) from them.

- Targets are made exactly as for the shipped model
  (:mod:`napari_stem_defects.training.column_unet`): each image is resampled to
  the canonical scale (nn distance :data:`~napari_stem_defects.columns.unet.CANONICAL_NN_PX`
  pixels, from the nn distance the export measured) and normalised; the target
  is a Gaussian blob (sigma ``SIGMA_FRACTION`` nn) at every occupied site of
  the annotations (a site whose species is not "empty"; positions from the
  points layer, so moved points count), and the loss weight is raised around
  empty sites. Every site of an exported image is a label: the sites a person
  did not touch count as accepted.
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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .finetune import (
    FINETUNE_SEED_BASE, FinetuneResult, _check_out, _plain, base_provenance, dataset_summary, heldout_split,
    torch_session, write_model,
)

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
#: Smallest training crop side (canonical pixels).
MIN_CROP = 32
#: The network halves the resolution three times: crop sides are multiples of this.
_ALIGN = 8


# --------------------------------------------------------------------------- data


def annotation_sites(ann: Any) -> tuple[np.ndarray, np.ndarray]:
    """Site positions (pixels) of an image's annotations and whether each site holds a column.

    From the sites (points) layer when there is one: positions from the layer
    data (moved points count), occupied unless the species is "empty" (or
    blank). Without a sites layer, from the cells' metal and X2 sites (and
    adatoms), as the dataset's masks are made
    (:func:`~napari_stem_defects.annotations.training_set.annotation_mask`).

    Parameters
    ----------
    ann : Annotations

    Returns
    -------
    yx : ndarray of float, shape (N, 2)
    occupied : ndarray of bool, shape (N,)

    Raises
    ------
    ValueError
        Annotations with neither sites nor cells.
    """
    from ..annotations.training_inputs import _occupied, cell_table_positions

    if ann.sites is not None and len(ann.sites.features):
        feats = ann.sites.features
        data = np.asarray(ann.sites.data, dtype=np.float64)
        yx = data[:, -2:] if len(data) == len(feats) else feats[["y_px", "x_px"]].to_numpy(float)
        return yx.reshape(-1, 2), _occupied(feats["species"].tolist())
    if ann.cells is None or not len(ann.cells.features):
        raise ValueError(f"the annotations of {ann.image.name!r} have neither sites nor cells")
    cells = ann.cells.features
    m, x, complete = cell_table_positions(cells)
    yx = [m, x[complete]]
    occ = [_occupied(cells["m_species"].tolist()), _occupied(cells.loc[complete, "x_species"].tolist())]
    if "adatom" in cells:
        ad = complete & cells["adatom"].to_numpy(bool)
        yx.append(2 * x[ad] - m[ad])
        occ.append(np.ones(int(ad.sum()), bool))
    return np.concatenate(yx).reshape(-1, 2), np.concatenate(occ)


def canonical_example(image: np.ndarray, yx: np.ndarray, occupied: np.ndarray, nn_px: float) -> dict[str, Any]:
    """An image and its sites at the U-Net's canonical scale, with target and loss weight.

    Made as :func:`napari_stem_defects.training.column_unet.make_example` makes
    a twin's: the image resampled so that the nn distance is
    :data:`~napari_stem_defects.columns.unet.CANONICAL_NN_PX` pixels (as
    :func:`~napari_stem_defects.columns.unet.detection_map_with_model` does) and
    normalised; Gaussian blobs at the occupied sites; weight raised around empty ones.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    yx : ndarray, shape (N, 2)
        Site positions in pixels of ``image``.
    occupied : ndarray of bool, shape (N,)
    nn_px : float
        Metal to chalcogen distance in pixels of ``image``.

    Returns
    -------
    dict
        ``image``, ``target``, ``weight`` (float32, canonical shape), ``occupied``
        and ``empty`` (canonical positions, (n, 2)) and ``nn_px`` (the canonical one).
    """
    from ..columns.unet import CANONICAL_NN_PX, canonical_shape, normalize_image, resample, resample_coordinates
    from .column_unet import EMPTY_WEIGHT, SIGMA_FRACTION, target_map

    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {img.shape}")
    if not (np.isfinite(nn_px) and nn_px > 0):
        raise ValueError(f"the nn distance must be a positive number, not {nn_px!r}")
    finite = np.isfinite(img)
    if not finite.all():
        img = np.where(finite, img, np.median(img[finite]) if finite.any() else 0.0).astype(np.float32)
    shape = canonical_shape(img.shape, nn_px)
    x = normalize_image(resample(img, shape))
    pos = resample_coordinates(np.asarray(yx, float).reshape(-1, 2), img.shape, shape)
    occ = np.asarray(occupied, bool)
    sigma = SIGMA_FRACTION * CANONICAL_NN_PX
    return {
        "image": x,
        "target": target_map(pos[occ], shape, sigma),
        "weight": 1 + EMPTY_WEIGHT * target_map(pos[~occ], shape, 1.5 * sigma),
        "occupied": pos[occ],
        "empty": pos[~occ],
        "nn_px": CANONICAL_NN_PX,
    }


def load_column_datasets(datasets: Sequence[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Canonical-scale examples of every image of some training sets.

    Parameters
    ----------
    datasets : sequence of str or Path
        Training set folders.

    Returns
    -------
    examples : list of dict
        One :func:`canonical_example` per image, plus ``name`` and ``dataset``.
    manifests : list of dict
        Each dataset's manifest (with its resolved ``path``).

    Raises
    ------
    ValueError
        No dataset, an unreadable one, an image without an nn distance, or no sites.
    """
    from ..annotations.training_set import read_training_set

    if not datasets:
        raise ValueError("give at least one training set folder")
    examples, manifests = [], []
    for path in datasets:
        ts = read_training_set(path)
        manifests.append({**ts.manifest, "path": str(Path(path).expanduser().resolve())})
        for entry, (image, ann) in zip(ts.manifest["images"], ts.items):
            nn = entry.get("nn_px")
            if nn is None:
                raise ValueError(f"{path}: image {entry.get('name')!r} has no nn distance in the manifest")
            yx, occ = annotation_sites(ann)
            ex = canonical_example(image, yx, occ, float(nn))
            ex.update(name=str(entry.get("name")), dataset=str(path))
            examples.append(ex)
    if not examples or sum(len(ex["occupied"]) for ex in examples) == 0:
        raise ValueError("the training sets hold no occupied sites to learn from")
    return examples, manifests


def tile_edges(length: int, tile: int) -> np.ndarray:
    """Edges of about ``tile``-pixel tiles covering ``length`` pixels (at least one tile)."""
    n = max(1, int(round(length / float(tile))))
    return np.linspace(0, length, n + 1).round().astype(int)


def heldout_tiles(shapes: Sequence[tuple[int, int]], tile: int, val_fraction: float,
                  seed: int = 0) -> list[list[tuple[int, int, int, int]]]:
    """Held-out tiles of each image: ``val_fraction`` of all tiles, spread over the images, seeded.

    Parameters
    ----------
    shapes : sequence of (int, int)
        Image shapes (canonical pixels).
    tile : int
        Tile side, about (images are cut into equal tiles of about this side).
    val_fraction : float
        Share of the tiles held out, in [0, 1); at least one tile stays in training.
    seed : int

    Returns
    -------
    list of list of (y0, y1, x0, x1)
        The held-out tiles of each image.

    Examples
    --------
    >>> tiles = heldout_tiles([(128, 128), (128, 256)], 64, 0.25)
    >>> sum(len(t) for t in tiles)
    3
    """
    grids = []
    for h, w in shapes:
        ey, ex = tile_edges(h, tile), tile_edges(w, tile)
        grids.append([(ey[i], ey[i + 1], ex[j], ex[j + 1]) for i in range(len(ey) - 1) for j in range(len(ex) - 1)])
    groups = np.concatenate([np.full(len(g), k) for k, g in enumerate(grids)]) if grids else np.zeros(0, int)
    val = heldout_split(np.zeros(len(groups), int), groups, val_fraction, seed)
    out, start = [], 0
    for g in grids:
        out.append([t for t, v in zip(g, val[start:start + len(g)]) if v])
        start += len(g)
    return out


def heldout_mask(shape: tuple[int, int], tiles: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """Boolean mask of the held-out pixels of an image."""
    mask = np.zeros(shape, bool)
    for y0, y1, x0, x1 in tiles:
        mask[y0:y1, x0:x1] = True
    return mask


def training_windows(heldout: np.ndarray, crop: int) -> np.ndarray:
    """Top-left corners (flat indices into the (H - crop + 1, W - crop + 1) grid) of the ``crop``-pixel
    windows that hold no held-out pixel.

    Examples
    --------
    >>> m = np.zeros((4, 4), bool); m[0, 0] = True
    >>> training_windows(m, 3).tolist()  # of the 2 x 2 corners, all but (0, 0)
    [1, 2, 3]
    """
    h, w = heldout.shape
    if h < crop or w < crop:
        return np.zeros(0, np.int64)
    s = np.zeros((h + 1, w + 1), np.int64)
    s[1:, 1:] = heldout.astype(np.int64).cumsum(0).cumsum(1)
    count = s[crop:, crop:] - s[:-crop, crop:] - s[crop:, :-crop] + s[:-crop, :-crop]
    return np.flatnonzero(count == 0)


def choose_crop(masks: Sequence[np.ndarray], crop: int) -> tuple[int, list[np.ndarray]]:
    """The largest crop side (multiple of 8, from ``crop`` down to :data:`MIN_CROP`) with training
    windows in some image, and those windows per image.

    Raises
    ------
    ValueError
        No image has room for a :data:`MIN_CROP`-pixel crop outside the held-out tiles.
    """
    c = max(MIN_CROP, int(crop) // _ALIGN * _ALIGN)
    while c >= MIN_CROP:
        windows = [training_windows(m, c) for m in masks]
        if any(len(w) for w in windows):
            return c, windows
        c -= _ALIGN
    raise ValueError("the training images are too small to train on outside the held-out tiles "
                     f"(no {MIN_CROP} x {MIN_CROP} canonical px crop fits); lower the held-out fraction "
                     "or export larger images")


def twin_examples(n: int, size: int, seed_base: int, *, augment: bool = True,
                  cancel: threading.Event | None = None) -> list[dict[str, Any]] | None:
    """``n`` fresh twin examples (:func:`~napari_stem_defects.training.column_unet.make_example`)
    of side ``size`` with seeds ``seed_base``, ``seed_base + 1``...; None when cancelled."""
    from .column_unet import make_example

    out = []
    for k in range(int(n)):
        if cancel is not None and cancel.is_set():
            return None
        out.append(make_example(int(seed_base) + k, int(size), augment=augment))
    return out


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

    Parameters
    ----------
    datasets : sequence of str or Path
        Training set folders (:func:`~napari_stem_defects.annotations.training_set.export_training_set`).
    out : str or Path
        Weights file to write (``.pt`` added if missing); the model card goes
        beside it (``.md``). Never the packaged models folder.
    steps, batch : int
        Optimiser steps and crops per batch.
    twin_fraction : float
        Share of each batch drawn from digital-twin crops, in [0, 1).
    val_fraction : float
        Share of the images' tiles held out, in [0, 1).
    lr : float
        Peak learning rate (Adam, warm-up then cosine decay).
    seed : int
        Seed of the split, the twins, the crops and torch.
    threads : int, optional
        torch threads while training (restored afterwards).
    progress : callable, optional
        Called with ``{"step", "steps", "loss", "dice"}`` every few steps (mean
        training loss and soft Dice overlap since the last call) and with
        ``{"step", "steps", "val_precision", "val_recall", "val_f1"}`` at each
        evaluation of the held-out tiles (step 0 is the shipped model).
    cancel : threading.Event, optional
        When set, training stops and nothing is written.
    crop : int
        Side of the training crops in canonical pixels (lowered, down to
        :data:`MIN_CROP`, when the images leave no room outside the held-out tiles).
    val_tile : int
        Side, about, of the tiles the held-out split is made of (canonical pixels).
    n_twins : int
        Twins in the pool mixed into batches (ignored when ``twin_fraction`` is 0).
    n_val_twins : int
        Fresh twins scored before and after (what the shipped model was trained
        for; 0 to skip).
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
        ``before``/``after`` hold the held-out detection metrics; ``n_train`` and
        ``n_val`` count the occupied sites in the training part and in the
        held-out tiles. None when cancelled.

    Raises
    ------
    ValueError
        Bad settings, unreadable datasets, images too small, the packaged folder as ``out``,
        or weights that came out NaN (nothing is written).
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    if steps < 1 or batch < 1:
        raise ValueError("steps and batch must be at least 1")
    if not 0.0 <= float(twin_fraction) < 1.0:
        raise ValueError(f"twin_fraction must be in [0, 1), not {twin_fraction}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), not {val_fraction}")
    target = _check_out(Path(out), overwrite)
    t0 = time.time()
    examples, manifests = load_column_datasets(datasets)
    tiles = heldout_tiles([ex["image"].shape for ex in examples], val_tile, val_fraction, seed)
    masks = [heldout_mask(ex["image"].shape, t) for ex, t in zip(examples, tiles)]
    crop, windows = choose_crop(masks, crop)
    n_val, n_train = 0, 0
    for ex, m in zip(examples, masks):
        iy, ix = np.clip(np.round(ex["occupied"]).astype(int), 0, np.array(m.shape) - 1).T
        inside = m[iy, ix]
        n_val += int(inside.sum())
        n_train += int((~inside).sum())
    n_twin_batch = int(round(batch * float(twin_fraction))) if n_twins > 0 else 0
    if n_twin_batch >= batch:
        n_twin_batch = batch - 1
    base = COLUMN_TWIN_SEED_BASE + 10_000 * int(seed)
    twins = twin_examples(n_twins if n_twin_batch else 0, crop + 32, base, cancel=cancel)
    if twins is None:
        return None
    val_twins = twin_examples(n_val_twins, max(crop, 96) + 64, base + VAL_TWIN_OFFSET, augment=False, cancel=cancel)
    if val_twins is None:
        return None
    eval_every = max(1, int(eval_every) if eval_every else max(1, steps // 5))
    report_every = max(1, min(10, steps // 20))

    with torch_session(threads, seed):
        run = _train(examples, tiles, windows, crop, twins, n_twin_batch, val_twins, steps=steps, batch=batch,
                     lr=lr, seed=seed, eval_every=eval_every, report_every=report_every, progress=progress,
                     cancel=cancel)
    if run is None or (cancel is not None and cancel.is_set()):
        return None
    model, history, before, after, twins_before, twins_after, base_meta, base_path = run

    settings = {"steps": steps, "batch": batch, "twin_fraction": float(twin_fraction),
                "val_fraction": float(val_fraction), "lr": lr, "seed": seed, "crop": crop, "val_tile": val_tile,
                "n_twins": int(n_twins) if n_twin_batch else 0, "n_val_twins": int(n_val_twins),
                "twin_seeds": [base, base + n_twins - 1] if n_twin_batch else None,
                "val_twin_seeds": [base + VAL_TWIN_OFFSET, base + VAL_TWIN_OFFSET + n_val_twins - 1]
                if n_val_twins else None}
    meta = _plain({
        **{k: base_meta[k] for k in ("canonical_nn_px", "target_sigma_nn", "output") if k in base_meta},
        "arch": base_meta.get("arch", {}),
        **base_provenance("columns", name, target, base_meta, base_path, command),
        "settings": settings,
        "datasets": [dataset_summary(m, COLUMN_IMAGE_KEYS, totals=False) for m in manifests],
        "images": [{"name": ex["name"], "dataset": ex["dataset"], "canonical_shape": list(ex["image"].shape),
                    "n_occupied": int(len(ex["occupied"])), "n_empty": int(len(ex["empty"])),
                    "heldout_tiles": [list(t) for t in ts]} for ex, ts in zip(examples, tiles)],
        "n_train": n_train,
        "n_val": n_val,
        "heldout": {"before": before, "after": after},
        "twins": {"before": twins_before, "after": twins_after},
        "history": history,
        "train_seconds": time.time() - t0,
    })
    card = write_model(model, target, meta, model_card(meta))
    return FinetuneResult(target, card, history, before, after, n_train, n_val, meta)


def _train(examples: list[dict[str, Any]], tiles: list, windows: list[np.ndarray], crop: int,
           twins: list[dict[str, Any]], n_twin_batch: int, val_twins: list[dict[str, Any]], *, steps: int,
           batch: int, lr: float, seed: int, eval_every: int, report_every: int,
           progress: Callable[[dict[str, Any]], None] | None, cancel: threading.Event | None) -> tuple | None:
    """The training loop of :func:`finetune_column_unet` (torch's RNG already seeded)."""
    import torch

    from .column_unet import _loss, augment_crop
    from .schedule import warmup_cosine

    rng = np.random.default_rng([int(seed), 31])
    model, base_meta, base_path = load_shipped_column_unet()
    history: list[dict[str, Any]] = []

    def evaluate(step: int) -> dict[str, Any]:
        m = heldout_metrics(model, examples, tiles)
        if m:
            rec = {"step": step, "steps": steps, "val_precision": m["precision"], "val_recall": m["recall"],
                   "val_f1": m["f1"]}
            history.append(rec)
            if progress is not None:
                progress(dict(rec))
        return m

    before = evaluate(0)
    twins_before = _twin_metrics(model, val_twins)
    if cancel is not None and cancel.is_set():
        return None
    counts = np.array([len(w) for w in windows], float)
    p_image = counts / counts.sum()
    n_data = batch - n_twin_batch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = warmup_cosine(opt, steps)
    losses, dices = [], []
    for step in range(1, steps + 1):
        if cancel is not None and cancel.is_set():
            return None
        crops = []
        for k in rng.choice(len(examples), size=n_data, p=p_image):
            ex, w = examples[k], windows[k]
            y0, x0 = np.unravel_index(w[rng.integers(len(w))], (ex["image"].shape[0] - crop + 1,
                                                               ex["image"].shape[1] - crop + 1))
            window = {key: ex[key][y0:y0 + crop, x0:x0 + crop] for key in ("image", "target", "weight")}
            crops.append(augment_crop(window, rng, crop))
        for k in rng.integers(len(twins), size=n_twin_batch) if n_twin_batch else []:
            crops.append(augment_crop(twins[int(k)], rng, crop))
        x, t, wt = (torch.from_numpy(np.stack([c[j] for c in crops])[:, None]) for j in range(3))
        model.train()
        logits = model(x)
        loss = _loss(logits, t, wt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
        with torch.no_grad():
            p = torch.sigmoid(logits)
            dices.append(float((2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)))
        if step % report_every == 0 or step == steps:
            rec = {"step": step, "steps": steps, "loss": float(np.mean(losses)), "dice": float(np.mean(dices))}
            history.append(rec)
            losses, dices = [], []
            if progress is not None:
                progress(dict(rec))
        if step % eval_every == 0 and step != steps:
            evaluate(step)
    if cancel is not None and cancel.is_set():
        return None
    model.eval()
    after = evaluate(steps)
    twins_after = _twin_metrics(model, val_twins)
    return model, history, before, after, twins_before, twins_after, base_meta, base_path


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
        f"- **Base model**: the shipped `{meta['base_file']}` (sha256 `{meta['base_sha256'][:16]}...`); "
        "fine-tuning always starts from it, never from an earlier fine-tuned model.",
        f"- **Created**: {meta['created']} by {meta.get('created_by') or 'unknown'} with {meta['software']}",
        f"- **Command**: `{meta['command']}`" if meta.get("command") else "- **Command**: (not recorded)",
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
    ]
    for d in meta["datasets"]:
        lines.append(f"- `{d['path']}` (created {d.get('created')} by {d.get('created_by')})")
        for img in d["images"]:
            lines.append(f"  - {img['name']} ({img['material']}, {img.get('n_sites')} sites, nn "
                         f"{float(img['nn_px'] or 0):.2f} px; file {img['source_file']}, "
                         f"sha256 {str(img['sha256'])[:12]}...)")
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
    "COLUMN_TWIN_SEED_BASE", "DEFAULT_N_TWINS", "DEFAULT_N_VAL_TWINS", "annotation_sites", "canonical_example",
    "choose_crop", "finetune_column_unet", "heldout_metrics", "heldout_mask", "heldout_tiles",
    "load_column_datasets", "load_shipped_column_unet", "model_card", "tile_edges", "training_windows",
]
