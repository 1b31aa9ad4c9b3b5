"""Atomic instability: how much each column changes from frame to frame, by code and by intensity.

The recipe (after the quaternary MoWSSe study):

1. :func:`~.patch_sampling.site_patches` cuts a patch centred (to sub-pixel
   precision, by bilinear sampling) on every tracked site in every
   registered frame. The stack is normalised as a whole (one robust offset
   and scale), not patch by patch, so a column that loses intensity keeps
   looking dimmer. A soft Gaussian window (:data:`CENTRE_WINDOW`) makes the
   column itself weigh more than its neighbours.
2. An encoder learns a small code for these patches from the stack itself
   (self-supervised; no labels, no shipped weights): our
   :mod:`.autoencoder` (``encoder="autoencoder"``) or atomai's rotationally
   invariant VAE (:mod:`.rvae_encoder`, ``encoder="rvae"``). Each code
   dimension is scaled to unit standard deviation over all codes.
3. The latent step change ``||z[t, i] - z[t-1, i]||`` (NaN where either patch
   is invalid) is divided by its median over all sites and steps
   (:func:`~.site_scores.normalise_steps`), so 1 is the typical
   frame-to-frame change of the stack (mostly noise).
4. :func:`intensity_change`, the plain baseline: the absolute change of the
   mean intensity in a disc around each site, normalised the same way. It
   sees columns appear, vanish or dim; the code also sees changes of shape
   and of the neighbourhood (a column moving off its site, a neighbour leaving).
   :func:`~.corrected_change.neighbour_corrected_change` is the same change
   relative to the column's typical intensity, less the median change of its
   neighbours (of its sublattice) in that step: residual registration errors,
   scan distortion and gain changes, which all nearby columns share, cancel.
5. What the instability is (``score``):

   - ``"corrected"`` (the default without an encoder, ``encoder="intensity"``):
     the neighbour-corrected intensity change. On simulated series
     (``benchmarks/bench_dynamics.py --section events``) it ranks the sites
     that really changed best at every dose (1e4-1e6 e/Å^2), clearly above
     the plain change;
   - ``"fused"`` (the default with an encoder): :func:`~.site_scores.fuse_steps`
     of the code's change and the corrected change, step by step (their
     geometric mean: a real event moves both in the same step, their noise
     is nearly independent). It beats the plain change at every dose, but
     not the corrected change alone: the code also moves when a neighbour
     changes;
   - ``"latent"``: the encoder's change alone.

6. A site's value is a summary of its steps (:func:`~.site_scores.summarize_steps`;
   default the maximum: one event, a column leaving, is one large step).

torch and atomai are only imported by :func:`compute_instability` (through
the encoders), not by importing this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .autoencoder import PATCH_SIDE, default_epochs, encode, train_autoencoder
from .corrected_change import TREND_NN, corrected_steps
from .patch_sampling import _check_positions, _check_stack, disc_means, disc_steps, site_patches
from .site_scores import SUMMARIES, fuse_steps, instability_map, normalise_steps, roc_auc, summarize_steps

#: Encoders of the patches :func:`compute_instability` knows ('intensity', the default: none, intensity changes only).
ENCODERS: tuple[str, ...] = ("intensity", "autoencoder", "rvae")
#: What the instability is: the neighbour-corrected intensity change, its fusion with the code's change,
#: or the code's change alone.
SCORES: tuple[str, ...] = ("corrected", "fused", "latent")
#: Default patch side as a multiple of the median nearest-neighbour distance of the sites.
PATCH_NN: float = 2.5
#: Default radius of the intensity baseline's disc, as a multiple of the patch side.
BASELINE_RADIUS_PATCH: float = 0.12
#: Default Gaussian window on the patches (standard deviation as a fraction of the patch side).
CENTRE_WINDOW: float = 0.3
#: Columns of :meth:`InstabilityResult.table`.
INSTABILITY_COLUMNS: tuple[str, ...] = ("y_px", "x_px", "instability", "intensity_change", "n_valid_frames",
                                        "latent_change", "corrected_change")
__all__ = ["CENTRE_WINDOW", "ENCODERS", "INSTABILITY_COLUMNS", "SCORES", "SUMMARIES", "InstabilityResult",
           "compute_instability", "instability_map", "intensity_change", "roc_auc", "site_patches",
           "summarize_steps"]


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
        Normalised instability between frames t and t + 1 (row t): the
        corrected, fused or latent change (``score``); NaN where either patch
        is invalid.
    latents : ndarray of float32, shape (T, n, d)
        Codes, each dimension scaled to unit standard deviation; NaN where
        invalid (d = 0 for ``encoder='intensity'``).
    baseline_per_site, baseline_per_step : ndarray of float
        The same for the intensity baseline (:func:`intensity_change`).
    positions : ndarray of float, shape (n, 2)
        The sites (y, x) in reference pixels.
    valid : ndarray of bool, shape (T, n)
        Whether the site's patch (with an encoder; its intensity disc without
        one) lies inside frame t with no NaN or masked pixel.
    patch_px : float
        Side of the patches in image pixels.
    step_scale, baseline_step_scale : float
        The median step changes the raw values were divided by.
    summary : str
        How steps were summarised per site.
    history : dict
        Training record of the encoder (epochs, final loss, seconds, n_patches, ...).
    latent_per_site, latent_per_step : ndarray of float, optional
        The encoder's own normalised code change (NaN for ``encoder='intensity'``).
    encoder, score : str
        Which encoder and which score (:data:`ENCODERS`, :data:`SCORES`).
    corrected_per_site, corrected_per_step : ndarray of float, optional
        The neighbour-corrected intensity change
        (:func:`~.corrected_change.neighbour_corrected_change`).
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
    latent_per_site: np.ndarray | None = None
    latent_per_step: np.ndarray | None = None
    encoder: str = "intensity"
    score: str = "corrected"
    corrected_per_site: np.ndarray | None = None
    corrected_per_step: np.ndarray | None = None

    def table(self) -> pd.DataFrame:
        """One row per site: :data:`INSTABILITY_COLUMNS`."""
        return pd.DataFrame({
            "y_px": self.positions[:, 0], "x_px": self.positions[:, 1], "instability": self.per_site,
            "intensity_change": self.baseline_per_site, "n_valid_frames": self.valid.sum(axis=0).astype(int),
            "latent_change": (self.latent_per_site if self.latent_per_site is not None
                              else np.full(len(self.positions), np.nan)),
            "corrected_change": (self.corrected_per_site if self.corrected_per_site is not None
                                 else np.full(len(self.positions), np.nan)),
        }, columns=list(INSTABILITY_COLUMNS))


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
    per_step, _ = normalise_steps(disc_steps(stack, positions, radius_px, valid))
    return per_step, summarize_steps(per_step, summary)


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
    encoder: str = "intensity",
    score: str | None = None,
    groups: np.ndarray | None = None,
    patch_px: float | None = None,
    latent_dim: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    side: int = PATCH_SIDE,
    valid: np.ndarray | None = None,
    window: float | None = CENTRE_WINDOW,
    baseline_radius_px: float | None = None,
    trend_radius_px: float | None = None,
    summary: str = "max",
    max_train_patches: int = 20_000,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> InstabilityResult:
    """Train an encoder on the stack's own site patches and measure how each site changes.

    See the module docstring for the recipe.

    Parameters
    ----------
    stack : ndarray, shape (T, H, W)
        Registered frames (reference coordinates), T >= 2; NaN marks pixels not seen.
    positions : ndarray, shape (n, 2)
        Tracked sites (y, x) in reference pixels (empty sites included: a column
        appearing there is a change too).
    encoder : {'intensity', 'autoencoder', 'rvae'}
        None (default: no network, the intensity changes only), our
        autoencoder (:mod:`.autoencoder`) or atomai's rVAE
        (:mod:`.rvae_encoder`, needs atomai).
    score : {'corrected', 'fused', 'latent'}, optional
        The instability: the neighbour-corrected intensity change, its
        step-wise fusion with the code's change
        (:func:`~.site_scores.fuse_steps`), or the code's change alone.
        Default: 'corrected' without an encoder, 'fused' with one.
    groups : array-like, shape (n,), optional
        Site groups (the sublattice): the corrected change takes each site's
        neighbours from its own group. None: one group.
    patch_px : float, optional
        Patch side in image pixels; default :data:`PATCH_NN` times the median
        nearest-neighbour distance of ``positions`` (the column and its first
        neighbours).
    latent_dim : int, optional
        Size of the code (default 6 for the autoencoder; the rVAE's
        :data:`~.rvae_encoder.RVAE_LATENT_DIM` content variables).
    epochs : int, optional
        Training epochs (default chosen from the number of patches).
    seed : int
        Seeds the training subset and the encoder: same inputs, seed and
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
    trend_radius_px : float, optional
        Neighbourhood of the corrected change; default
        :data:`~.corrected_change.TREND_NN` median nearest-neighbour distances.
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
        Not a (T, H, W) stack with T >= 2, fewer than 2 valid patches, an
        unknown encoder or score, or a score that needs a code without an encoder.
    ImportError
        ``encoder='rvae'`` without atomai installed.
    InterruptedError
        ``cancel()`` returned True.
    """
    arr = _check_stack(stack)
    pos = _check_positions(positions)
    if arr.shape[0] < 2:
        raise ValueError("instability needs at least 2 frames")
    if score is None:
        score = "corrected" if encoder == "intensity" else "fused"
    for name, value, allowed in (("summary", summary, SUMMARIES), ("encoder", encoder, ENCODERS),
                                 ("score", score, SCORES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if encoder == "intensity" and score != "corrected":
        raise ValueError(f"score {score!r} needs the code of an encoder ('autoencoder' or 'rvae'); "
                         "without one the instability is the corrected intensity change (score 'corrected')")

    def check() -> None:
        if cancel is not None and cancel():
            raise InterruptedError("instability cancelled")

    check()
    t0 = time.perf_counter()
    several = np.isfinite(pos).all(axis=1).sum() >= 2
    nn = _nn_distance(pos) if patch_px is None or (trend_radius_px is None and several) else None
    patch_px = float(PATCH_NN * nn if patch_px is None else patch_px)
    # a lone site has no neighbours: any trend radius will do
    trend_radius_px = float(trend_radius_px if trend_radius_px is not None else
                            TREND_NN * nn if several else patch_px)
    radius = BASELINE_RADIUS_PATCH * patch_px if baseline_radius_px is None else float(baseline_radius_px)
    means = disc_means(arr, pos, radius, valid)
    base_steps, base_scale = normalise_steps(np.abs(np.diff(means, axis=0)))
    corr_steps, _ = normalise_steps(corrected_steps(means, pos, trend_radius_px, groups=groups))
    if encoder == "intensity":
        ok = np.isfinite(means)
        latents = np.zeros((arr.shape[0], len(pos), 0), np.float32)
        latent_steps, scale, history = np.full_like(base_steps, np.nan), 1.0, {"encoder": "intensity"}
    else:
        patches, ok = site_patches(arr, pos, patch_px, side=side, valid=valid, window=window)
        latents, history = _encode_stack(patches, ok, encoder, latent_dim=latent_dim, epochs=epochs, seed=seed,
                                         max_train_patches=max_train_patches, progress=progress, cancel=cancel)
        latent_steps, scale = normalise_steps(np.linalg.norm(np.diff(latents.astype(float), axis=0), axis=2))
    if score == "corrected":
        per_step = corr_steps
    elif score == "latent":
        per_step = latent_steps
    else:
        per_step = fuse_steps(latent_steps, corr_steps)
    history["total_seconds"] = time.perf_counter() - t0
    return InstabilityResult(
        per_site=summarize_steps(per_step, summary), per_step=per_step, latents=latents,
        baseline_per_site=summarize_steps(base_steps, summary), baseline_per_step=base_steps,
        positions=pos, valid=ok, patch_px=float(patch_px), step_scale=scale, baseline_step_scale=base_scale,
        summary=summary, history=history, latent_per_site=summarize_steps(latent_steps, summary),
        latent_per_step=latent_steps, encoder=encoder, score=score,
        corrected_per_site=summarize_steps(corr_steps, summary), corrected_per_step=corr_steps,
    )


def _encode_stack(patches: np.ndarray, ok: np.ndarray, encoder: str, *, latent_dim: int | None,
                  epochs: int | None, seed: int, max_train_patches: int,
                  progress: Callable[[int, int], None] | None,
                  cancel: Callable[[], bool] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Train ``encoder`` on the valid patches and code them: (T, n, d) codes (unit SD, NaN where invalid)."""
    flat = patches[ok]
    if len(flat) < 2:
        raise ValueError("fewer than 2 site patches lie fully inside the frames; nothing to train on")
    rng = np.random.default_rng([int(seed), 7])
    train = flat if len(flat) <= max_train_patches else flat[np.sort(rng.choice(len(flat), max_train_patches,
                                                                              replace=False))]
    if encoder == "rvae":
        from .rvae_encoder import RVAE_LATENT_DIM, encode_rvae, rvae_epochs, train_rvae

        n_epochs = rvae_epochs(len(train)) if epochs is None else int(epochs)
        total = n_epochs + 2
        model = train_rvae(train, latent_dim=RVAE_LATENT_DIM if latent_dim is None else latent_dim,
                           epochs=n_epochs, seed=seed, cancel=cancel,
                           progress=None if progress is None else (lambda e, _n: progress(1 + e, total)))
        codes = encode_rvae(model, flat)
    else:
        n_epochs = default_epochs(len(train)) if epochs is None else int(epochs)
        total = n_epochs * -(-len(train) // min(256, len(train))) + 2
        if progress is not None:
            progress(1, total)
        model = train_autoencoder(train, latent_dim=6 if latent_dim is None else latent_dim, epochs=n_epochs,
                                  seed=seed, cancel=cancel,
                                  progress=None if progress is None else (lambda s, _n: progress(1 + s, total)))
        codes = encode(model, flat)
    if cancel is not None and cancel():
        raise InterruptedError("instability cancelled")
    std = codes.std(axis=0)
    codes = codes / np.where(std > 0, std, 1.0)
    latents = np.full((*ok.shape, codes.shape[1]), np.nan, np.float32)
    latents[ok] = codes
    if progress is not None:
        progress(total, total)
    return latents, dict(model.history)
