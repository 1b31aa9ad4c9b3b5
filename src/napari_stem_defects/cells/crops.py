"""Two-channel, rotation-normalised crops of unit cells, the input of the cell classifier.

Each unit cell (one metal site M and its partner X2 column) gives one crop of
shape ``(2, CROP_SIZE, CROP_SIZE)`` resampled from the image on a grid where
the metal to chalcogen (nearest-neighbour) distance is :data:`CANONICAL_NN_PX`
pixels and the M -> X direction points along +x (columns) of the crop:

- channel 0 is centred on the X2 column: the cell's metal site lies
  ``CANONICAL_NN_PX`` to the left of the centre and its hollow site the same
  distance to the right (M, X and hollow are collinear);
- channel 1 is centred on the metal site: the X2 column lies to its right.

The crop therefore does not depend on the lattice rotation. The image is
prepared once (:func:`prepare_image`): its smooth background (the level of the
empty hollow sites, which varies with support thickness and contamination) is
subtracted, it is normalised (median to 0, 0.5-99.5 percentile range to 1) and
smoothed with a Gaussian when the resampling shrinks it (anti-aliasing).

:func:`strength_context` summarises the whole image for the classifier: the
quartiles of its metal and X2 column strengths. They tell a network what a
normal column looks like in *this* image (Z exponent, probe, background and,
in alloys, the S2/SSe/Se2 levels), which a single crop cannot.

Pure numpy/scipy: importing this module does not import torch.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..network_inputs import CANONICAL_NN_PX, flatten_and_normalize

#: Side of a crop, in canonical pixels (covers M, X and the hollow site around the X centre).
CROP_SIZE: int = 32
#: Quantiles of the metal and X2 column strengths of an image that calibrate the classifier.
STRENGTH_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)

def prepare_image(image: np.ndarray, nn_px: float) -> np.ndarray:
    """Subtract the smooth background, normalise and, when crops shrink the image, low-pass it.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Raw image.
    nn_px : float
        Metal to chalcogen distance in image pixels.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    x = flatten_and_normalize(image, nn_px)
    shrink = float(nn_px) / CANONICAL_NN_PX
    if shrink > 1.1:
        x = ndimage.gaussian_filter(x, (shrink - 1.0) / 2.0, mode="nearest")
    return x


def crop_grid(size: int = CROP_SIZE) -> np.ndarray:
    """Offsets of crop pixel centres from the crop centre, in canonical pixels (shape (size,))."""
    return np.arange(size, dtype=np.float64) - (size - 1) / 2.0


def cell_crops(
    image: np.ndarray,
    m_positions: np.ndarray,
    x_positions: np.ndarray,
    nn_px: float,
    *,
    prepared: bool = False,
    size: int = CROP_SIZE,
) -> np.ndarray:
    """Rotation-normalised two-channel crops of unit cells.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        HAADF image (raw, or already passed through :func:`prepare_image` when
        ``prepared`` is True, which saves the normalisation when cropping the
        same image several times).
    m_positions, x_positions : ndarray, shape (N, 2)
        (y, x) in pixels of each cell's metal site and X2 column.
    nn_px : float
        Metal to chalcogen distance in image pixels (sets the crop scale).
    prepared : bool
        ``image`` is already normalised (see :func:`prepare_image`).
    size : int
        Crop side in canonical pixels.

    Returns
    -------
    ndarray of float32, shape (N, 2, size, size)
        Channel 0 centred on X, channel 1 on M; in both the M -> X direction
        points along +x (axis -1). Samples outside the image repeat the edge.

    Examples
    --------
    >>> img = np.random.default_rng(0).normal(size=(64, 64))
    >>> cell_crops(img, np.array([[30.0, 30.0]]), np.array([[30.0, 41.0]]), 11.0).shape
    (1, 2, 32, 32)
    """
    m = np.asarray(m_positions, dtype=np.float64).reshape(-1, 2)
    x = np.asarray(x_positions, dtype=np.float64).reshape(-1, 2)
    if m.shape != x.shape:
        raise ValueError(f"m_positions {m.shape} and x_positions {x.shape} differ in shape")
    if not nn_px > 0:
        raise ValueError("nn_px must be positive")
    img = np.asarray(image, dtype=np.float32) if prepared else prepare_image(image, nn_px)
    n = len(m)
    if n == 0:
        return np.zeros((0, 2, size, size), dtype=np.float32)
    d = x - m
    length = np.hypot(d[:, 0], d[:, 1])
    length = np.where(length > 1e-9, length, 1.0)
    u = d / length[:, None]  # M -> X, crop +x (columns)
    v = np.stack([u[:, 1], -u[:, 0]], axis=1)  # crop +y (rows), u turned by -90 degrees
    scale = float(nn_px) / CANONICAL_NN_PX
    t = crop_grid(size) * scale
    centres = np.stack([x, m], axis=1)  # (N, 2 channels, 2 axes)
    coords = np.empty((2, n, 2, size, size), dtype=np.float64)
    for axis in range(2):  # point = centre + row offset * v + column offset * u
        rows = t[None, :, None] * v[:, axis, None, None]  # (N, S, 1)
        cols = t[None, None, :] * u[:, axis, None, None]  # (N, 1, S)
        np.add((rows + cols)[:, None], centres[:, :, axis, None, None], out=coords[axis])
    out = ndimage.map_coordinates(img, coords.reshape(2, -1), order=1, mode="nearest", prefilter=False)
    return out.reshape(n, 2, size, size).astype(np.float32, copy=False)


def column_strengths(prepared: np.ndarray, positions: np.ndarray, nn_px: float) -> np.ndarray:
    """Strength of the columns at ``positions``: the prepared image averaged in a Gaussian window.

    Parameters
    ----------
    prepared : ndarray, shape (H, W)
        Output of :func:`prepare_image`.
    positions : ndarray, shape (N, 2)
        (y, x) in pixels.
    nn_px : float
        Metal to chalcogen distance in pixels; the window's sigma is ``nn_px / 5``.

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if len(pos) == 0:
        return np.zeros(0)
    smooth = ndimage.gaussian_filter(np.asarray(prepared, dtype=np.float32), float(nn_px) / 5.0, mode="nearest")
    return ndimage.map_coordinates(smooth, pos.T, order=1, mode="nearest").astype(np.float64)


def strength_context(prepared: np.ndarray, m_positions: np.ndarray, x_positions: np.ndarray,
                     nn_px: float) -> np.ndarray:
    """Quartiles of the metal and of the X2 column strengths of an image (6 numbers).

    Parameters
    ----------
    prepared : ndarray, shape (H, W)
        Output of :func:`prepare_image`.
    m_positions, x_positions : ndarray, shape (N, 2)
        (y, x) of the metal sites and X2 columns of the image's cells.
    nn_px : float
        Metal to chalcogen distance in pixels.

    Returns
    -------
    ndarray of float32, shape (6,)
        The :data:`STRENGTH_QUANTILES` of the metal strengths, then of the X2
        strengths, in the units of the prepared image (zeros when there are no cells).

    Examples
    --------
    >>> img = np.zeros((64, 64), np.float32); img[30, 30] = 1.0
    >>> strength_context(img, np.array([[30.0, 30.0]]), np.array([[30.0, 41.0]]), 11.0).round(3)[[1, 4]]
    array([0.033, 0.   ], dtype=float32)
    """
    m = np.asarray(m_positions, dtype=np.float64).reshape(-1, 2)
    x = np.asarray(x_positions, dtype=np.float64).reshape(-1, 2)
    if len(m) == 0:
        return np.zeros(2 * len(STRENGTH_QUANTILES), dtype=np.float32)
    strengths = column_strengths(prepared, np.concatenate([m, x]), nn_px)
    q = [np.quantile(part, STRENGTH_QUANTILES) for part in (strengths[: len(m)], strengths[len(m):])]
    return np.concatenate(q).astype(np.float32)
