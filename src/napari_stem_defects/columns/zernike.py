"""Zernike moments of atom-centred patches: rotation-invariant descriptors of a column's shape and contrast.

The contrast encoder of the context-encoder column classifier (Dan, Zhang, Loh, Eda, Loh) expands
each atom-centred patch in Zernike polynomials over the unit disc,

    V_nm(rho, theta) = R_nm(rho) exp(i m theta),   n >= |m|, n - |m| even,

and uses the magnitudes of the moments A_nm = (n + 1) / pi * sum f(rho, theta) conj(V_nm) dA: a rotation
of the patch multiplies A_nm by exp(-i m phi), so |A_nm| does not change. Pure numpy and scipy.
"""

from __future__ import annotations

import functools
from math import factorial

import numpy as np
from scipy import ndimage

#: Patches sampled at once by :func:`zernike_features`.
_CHUNK = 2048


def zernike_indices(n_max: int) -> list[tuple[int, int]]:
    """The (n, m) pairs with 0 <= m <= n <= n_max and n - m even, in order of n then m.

    Examples
    --------
    >>> zernike_indices(3)
    [(0, 0), (1, 1), (2, 0), (2, 2), (3, 1), (3, 3)]
    """
    if n_max < 0:
        raise ValueError(f"n_max must be >= 0, not {n_max}")
    return [(n, m) for n in range(n_max + 1) for m in range(n % 2, n + 1, 2)]


def radial_polynomial(n: int, m: int, rho: np.ndarray) -> np.ndarray:
    """The Zernike radial polynomial R_nm(rho).

    Examples
    --------
    >>> rho = np.array([0.0, 0.5, 1.0])
    >>> radial_polynomial(2, 0, rho).tolist()  # 2 rho^2 - 1
    [-1.0, -0.5, 1.0]
    >>> radial_polynomial(4, 2, rho).tolist()  # 4 rho^4 - 3 rho^2
    [0.0, -0.5, 1.0]
    """
    m = abs(m)
    if n < m or (n - m) % 2:
        raise ValueError(f"(n, m) = ({n}, {m}) is not a Zernike index: n >= |m| and n - |m| even")
    rho = np.asarray(rho, dtype=np.float64)
    out = np.zeros_like(rho)
    for k in range((n - m) // 2 + 1):
        c = (-1) ** k * factorial(n - k) / (factorial(k) * factorial((n + m) // 2 - k) * factorial((n - m) // 2 - k))
        out += c * rho ** (n - 2 * k)
    return out


def zernike_moments(patch: np.ndarray, n_max: int = 8) -> np.ndarray:
    """Complex Zernike moments A_nm of a square patch, whose inscribed disc is the unit disc.

    Parameters
    ----------
    patch : ndarray, shape (S, S)
        Values on a square grid; pixel centres map to ``(2 k + 1) / S - 1`` in [-1, 1], and only the
        pixels inside the unit disc count.
    n_max : int
        Highest radial order.

    Returns
    -------
    ndarray of complex128, shape (len(zernike_indices(n_max)),)
        A_nm in the order of :func:`zernike_indices` (m >= 0; A_n,-m is the conjugate of A_nm for a
        real patch).

    Examples
    --------
    The patch f = rho^2 cos(2 theta), the real part of V_22, has A_22 = 1/2 and every other moment 0:

    >>> s = 201
    >>> y, x = (np.mgrid[:s, :s] + 0.5) * 2 / s - 1
    >>> a = zernike_moments(x ** 2 - y ** 2, 4)
    >>> round(float(abs(a[zernike_indices(4).index((2, 2))])), 2), round(float(np.abs(np.delete(a, 3)).max()), 2)
    (0.5, 0.0)
    """
    f = np.asarray(patch, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != f.shape[1] or f.shape[0] < 3:
        raise ValueError(f"a Zernike patch must be square and at least 3 x 3, not {f.shape}")
    values = np.where(np.isfinite(f), f, 0.0).ravel()  # a pixel that is not finite does not count
    return values @ zernike_basis(f.shape[0], n_max)


@functools.lru_cache(maxsize=8)
def zernike_basis(samples: int, n_max: int) -> np.ndarray:
    """The conjugated, area-weighted Zernike polynomials on a square grid: moments are ``patch.ravel() @ basis``.

    Parameters
    ----------
    samples : int
        Side S of the square grid; pixel centres map to ``(2 k + 1) / S - 1`` in [-1, 1].
    n_max : int
        Highest radial order.

    Returns
    -------
    ndarray of complex128, shape (S * S, len(zernike_indices(n_max)))
        ``(n + 1) / pi * dA * conj(V_nm)`` inside the unit disc, 0 outside (read-only; cached).
    """
    s = int(samples)
    y, x = (np.mgrid[:s, :s] + 0.5) * 2.0 / s - 1.0
    y = -y  # rows grow downwards: theta anticlockwise as displayed
    rho, theta = np.hypot(x, y).ravel(), np.arctan2(y, x).ravel()
    inside = rho <= 1.0
    area = (2.0 / s) ** 2
    indices = zernike_indices(n_max)
    basis = np.zeros((s * s, len(indices)), dtype=np.complex128)
    for k, (n, m) in enumerate(indices):
        basis[inside, k] = ((n + 1) / np.pi * area * radial_polynomial(n, m, rho[inside])
                            * np.exp(-1j * m * theta[inside]))
    basis.setflags(write=False)
    return basis


def zernike_features(image: np.ndarray, positions: np.ndarray, radius_px: float, n_max: int = 8,
                     samples: int = 33) -> np.ndarray:
    """Rotation-invariant Zernike magnitudes |A_nm| of the disc of ``radius_px`` around each position.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The image (normalise it first when features of several images are compared).
    positions : ndarray, shape (N, 2)
        Column centres (y, x) in pixels; sub-pixel positions are sampled by linear interpolation,
        outside the image by the nearest edge value.
    radius_px : float
        Radius of the patch in pixels (e.g. half the metal-to-chalcogen distance).
    n_max : int
        Highest radial order.
    samples : int
        Side of the square grid each disc is sampled on.

    Returns
    -------
    ndarray of float64, shape (N, len(zernike_indices(n_max)))
    """
    if not (np.isfinite(radius_px) and radius_px > 0):
        raise ValueError(f"the patch radius must be a positive number of pixels, not {radius_px!r}")
    img = np.asarray(image, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    offsets = ((np.arange(samples) + 0.5) * 2.0 / samples - 1.0) * float(radius_px)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    basis = zernike_basis(samples, n_max)
    out = np.empty((len(pos), basis.shape[1]))
    for start in range(0, len(pos), _CHUNK):  # all patches of a chunk sampled at once, moments by one product
        p = pos[start:start + _CHUNK]
        coords = [p[:, 0, None, None] + dy, p[:, 1, None, None] + dx]
        patches = ndimage.map_coordinates(img, coords, order=1, mode="nearest").reshape(len(p), -1)
        out[start:start + len(p)] = np.abs(np.where(np.isfinite(patches), patches, 0.0) @ basis)
    return out


__all__ = ["radial_polynomial", "zernike_basis", "zernike_features", "zernike_indices", "zernike_moments"]
