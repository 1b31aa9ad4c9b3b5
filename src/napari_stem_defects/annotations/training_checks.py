"""The rules a training set must follow before anything is trained on it.

A damaged or hand-made dataset folder must not train a model in silence:
NaN crops give NaN weights, 5 labels for 28 crops pair the wrong labels with
the wrong cells, reversed ``class_names`` swap every class, 16 x 16 crops or
a context of width 3 do not fit the network. :mod:`.training_set` calls these
checks when it reads a dataset; each raises ``ValueError`` with a message
saying what is wrong (it adds the folder and raises
:class:`~.training_set.TrainingSetError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..simulate.defects import CELL_CLASSES

__all__ = ["CELL_ARRAYS", "check_cells", "check_item", "check_manifest"]

#: The arrays of ``cells.npz``: name -> (dtype kinds allowed, what they are).
CELL_ARRAYS: dict[str, tuple[str, str]] = {
    "crops": ("f", "cell crops"),
    "context": ("f", "context vectors"),
    "label": ("iu", "class labels"),
    "image": ("iu", "image numbers"),
    "cell": ("iu", "cell numbers"),
    "verified": ("b", "verified flags"),
}


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_manifest(manifest: Mapping[str, Any]) -> None:
    """The manifest: images listed with a known material and positive sizes, classes in the plugin's order.

    Raises
    ------
    ValueError
    """
    from ..materials import parse_material

    images = manifest.get("images")
    _need(isinstance(images, list) and len(images) > 0, "the manifest lists no images")
    names = manifest.get("class_names")
    if names is not None:
        _need(isinstance(names, list) and names == list(CELL_CLASSES),
              f"its class names {str(names)[:60]}... are not this plugin's classes in its order "
              f"({', '.join(CELL_CLASSES)}); the labels would mean other classes. Export the training set again")
    for k, entry in enumerate(images):
        where = f"image {k}"
        _need(isinstance(entry, Mapping), f"{where} of the manifest is not an object")
        where = f"image {k} ({entry.get('name')!r:.40})"
        material = entry.get("material")
        _need(isinstance(material, str), f"{where} names no material")
        try:
            parse_material(material)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{where}: {material!r:.40} is not a material ({exc})") from None
        for key in ("nn_px", "pixel_size_A"):
            value = entry.get(key)
            if value is not None or key == "nn_px":
                _need(_positive(value), f"{where}: {key} is {value!r:.40}, not a positive number")


def check_cells(arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> None:
    """``cells.npz``: every array present, one row per cell in each, the shapes the classifier takes, finite values.

    Raises
    ------
    ValueError
    """
    from ..cells.cnn import N_CONTEXT
    from ..cells.crops import CROP_SIZE

    for name, (kinds, what) in CELL_ARRAYS.items():
        _need(name in arrays, f"cells.npz has no '{name}' array ({what})")
        _need(arrays[name].dtype.kind in kinds, f"cells.npz '{name}' holds {arrays[name].dtype} values, not {what}")
    n = len(arrays["crops"])
    lengths = {name: len(arrays[name]) for name in CELL_ARRAYS}
    _need(len(set(lengths.values())) == 1, "cells.npz arrays disagree on the number of cells: "
                                           + ", ".join(f"{k} {v}" for k, v in lengths.items()))
    crop = manifest.get("crop") if isinstance(manifest.get("crop"), Mapping) else {}
    size = crop.get("size", CROP_SIZE)
    _need(size == CROP_SIZE and arrays["crops"].shape[1:] == (2, CROP_SIZE, CROP_SIZE),
          f"the crops are {arrays['crops'].shape[1:]}; the classifier takes (2, {CROP_SIZE}, {CROP_SIZE})")
    _need(arrays["context"].shape[1:] == (N_CONTEXT,),
          f"the context vectors are {arrays['context'].shape[1:]}; the classifier takes ({N_CONTEXT},)")
    for name in ("label", "image", "cell", "verified"):
        _need(arrays[name].ndim == 1, f"cells.npz '{name}' must be one value per cell, not {arrays[name].shape}")
    for name in ("crops", "context"):
        bad = ~np.isfinite(arrays[name]).reshape(n, -1).all(axis=1) if n else np.zeros(0, bool)
        _need(not bad.any(), f"{int(bad.sum())} cell(s) have NaN or infinite {CELL_ARRAYS[name][1]} (e.g. cell "
                             f"{int(np.flatnonzero(bad)[0]) if bad.any() else -1}); the model would learn NaN weights")
    labels = arrays["label"].astype(np.int64)
    bad = (labels < 0) | (labels >= len(CELL_CLASSES))
    _need(not bad.any(), f"{int(bad.sum())} label(s) are not class numbers 0-{len(CELL_CLASSES) - 1} "
                         f"(e.g. {int(labels[bad][0]) if bad.any() else 0})")
    images = arrays["image"].astype(np.int64)
    n_images = len(manifest.get("images") or [])
    bad = (images < 0) | (images >= n_images)
    _need(not bad.any(), f"{int(bad.sum())} cell(s) name an image the manifest does not list "
                         f"(it lists {n_images})")
    _need(bool((arrays["cell"] >= 0).all()), "a cell number is negative")


def check_item(image: np.ndarray, mask: np.ndarray, entry: Mapping[str, Any]) -> None:
    """One image of a dataset and its site mask: 2D, finite, non-empty, the same shape, mask values 0-3.

    Raises
    ------
    ValueError
    """
    _need(image.ndim == 2 and min(image.shape) > 0, f"the image is {image.shape}, not a 2D image")
    _need(image.dtype.kind in "biuf", f"the image holds {image.dtype} values")
    _need(bool(np.isfinite(image).all()) if image.dtype.kind == "f" else True, "the image holds NaN or infinite values")
    shape = entry.get("shape")
    _need(shape is None or tuple(shape) == image.shape, f"the image is {image.shape} but the manifest says {shape}")
    _need(mask.shape == image.shape, f"its mask is {mask.shape}, the image {image.shape}")
    _need(mask.dtype.kind in "iu" and (mask.size == 0 or int(mask.max()) <= 3) and (mask.size == 0 or int(mask.min()) >= 0),
          "its mask holds values other than 0 (background), 1 (metal), 2 (chalcogen), 3 (adatom)")
