"""Non-rigid step of drift registration: patch lags against the reference and the smooth residual field fitted to them.

See :mod:`napari_stem_defects.dynamics.registration` for the method.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg, ndimage

from .phase_correlation import (
    band_spectrum,
    bandpass,
    find_peak,
    rfft_weights,
    tukey_taper,
)
from .registration_result import spline_basis

#: Penalties tried (relative to the data term) when fitting the non-rigid field; REML picks one.
PENALTIES = 10.0 ** np.arange(-8.0, 6.5, 0.5)
#: Smallest non-rigid patch, in lattice plane spacings.
PATCH_PLANES = 4.0
#: Minimum block correlation, relative to the frame's median block correlation.
MIN_RELATIVE_PEAK = 0.5
#: Refinements of the non-rigid field on the frame warped by the current estimate.
REFINE_PASSES = 1
#: Smallest share of a full patch's (squared) taper weight that a patch cut by the frame edges must keep.
MIN_PATCH_WEIGHT = 0.25
#: Outermost patch centres sit this share of a patch from the frame edges (patches may reach past them).
EDGE_INSET = 0.1
#: Tukey taper of the non-rigid patches (1: Hann).
PATCH_TAPER = 0.5
#: Width of the soft edge of the field of view in the patch masks, in lattice plane spacings.
EDGE_RAMP = 0.25


def default_grid_px(shape: tuple[int, int]) -> int:
    """Default node spacing of the non-rigid grid for frames of this shape (px).

    Examples
    --------
    >>> default_grid_px((1024, 1024)), default_grid_px((256, 256))
    (102, 25)
    """
    return max(24, min(int(shape[0]), int(shape[1])) // 10)


class PatchField:
    """Overlapping patches of the reference on a regular grid, and the smooth residual field of a frame.

    Each patch's taper is multiplied by a soft mask of the pixels both the
    reference and the (warped) frame see, so the two patches always hold the
    same content and the lag belongs to the mask-weighted patch centre;
    patches may therefore reach past the frame edge. The field lives on
    nodes spanning the frame (``grid_y``, ``grid_x``); it is fitted to the
    lags by penalised generalised least squares (see :meth:`_fit`).
    """

    def __init__(self, ref: np.ndarray, period: float, grid_px: int | None, upsample: int, radius: float):
        h, w = ref.shape
        spacing = int(grid_px) if grid_px is not None else default_grid_px((h, w))
        patch = max(2 * spacing, int(np.ceil(PATCH_PLANES * period)))
        patch = min(patch + patch % 2, min(h, w) - min(h, w) % 2)
        self.shape, self.patch, self.upsample, self.radius = (h, w), patch, upsample, radius
        self.ramp = max(2.0, period * EDGE_RAMP)
        self.origins, nodes = [], []
        for size in (h, w):
            inset = min(EDGE_INSET * patch, (size - 1) / 2.0)
            k = max(1, int(round((size - 1 - 2 * inset) / spacing)) + 1)
            centres = np.linspace(inset, size - 1 - inset, k)
            self.origins.append(np.rint(centres - (patch - 1) / 2.0).astype(int))
            nodes.append(np.linspace(0.0, size - 1.0, max(2, int(np.ceil((size - 1) / spacing)) + 1)))
        self.grid_y, self.grid_x = nodes
        self.grid_shape = (len(self.grid_y), len(self.grid_x))
        self.meas_shape = (len(self.origins[0]), len(self.origins[1]))
        self.pad = patch
        self.taper = np.outer(tukey_taper(patch, PATCH_TAPER), tukey_taper(patch, PATCH_TAPER))
        self.filt = bandpass((patch, patch), period)
        self.cw = rfft_weights(patch)
        self.penalty = _roughness(*self.grid_shape)
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        self.ref_support = _support(yy, xx, (h, w), self.ramp)
        self.ref = ref
        self.ref_patches = self._patches(ref)
        self.base_window = self.taper * self._patches(self.ref_support)
        self.base_spec = band_spectrum(self.ref_patches, self.base_window, self.filt)
        self.cov = self._lag_covariance()

    def _lag_covariance(self) -> np.ndarray:
        """Relative covariance of the patch lags under white noise, (my * mx, my * mx).

        A lag's noise is a sum over the patch of squared-window-weighted noise
        divided by the squared window's total, so two lags covary as the
        overlap of their squared windows over the product of the totals. The
        windows (taper times the reference's soft edge) are separable.
        """
        taper = tukey_taper(self.patch, PATCH_TAPER).astype(float) ** 2
        per_axis = []
        for origins, size in zip(self.origins, self.shape):
            coord = np.arange(-self.pad, size + self.pad, dtype=float)
            rows = np.zeros((len(origins), len(coord)))
            for i, o in enumerate(origins):
                rows[i, o + self.pad:o + self.pad + self.patch] = taper
            rows *= _edge_ramp(coord, size, self.ramp) ** 2
            total = rows.sum(axis=1)
            per_axis.append((rows @ rows.T) / np.outer(total, total))
        return np.kron(per_axis[0], per_axis[1])

    def _patches(self, img: np.ndarray) -> np.ndarray:
        """(B, P, P) patches at the measurement origins, zero beyond the image."""
        padded = np.pad(img, self.pad)
        view = np.lib.stride_tricks.sliding_window_view(padded, (self.patch, self.patch))
        oy, ox = self.origins[0] + self.pad, self.origins[1] + self.pad
        return view[oy[:, None], ox[None, :]].reshape(-1, self.patch, self.patch)

    def _measure(
        self, warped: np.ndarray, support: np.ndarray, guess: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lags of the patches of ``warped`` against the reference's, where they apply, and which to trust.

        Returns lags (my, mx, 2), positions (my, mx, 2) and good (my, mx).
        """
        frame_mask = self._patches(support)
        cut = (frame_mask < 1.0).any(axis=(1, 2))  # patches the frame does not see in full
        win = self.base_window.copy()
        win[cut] *= frame_mask[cut]
        w2 = win**2
        weight = w2.sum(axis=(1, 2))
        full = (self.taper**2).sum()
        p = np.arange(self.patch, dtype=float)
        ys = (w2.sum(axis=2) @ p) / np.maximum(weight, 1e-12)
        xs = (w2.sum(axis=1) @ p) / np.maximum(weight, 1e-12)
        pos = np.stack([
            (self.origins[0][:, None] + ys.reshape(self.meas_shape)),
            (self.origins[1][None, :] + xs.reshape(self.meas_shape)),
        ], axis=-1)
        ok = weight >= MIN_PATCH_WEIGHT * full
        win[~ok] = self.taper  # keep the maths finite for dropped patches
        ref_spec, ref_energy = self.base_spec[0].copy(), self.base_spec[1].copy()
        redo = cut | ~ok
        if redo.any():
            ref_spec[redo], ref_energy[redo] = band_spectrum(self.ref_patches[redo], win[redo], self.filt)
        spec, energy = band_spectrum(self._patches(warped), win, self.filt)
        lag, rho, edge = find_peak(
            spec * np.conj(ref_spec), energy * ref_energy, (self.patch,) * 2, self.cw,
            np.broadcast_to(guess, (len(spec), 2)), self.radius, self.upsample,
        )
        good = ok & ~edge & np.isfinite(rho)
        if good.any():
            good &= rho >= MIN_RELATIVE_PEAK * np.median(rho[good])
        lag = lag.reshape(*self.meas_shape, 2)
        good = good.reshape(self.meas_shape)
        return lag, pos, good & ~_median_outliers(lag, good)

    def field(self, frame: np.ndarray, shift: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
        """Residual (dy, dx) displacement beyond ``shift`` at each node, shape (2, gy, gx).

        First measured on the frame moved by the whole-pixel part of the
        shift, then refined on the frame warped by the current estimate.
        """
        h, w = frame.shape
        fill = float(frame.mean())
        s = np.rint(shift).astype(int)
        warped = _integer_shift(frame, s, fill)
        yy = np.arange(h, dtype=np.float32)[:, None] + s[0]
        xx = np.arange(w, dtype=np.float32)[None, :] + s[1]
        lag, pos, good = self._measure(warped, _support(yy, xx, (h, w), self.ramp), shift - s)
        field = self._fit(lag + s - shift, pos, good)
        for _ in range(REFINE_PASSES):
            yy = np.arange(h, dtype=np.float32)[:, None] + (shift[0] + ry @ field[0] @ rx.T).astype(np.float32)
            xx = np.arange(w, dtype=np.float32)[None, :] + (shift[1] + ry @ field[1] @ rx.T).astype(np.float32)
            warped, _ = warp_frame(frame, yy, xx, fill, order=1)
            lag, pos, good = self._measure(warped, _support(yy, xx, (h, w), self.ramp), np.zeros(2))
            field += self._fit(lag, pos, good)
        return field

    def _fit(self, lags: np.ndarray, pos: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Node values (2, gy, gx) of the smooth field that best explains the trusted lags.

        Generalised least squares: overlapping patches share pixels and so
        noise; the lags are whitened with their covariance (from the patch
        masks' overlaps) before the penalised fit, whose penalty restricted
        maximum likelihood picks among :data:`PENALTIES`.
        """
        keep = good.ravel()
        n = int(keep.sum())
        m = lags.reshape(-1, 2)[keep]
        if n < 3:
            mean = m.mean(axis=0) if n else np.zeros(2)
            return np.broadcast_to(mean[:, None, None], (2, *self.grid_shape)).copy()
        p = pos.reshape(-1, 2)[keep]
        by, bx = spline_basis(p[:, 0], self.grid_y), spline_basis(p[:, 1], self.grid_x)
        a = (by[:, :, None] * bx[:, None, :]).reshape(n, -1)
        cov = self.cov[np.ix_(keep, keep)]
        try:
            chol = linalg.cholesky(cov + 1e-6 * np.trace(cov) / n * np.eye(n), lower=True)
        except linalg.LinAlgError:
            chol = np.diag(np.sqrt(np.diag(cov)))
        a = linalg.solve_triangular(chol, a, lower=True)
        m = linalg.solve_triangular(chol, m, lower=True)
        gram = a.T @ a
        rhs = a.T @ m
        # simultaneous diagonalisation: V' gram V = diag(theta), V' pen V = I, so every penalty costs O(k^2)
        k = len(gram)
        scale = np.trace(gram) / max(np.trace(self.penalty), 1e-12)
        pen = scale * (self.penalty + 1e-6 * np.trace(self.penalty) / k * np.eye(k))
        try:
            theta, vecs = linalg.eigh(gram, pen)
        except (linalg.LinAlgError, ValueError):
            return np.zeros((2, *self.grid_shape))
        theta = np.clip(theta, 0.0, None)
        proj = vecs.T @ rhs
        # restricted maximum likelihood of the penalty (the mixed-model view of a P-spline): affine fields
        # are unpenalised, the rest has a Gaussian prior whose variance the penalty sets
        free = min(3, k)
        if n <= free:
            return np.zeros((2, *self.grid_shape))
        best, best_score = None, np.inf
        for lam in PENALTIES:
            shrunk = proj / (theta + lam)[:, None]
            coef = vecs @ shrunk
            rss_pen = ((m - a @ coef) ** 2).sum() + lam * (shrunk**2).sum()
            score = (n - free) * np.log(max(rss_pen, 1e-300)) + np.log1p(theta[:-free] / lam).sum()
            if score < best_score:
                best, best_score = coef, score
        return best.T.reshape(2, *self.grid_shape)


def _roughness(ny: int, nx: int) -> np.ndarray:
    """Penalty matrix: squared second differences of a (ny, nx) grid along y, x and mixed (thin-plate-like)."""

    def diff(n: int, order: int) -> np.ndarray:
        return np.diff(np.eye(n), n=order, axis=0) if n > order else np.zeros((0, n))

    iy, ix = np.eye(ny), np.eye(nx)
    parts = [np.kron(diff(ny, 2), ix), np.kron(iy, diff(nx, 2)), np.sqrt(2.0) * np.kron(diff(ny, 1), diff(nx, 1))]
    return sum(p.T @ p for p in parts)


def _median_outliers(lags: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Trusted lags far from the median of their 3 x 3 neighbourhood. lags: (my, mx, 2)."""
    if good.sum() < 3:
        return np.zeros_like(good)
    v = np.where(good[..., None], lags, np.nan)
    pad = np.pad(v, ((1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    neigh = np.lib.stride_tricks.sliding_window_view(pad, (3, 3), axis=(0, 1)).reshape(*v.shape, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(neigh, axis=-1)
    dev = np.hypot(*(v - med).transpose(2, 0, 1))
    ok = np.isfinite(dev)
    if not ok.any():
        return np.zeros_like(good)
    thr = max(0.25, 3.0 * 1.4826 * np.median(dev[ok]))
    return ok & (dev > thr)



# ----------------------------------------------------------------------------------------------
# resampling


def _integer_shift(frame: np.ndarray, s: np.ndarray, fill: float) -> np.ndarray:
    """``frame(p + s)`` for a whole-pixel s, ``fill`` outside the frame."""
    h, w = frame.shape
    out = np.full((h, w), fill, dtype=np.float32)
    y0, y1 = max(0, -s[0]), min(h, h - s[0])
    x0, x1 = max(0, -s[1]), min(w, w - s[1])
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = frame[y0 + s[0]:y1 + s[0], x0 + s[1]:x1 + s[1]]
    return out


def _edge_ramp(c: np.ndarray, n: int, ramp: float) -> np.ndarray:
    """1 inside [0, n - 1], a cosine ramp to 0 over ``ramp`` px inside each end, 0 beyond."""
    d = np.clip(np.minimum(c, n - 1 - c) / ramp, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * d)).astype(np.float32)


def _support(yy: np.ndarray, xx: np.ndarray, shape: tuple[int, int], ramp: float) -> np.ndarray:
    """Soft mask of frame coordinates (yy, xx) inside a frame of this shape (see :func:`_edge_ramp`)."""
    return _edge_ramp(yy, shape[0], ramp) * _edge_ramp(xx, shape[1], ramp)


def warp_frame(
    frame: np.ndarray, yy: np.ndarray, xx: np.ndarray, fill: float, order: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` sampled at (yy, xx) by spline interpolation, ``fill`` outside it. Returns (image, seen)."""
    h, w = frame.shape
    yy, xx = np.broadcast_arrays(yy, xx)
    seen = (yy >= -1e-3) & (yy <= h - 1 + 1e-3) & (xx >= -1e-3) & (xx <= w - 1 + 1e-3)
    out = ndimage.map_coordinates(frame, [yy, xx], order=order, mode="nearest", output=np.float32)
    out[~seen] = fill
    return out, seen
