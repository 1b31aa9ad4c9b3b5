"""What the networks see: the canonical scale, resampling to it and back, and the flattened image.

Every network of the package (column U-Net, cell classifier, heatmap engines) works at one scale, the
metal-to-chalcogen (nearest-neighbour) distance :data:`CANONICAL_NN_PX` pixels, and looks at an image
whose slowly varying background is removed and whose intensities are normalised robustly. These
helpers are that shared layer; the stages import them from here, never from each other.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .network_io import normalize_image

#: Nearest-neighbour (metal to chalcogen) distance, in pixels, every network works at.
CANONICAL_NN_PX: float = 11.0


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample an image to ``shape`` (bilinear, pixel areas aligned); Gaussian anti-aliasing
    when shrinking.

    Pixel centre ``y`` maps to ``(y + 0.5) * shape[0] / image.shape[0] - 0.5``
    (see :func:`resample_coordinates`).
    """
    x = np.asarray(image, dtype=np.float32)
    factors = np.array(shape, dtype=float) / np.array(x.shape, dtype=float)
    if np.allclose(factors, 1.0):
        return x.copy()
    sigma = np.maximum(0.0, (1.0 / factors - 1.0) / 2.0)
    if np.any(sigma > 0.05):
        x = ndimage.gaussian_filter(x, sigma, mode="reflect")
    out = ndimage.zoom(x, factors, order=1, mode="nearest", grid_mode=True)
    if out.shape != tuple(shape):  # zoom rounds the output shape; fix any off-by-one
        out = np.pad(out, [(0, max(0, s - o)) for s, o in zip(shape, out.shape)], mode="edge")
        out = out[: shape[0], : shape[1]]
    return out.astype(np.float32, copy=False)


def resample_coordinates(yx: np.ndarray, from_shape: tuple[int, int], to_shape: tuple[int, int]) -> np.ndarray:
    """Map pixel coordinates (y, x) of an image of ``from_shape`` onto its :func:`resample` to ``to_shape``."""
    f = np.array(to_shape, dtype=float) / np.array(from_shape, dtype=float)
    return (np.asarray(yx, dtype=float) + 0.5) * f - 0.5


def canonical_shape(shape: tuple[int, int], nn_px: float) -> tuple[int, int]:
    """Shape of an image of ``shape`` resampled so that its nn distance becomes :data:`CANONICAL_NN_PX`."""
    z = CANONICAL_NN_PX / float(nn_px)
    return max(1, int(round(shape[0] * z))), max(1, int(round(shape[1] * z)))


def smooth_background(image: np.ndarray, nn_px: float) -> np.ndarray:
    """The slowly varying background of a lattice image: the floor between its columns.

    The image, smoothed at nn/4, takes its minimum over windows of 2.5 nn (each
    holds several empty hollow sites), and that floor is smoothed at 1.5 nn.
    Column intensities above it no longer depend on a background gradient.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Image (finite values).
    nn_px : float
        Metal to chalcogen distance in pixels.

    Returns
    -------
    ndarray of float32, shape (H, W)

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> lattice = (np.cos(yy * 2 * np.pi / 8) * np.cos(xx * 2 * np.pi / 8)) ** 8
    >>> bg = smooth_background(lattice + xx / 64.0, 4.0)
    >>> bool(abs((bg - xx / 64.0)[16:48, 16:48]).max() < 0.1)
    True
    """
    x = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), float(nn_px) / 4.0, mode="nearest")
    floor = ndimage.minimum_filter(x, size=max(3, int(round(2.5 * float(nn_px)))), mode="nearest")
    return ndimage.gaussian_filter(floor, 1.5 * float(nn_px), mode="nearest")


def flatten_and_normalize(image: np.ndarray, nn_px: float) -> np.ndarray:
    """Normalise an image, subtract its :func:`smooth_background` and normalise again.

    The input of every network that looks at the lattice (cell classifier, heatmap engines).
    """
    x = normalize_image(image)
    return normalize_image(x - smooth_background(x, nn_px))
