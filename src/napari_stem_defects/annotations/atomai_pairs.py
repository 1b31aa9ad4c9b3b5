"""Exported training sets as the (images, masks) arrays atomai's ``Segmentor.fit`` trains on.

A training set folder (:func:`~napari_stem_defects.annotations.training_set.export_training_set`)
holds every image and its uint8 site mask (0 background, 1 metal column, 2
chalcogen column, 3 adatom; a disc of 0.25 nn at each occupied site).
atomai's semantic segmentation wants equally sized square training images
``(N, 1, s, s)`` (float, 0-1) and masks ``(N, 1, s, s)`` of 0/1 for one class
(column or not: all the column engine needs) or integer masks ``(N, s, s)``
holding 0, 1, ... without gaps for several (atomai counts the classes from
the values present: :func:`segmentor_classes`). :func:`atomai_training_arrays` cuts the images and their masks
into such tiles, scaled as the atomai column engine scales images before
prediction (:func:`~napari_stem_defects.columns.atomai_engine.atomai_normalize`),
so a Segmentor trained on them runs back through
``detect_columns(..., method="atomai")``::

    images, masks = atomai_training_arrays("DATASET")
    seg = atomai.models.Segmentor("Unet", nb_classes=segmentor_classes(masks))
    seg.fit(images, masks, training_cycles=500, filename="my_columns", plot_training_history=False)
    # -> my_columns_metadict_final.tar: napari-stem-defects analyze IMAGE --method atomai
    #    --column-model my_columns_metadict_final.tar --trust-model-file

Plain numpy; nothing of atomai or torch is imported here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..columns.atomai_engine import atomai_normalize
from .training_set import read_training_set

#: What the masks tell apart: 'columns' (column or background) or 'sites' (background, metal, chalcogen, adatom).
TARGETS: tuple[str, ...] = ("columns", "sites")
#: atomai's U-Net pools three times: tile sides are multiples of this.
TILE_ALIGN: int = 8


def _starts(n: int, tile: int) -> list[int]:
    """Tile starts covering ``0..n`` with tiles of ``tile`` (the last one flush with the end)."""
    starts = list(range(0, n - tile + 1, tile))
    if starts[-1] + tile < n:
        starts.append(n - tile)
    return starts


def image_mask_tiles(image: np.ndarray, mask: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut one image (normalised 0-1) and its mask into ``tile`` x ``tile`` tiles covering it all.

    Examples
    --------
    >>> x, y = image_mask_tiles(np.arange(100.0).reshape(10, 10), np.ones((10, 10), np.uint8), 8)
    >>> x.shape, y.shape, float(x.max())
    ((4, 1, 8, 8), (4, 8, 8), 1.0)
    """
    img = atomai_normalize(image)
    m = np.asarray(mask)
    if img.shape != m.shape:
        raise ValueError(f"image of shape {img.shape} but mask of shape {m.shape}")
    if min(img.shape) < tile:
        raise ValueError(f"an image of {img.shape[0]} x {img.shape[1]} px is smaller than the tile ({tile} px)")
    xs, ys = [], []
    for y0 in _starts(img.shape[0], tile):
        for x0 in _starts(img.shape[1], tile):
            xs.append(img[y0:y0 + tile, x0:x0 + tile])
            ys.append(m[y0:y0 + tile, x0:x0 + tile])
    return np.stack(xs)[:, None].astype(np.float32), np.stack(ys).astype(np.int64)


def segmentor_classes(masks: np.ndarray) -> int:
    """``nb_classes`` of an atomai Segmentor for these masks (atomai's rule: 0/1 masks are one class).

    Examples
    --------
    >>> segmentor_classes(np.array([[0, 1], [1, 0]])), segmentor_classes(np.array([0, 1, 2]))
    (1, 3)
    """
    n = len(np.unique(np.asarray(masks)))
    return 1 if n <= 2 else n


def _site_labels(masks: np.ndarray) -> np.ndarray:
    """Mask values renumbered 0, 1, ... without gaps (a class no image holds is dropped), as atomai needs."""
    values = np.union1d([0], np.unique(masks))
    return np.searchsorted(values, masks).astype(np.int64)


def atomai_training_arrays(
    dataset: str | Path,
    *,
    tile: int = 128,
    nn_px: float | None = None,
    target: str = "columns",
) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks of an exported training set, as atomai's ``Segmentor.fit(X, y)`` takes them.

    Parameters
    ----------
    dataset : str or Path
        Folder written by ``export-training`` / :func:`~.training_set.export_training_set`.
    tile : int
        Tile side in pixels, a multiple of :data:`TILE_ALIGN`; lowered to fit the smallest image.
    nn_px : float, optional
        Resample every image (bilinear) and mask (nearest) so that its metal to
        chalcogen distance becomes this many pixels (then predict with
        ``model_nn_px`` of the same value); None keeps each image's own scale.
    target : {'columns', 'sites'}
        One class, every occupied column (default; what the atomai column
        engine uses), or the mask's site classes (metal, chalcogen, adatom),
        renumbered without gaps when one is absent.

    Returns
    -------
    images : ndarray of float32, shape (N, 1, tile, tile)
        0-1 (:func:`~napari_stem_defects.columns.atomai_engine.atomai_normalize` per image).
    masks : ndarray
        'columns': float32 (N, 1, tile, tile), 1 on a column. 'sites': int64
        (N, tile, tile), 0 background, then metal, chalcogen, adatom as
        present. ``nb_classes`` of the Segmentor: :func:`segmentor_classes`.

    Raises
    ------
    TrainingSetError
        Not a readable training set.
    ValueError
        A tile that is not a positive multiple of 8, an image too small for one tile, an unknown target.
    """
    from ..columns.unet import resample

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    tile = int(tile)
    if tile < TILE_ALIGN or tile % TILE_ALIGN:
        raise ValueError(f"tile must be a positive multiple of {TILE_ALIGN}, got {tile}")
    ts = read_training_set(dataset)
    pairs = []
    for (image, _), mask, entry in zip(ts.items, ts.masks, ts.manifest["images"]):
        img = np.asarray(image, dtype=np.float32)
        if nn_px is not None:
            z = float(nn_px) / float(entry["nn_px"])
            shape = (max(8, round(img.shape[0] * z)), max(8, round(img.shape[1] * z)))
            img = resample(img, shape)
            rows, cols = (np.clip(np.rint((np.arange(n) + 0.5) * m / n - 0.5), 0, m - 1).astype(int)
                          for n, m in zip(shape, mask.shape))  # nearest pixel centres, areas aligned
            mask = mask[rows[:, None], cols[None, :]]
        pairs.append((img, mask))
    smallest = min(min(img.shape) for img, _ in pairs)
    tile = min(tile, smallest // TILE_ALIGN * TILE_ALIGN)
    if tile < TILE_ALIGN:
        raise ValueError(f"the smallest image ({smallest} px) is too small for atomai's network")
    cut = [image_mask_tiles(img, mask, tile) for img, mask in pairs]
    images, masks = np.concatenate([c[0] for c in cut]), np.concatenate([c[1] for c in cut])
    if target == "columns":
        return images, (masks > 0).astype(np.float32)[:, None]
    return images, _site_labels(masks)
