"""Writing a training set: the verified annotations of one or many images as a dataset folder.

The folder's layout is described in :mod:`.training_set`, which also reads it back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_save_npy, atomic_write, atomic_write_text, json_default
from ..provenance import provenance
from ..simulate.defects import CELL_CLASSES
from .schema import check_annotations
from .store import Annotations, ImageReference, image_sha256
from .training_inputs import (
    MASK_RADIUS_NN,
    annotation_mask,
    cell_inputs,
    cell_table_positions,
    class_indices,
    nn_of_cells,
)
from .training_set import CELLS_FILE, FORMAT, MANIFEST, SUBFOLDERS, VERSION


def safe_name(name: str, fallback: str = "image", max_length: int | None = 60) -> str:
    """A file-name-safe version of a layer name (letters, digits, ``-_.``; others as ``_``).

    At most ``max_length`` characters (None: no limit); ``fallback`` when nothing is left.

    Examples
    --------
    >>> safe_name("scan 01/MoS2 (dose 1e5).dm4")
    'scan_01_MoS2_dose_1e5_.dm4'
    """
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return out[:max_length] or fallback


def pixel_size_A(ref: ImageReference) -> float | None:
    """Å per pixel of an image reference (its last axis), or None when it has no length units."""
    from ..io.units import angstrom_per_unit

    if not ref.scale or not ref.units:
        return None
    factor = angstrom_per_unit(str(ref.units[-1]))
    return None if factor is None else float(ref.scale[-1]) * factor


def _check_out_dir(out: Path) -> None:
    """``out`` may be new, empty, or a training set being replaced; anything else is refused.

    A folder left half-written by an interrupted export (the dataset's own files, no manifest)
    counts as a training set being replaced.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            ok = json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            ok = False
    else:
        own = re.compile(r"^\d{3}_[A-Za-z0-9._-]*\.(npy|annotations\.json)$")
        ok = all((p.name == CELLS_FILE and p.is_file())
                 or (p.name in SUBFOLDERS and p.is_dir() and all(own.match(q.name) for q in p.iterdir()))
                 for p in entries)
    if not ok:
        raise ValueError(f"{out} is not empty and is not a training set; choose an empty or a new folder")


def _image_entry(k: int, stem: str, image: np.ndarray, ann: Annotations, nn_px: float, labels: np.ndarray,
                 n_cells: int, n_verified: int, n_sites: int) -> dict[str, Any]:
    counts = np.bincount(labels.astype(np.int64), minlength=len(CELL_CLASSES))
    ref = ann.image
    return {
        "index": k,
        "name": ref.name,
        "source_file": ref.file,
        "sha256": image_sha256(image),
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "scale": list(ref.scale),
        "units": list(ref.units),
        "pixel_size_A": pixel_size_A(ref),
        "material": ann.material,
        "nn_px": nn_px,
        "annotations_saved_at": ann.saved_at,
        "annotations_saved_by": ann.saved_by,
        "n_cells": n_cells,
        "n_verified": n_verified,
        "n_exported": int(len(labels)),
        "class_counts": {c: int(n) for c, n in zip(CELL_CLASSES, counts)},
        "n_sites": n_sites,
        "image_file": f"images/{stem}.npy",
        "annotations_file": f"annotations/{stem}.annotations.json",
        "mask_file": f"masks/{stem}.npy",
    }


def export_training_set(
    sources: Sequence[tuple[np.ndarray, Annotations]],
    out_dir: str | Path,
    *,
    verified_only: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the (verified) cells, masks, images and annotations of some images as a dataset folder.

    Parameters
    ----------
    sources : sequence of (ndarray, Annotations)
        Each 2D image with its annotations (a cells layer and a material are needed;
        a sites layer gives the masks, else the cells' species do).
    out_dir : str or Path
        Dataset folder: new, empty, or an existing training set (replaced).
    verified_only : bool
        Export only the cells a person verified (default); False exports every
        cell, model labels included (``verified`` tells them apart).
    progress : callable, optional
        ``progress(images_done, n_images)``.

    Returns
    -------
    Path
        The manifest.

    Raises
    ------
    ValueError
        No sources, an image that is not 2D, annotations without cells or material,
        an unknown class, a non-empty folder that is not a training set, or nothing
        verified to export.
    """
    sources = list(sources)
    if not sources:
        raise ValueError("no images to export")
    out = Path(out_dir)
    _check_out_dir(out)
    prepared = []
    for k, (image, ann) in enumerate(sources):
        image = np.asarray(image)
        where = f"image {k} ({ann.image.name!r})"
        if image.ndim != 2:
            raise ValueError(f"{where}: only 2D images can be exported, not shape {image.shape}")
        if ann.cells is None or len(ann.cells.features) == 0:
            raise ValueError(f"{where}: the annotations have no cells; classify the cells first")
        if not ann.material:
            raise ValueError(f"{where}: the annotations name no material (needed for the classifier's context)")
        if image.dtype.kind not in "biuf" or not np.isfinite(image).any():
            raise ValueError(f"{where}: the image holds no finite intensities")
        try:
            check_annotations(ann)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        cells = ann.cells.features
        verified = cells["verified"].to_numpy(bool) if "verified" in cells else np.zeros(len(cells), bool)
        classed = cells["class"].astype(str).isin(CELL_CLASSES).to_numpy()  # not 'incomplete' border cells
        rows = np.flatnonzero((verified if verified_only else True) & classed)
        prepared.append((image, ann, verified, rows))
    if sum(len(rows) for *_, rows in prepared) == 0:
        what = "verified cells" if verified_only else "cells"
        raise ValueError(f"nothing to export: the {len(sources)} image(s) have no {what}. Correct or confirm "
                         "some cells in the viewer first (edited cells are marked verified)")

    (out / MANIFEST).unlink(missing_ok=True)  # a replaced dataset is incomplete until the new manifest
    for sub in SUBFOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("crops", "context", "label", "image", "cell", "verified")}
    entries, stems = [], []
    for k, (image, ann, verified, rows) in enumerate(prepared):
        cells = ann.cells.features
        m, x, complete = cell_table_positions(cells)
        nn = nn_of_cells(m, x, complete)
        labels = class_indices(cells["class"].astype(str).to_numpy()[rows])
        crops, ctx = cell_inputs(image, m, x, nn, str(ann.material), rows)
        if not (np.isfinite(crops).all() and np.isfinite(ctx).all() and math.isfinite(nn) and nn > 0):
            raise ValueError(f"image {k} ({ann.image.name!r}): its cells give NaN or infinite crops (non-finite "
                             "pixels or positions); the export stopped")
        arrays["crops"].append(crops)
        arrays["context"].append(np.broadcast_to(ctx, (len(rows), len(ctx))))
        arrays["label"].append(labels)
        arrays["image"].append(np.full(len(rows), k, np.int32))
        arrays["cell"].append(rows.astype(np.int32))
        arrays["verified"].append(verified[rows])
        mask, n_sites = annotation_mask(image.shape, ann, nn)
        stem = f"{k:03d}_{safe_name(ann.image.name)}"
        stems.append(stem)
        atomic_save_npy(out / "images" / f"{stem}.npy", image)
        atomic_save_npy(out / "masks" / f"{stem}.npy", mask)
        _write_annotations(ann, out / "annotations" / f"{stem}.annotations.json")
        entries.append(_image_entry(k, stem, image, ann, nn, labels, len(cells), int(verified.sum()), n_sites))
        if progress is not None:
            progress(k + 1, len(prepared))

    data = {
        "crops": np.concatenate(arrays["crops"]).astype(np.float32),
        "context": np.concatenate(arrays["context"]).astype(np.float32),
        "label": np.concatenate(arrays["label"]).astype(np.int16),
        "image": np.concatenate(arrays["image"]).astype(np.int32),
        "cell": np.concatenate(arrays["cell"]).astype(np.int32),
        "verified": np.concatenate(arrays["verified"]).astype(bool),
    }

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez adds no suffix
            np.savez(f, **data)

    atomic_write(out / CELLS_FILE, write_npz)
    _remove_stale(out, stems)
    from ..cells.cnn import N_CONTEXT
    from ..cells.crops import CANONICAL_NN_PX, CROP_SIZE

    totals = np.bincount(data["label"].astype(np.int64), minlength=len(CELL_CLASSES))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        **provenance(),
        "verified_only": bool(verified_only),
        "crop": {"size": CROP_SIZE, "canonical_nn_px": CANONICAL_NN_PX, "channels": ["X2 centred", "M centred"]},
        "context_length": N_CONTEXT,
        "class_names": list(CELL_CLASSES),
        "mask_values": {"background": 0, "metal": 1, "chalcogen": 2, "adatom": 3},
        "mask_radius_nn": MASK_RADIUS_NN,
        "cells_file": CELLS_FILE,
        "images": entries,
        "totals": {
            "n_images": len(entries),
            "n_cells": int(len(data["label"])),
            "n_verified": int(data["verified"].sum()),
            "class_counts": {c: int(n) for c, n in zip(CELL_CLASSES, totals)},
        },
    }
    path = out / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1, default=json_default))
    return path


def _write_annotations(ann: Annotations, path: Path) -> None:
    """Write annotations in the :mod:`.store` format, atomically, as they are: their own provenance
    (saved_at, saved_by, software) and image file kept (an export is not a new save, and the
    caller's object is not changed)."""
    from .json_text import dumps_document

    atomic_write_text(path, dumps_document(ann.to_dict(folder=None)))


def _remove_stale(out: Path, stems: Sequence[str]) -> None:
    """Delete the files of a replaced dataset that the new one does not have."""
    keep = {f"images/{s}.npy" for s in stems} | {f"masks/{s}.npy" for s in stems}
    keep |= {f"annotations/{s}.annotations.json" for s in stems}
    for sub in SUBFOLDERS:
        for p in (out / sub).iterdir():
            if p.is_file() and f"{sub}/{p.name}" not in keep and not p.name.startswith("."):
                p.unlink()


__all__ = ["export_training_set", "pixel_size_A", "safe_name"]
