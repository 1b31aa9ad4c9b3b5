"""Neighbour-corrected column amplitudes: the image as a sum of Gaussians, one per site.

A column's brightness read from a window around it (as
:func:`~napari_stem_defects.cells.crops.column_strengths` does) also holds
the tails of its neighbours, so a column next to heavy metals looks heavier,
and a metal column and an X2 column cannot be compared on one scale. Here the
prepared image ``b`` is modelled as ``sum_k a_k g(r - r_k)`` with one
isotropic Gaussian ``g`` of width ``sigma`` per site (metal sites, X2
columns and, to measure the level of an empty site, hollow sites), and the
amplitudes ``a_k`` are its least-squares solution.

The normal equations need no pixel-by-column matrix: ``(A^T b)_k`` is the
image smoothed by ``g`` and read at ``r_k``, and ``(A^T A)_kl`` is the overlap
of two Gaussians, ``pi sigma^2 exp(-|r_k - r_l|^2 / 4 sigma^2)`` (times the
part of their product that lies inside the image). The sparse system is
solved by conjugate gradients; ``sigma`` is the one of
:data:`SIGMA_FRACTIONS` (of the nearest-neighbour distance) that leaves the
smallest residual on a central window. A 2048 x 2048 image with 47,000 sites
takes about 0.3 s.

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import cg
from scipy.spatial import cKDTree
from scipy.special import erf

#: Gaussian widths tried, as fractions of the metal to chalcogen distance.
SIGMA_FRACTIONS: tuple[float, ...] = (0.15, 0.2, 0.25, 0.3, 0.35)
#: Side, in pixels, of the central window on which the width is chosen.
SELECTION_WINDOW: int = 512
#: Pairs of sites farther apart than this many sigma do not overlap (exp(-9) ~ 1e-4).
_OVERLAP_RANGE = 6.0
#: Ridge added to the diagonal, as a fraction of a Gaussian's self-overlap
#: (keeps two sites given at the same place solvable).
_RIDGE = 1e-3


def _coverage(positions: np.ndarray, shape: tuple[int, int], width: float) -> np.ndarray:
    """Fraction of an isotropic Gaussian of std ``width`` at each position that lies inside the image."""
    out = np.ones(len(positions))
    s = np.sqrt(2.0) * width
    for axis, n in enumerate(shape):
        p = positions[:, axis]
        out *= 0.5 * (erf((n - 0.5 - p) / s) - erf((-0.5 - p) / s))
    return out


def _overlaps(positions: np.ndarray, shape: tuple[int, int], sigma: float) -> sparse.csr_matrix:
    """``A^T A`` of the Gaussian model: overlap of every pair of nearby sites."""
    n = len(positions)
    pairs = cKDTree(positions).query_pairs(_OVERLAP_RANGE * sigma, output_type="ndarray")
    i, j = (pairs[:, 0], pairs[:, 1]) if len(pairs) else (np.zeros(0, int), np.zeros(0, int))
    d2 = np.sum((positions[i] - positions[j]) ** 2, axis=1)
    half = sigma / np.sqrt(2.0)  # the product of two Gaussians is one of this width at their midpoint
    cross = np.pi * sigma**2 * np.exp(-d2 / (4 * sigma**2)) * _coverage(0.5 * (positions[i] + positions[j]), shape, half)
    diag = np.pi * sigma**2 * (_coverage(positions, shape, half) + _RIDGE)
    rows = np.concatenate([i, j, np.arange(n)])
    cols = np.concatenate([j, i, np.arange(n)])
    return sparse.csr_matrix((np.concatenate([cross, cross, diag]), (rows, cols)), shape=(n, n))


def _solve(image: np.ndarray, positions: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
    """Amplitudes for one ``sigma`` and the signal energy they explain (``a . A^T b``)."""
    smooth = ndimage.gaussian_filter(image, sigma, mode="constant", cval=0.0)
    rhs = 2 * np.pi * sigma**2 * ndimage.map_coordinates(smooth, positions.T, order=1, mode="nearest")
    gram = _overlaps(positions, image.shape, sigma)
    precond = sparse.diags(1.0 / gram.diagonal())
    amps, _ = cg(gram, rhs, M=precond, rtol=1e-6, maxiter=500)
    return amps, float(amps @ rhs)


def column_amplitudes(
    prepared: np.ndarray,
    positions: np.ndarray,
    nn_px: float,
    sigma_fraction: float | None = None,
) -> tuple[np.ndarray, float]:
    """Least-squares amplitude of a Gaussian at each site, neighbours accounted for.

    Parameters
    ----------
    prepared : ndarray, shape (H, W)
        Background-subtracted image (:func:`~napari_stem_defects.cells.crops.prepare_image`).
    positions : ndarray, shape (N, 2)
        (y, x) in pixels of every site that scatters (or may be empty): give
        all metal sites and X2 columns together, and hollow sites to measure
        the level of an empty site.
    nn_px : float
        Metal to chalcogen distance in pixels.
    sigma_fraction : float, optional
        Gaussian width as a fraction of ``nn_px``; by default the one of
        :data:`SIGMA_FRACTIONS` with the smallest residual.

    Returns
    -------
    amplitudes : ndarray of float64, shape (N,)
        Peak height of each site's Gaussian, in the units of ``prepared``;
        NaN for sites outside the image (they are left out of the fit).
    sigma_fraction : float
        The width used.

    Examples
    --------
    Two overlapping Gaussians of heights 1 and 3 are told apart:

    >>> yy, xx = np.mgrid[:40, :40]
    >>> g = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.5**2))
    >>> img = 1.0 * g(20, 15) + 3.0 * g(20, 25)
    >>> amps, f = column_amplitudes(img, np.array([[20.0, 15.0], [20.0, 25.0]]), nn_px=10.0)
    >>> amps.round(2).tolist(), f
    ([1.0, 3.0], 0.25)
    """
    img = np.asarray(prepared, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if len(pos) == 0:
        return np.zeros(0), float(sigma_fraction or SIGMA_FRACTIONS[0])
    inside = np.all((pos >= 0) & (pos <= np.array(img.shape) - 1), axis=1)
    out = np.full(len(pos), np.nan)
    if not inside.any():
        return out, float(sigma_fraction or SIGMA_FRACTIONS[0])
    if sigma_fraction is None:
        sigma_fraction = _best_fraction(img, pos[inside], float(nn_px))
    out[inside], _ = _solve(img, pos[inside], float(sigma_fraction) * float(nn_px))
    return out, float(sigma_fraction)


def _best_fraction(img: np.ndarray, pos: np.ndarray, nn_px: float) -> float:
    """The width of :data:`SIGMA_FRACTIONS` that leaves the smallest residual, judged on a central
    window of at most :data:`SELECTION_WINDOW` pixels a side (the probe is the same all over)."""
    h, w = img.shape
    y0, x0 = max(0, (h - SELECTION_WINDOW) // 2), max(0, (w - SELECTION_WINDOW) // 2)
    window = img[y0 : y0 + SELECTION_WINDOW, x0 : x0 + SELECTION_WINDOW]
    local = pos - (y0, x0)
    keep = np.all((local >= 0) & (local <= np.array(window.shape) - 1), axis=1)
    if not keep.any():
        window, local = img, pos
    else:
        local = local[keep]
    explained = [_solve(window, local, f * nn_px)[1] for f in SIGMA_FRACTIONS]
    return float(SIGMA_FRACTIONS[int(np.argmax(explained))])
