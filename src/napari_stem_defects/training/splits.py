"""Held-out splits of fine-tuning data: examples stratified by class, image tiles, training windows.

:func:`heldout_split` holds out a share of each class spread over the images
(the cells of :mod:`napari_stem_defects.training.finetune`);
:func:`heldout_tiles` holds out image tiles and :func:`choose_crop` finds the
training crops that never touch them (the column U-Net's
:mod:`napari_stem_defects.training.finetune_columns`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Smallest training crop side (canonical pixels).
MIN_CROP = 32
#: The network halves the resolution three times: crop sides are multiples of this.
_ALIGN = 8


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
