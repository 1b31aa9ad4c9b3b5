"""atomai's rotationally invariant VAE (rVAE) as a second encoder of atom-centred patches.

atomai's :class:`atomai.models.rVAE` (after Bepler et al., arXiv:1909.11663;
used for atom-resolved image series by Kalinin, Ziatdinov et al.) learns a
code in which a patch's rotation and, with ``translation=True``, its offset
are factored out into their own latent variables (the first three of
``z_mean``), so the remaining "content" variables describe what is in the
patch whatever its orientation and exact centring. :func:`train_rvae` trains
it on one stack's own site patches (self-supervised, like our
:mod:`.autoencoder`), :func:`encode_rvae` gives each patch its content code,
and :func:`~.instability.compute_instability` with ``encoder="rvae"``
measures how each site's code changes from frame to frame.

What to expect (``benchmarks/bench_dynamics.py --section events``): after
registration the frames share one lattice orientation, so the invariances
buy little for this task, and a site that merely jitters off its centre
changes less in the rVAE code, which helps. Per patch, the rVAE's spatial
decoder is about four times slower to train than our autoencoder on a CPU, so
by default it takes fewer, smaller steps (:data:`RVAE_STEPS` of :data:`RVAE_BATCH`).

atomai (and torch) are imported inside the functions only: ``import
napari_stem_defects`` and napari's start do not load it (about 7 s).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Content (rotation- and offset-free) latent variables of the default rVAE.
RVAE_LATENT_DIM: int = 4
#: Optimiser steps of a default training run (``epochs=None``).
RVAE_STEPS: int = 120
#: Patches per optimiser step.
RVAE_BATCH: int = 64
#: Adam's learning rate (atomai's default, 1e-4, needs thousands of steps).
RVAE_LR: float = 1e-3


def rvae_epochs(n_patches: int, batch_size: int = RVAE_BATCH, steps: int = RVAE_STEPS) -> int:
    """Epochs giving about ``steps`` optimiser steps (at least 3, at most 200).

    Examples
    --------
    >>> rvae_epochs(20_000), rvae_epochs(1_700), rvae_epochs(100)
    (3, 5, 120)
    """
    per_epoch = max(1, int(n_patches) // min(int(batch_size), max(1, int(n_patches))))
    return int(np.clip(round(steps / per_epoch), 3, 200))


def train_rvae(
    patches: np.ndarray,
    *,
    latent_dim: int = RVAE_LATENT_DIM,
    epochs: int | None = None,
    batch_size: int = RVAE_BATCH,
    lr: float = RVAE_LR,
    seed: int = 0,
    translation: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Any:
    """Train atomai's rVAE on a stack's own patches.

    Parameters
    ----------
    patches : ndarray, shape (N, s, s)
        Finite, normalised patches (e.g. from :func:`~.patch_sampling.site_patches`).
    latent_dim : int
        Content variables (besides the angle and, with ``translation``, the two offsets).
    epochs : int, optional
        Passes over the patches; default :func:`rvae_epochs`.
    batch_size, lr : int, float
        Mini-batch size and Adam's learning rate.
    seed : int
        Seeds atomai's and torch's random number generators (same seed, data
        and thread count: the same model).
    translation : bool
        Also factor out the patch's offset (atomai's ``translation=True``).
    progress : callable, optional
        ``progress(epochs_done, epochs)``.
    cancel : callable, optional
        Checked before every epoch; returning True raises InterruptedError.

    Returns
    -------
    atomai.models.rVAE
        With ``history`` (a dict: epochs, n_patches, final loss, seconds, seed).

    Raises
    ------
    ValueError
        Patches of the wrong shape or not finite, or fewer than 2.
    ImportError
        atomai is not installed.
    InterruptedError
        ``cancel()`` returned True.
    """
    import torch
    from atomai.models import rVAE

    from .autoencoder import _check_patches

    x = _check_patches(patches)
    if len(x) < 2:
        raise ValueError(f"need at least 2 patches to train on, got {len(x)}")
    batch_size = int(min(max(2, batch_size), len(x)))
    n_epochs = rvae_epochs(len(x), batch_size) if epochs is None else int(epochs)
    if n_epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {n_epochs}")
    torch.manual_seed(int(seed))
    model = rVAE(x.shape[1:], latent_dim=int(latent_dim), translation=translation, seed=int(seed))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rvae-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        for e in range(n_epochs):
            if cancel is not None and cancel():
                raise InterruptedError("rVAE training cancelled")
            # one epoch per call: the optimiser is kept between calls (atomai makes it once)
            model.fit(x, training_cycles=1, batch_size=batch_size, filename=str(Path(tmp) / "rvae"),
                      optimizer=lambda params: torch.optim.Adam(params, lr=lr))
            if progress is not None:
                progress(e + 1, n_epochs)
    losses = model.loss_history.get("train_loss", [])
    model.history = {"encoder": "rvae", "epochs": n_epochs, "n_patches": len(x), "batch_size": batch_size,
                     "final_loss": float(losses[-1]) if losses else float("nan"),
                     "seconds": time.perf_counter() - t0, "seed": int(seed), "latent_dim": int(latent_dim)}
    return model


def encode_rvae(model: Any, patches: np.ndarray) -> np.ndarray:
    """Content codes (``z_mean`` without the angle and offsets) of patches, shape (N, latent_dim).

    Parameters
    ----------
    model : atomai.models.rVAE
        From :func:`train_rvae`.
    patches : ndarray, shape (N, s, s)
        Finite patches normalised as the training ones.
    """
    from .autoencoder import _check_patches

    x = _check_patches(patches)
    if x.shape[1:] != tuple(model.in_dim):
        raise ValueError(f"the model takes {model.in_dim} patches, got {x.shape[1:]}")
    if len(x) == 0:
        return np.zeros((0, model.z_dim - model.coord), np.float32)
    z_mean, _ = model.encode(x, num_batches=max(1, len(x) // 2048))
    return np.asarray(z_mean, np.float32)[:, model.coord:]
