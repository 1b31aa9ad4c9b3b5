"""Training sets: the verified annotations of one or many images, as a dataset folder.

A person corrects the model in the viewer;
:func:`~.training_set_export.export_training_set` turns
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
:data:`~.training_inputs.MASK_RADIUS_NN` nn at every occupied site.

Every file is written atomically, the manifest last: a folder with a manifest
is a complete dataset.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .store import Annotations, load_annotations
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
    "CELLS_FILE", "FORMAT", "MANIFEST", "VERSION", "TrainingSet", "TrainingSetError", "import_training_set",
    "read_cells", "read_manifest", "read_training_set",
]
