"""Run a fully convolutional network over a large image in tiles, without seams.

Two layouts are served:

- :func:`predict_dense`: a network whose output has the input's size (a U-Net).
  Each tile carries ``margin`` pixels of context on every side (reflected at
  the image border) that are cropped off; tiles start on multiples of the
  network's down-sampling, so the map does not depend on the tiling as long as
  the margin exceeds half the receptive field.
- :func:`predict_windows`: a network without padding that maps a ``window``
  square to one output and slides at ``stride`` (a patch classifier written as
  convolutions). Its outputs are exactly those of the classifier on every
  window, whatever the tiling, because tiles overlap by ``window - stride``.

torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Input pixels per forward pass, at most, when batching tiles.
BATCH_PIXELS = 4 * 512 * 512


def _run(model: Any, tiles: np.ndarray, context: np.ndarray | None) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(tiles[:, None], dtype=np.float32))
    if context is None:
        out = model(x)
    else:
        ctx = torch.from_numpy(np.broadcast_to(context, (len(tiles), len(context))).astype(np.float32))
        out = model(x, ctx)
    return torch.sigmoid(out).numpy()


def predict_dense(
    model: Any,
    x: np.ndarray,
    *,
    tile: int = 512,
    margin: int = 64,
    align: int = 8,
    context: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Sigmoid of a same-size network's logits over an image, tile by tile.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (B, 1, h, w) (and a (B, n) context when ``context`` is given) to
        (B, C, h, w) logits, for h and w multiples of ``align``.
    x : ndarray of float32, shape (H, W)
        Prepared (normalised) image.
    tile : int
        Tile side including the margins (raised to ``2 * margin + 64``).
    margin : int
        Context pixels kept around each tile and cropped off.
    align : int
        Total down-sampling of the network.
    context : ndarray, optional
        Per-image context vector passed to the model.
    progress, cancel : callable, optional
        ``progress(fraction)`` after each tile; ``cancel()`` polled before each
        batch (True raises InterruptedError).

    Returns
    -------
    ndarray of float32, shape (C, H, W)
    """
    h, w = x.shape
    m = int(margin)
    core = max(64, (int(tile) - 2 * m) // align * align)
    core_y, core_x = (min(core, -(-s // align) * align) for s in (h, w))
    ny, nx = -(-h // core_y), -(-w // core_x)
    padded = np.pad(x, ((m, ny * core_y - h + m), (m, nx * core_x - w + m)), mode="symmetric")
    starts = [(iy * core_y, ix * core_x) for iy in range(ny) for ix in range(nx)]
    out = _run_tiles(model, padded, [(s, s) for s in starts], (core_y + 2 * m, core_x + 2 * m),
                     (slice(m, m + core_y), slice(m, m + core_x)), (ny * core_y, nx * core_x),
                     context, progress, cancel)
    return out[:, :h, :w]


def predict_windows(
    model: Any,
    x: np.ndarray,
    *,
    window: int,
    stride: int,
    block: int = 64,
    context: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Outputs of a sliding-window classifier for windows centred on every ``stride``-th pixel.

    The image is reflected by ``window // 2`` on every side, so window ``(i, j)``
    covers image pixels ``i * stride - window // 2`` to ``i * stride + window // 2 - 1``
    (for an even window): its centre is at ``(i * stride - 0.5, j * stride - 0.5)``
    in pixel-centre coordinates.

    Parameters
    ----------
    model : torch.nn.Module
        Unpadded network: a (B, 1, window + k*stride, ...) input gives (B, C, k + 1, ...).
    x : ndarray of float32, shape (H, W)
        Prepared image.
    window, stride : int
        Window side and step in pixels (``window`` a multiple of ``stride``).
    block : int
        Windows per tile side.
    context, progress, cancel
        As in :func:`predict_dense`.

    Returns
    -------
    ndarray of float32, shape (C, ceil(H / stride), ceil(W / stride))
        Window (i, j) starts ``window // 2`` pixels before pixel (i * stride, j * stride).
    """
    h, w = x.shape
    half = window // 2
    ky, kx = -(-h // stride), -(-w // stride)
    by, bx = min(block, ky), min(block, kx)
    ny, nx = -(-ky // by), -(-kx // bx)
    need_y, need_x = (ny * by - 1) * stride + window, (nx * bx - 1) * stride + window
    padded = np.pad(x, ((half, max(0, need_y - h - half)), (half, max(0, need_x - w - half))), mode="symmetric")
    blocks = [(iy * by, ix * bx) for iy in range(ny) for ix in range(nx)]
    out = _run_tiles(model, padded, [((i * stride, j * stride), (i, j)) for i, j in blocks],
                     ((by - 1) * stride + window, (bx - 1) * stride + window), (slice(None), slice(None)),
                     (ny * by, nx * bx), context, progress, cancel)
    return out[:, :ky, :kx]


def _run_tiles(
    model: Any,
    padded: np.ndarray,
    tiles: list[tuple[tuple[int, int], tuple[int, int]]],
    size: tuple[int, int],
    keep: tuple[slice, slice],
    out_shape: tuple[int, int],
    context: np.ndarray | None,
    progress: Callable[[float], None] | None,
    cancel: Callable[[], bool] | None,
) -> np.ndarray:
    """Run the model on tiles of ``padded`` in batches and assemble the output.

    ``tiles`` holds, per tile, the (y, x) start of its ``size`` input in
    ``padded`` and the (y, x) where the ``keep`` part of its output goes in the
    (C, *out_shape) result.
    """
    import torch

    per_batch = max(1, BATCH_PIXELS // (size[0] * size[1]))
    out = None
    done = 0
    with torch.no_grad():
        for start in range(0, len(tiles), per_batch):
            if cancel is not None and cancel():
                raise InterruptedError("cancelled")
            batch = tiles[start : start + per_batch]
            cut = np.stack([padded[y : y + size[0], x : x + size[1]] for (y, x), _ in batch])
            prob = _run(model, cut, context)[:, :, keep[0], keep[1]]
            if out is None:
                out = np.empty((prob.shape[1], *out_shape), dtype=np.float32)
            for (_, (oy, ox)), p in zip(batch, prob):
                out[:, oy : oy + p.shape[1], ox : ox + p.shape[2]] = p
                done += 1
                if progress is not None:
                    progress(done / len(tiles))
    return out
