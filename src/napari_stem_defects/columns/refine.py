"""Sub-pixel refinement of many atom columns at once: centre of mass and batched 2D Gaussian fits.

Both work on every column in one set of array operations: the pixels around
all columns are gathered into an (N, P) array and the fits run on all rows
together (a Levenberg-Marquardt step is a batched 6 x 6 solve), instead of
one optimiser call per atom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .patches import gather

_CHUNK = 4096


@dataclass
class GaussianFit:
    """2D Gaussians (separate sigma along y and x) plus a constant, fitted to every column at once.

    Attributes
    ----------
    positions : ndarray of shape (N, 2)
        Refined (y, x) centres in pixels.
    sigma : ndarray of shape (N, 2)
        (sigma_y, sigma_x) in pixels.
    amplitude, background : ndarray of shape (N,)
        Peak height over the local constant background, and that background.
    converged : ndarray of bool, shape (N,)
        False where the fit failed or wandered off; those keep their
        starting position.
    """

    positions: np.ndarray
    sigma: np.ndarray
    amplitude: np.ndarray
    background: np.ndarray
    converged: np.ndarray

    def capped(self, sigma: tuple[float, float]) -> GaussianFit:
        """The same columns drawn no wider than ``(sigma_y, sigma_x)`` pixels (the probe's shared width).

        A column whose free fit came out broad (about one in ten at 1e5 e/Å²: noise, its
        neighbours' tails in its disc) would, drawn at its own width, reach into its neighbours'
        discs (:func:`refine_gaussian` ``neighbours``); narrower fits (a spike, a hot pixel) keep
        their own width, so their height stays where it was measured.

        Examples
        --------
        >>> fit = GaussianFit(np.zeros((2, 2)), np.array([[1.0, 1.0], [7.0, 9.0]]), np.ones(2), np.zeros(2),
        ...                   np.ones(2, bool))
        >>> fit.capped((2.0, 2.5)).sigma.tolist()
        [[1.0, 1.0], [2.0, 2.5]]
        """
        cap = np.asarray(sigma, float).reshape(1, 2)
        return GaussianFit(self.positions, np.minimum(self.sigma, cap), self.amplitude, self.background,
                           self.converged)


def _disc(image: np.ndarray, positions: np.ndarray, radius: float):
    """Window values, offsets from each position, and the disc mask of pixels within ``radius``."""
    centres = np.rint(positions).astype(np.int64)
    vals, ys, xs, inside = gather(image, centres, radius)
    dy = (ys - positions[:, :1]).astype(np.float32)
    dx = (xs - positions[:, 1:2]).astype(np.float32)
    mask = inside & (dy**2 + dx**2 <= radius**2)
    return vals.astype(np.float32), dy, dx, mask


def _ring_background(vals: np.ndarray, dy: np.ndarray, dx: np.ndarray, mask: np.ndarray, radius: float) -> np.ndarray:
    """Mean of the pixels in the outer ring (0.75 r to r) of each disc."""
    ring = mask & (dy**2 + dx**2 >= (0.75 * radius) ** 2)
    n = ring.sum(axis=1)
    bg = np.where(ring, vals, 0).sum(axis=1) / np.maximum(n, 1)
    fallback = np.where(mask, vals, np.inf).min(axis=1)
    return np.where(n > 0, bg, fallback)


def refine_com(image: np.ndarray, positions: np.ndarray, radius: float, n_iter: int = 3) -> np.ndarray:
    """Move each position to the centre of mass of the background-subtracted disc around it.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    positions : ndarray, shape (N, 2)
        Starting (y, x) positions in pixels.
    radius : float
        Disc radius in pixels (about 0.4 of the nearest-neighbour distance).
    n_iter : int
        Re-centre the disc this many times.

    Returns
    -------
    ndarray of shape (N, 2)
        Refined positions; a position whose disc holds no signal stays put.

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> img = np.exp(-((yy - 15.3) ** 2 + (xx - 16.6) ** 2) / 8.0)
    >>> np.round(refine_com(img, np.array([[15.0, 16.0]]), radius=6), 1)
    array([[15.3, 16.6]])
    """
    img = np.asarray(image, dtype=np.float32)
    start = np.asarray(positions, dtype=float).reshape(-1, 2)
    # In chunks of columns: the windows of all ~300,000 columns of an 8192 x 8192 image at once take ~2 GB.
    parts = [_com_chunk(img, start[k:k + _CHUNK], radius, n_iter) for k in range(0, len(start), _CHUNK)]
    return np.concatenate(parts) if parts else start.copy()


def _com_chunk(img: np.ndarray, start: np.ndarray, radius: float, n_iter: int) -> np.ndarray:
    pos = start.copy()
    for _ in range(max(1, n_iter)):
        vals, dy, dx, mask = _disc(img, pos, radius)
        bg = _ring_background(vals, dy, dx, mask, radius)
        wgt = np.where(mask, np.clip(vals - bg[:, None], 0, None), 0.0)
        total = wgt.sum(axis=1)
        ok = total > 0
        shift = np.zeros_like(pos)
        shift[ok, 0] = (wgt[ok] * dy[ok]).sum(axis=1) / total[ok]
        shift[ok, 1] = (wgt[ok] * dx[ok]).sum(axis=1) / total[ok]
        pos = pos + shift
        far = np.hypot(*(pos - start).T) > radius
        pos[far] = start[far]
    return pos


def refine_gaussian(
    image: np.ndarray,
    positions: np.ndarray,
    radius: float,
    n_iter: int = 8,
    sigma: tuple[float, float] | None = None,
    neighbours: GaussianFit | None = None,
) -> GaussianFit:
    """Fit a 2D Gaussian plus constant to the disc of ``radius`` px around every position, all at once.

    A batched Levenberg-Marquardt fit: each iteration builds the Jacobian of
    all columns as one (N, P, 6) array and solves N 6 x 6 systems together.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    positions : ndarray, shape (N, 2)
        Starting (y, x) positions in pixels (e.g. from :func:`refine_com`).
    radius : float
        Radius of the fitted disc in pixels (about 0.4 of the nearest-neighbour distance).
    n_iter : int
        Number of Levenberg-Marquardt iterations.
    sigma : (float, float), optional
        Fix the width (sigma_y, sigma_x) in pixels instead of fitting it. The
        probe is the same for every column, so a width measured on the bright
        columns steadies the fits of dim ones (four free parameters, not six).
    neighbours : GaussianFit, optional
        An earlier fit of all columns in the image. Each column is then fitted
        after subtracting every other column's Gaussian from its disc, so a
        dim column is not pulled toward bright neighbours whose probe tails
        overlap it (broad probes, W beside S2).

    Returns
    -------
    GaussianFit

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> img = 5 + 100 * np.exp(-((yy - 15.3) ** 2 / 8.0 + (xx - 16.6) ** 2 / 12.0))
    >>> fit = refine_gaussian(img, np.array([[15.0, 16.0]]), radius=8)
    >>> np.round(fit.positions, 2), np.round(fit.sigma, 2), bool(fit.converged[0])
    (array([[15.3, 16.6]]), array([[2.  , 2.45]]), True)
    """
    img = np.asarray(image, dtype=np.float32)
    start = np.asarray(positions, dtype=float).reshape(-1, 2)
    others = None
    if neighbours is not None:
        others = render_gaussians(img.shape, neighbours)
    parts = [_fit_chunk(img, start[k:k + _CHUNK], radius, n_iter, sigma,
                        None if others is None else (others, _slice_fit(neighbours, k, k + _CHUNK)))
             for k in range(0, len(start), _CHUNK)]
    if not parts:
        empty = np.zeros((0, 2))
        return GaussianFit(empty, empty.copy(), np.zeros(0), np.zeros(0), np.zeros(0, bool))
    return GaussianFit(*(np.concatenate(field) for field in zip(*parts)))


def _slice_fit(fit: GaussianFit, lo: int, hi: int) -> GaussianFit:
    return GaussianFit(fit.positions[lo:hi], fit.sigma[lo:hi], fit.amplitude[lo:hi], fit.background[lo:hi],
                       fit.converged[lo:hi])


def _gaussian_values(fit: GaussianFit, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Each fitted Gaussian (no background) at pixel coordinates ys, xs of shape (N, P)."""
    sy = np.maximum(fit.sigma[:, :1], 1e-3)
    sx = np.maximum(fit.sigma[:, 1:2], 1e-3)
    amp = np.where(fit.converged, np.maximum(fit.amplitude, 0.0), 0.0)[:, None]
    return amp * np.exp(-0.5 * (((ys - fit.positions[:, :1]) / sy) ** 2 + ((xs - fit.positions[:, 1:2]) / sx) ** 2))


def render_gaussians(shape: tuple[int, int], fit: GaussianFit, extent: float = 3.5) -> np.ndarray:
    """Image of the fitted Gaussians (converged ones), each drawn to ``extent`` sigma.

    Examples
    --------
    >>> fit = GaussianFit(np.array([[5.0, 5.0]]), np.array([[1.0, 1.0]]), np.array([2.0]),
    ...                   np.array([0.0]), np.array([True]))
    >>> float(render_gaussians((11, 11), fit)[5, 5])
    2.0
    """
    h, w = shape
    if len(fit.positions) == 0:
        return np.zeros(shape, np.float32)
    reach = extent * float(np.median(fit.sigma.max(axis=1)))
    centres = np.rint(fit.positions).astype(np.int64)
    from .patches import window_offsets

    dy, dx = window_offsets(reach)
    out = np.zeros(h * w, np.float64)
    # In chunks of columns, so the (columns x window) index arrays stay small on large images.
    for k in range(0, len(centres), _CHUNK):
        ys = centres[k:k + _CHUNK, :1] + dy[None, :]
        xs = centres[k:k + _CHUNK, 1:2] + dx[None, :]
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        values = _gaussian_values(_slice_fit(fit, k, k + _CHUNK), ys, xs)[inside]
        flat = (ys * w + xs)[inside]
        if flat.size:  # peaks come in row order, so a chunk covers a band of the image
            lo = int(flat.min())
            part = np.bincount(flat - lo, weights=values)
            out[lo:lo + part.size] += part
    return out.reshape(shape).astype(np.float32)


def _model(theta: np.ndarray, dy: np.ndarray, dx: np.ndarray):
    """Gaussian value and Jacobian; theta columns (y0, x0, sy, sx, A, b) relative to the start."""
    y0, x0, sy, sx, amp, _ = (theta[:, k:k + 1] for k in range(6))
    ry, rx = dy - y0, dx - x0
    e = np.exp(-0.5 * (ry**2 / sy**2 + rx**2 / sx**2))
    ae = amp * e
    jac = np.stack([ae * ry / sy**2, ae * rx / sx**2, ae * ry**2 / sy**3, ae * rx**2 / sx**3, e, np.ones_like(e)], axis=-1)
    return theta[:, 5:6] + ae, jac


def _fit_chunk(img: np.ndarray, start: np.ndarray, radius: float, n_iter: int, sigma: tuple[float, float] | None,
               deblend: tuple[np.ndarray, GaussianFit] | None = None):
    vals, dy, dx, mask = _disc(img, start, radius)
    if deblend is not None:
        others, own = deblend
        ys, xs = dy + start[:, :1], dx + start[:, 1:2]
        centres = np.rint(start).astype(np.int64)
        model_vals, _, _, _ = gather(others, centres, radius)
        vals = vals - model_vals.astype(np.float32) + _gaussian_values(own, ys, xs).astype(np.float32)
    w = mask.astype(np.float32)
    bg = _ring_background(vals, dy, dx, mask, radius)
    near = mask & (dy**2 + dx**2 <= (0.3 * radius) ** 2 + 0.5)
    peak = np.where(near, vals, -np.inf).max(axis=1)
    peak = np.where(np.isfinite(peak), peak, bg)
    sy0, sx0 = (0.35 * radius, 0.35 * radius) if sigma is None else (float(sigma[0]), float(sigma[1]))
    free = np.ones(6, np.float32) if sigma is None else np.array([1, 1, 0, 0, 1, 1], np.float32)
    theta = np.column_stack([np.zeros(len(start)), np.zeros(len(start)), np.full(len(start), sy0),
                             np.full(len(start), sx0), np.maximum(peak - bg, 1e-6), bg]).astype(np.float64)
    lam = np.full(len(start), 1e-2)

    def cost_of(th):
        model, jac = _model(th.astype(np.float32), dy, dx)
        res = (vals - model) * w
        return (res**2).sum(axis=1), res, jac

    cost, res, jac = cost_of(theta)
    eye = np.eye(6)
    for _ in range(n_iter):
        jw = jac * w[..., None] * free
        jt = jw.transpose(0, 2, 1)
        hess = np.matmul(jt, jw).astype(np.float64)
        grad = np.matmul(jt, res[..., None])[..., 0].astype(np.float64)
        diag = np.einsum("nii->ni", hess)
        damped = hess + lam[:, None, None] * (diag[:, :, None] * eye + 1e-9 * eye)
        try:
            step = np.linalg.solve(damped, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.zeros_like(grad)
        trial = theta + step
        trial[:, 2:4] = np.clip(trial[:, 2:4], 0.15 * radius, 2.0 * radius)
        new_cost, new_res, new_jac = cost_of(trial)
        better = np.isfinite(new_cost) & (new_cost < cost)
        theta[better] = trial[better]
        cost = np.where(better, new_cost, cost)
        res[better], jac[better] = new_res[better], new_jac[better]
        lam = np.where(better, lam * 0.3, lam * 10.0)
    shift = theta[:, :2]
    converged = (
        np.all(np.isfinite(theta), axis=1)
        & (np.hypot(shift[:, 0], shift[:, 1]) < radius)
        & (theta[:, 4] > 0)
        & (theta[:, 2] < 1.5 * radius) & (theta[:, 3] < 1.5 * radius)
    )
    pos = np.where(converged[:, None], start + shift, start)
    return pos, theta[:, 2:4], theta[:, 4], theta[:, 5], converged
