"""Pixel windows around many positions at once, as index arrays (no Python loop over atoms)."""

from __future__ import annotations

import numpy as np


def window_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (dy, dx) offsets within ``radius`` + 0.5 px of a pixel, flattened (a disc window).

    The extra half pixel keeps every pixel within ``radius`` of any point of
    the centre pixel, so a disc around a sub-pixel position fits inside.

    Examples
    --------
    >>> dy, dx = window_offsets(1.0)
    >>> dy.shape
    (9,)
    """
    r = int(np.ceil(radius + 0.5))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dy**2 + dx**2 <= (radius + 0.71) ** 2
    return dy[keep], dx[keep]


def gather(image: np.ndarray, centres: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel values and coordinates in a window around every integer centre.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    centres : ndarray of int, shape (N, 2)
        Window centres (row, column).
    radius : float
        Half-width of the window in pixels.

    Returns
    -------
    values : ndarray of shape (N, P)
        Image values (pixels outside the image are 0 and flagged in ``inside``).
    ys, xs : ndarray of shape (N, P)
        Pixel coordinates.
    inside : ndarray of bool, shape (N, P)
        Whether each pixel lies in the image.
    """
    dy, dx = window_offsets(radius)
    ys = centres[:, :1] + dy[None, :]
    xs = centres[:, 1:2] + dx[None, :]
    h, w = image.shape
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    values = image[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]
    values = np.where(inside, values, 0.0)
    return values, ys, xs, inside
