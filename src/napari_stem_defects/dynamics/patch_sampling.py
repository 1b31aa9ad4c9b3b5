"""Sampling a registered stack at tracked sites: atom-centred patches and disc means, NaN-aware.

:func:`site_patches` cuts a patch centred (to sub-pixel precision, by
bilinear sampling) on every site in every frame, for the encoders of
:mod:`.instability`; :func:`disc_steps` gives the frame-to-frame change of the
mean intensity in a disc around each site, the plain baseline. A site is
invalid in a frame when its patch or disc leaves the frame or touches a NaN
or untrusted pixel. Plain numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..network_io import normalize_image
from .autoencoder import PATCH_SIDE


def _check_stack(stack: np.ndarray) -> np.ndarray:
    arr = np.asarray(stack, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"expected a (T, H, W) stack, got shape {arr.shape}")
    return arr


def _check_positions(positions: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions, dtype=float).reshape(-1, 2) if np.size(positions) else np.zeros((0, 2))
    return pos


def _bad_pixels(arr: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(T, H, W) bool: NaN/inf pixels, or pixels outside ``valid`` ((H, W) or (T, H, W))."""
    bad = ~np.isfinite(arr)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape not in (arr.shape, arr.shape[1:]):
            raise ValueError(f"valid must have shape {arr.shape[1:]} or {arr.shape}, got {v.shape}")
        bad = bad | ~np.broadcast_to(v, arr.shape)
    return bad


def _sample(frames: np.ndarray, bad: np.ndarray, positions: np.ndarray, offsets: np.ndarray,
            chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of every frame at ``positions[i] + offsets[k]``, and which sites are valid.

    Returns ``values`` (T, n, K) float32 (NaN where invalid) and ``ok`` (T, n).
    A site is invalid in a frame when a sample point lies outside the
    interpolable area ``[0, H-1] x [0, W-1]`` or next to a bad pixel.
    """
    n_t, h, w = frames.shape
    n, k = len(positions), len(offsets)
    values = np.full((n_t, n, k), np.nan, np.float32)
    ok = np.zeros((n_t, n), bool)
    if n == 0:
        return values, ok
    ext = np.abs(offsets).max(axis=0)
    finite = np.isfinite(positions).all(axis=1)
    inside = (finite & (positions[:, 0] - ext[0] >= 0) & (positions[:, 0] + ext[0] <= h - 1)
              & (positions[:, 1] - ext[1] >= 0) & (positions[:, 1] + ext[1] <= w - 1))
    idx = np.flatnonzero(inside)
    for start in range(0, len(idx), chunk):
        sel = idx[start:start + chunk]
        coords = positions[sel, None, :] + offsets[None, :, :]
        coords = coords.reshape(-1, 2).T
        for t in range(n_t):
            v = ndimage.map_coordinates(frames[t], coords, order=1, mode="nearest").reshape(len(sel), k)
            b = ndimage.map_coordinates(bad[t].astype(np.float32), coords, order=1, mode="nearest")
            good = ~(b.reshape(len(sel), k) > 0).any(axis=1)
            values[t, sel[good]] = v[good]
            ok[t, sel] = good
    return values, ok


def site_patches(
    stack: np.ndarray,
    positions: np.ndarray,
    size_px: float,
    *,
    side: int = PATCH_SIDE,
    valid: np.ndarray | None = None,
    window: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Patches centred on each site in each frame, resampled to ``side`` x ``side``.

    The stack is normalised once as a whole
    (:func:`~napari_stem_defects.network_io.normalize_image`: median to 0,
    the 0.5-99.5 percentile range to 1), so intensity differences between
    frames and sites survive. Patches are sampled bilinearly
    (:func:`scipy.ndimage.map_coordinates`) on a grid centred exactly on the
    sub-pixel site position; when a patch is much wider than ``side`` pixels
    the frames are first smoothed with a Gaussian of ``(step - 1) / 2`` pixels
    (``step = size_px / side``), to avoid aliasing.

    Parameters
    ----------
    stack : ndarray, shape (T, H, W)
        Registered frames (reference coordinates); NaN marks pixels not seen.
    positions : ndarray, shape (n, 2)
        Sites (y, x) in reference pixels.
    size_px : float
        Side of the patch in image pixels.
    side : int
        Samples per patch side.
    valid : ndarray of bool, shape (H, W) or (T, H, W), optional
        Pixels to trust (e.g. ``Registration.valid``); others count as NaN.
    window : float, optional
        Multiply each patch by a Gaussian of this standard deviation (as a
        fraction of the patch side), centred on the site; None: no window.

    Returns
    -------
    patches : ndarray of float32, shape (T, n, side, side)
        NaN where not valid.
    valid : ndarray of bool, shape (T, n)
        The patch lies inside the frame and touches no NaN or untrusted pixel.

    Examples
    --------
    >>> yy, xx = np.mgrid[:40, :40]
    >>> frame = np.exp(-((yy - 20.3) ** 2 + (xx - 15.6) ** 2) / 8.0)
    >>> stack = np.stack([frame, 0.5 * frame])
    >>> p, ok = site_patches(stack, [[20.3, 15.6], [2.0, 2.0]], 12, side=12)
    >>> p.shape, ok.tolist()
    ((2, 2, 12, 12), [[True, False], [True, False]])
    >>> c = p[:, 0, 5:7, 5:7].mean(axis=(1, 2))  # the centre: frame 1 keeps half the signal
    >>> bool(abs(c[1] / c[0] - 0.5) < 0.05)
    True
    """
    arr = _check_stack(stack)
    pos = _check_positions(positions)
    side = int(side)
    if not (np.isfinite(size_px) and size_px > 0):
        raise ValueError(f"size_px must be a positive number of pixels, got {size_px!r}")
    bad = _bad_pixels(arr, valid)
    norm = normalize_image(np.where(bad, np.nan, arr))
    step = float(size_px) / side
    sigma = (step - 1.0) / 2.0  # anti-aliasing before down-sampling, as skimage.transform.rescale
    if sigma >= 0.1:
        norm = np.stack([ndimage.gaussian_filter(f, sigma, mode="nearest") for f in norm])
    g = (np.arange(side) - (side - 1) / 2.0) * step
    offsets = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    values, ok = _sample(norm, bad, pos, offsets)
    patches = values.reshape(arr.shape[0], len(pos), side, side)
    if window is not None:
        u = np.arange(side) - (side - 1) / 2.0
        sd = float(window) * side
        patches *= np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2.0 * sd * sd)).astype(np.float32)
    return patches, ok


def _disc_offsets(radius_px: float) -> np.ndarray:
    """Sample offsets on a half-pixel grid inside a disc (at least the centre)."""
    r = float(radius_px)
    g = np.arange(-np.floor(2 * r) / 2, np.floor(2 * r) / 2 + 0.25, 0.5)
    dy, dx = np.meshgrid(g, g, indexing="ij")
    keep = dy ** 2 + dx ** 2 <= r ** 2
    off = np.stack([dy[keep], dx[keep]], axis=1)
    return off if len(off) else np.zeros((1, 2))


def disc_means(stack: np.ndarray, positions: np.ndarray, radius_px: float,
               valid: np.ndarray | None) -> np.ndarray:
    """Mean intensity in a disc around each site in each frame, (T, n) float, NaN where invalid."""
    arr = _check_stack(stack)
    pos = _check_positions(positions)
    if not (np.isfinite(radius_px) and radius_px > 0):
        raise ValueError(f"radius_px must be positive, got {radius_px!r}")
    bad = _bad_pixels(arr, valid)
    values, _ = _sample(np.where(bad, 0.0, arr).astype(np.float32), bad, pos, _disc_offsets(radius_px))
    return values.mean(axis=2).astype(float)


def disc_steps(stack: np.ndarray, positions: np.ndarray, radius_px: float,
               valid: np.ndarray | None) -> np.ndarray:
    """Raw ``|mean_t - mean_{t-1}|`` of the disc means, (T - 1, n), NaN where invalid."""
    return np.abs(np.diff(disc_means(stack, positions, radius_px, valid), axis=0))
