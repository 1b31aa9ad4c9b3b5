"""Column fine-tuning data: exported training sets and fresh twins at the U-Net's canonical scale.

Targets are made exactly as for the shipped model
(:mod:`napari_stem_defects.training.column_unet`): each image is resampled to
the canonical scale (nn distance :data:`~napari_stem_defects.network_inputs.CANONICAL_NN_PX`
pixels, from the nn distance the export measured) and normalised; the target
is a Gaussian blob (sigma ``SIGMA_FRACTION`` nn) at every occupied site of the
annotations (a site whose species is not "empty"; positions from the points
layer, so moved points count), and the loss weight is raised around empty
sites. Used by :mod:`napari_stem_defects.training.finetune_columns`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def annotation_sites(ann: Any) -> tuple[np.ndarray, np.ndarray]:
    """Site positions (pixels) of an image's annotations and whether each site holds a column.

    From the sites (points) layer when there is one: positions from the layer
    data (moved points count), occupied unless the species is "empty" (or
    blank). Without a sites layer, from the cells' metal and X2 sites (and
    adatoms), as the dataset's masks are made
    (:func:`~napari_stem_defects.annotations.training_inputs.annotation_mask`).

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
    :data:`~napari_stem_defects.network_inputs.CANONICAL_NN_PX` pixels (as
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
    from ..network_inputs import CANONICAL_NN_PX, canonical_shape, resample, resample_coordinates
    from ..network_io import normalize_image
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
