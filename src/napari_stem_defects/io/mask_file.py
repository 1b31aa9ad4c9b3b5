"""A user's mask file (``analyze --mask``, ``batch --mask``): pixels that are not analysed."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A user's mask file as a boolean array of the image's shape (non-zero: not analysed).

    Parameters
    ----------
    path : str or Path
        A ``.npy`` array or an image file (``.tif``, ``.png``, ...); an RGB(A) image counts a pixel
        masked where any colour channel is non-zero.
    shape : (int, int)
        The image's shape (rows, columns).

    Returns
    -------
    ndarray of bool
        True where the pixel is not analysed.

    Raises
    ------
    ValueError
        Unreadable, or not a 2D array of the image's shape.
    """
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            mask = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            mask = iio.imread(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the mask {path}: {err}") from None
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        mask = mask[..., :3].max(axis=-1)
    if mask.shape != tuple(shape):
        raise ValueError(f"the mask {path} has shape {mask.shape}, the image {tuple(shape)}")
    return mask != 0
