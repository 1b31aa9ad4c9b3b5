"""A small convolutional autoencoder trained self-supervised on one stack's own atom-centred patches.

Its latent code is a compact descriptor of a column and its neighbourhood;
:mod:`.instability` measures how the code of each column changes from frame to
frame.

Why our own autoencoder and not atomai's rotationally invariant VAE (rVAE):

- It trains on the patches of a single stack (a few thousand to ~20k
  patches) in seconds on a laptop CPU, and is deterministic for a seed
  (same thread count), so the instability of a stack is reproducible.
- Rotation invariance is not wanted here: after registration every frame
  shares one lattice orientation, and a code that forgets the orientation of
  a column's neighbourhood would hide real changes (a neighbour leaving, a
  column moving off its site).
- atomai's rVAE is heavier (a variational model with a spatial-transformer
  decoder), and part of its latent vector is the angle and offsets it
  factors out, which we would have to discard; its sampling noise would add
  frame-to-frame jitter to the code that has nothing to do with the sample.

torch is imported inside the functions, so importing this module stays light.
The network class, :class:`PatchAutoencoder`, is built on first access.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: Side, in samples, of the patches the autoencoder sees (patches are resampled to it).
PATCH_SIDE: int = 24
#: Channels of the encoder's two strided convolutions.
CHANNELS: tuple[int, int] = (16, 32)
#: Width of the decoder's hidden layer.
HIDDEN: int = 256
#: Optimiser steps of a default training run (``epochs=None``).
DEFAULT_STEPS: int = 300
#: Standard deviation of the denoising noise added to the inputs while training (normalised units).
DENOISE_SIGMA: float = 0.05


@functools.lru_cache(maxsize=1)
def _autoencoder_class() -> type:
    import torch
    from torch import nn

    class PatchAutoencoder(nn.Module):
        """Two strided convolutions -> linear code of ``latent_dim`` -> two-layer dense decoder.

        Input and output are (N, 1, side, side) with ``side`` a multiple of 4.
        The decoder is dense rather than transposed convolutions: on a CPU it
        is several times faster for patches this small, and it only has to
        help train the code, which is all that is used afterwards.
        """

        def __init__(self, side: int = PATCH_SIDE, latent_dim: int = 6,
                     channels: tuple[int, int] = CHANNELS, hidden: int = HIDDEN) -> None:
            super().__init__()
            if side % 4 or side < 8:
                raise ValueError(f"the patch side must be a multiple of 4 and at least 8, got {side}")
            if latent_dim < 1:
                raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
            c1, c2 = (int(c) for c in channels)
            self.side, self.latent_dim = int(side), int(latent_dim)
            q = side // 4
            self.encoder = nn.Sequential(
                nn.Conv2d(1, c1, 5, stride=2, padding=2), nn.ReLU(inplace=True),
                nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                nn.Flatten(), nn.Linear(c2 * q * q, latent_dim),
            )
            self.decoder = nn.Sequential(
                nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, side * side),
                nn.Unflatten(1, (1, side, side)),
            )

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            """(N, 1, side, side) -> (N, latent_dim)."""
            return self.encoder(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x))

    return PatchAutoencoder


def __getattr__(name: str) -> Any:
    if name == "PatchAutoencoder":
        return _autoencoder_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_autoencoder(side: int = PATCH_SIDE, latent_dim: int = 6) -> Any:
    """Untrained :class:`PatchAutoencoder` (a ``torch.nn.Module``) for ``side`` x ``side`` patches."""
    return _autoencoder_class()(side=int(side), latent_dim=int(latent_dim))


def _check_patches(patches: np.ndarray) -> np.ndarray:
    x = np.asarray(patches, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"patches must have shape (N, s, s), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("patches must be finite (drop the invalid ones first)")
    return x


def default_epochs(n_patches: int, batch_size: int = 256, steps: int = DEFAULT_STEPS) -> int:
    """Epochs giving about ``steps`` optimiser steps (at least 3 epochs, at most 200).

    Longer training lets the code learn each patch's shot noise, which makes
    the frame-to-frame change of unchanged columns larger and hides real
    changes; a few hundred steps are enough for the column and its
    surroundings.

    Examples
    --------
    >>> default_epochs(20_000), default_epochs(2_000), default_epochs(100)
    (4, 38, 200)
    """
    per_epoch = max(1, -(-int(n_patches) // int(batch_size)))
    return int(np.clip(round(steps / per_epoch), 3, 200))


def train_autoencoder(
    patches: np.ndarray,
    *,
    latent_dim: int = 6,
    epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 3e-3,
    denoise_sigma: float = DENOISE_SIGMA,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Any:
    """Train a :class:`PatchAutoencoder` to reconstruct ``patches`` (self-supervised).

    Adam with warm-up and cosine decay (:func:`~napari_stem_defects.training.schedule.warmup_cosine`),
    mean-squared reconstruction error of the clean patch from a copy with a
    little Gaussian noise added (a denoising autoencoder: the code has to hold
    the column, not the shot noise). Uses torch's current thread count
    (``torch.set_num_threads``); on 2 CPU threads about 20k patches of 24 x 24
    train in about 5 s with the default number of epochs (4).

    Parameters
    ----------
    patches : ndarray, shape (N, s, s)
        Finite, already normalised patches; ``s`` a multiple of 4 (see
        :data:`PATCH_SIDE`).
    latent_dim : int
        Size of the code.
    epochs : int, optional
        Passes over the patches; default :func:`default_epochs` (about
        :data:`DEFAULT_STEPS` optimiser steps).
    batch_size : int
        Patches per optimiser step.
    lr : float
        Peak learning rate.
    denoise_sigma : float
        Standard deviation of the noise added to the inputs (0: plain autoencoder).
    seed : int
        Seeds the weights, the batch order and the noise: the same seed, data
        and thread count give the same model.
    max_seconds : float, optional
        Stop after the step that passes this much training time.
    progress : callable, optional
        ``progress(steps_done, total_steps)``.
    cancel : callable, optional
        Checked before every step; returning True raises InterruptedError.

    Returns
    -------
    PatchAutoencoder
        In eval mode on the CPU, with ``model.history`` (a dict: epochs,
        steps, final loss, seconds, n_patches).

    Raises
    ------
    ValueError
        Patches of the wrong shape or not finite, or fewer than 2 patches.
    InterruptedError
        ``cancel()`` returned True.
    """
    import torch
    from torch.nn import functional as F

    from ..training.schedule import warmup_cosine

    x_all = _check_patches(patches)
    n = len(x_all)
    if n < 2:
        raise ValueError(f"need at least 2 patches to train on, got {n}")
    batch_size = int(min(max(1, batch_size), n))
    epochs = default_epochs(n, batch_size) if epochs is None else int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    per_epoch = -(-n // batch_size)
    total = epochs * per_epoch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(int(seed))
    model = build_autoencoder(x_all.shape[1], latent_dim)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = warmup_cosine(opt, total)
    data = torch.from_numpy(x_all)[:, None]
    model.train()
    t0, step, losses = time.perf_counter(), 0, []
    stop = False
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            if cancel is not None and cancel():
                raise InterruptedError("autoencoder training cancelled")
            clean = data[order[b * batch_size:(b + 1) * batch_size]]
            noisy = clean + denoise_sigma * torch.randn(clean.shape, generator=gen) if denoise_sigma > 0 else clean
            loss = F.mse_loss(model(noisy), clean)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, total)
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                stop = True
                break
        if stop:
            break
    model.eval()
    model.history = {"epochs": epochs, "steps": step, "total_steps": total, "n_patches": n,
                     "final_loss": float(np.mean(losses[-max(1, per_epoch):])),
                     "seconds": time.perf_counter() - t0, "stopped_early": stop, "seed": int(seed)}
    return model


def encode(model: Any, patches: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """Latent codes of ``patches`` (batched, no gradients, eval mode).

    Parameters
    ----------
    model : PatchAutoencoder
        From :func:`train_autoencoder`.
    patches : ndarray, shape (N, s, s)
        Finite patches normalised as the training ones; ``s`` the model's side.

    Returns
    -------
    ndarray of float32, shape (N, latent_dim)
    """
    import torch

    x = _check_patches(patches) if len(patches) else np.zeros((0, model.side, model.side), np.float32)
    if x.shape[1] != model.side:
        raise ValueError(f"the model takes {model.side} x {model.side} patches, got {x.shape[1]} x {x.shape[2]}")
    out = np.zeros((len(x), model.latent_dim), np.float32)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out[i:i + batch_size] = model.encode(torch.from_numpy(x[i:i + batch_size])[:, None]).numpy()
    model.train(was_training)
    return out
