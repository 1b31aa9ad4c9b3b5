"""Training sets: the verified annotations of one or many images, as a dataset folder.

A person corrects the model in the viewer; :func:`export_training_set` turns
those corrections into what the networks learn from, and
:func:`import_training_set` gives back exactly the images and annotations that
went in (to look at them again in napari, or to re-export them later).

Layout of a dataset folder::

    manifest.json                         format, version, provenance, class counts
    cells.npz                             crops, context, label, image, cell, verified
    images/<k>_<name>.npy                 each image exactly as given (dtype kept)
    annotations/<k>_<name>.annotations.json   its full annotations (the store.py format)
    masks/<k>_<name>.npy                  uint8 site mask of the image

``cells.npz`` holds one row per exported cell:

``crops`` float32 (N, 2, 32, 32)
    Two-channel, rotation-normalised crops
    (:func:`~napari_stem_defects.cells.crops.cell_crops` of the
    :func:`~napari_stem_defects.cells.crops.prepare_image` output), exactly the
    classifier's input.
``context`` float32 (N, 12)
    :func:`~napari_stem_defects.cells.cnn.context_vector` with the image's
    :func:`~napari_stem_defects.cells.crops.strength_context` (from all its
    cells), as :func:`~napari_stem_defects.cells.cnn.classify_cells` builds it.
``label`` int16 (N,)
    Index of the cell's class in :data:`~napari_stem_defects.simulate.defects.CELL_CLASSES`.
``image`` int32 (N,), ``cell`` int32 (N,)
    Which image (its number ``k`` in the manifest) and which row of that image's cells table.
``verified`` bool (N,)
    Whether a person verified the label (all True unless exported with ``verified_only=False``).

The masks are atomai-style image + mask pairs for column segmentation:
0 background, 1 metal column, 2 chalcogen column, 3 adatom; a disc of radius
:data:`MASK_RADIUS_NN` nn at every occupied site.

Every file is written atomically, the manifest last: a folder with a manifest
is a complete dataset.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..provenance import provenance
from ..io.atomic import atomic_save_npy, atomic_write, atomic_write_text, json_default
from ..simulate.defects import CELL_CLASSES
from .store import Annotations, ImageReference, image_sha256, load_annotations
from .schema import check_annotations
from .training_checks import check_cells, check_item, check_manifest

#: ``format`` entry of a dataset manifest.
FORMAT = "napari-stem-defects training set"
#: Version of the dataset layout; bumped when a file changes meaning.
VERSION = 1
#: Name of the manifest file in a dataset folder.
MANIFEST = "manifest.json"
#: Name of the cell arrays file.
CELLS_FILE = "cells.npz"
#: Sub-folders of a dataset.
SUBFOLDERS = ("images", "annotations", "masks")
#: Radius of a site's disc in the masks, in units of the nn (metal to chalcogen) distance.
MASK_RADIUS_NN = 0.25
#: Mask value of an occupied site, per sublattice (0 is the background).
MASK_VALUES: dict[str, int] = {"M": 1, "X": 2, "H": 3}
#: Species labels of an empty site.
_EMPTY = ("", "empty", "nan", "None")


#: What reading a damaged ``.npy``/``.npz``/JSON file of a dataset can raise.
READ_ERRORS = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OverflowError,
               RecursionError)


class TrainingSetError(ValueError):
    """A folder is not a readable training set (no manifest, wrong format, newer version, missing files)."""


@dataclass
class TrainingSet:
    """A dataset folder read back by :func:`read_training_set`.

    Attributes
    ----------
    path : Path
        The dataset folder.
    manifest : dict
        ``manifest.json``.
    crops, context, labels, image_index, cell_index, verified : ndarray
        The arrays of ``cells.npz`` (``label`` as ``labels``, ``image`` as
        ``image_index``, ``cell`` as ``cell_index``).
    items : list of (ndarray, Annotations)
        Each image and its annotations, in manifest order.
    masks : list of ndarray
        Each image's site mask (uint8), in manifest order.
    """

    path: Path
    manifest: dict[str, Any]
    crops: np.ndarray
    context: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    cell_index: np.ndarray
    verified: np.ndarray
    items: list[tuple[np.ndarray, Annotations]] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)

    @property
    def materials(self) -> list[str]:
        """Material of each image, in manifest order."""
        return [str(entry["material"]) for entry in self.manifest["images"]]


# --------------------------------------------------------------------------- cells


def cell_table_positions(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Metal and X2 positions (N, 2) of a cells table and which cells have their X2 column.

    The same rule as the classifier
    (:func:`napari_stem_defects.cells.classify.cell_positions`): a cell whose
    X2 column is outside the image gets one median M -> X step from its metal.

    Raises
    ------
    ValueError
        When the table lacks the position columns.
    """
    from ..cells.classify import cell_positions

    needed = {"m_y_px", "m_x_px", "x_y_px", "x_x_px", "x_site_id"}
    missing = needed - set(cells.columns)
    if missing:
        raise ValueError(f"the cells table has no {', '.join(sorted(missing))} column(s); "
                         "it is not a classified cells layer")
    return cell_positions(cells)


def nn_of_cells(m: np.ndarray, x: np.ndarray, complete: np.ndarray) -> float:
    """Median metal to X2 distance (pixels) of the complete cells (as the classifier measures it)."""
    if not np.any(complete):
        raise ValueError("no cell has both its metal site and its X2 column; cannot measure the lattice")
    from ..cells.classify import median_nn

    return median_nn(m, x, complete)


def cell_inputs(image: np.ndarray, m: np.ndarray, x: np.ndarray, nn_px: float, material: str,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's inputs for some cells of an image, built as ``classify_cells`` builds them.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The raw image.
    m, x : ndarray, shape (N, 2)
        Metal and X2 positions (pixels) of all the image's cells (the strength
        context comes from those inside the image).
    nn_px : float
        Metal to X2 distance in pixels.
    material : str
        Host material.
    rows : ndarray of int, optional
        Cells to crop (default all).

    Returns
    -------
    crops : ndarray of float32, shape (n, 2, 32, 32)
    context : ndarray of float32, shape (12,)
    """
    from ..cells.cnn import context_vector
    from ..cells.crops import cell_crops, prepare_image, strength_context

    prepared = prepare_image(image, nn_px)
    h, w = prepared.shape
    inside = np.all((m >= 0) & (x >= 0) & (m <= (h - 1, w - 1)) & (x <= (h - 1, w - 1)), axis=1)
    ref = inside if inside.any() else np.ones(len(m), bool)
    ctx = context_vector(material, nn_px, strength_context(prepared, m[ref], x[ref], nn_px))
    sel = np.arange(len(m)) if rows is None else np.asarray(rows, dtype=np.int64)
    crops = cell_crops(prepared, m[sel], x[sel], nn_px, prepared=True)
    return crops.astype(np.float32, copy=False), ctx.astype(np.float32, copy=False)


def class_indices(classes: Sequence[str]) -> np.ndarray:
    """Index of each class name in CELL_CLASSES (int16); ValueError for an unknown name."""
    index = {c: k for k, c in enumerate(CELL_CLASSES)}
    unknown = sorted({str(c) for c in classes} - set(index))
    if unknown:
        raise ValueError(f"unknown cell class(es) {', '.join(map(repr, unknown))}; "
                         f"expected one of {', '.join(CELL_CLASSES)}")
    return np.array([index[str(c)] for c in classes], dtype=np.int16)


# --------------------------------------------------------------------------- masks


def site_mask(shape: tuple[int, int], positions: np.ndarray, sublattices: Sequence[str], occupied: np.ndarray,
              nn_px: float, radius_nn: float = MASK_RADIUS_NN) -> np.ndarray:
    """A uint8 mask with a disc of :data:`MASK_VALUES` at every occupied site.

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the image.
    positions : ndarray, shape (N, 2)
        (y, x) of the sites in pixels.
    sublattices : sequence of str
        'M', 'X' or 'H' per site (others are ignored).
    occupied : ndarray of bool, shape (N,)
        Sites holding a column.
    nn_px : float
        Metal to chalcogen distance in pixels.
    radius_nn : float
        Disc radius in units of ``nn_px``.

    Returns
    -------
    ndarray of uint8, shape (H, W)
        Metal discs painted first, then chalcogen, then adatom ones.

    Examples
    --------
    >>> m = site_mask((9, 9), np.array([[4.0, 4.0]]), ["X"], np.array([True]), 8.0)
    >>> int(m[4, 4]), int(m[4, 6]), int(m[0, 0])
    (2, 2, 0)
    """
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.uint8)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    subs = np.asarray([str(s) for s in sublattices], dtype=object)
    occ = np.asarray(occupied, bool)
    r = float(radius_nn) * float(nn_px)
    ri = int(math.ceil(r))
    for sub in ("M", "X", "H"):
        for y, x in pos[(subs == sub) & occ]:
            if not (np.isfinite(y) and np.isfinite(x)):
                continue
            iy, ix = int(round(y)), int(round(x))
            y0, y1 = max(iy - ri, 0), min(iy + ri + 1, out.shape[0])
            x0, x1 = max(ix - ri, 0), min(ix + ri + 1, out.shape[1])
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            disc = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
            out[y0:y1, x0:x1][disc] = MASK_VALUES[sub]
    return out


def _occupied(species: Sequence[Any]) -> np.ndarray:
    return np.array([s is not None and str(s) not in _EMPTY for s in species], dtype=bool)


def annotation_mask(shape: tuple[int, int], ann: Annotations, nn_px: float) -> tuple[np.ndarray, int]:
    """Site mask of an image from its sites layer (positions from the layer data, so moved points
    count), or from its cells' metal and X2 species when there is no sites layer.

    Returns
    -------
    mask : ndarray of uint8, shape (H, W)
    n_sites : int
        Sites considered (occupied or not).
    """
    if ann.sites is not None and len(ann.sites.features):
        feats = ann.sites.features
        data = np.asarray(ann.sites.data, dtype=np.float64)
        pos = data[:, -2:] if len(data) == len(feats) else feats[["y_px", "x_px"]].to_numpy(float)
        return site_mask(shape, pos, feats["sublattice"].astype(str).to_numpy(),
                         _occupied(feats["species"].tolist()), nn_px), int(len(feats))
    cells = ann.cells.features
    m, x, complete = cell_table_positions(cells)
    pos = np.concatenate([m, x[complete]])
    subs = ["M"] * len(m) + ["X"] * int(complete.sum())
    occ = np.concatenate([_occupied(cells["m_species"].tolist()),
                          _occupied(cells.loc[complete, "x_species"].tolist())])
    if "adatom" in cells:
        ad = complete & cells["adatom"].to_numpy(bool)
        pos = np.concatenate([pos, 2 * x[ad] - m[ad]])
        subs += ["H"] * int(ad.sum())
        occ = np.concatenate([occ, np.ones(int(ad.sum()), bool)])
    return site_mask(shape, pos, subs, occ, nn_px), 0


# --------------------------------------------------------------------------- export


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
    from ..cells.crops import CANONICAL_NN_PX, CROP_SIZE
    from ..cells.cnn import N_CONTEXT

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
    from .store import dumps_document

    atomic_write_text(path, dumps_document(ann.to_dict(folder=None)))


def _remove_stale(out: Path, stems: Sequence[str]) -> None:
    """Delete the files of a replaced dataset that the new one does not have."""
    keep = {f"images/{s}.npy" for s in stems} | {f"masks/{s}.npy" for s in stems}
    keep |= {f"annotations/{s}.annotations.json" for s in stems}
    for sub in SUBFOLDERS:
        for p in (out / sub).iterdir():
            if p.is_file() and f"{sub}/{p.name}" not in keep and not p.name.startswith("."):
                p.unlink()


# --------------------------------------------------------------------------- read / import


def _manifest_of(path: str | Path) -> tuple[Path, dict[str, Any]]:
    p = Path(path)
    folder = p.parent if p.name == MANIFEST else p
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise TrainingSetError(f"{folder} is not a training set: it has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainingSetError(f"{manifest_path} cannot be read: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TrainingSetError(f"{manifest_path} is not a {FORMAT!r} manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise TrainingSetError(f"{manifest_path} has version {version!r}; this napari-stem-defects reads "
                               f"version {VERSION} or older, update it")
    if "images" not in manifest:
        raise TrainingSetError(f"{manifest_path} lists no images")
    try:
        check_manifest(manifest)
    except ValueError as err:
        raise TrainingSetError(f"{manifest_path}: {err}") from None
    return folder, manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a dataset folder (or of the manifest path itself), checked.

    Raises
    ------
    TrainingSetError
    """
    return _manifest_of(path)[1]


def read_cells(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and ``cells.npz`` arrays of a dataset, without the images (fast).

    Raises
    ------
    TrainingSetError
    """
    folder, manifest = _manifest_of(path)
    cells_path = folder / manifest.get("cells_file", CELLS_FILE)
    try:
        with np.load(cells_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("crops", "context", "label", "image", "cell", "verified")}
    except READ_ERRORS as err:
        raise TrainingSetError(f"{cells_path} cannot be read ({type(err).__name__}: {err}); it is damaged or "
                               "cut short. Export the training set again") from None
    try:
        check_cells(arrays, manifest)
    except ValueError as err:
        raise TrainingSetError(f"{cells_path}: {err}") from None
    return manifest, arrays


def read_training_set(path: str | Path, *, load_items: bool = True) -> TrainingSet:
    """Read a dataset folder written by :func:`export_training_set`.

    Parameters
    ----------
    path : str or Path
        The folder or its ``manifest.json``.
    load_items : bool
        Also read the images, annotations and masks (default).

    Returns
    -------
    TrainingSet

    Raises
    ------
    TrainingSetError
        Not a training set, a newer version, or missing/corrupt files.
    """
    folder, _ = _manifest_of(path)
    manifest, arrays = read_cells(folder)
    items, masks = [], []
    if load_items:
        for entry in manifest["images"]:
            try:
                image = np.load(folder / entry["image_file"], allow_pickle=False)
                ann = load_annotations(folder / entry["annotations_file"])
                mask = np.load(folder / entry["mask_file"], allow_pickle=False)
                check_item(image, mask, entry)
            except (*READ_ERRORS, TypeError) as err:
                raise TrainingSetError(f"{folder}: image {entry.get('index')} ({entry.get('name')!r}) "
                                       f"cannot be read ({type(err).__name__}: {err})") from None
            items.append((image, ann))
            masks.append(mask)
    return TrainingSet(folder, manifest, arrays["crops"], arrays["context"], arrays["label"],
                       arrays["image"], arrays["cell"], arrays["verified"], items, masks)


def import_training_set(path: str | Path) -> list[tuple[np.ndarray, Annotations]]:
    """The images and annotations of a dataset, exactly as they were exported.

    Use :func:`napari_stem_defects.annotations.layers.annotation_layer_data`
    on each annotation to get napari layers back.

    Raises
    ------
    TrainingSetError
    """
    return read_training_set(path).items


__all__ = [
    "CELLS_FILE", "FORMAT", "MANIFEST", "MASK_RADIUS_NN", "MASK_VALUES", "VERSION", "TrainingSet",
    "TrainingSetError", "annotation_mask", "cell_inputs", "class_indices", "export_training_set",
    "import_training_set", "read_cells", "read_manifest", "read_training_set", "site_mask",
]
