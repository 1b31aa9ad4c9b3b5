"""Atomic instability: how much each column's autoencoder code changes from frame to frame.

The recipe (after the quaternary MoWSSe study):

1. :func:`site_patches` cuts a patch centred (to sub-pixel precision, by
   bilinear sampling) on every tracked site in every registered frame. The
   stack is normalised as a whole (one robust offset and scale), not patch
   by patch, so a column that loses intensity keeps looking dimmer. A soft
   Gaussian window (:data:`CENTRE_WINDOW`) makes the column itself weigh
   more than its neighbours.
2. :func:`~.autoencoder.train_autoencoder` learns a small code for these
   patches from the stack itself (self-supervised; no labels, no shipped
   weights), and :func:`~.autoencoder.encode` gives every (frame, site) its
   code ``z[t, i]``. Each code dimension is then scaled to unit standard
   deviation over all codes, so no dimension dominates by its units alone.
3. The step change ``||z[t, i] - z[t-1, i]||`` (NaN where either patch is
   invalid) is divided by the median step change over all sites and steps,
   so 1 is the typical frame-to-frame change of the stack (mostly noise) and
   the metric is dimensionless and comparable between stacks.
4. A site's instability is a summary of its normalised step changes
   (:func:`summarize_steps`; default the maximum, since a single event, a
   column leaving, is one large step that a mean or median over the steps
   would dilute).

:func:`intensity_change` is the plain baseline: the absolute change of the
mean intensity in a disc around each site, normalised and summarised the same
way. It sees columns appear, vanish or dim; the code also sees changes of
shape and of the neighbourhood (a column moving off its site, a neighbour
leaving). :func:`instability_map` splats site values into an image, and
:func:`roc_auc` scores a ranking against ground truth.

torch is only imported by :func:`compute_instability` (through the
autoencoder), not by importing this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, stats
from scipy.spatial import cKDTree

from ..network_io import normalize_image
from .autoencoder import PATCH_SIDE, default_epochs, encode, train_autoencoder

#: Per-site summaries of the step changes :func:`summarize_steps` knows.
SUMMARIES: tuple[str, ...] = ("max", "p90", "mean")
#: Default patch side as a multiple of the median nearest-neighbour distance of the sites.
PATCH_NN: float = 2.5
#: Default radius of the intensity baseline's disc, as a multiple of the patch side.
BASELINE_RADIUS_PATCH: float = 0.12
#: Default Gaussian window on the patches (standard deviation as a fraction of the patch side).
CENTRE_WINDOW: float = 0.3
#: Columns of :meth:`InstabilityResult.table`.
INSTABILITY_COLUMNS: tuple[str, ...] = ("y_px", "x_px", "instability", "intensity_change", "n_valid_frames")


@dataclass
class InstabilityResult:
    """Per-site instability of a registered stack.

    Attributes
    ----------
    per_site : ndarray of float, shape (n,)
        Instability of each site: :func:`summarize_steps` of ``per_step``
        (dimensionless, 1 = the stack's typical frame-to-frame change; NaN for
        a site valid in fewer than two consecutive frames).
    per_step : ndarray of float, shape (T - 1, n)
        Normalised latent change between frames t and t + 1 (row t); NaN
        where either patch is invalid.
    latents : ndarray of float32, shape (T, n, d)
        Codes, each dimension scaled to unit standard deviation; NaN where invalid.
    baseline_per_site, baseline_per_step : ndarray of float
        The same for the intensity baseline (:func:`intensity_change`).
    positions : ndarray of float, shape (n, 2)
        The sites (y, x) in reference pixels.
    valid : ndarray of bool, shape (T, n)
        Whether the site's patch lies inside frame t with no NaN or masked pixel.
    patch_px : float
        Side of the patches in image pixels.
    step_scale, baseline_step_scale : float
        The median step changes the raw values were divided by.
    summary : str
        How steps were summarised per site.
    history : dict
        Training record of the autoencoder (epochs, steps, final loss, seconds, n_patches, ...).
    """

    per_site: np.ndarray
    per_step: np.ndarray
    latents: np.ndarray
    baseline_per_site: np.ndarray
    baseline_per_step: np.ndarray
    positions: np.ndarray
    valid: np.ndarray
    patch_px: float
    step_scale: float = 1.0
    baseline_step_scale: float = 1.0
    summary: str = "max"
    history: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per site: :data:`INSTABILITY_COLUMNS`."""
        return pd.DataFrame({
            "y_px": self.positions[:, 0], "x_px": self.positions[:, 1], "instability": self.per_site,
            "intensity_change": self.baseline_per_site, "n_valid_frames": self.valid.sum(axis=0).astype(int),
        }, columns=list(INSTABILITY_COLUMNS))


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


def summarize_steps(per_step: np.ndarray, how: str = "max") -> np.ndarray:
    """Per-site summary of step changes (rows = steps), ignoring NaN.

    Parameters
    ----------
    per_step : ndarray, shape (T - 1, n)
    how : {'max', 'p90', 'mean'}
        Largest step (default: one event is one big step), 90th percentile, or mean.

    Returns
    -------
    ndarray of float, shape (n,)
        NaN for a site without any finite step.

    Examples
    --------
    >>> s = np.array([[1.0, np.nan], [5.0, np.nan], [2.0, np.nan]])
    >>> summarize_steps(s).tolist(), float(summarize_steps(s, "mean")[0])
    ([5.0, nan], 2.6666666666666665)
    """
    if how not in SUMMARIES:
        raise ValueError(f"how must be one of {SUMMARIES}, got {how!r}")
    x = np.asarray(per_step, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"per_step must have shape (steps, sites), got {x.shape}")
    out = np.full(x.shape[1], np.nan)
    has = np.isfinite(x).any(axis=0)
    if has.any():
        y = x[:, has]
        out[has] = {"max": lambda a: np.nanmax(a, axis=0), "mean": lambda a: np.nanmean(a, axis=0),
                    "p90": lambda a: np.nanpercentile(a, 90, axis=0)}[how](y)
    return out


def _normalise_steps(per_step: np.ndarray) -> tuple[np.ndarray, float]:
    finite = per_step[np.isfinite(per_step)]
    scale = float(np.median(finite)) if len(finite) else 1.0
    if not (np.isfinite(scale) and scale > 0):
        scale = float(finite.mean()) if len(finite) and finite.mean() > 0 else 1.0
    return per_step / scale, scale


def intensity_change(
    stack: np.ndarray,
    positions: np.ndarray,
    radius_px: float,
    *,
    valid: np.ndarray | None = None,
    summary: str = "max",
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline instability: change of the mean intensity in a disc around each site.

    Parameters
    ----------
    stack : ndarray, shape (T, H, W)
        Registered frames; NaN marks pixels not seen.
    positions : ndarray, shape (n, 2)
        Sites (y, x) in reference pixels.
    radius_px : float
        Disc radius (about a third of the nearest-neighbour distance covers a column).
    valid : ndarray of bool, shape (H, W) or (T, H, W), optional
        Pixels to trust.
    summary : {'max', 'p90', 'mean'}
        See :func:`summarize_steps`.

    Returns
    -------
    per_step : ndarray of float, shape (T - 1, n)
        ``|mean_t - mean_{t-1}|`` divided by its median over all sites and
        steps; NaN where the disc is invalid in either frame.
    per_site : ndarray of float, shape (n,)
        Summary of ``per_step``.

    Examples
    --------
    >>> yy, xx = np.mgrid[:30, :30]
    >>> blob = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.0)
    >>> f0 = blob(10, 10) + blob(20, 20) + blob(10, 20) + 0.01 * np.cos(xx)
    >>> stack = np.stack([f0, f0 - blob(20, 20), f0 - blob(20, 20) + 0.02])
    >>> steps, site = intensity_change(stack, [[10, 10], [20, 20], [10, 20]], 2.0)
    >>> int(np.argmax(site)), bool(site[1] > 10 * max(site[0], site[2]))
    (1, True)
    """
    per_step, _ = _normalise_steps(_disc_steps(stack, positions, radius_px, valid))
    return per_step, summarize_steps(per_step, summary)


def _disc_steps(stack: np.ndarray, positions: np.ndarray, radius_px: float,
                valid: np.ndarray | None) -> np.ndarray:
    """Raw ``|mean_t - mean_{t-1}|`` of the disc means, (T - 1, n), NaN where invalid."""
    arr = _check_stack(stack)
    pos = _check_positions(positions)
    if not (np.isfinite(radius_px) and radius_px > 0):
        raise ValueError(f"radius_px must be positive, got {radius_px!r}")
    bad = _bad_pixels(arr, valid)
    values, _ = _sample(np.where(bad, 0.0, arr).astype(np.float32), bad, pos, _disc_offsets(radius_px))
    return np.abs(np.diff(values.mean(axis=2), axis=0))


def _nn_distance(positions: np.ndarray) -> float:
    pos = positions[np.isfinite(positions).all(axis=1)]
    if len(pos) < 2:
        raise ValueError("need at least 2 finite positions to infer the patch size; pass patch_px")
    d, _ = cKDTree(pos).query(pos, k=2)
    return float(np.median(d[:, 1]))


def compute_instability(
    stack: np.ndarray,
    positions: np.ndarray,
    *,
    patch_px: float | None = None,
    latent_dim: int = 6,
    epochs: int | None = None,
    seed: int = 0,
    side: int = PATCH_SIDE,
    valid: np.ndarray | None = None,
    window: float | None = CENTRE_WINDOW,
    baseline_radius_px: float | None = None,
    summary: str = "max",
    max_train_patches: int = 20_000,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> InstabilityResult:
    """Train an autoencoder on the stack's own site patches and measure how each site's code changes.

    See the module docstring for the recipe.

    Parameters
    ----------
    stack : ndarray, shape (T, H, W)
        Registered frames (reference coordinates), T >= 2; NaN marks pixels not seen.
    positions : ndarray, shape (n, 2)
        Tracked sites (y, x) in reference pixels (empty sites included: a column
        appearing there is a change too).
    patch_px : float, optional
        Patch side in image pixels; default :data:`PATCH_NN` times the median
        nearest-neighbour distance of ``positions`` (the column and its first
        neighbours).
    latent_dim : int
        Size of the code.
    epochs : int, optional
        Training epochs (default :func:`~.autoencoder.default_epochs`).
    seed : int
        Seeds the training subset and the autoencoder: same inputs, seed and
        thread count give the same result.
    side : int
        Patch samples per side (multiple of 4).
    valid : ndarray of bool, shape (H, W) or (T, H, W), optional
        Pixels to trust (e.g. ``Registration.valid``).
    window : float, optional
        Gaussian window on the patches (see :func:`site_patches`); the default
        :data:`CENTRE_WINDOW` weighs the column most and its first neighbours
        about 0.4 (for the default patch of 2.5 nn), so a change shows most in
        its own column's code and less in the neighbours'. None: flat patches.
    baseline_radius_px : float, optional
        Disc radius of :func:`intensity_change`; default
        :data:`BASELINE_RADIUS_PATCH` times ``patch_px``.
    summary : {'max', 'p90', 'mean'}
        See :func:`summarize_steps`.
    max_train_patches : int
        Train on a random subset of at most this many valid patches (all are encoded).
    progress : callable, optional
        ``progress(done, total)`` (units: training steps plus the sampling and encoding).
    cancel : callable, optional
        Returning True raises InterruptedError (checked between stages and every training step).

    Returns
    -------
    InstabilityResult

    Raises
    ------
    ValueError
        Not a (T, H, W) stack with T >= 2, or fewer than 2 valid patches.
    InterruptedError
        ``cancel()`` returned True.
    """
    arr = _check_stack(stack)
    pos = _check_positions(positions)
    if arr.shape[0] < 2:
        raise ValueError("instability needs at least 2 frames")
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")

    def check() -> None:
        if cancel is not None and cancel():
            raise InterruptedError("instability cancelled")

    check()
    t0 = time.perf_counter()
    patch_px = PATCH_NN * _nn_distance(pos) if patch_px is None else float(patch_px)
    patches, ok = site_patches(arr, pos, patch_px, side=side, valid=valid, window=window)
    flat = patches[ok]
    if len(flat) < 2:
        raise ValueError("fewer than 2 site patches lie fully inside the frames; nothing to train on")
    rng = np.random.default_rng([int(seed), 7])
    train = flat if len(flat) <= max_train_patches else flat[np.sort(rng.choice(len(flat), max_train_patches,
                                                                              replace=False))]
    n_epochs = default_epochs(len(train)) if epochs is None else int(epochs)
    total = n_epochs * -(-len(train) // min(256, len(train))) + 3  # + sampling, encoding, baseline
    if progress is not None:
        progress(1, total)
    check()
    model = train_autoencoder(train, latent_dim=latent_dim, epochs=n_epochs, seed=seed, cancel=cancel,
                              progress=None if progress is None else (lambda s, _n: progress(1 + s, total)))
    check()
    codes = encode(model, flat)
    std = codes.std(axis=0)
    codes = codes / np.where(std > 0, std, 1.0)
    latents = np.full((arr.shape[0], len(pos), codes.shape[1]), np.nan, np.float32)
    latents[ok] = codes
    raw = np.linalg.norm(np.diff(latents.astype(float), axis=0), axis=2)
    per_step, scale = _normalise_steps(raw)
    if progress is not None:
        progress(total - 1, total)
    radius = BASELINE_RADIUS_PATCH * patch_px if baseline_radius_px is None else float(baseline_radius_px)
    base_steps, base_scale = _normalise_steps(_disc_steps(arr, pos, radius, valid))
    if progress is not None:
        progress(total, total)
    history = dict(model.history)
    history["total_seconds"] = time.perf_counter() - t0
    return InstabilityResult(
        per_site=summarize_steps(per_step, summary), per_step=per_step, latents=latents,
        baseline_per_site=summarize_steps(base_steps, summary), baseline_per_step=base_steps,
        positions=pos, valid=ok, patch_px=float(patch_px), step_scale=scale, baseline_step_scale=base_scale,
        summary=summary, history=history,
    )


def instability_map(
    shape: tuple[int, int],
    positions: np.ndarray,
    values: np.ndarray,
    sigma_px: float,
    *,
    truncate: float = 4.0,
) -> np.ndarray:
    """Site values splatted as Gaussians into an image.

    Each site adds ``v * exp(-r^2 / (2 sigma^2))``: a lone site of value ``v``
    on a pixel centre peaks at exactly ``v``; overlapping sites add up.
    Sites with a NaN value or position are skipped.

    Parameters
    ----------
    shape : (int, int)
        (H, W) of the map.
    positions : ndarray, shape (n, 2)
        (y, x) in pixels.
    values : ndarray, shape (n,)
    sigma_px : float
        Gaussian width (about half the nearest-neighbour distance).
    truncate : float
        The Gaussian is cut at this many sigma.

    Returns
    -------
    ndarray of float32, shape (H, W)

    Examples
    --------
    >>> m = instability_map((20, 30), [[5, 5], [12, 20]], [2.0, 0.5], 1.5)
    >>> float(m[5, 5]), float(m[12, 20]), m.shape
    (2.0, 0.5, (20, 30))
    """
    h, w = (int(s) for s in shape)
    pos = _check_positions(positions)
    vals = np.asarray(values, dtype=float).reshape(-1)
    if len(vals) != len(pos):
        raise ValueError(f"{len(pos)} positions but {len(vals)} values")
    if not (np.isfinite(sigma_px) and sigma_px > 0):
        raise ValueError(f"sigma_px must be positive, got {sigma_px!r}")
    keep = np.isfinite(vals) & np.isfinite(pos).all(axis=1) & (vals != 0)
    pos, vals = pos[keep], vals[keep]
    out = np.zeros(h * w, float)
    r = int(np.ceil(truncate * sigma_px))
    d = np.arange(-r, r + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    chunk = max(1, 2_000_000 // len(dy))
    for s in range(0, len(pos), chunk):
        p, v = pos[s:s + chunk], vals[s:s + chunk]
        cy, cx = np.rint(p[:, 0]).astype(int), np.rint(p[:, 1]).astype(int)
        yy, xx = cy[:, None] + dy[None], cx[:, None] + dx[None]
        wgt = v[:, None] * np.exp(-((yy - p[:, :1]) ** 2 + (xx - p[:, 1:]) ** 2) / (2.0 * sigma_px ** 2))
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        out += np.bincount((yy * w + xx)[inside], weights=wgt[inside], minlength=h * w)
    return out.reshape(h, w).astype(np.float32)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (rank-based, ties count half).

    Equals the probability that a random positive scores above a random
    negative (the Mann-Whitney U statistic over n_pos * n_neg). NaN scores
    rank below every finite score.

    Returns
    -------
    float
        NaN when either class is empty.

    Examples
    --------
    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> roc_auc([1, 1, 0], [1, 0, 0])
    0.75
    """
    s = np.asarray(scores, dtype=float).reshape(-1)
    y = np.asarray(labels).astype(bool).reshape(-1)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    s = np.where(np.isfinite(s), s, -np.inf)
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
