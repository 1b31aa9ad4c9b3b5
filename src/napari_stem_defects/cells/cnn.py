"""Unit-cell defect classifier: a small CNN on two-channel cell crops plus material context.

The 2DIP-Net idea: each unit cell (metal site M and its partner X2 column) is
classified from :func:`~napari_stem_defects.cells.crops.cell_crops` (channel 0
centred on X, channel 1 on M, rotation-normalised, nn = 11 px) and a context
vector (:func:`context_vector`) describing the material and scale, into the
classes :data:`~napari_stem_defects.simulate.defects.CELL_CLASSES`.

torch is imported lazily, inside functions, so that importing this module
(and napari's plugin discovery) stays fast.

The weights are trained on digital twins by ``scripts/train_cell_cnn.py``
(see ``models/cell_cnn.md``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..materials import Material, parse_material
from ..network_io import packaged_weights_path, read_weights
from ..simulate.defects import CELL_CLASSES
from .crops import CANONICAL_NN_PX, CROP_SIZE, cell_crops, prepare_image

#: Architecture of the shipped model.
DEFAULT_ARCH: dict[str, Any] = {
    "in_channels": 2, "crop_size": CROP_SIZE, "channels": (16, 32, 64), "hidden": 128,
    "n_context": 6, "n_classes": len(CELL_CLASSES),
}
#: File name of the packaged weights (in ``napari_stem_defects/models``).
WEIGHTS_NAME = "cell_cnn.pt"


# --------------------------------------------------------------------------- context


def context_vector(material: str | Material, nn_px: float) -> np.ndarray:
    """Material and scale descriptor fed to the network next to the crops.

    Parameters
    ----------
    material : str or Material
        Host material, e.g. ``"MoS2"``, ``"MoWSSe"``, ``"Janus-MoSSe"``.
    nn_px : float
        Metal to chalcogen distance in image pixels.

    Returns
    -------
    ndarray of float32, shape (6,)
        ``[mean Z metal / 74, std Z metal / 20, mean Z chalcogen / 52,
        std Z chalcogen / 20, 1 if Janus else 0, log(nn_px / 11)]``.
    """
    mat = parse_material(material)
    zm, sm, zx, sx = mat.context_vector()
    janus = 1.0 if getattr(mat, "janus", False) else 0.0
    return np.array(
        [zm / 74.0, sm / 20.0, zx / 52.0, sx / 20.0, janus, math.log(float(nn_px) / CANONICAL_NN_PX)],
        dtype=np.float32,
    )


# --------------------------------------------------------------------------- network


@functools.lru_cache(maxsize=1)
def _cnn_class() -> type:
    """The torch module class, defined on first use so that torch is imported lazily."""
    import torch
    from torch import nn

    def conv(c_in: int, c_out: int, k: int) -> list:
        return [nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    class CellCNN(nn.Module):
        """Strided 5x5 then 3x3 convolutions (BatchNorm, ReLU), each halving the crop,
        flattened (the position of a feature in the canonical frame matters: centre
        cell versus neighbours), concatenated with the context vector, then an MLP."""

        def __init__(
            self, in_channels: int = 2, crop_size: int = CROP_SIZE, channels: tuple = (16, 32, 64),
            hidden: int = 128, n_context: int = 6, n_classes: int = len(CELL_CLASSES),
        ) -> None:
            super().__init__()
            layers: list = []
            c_in = in_channels
            for i, c in enumerate(channels):
                layers += conv(c_in, c, 5 if i == 0 else 3)
                c_in = c
            self.features = nn.Sequential(*layers)
            side = crop_size
            for _ in channels:
                side = (side + 1) // 2
            self.context = nn.Sequential(nn.Linear(n_context, 32), nn.ReLU(inplace=True))
            self.head = nn.Sequential(
                nn.Linear(c_in * side * side + 32, hidden), nn.ReLU(inplace=True),
                nn.Dropout(0.1), nn.Linear(hidden, n_classes),
            )

        def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            f = self.features(x).flatten(1)
            return self.head(torch.cat([f, self.context(ctx)], dim=1))

    return CellCNN


def build_cell_cnn(**arch: Any) -> Any:
    """Build an untrained cell classifier (a ``torch.nn.Module`` mapping (crops, context) to logits).

    Parameters
    ----------
    **arch
        Overrides of :data:`DEFAULT_ARCH` (``channels``, ``hidden``, ...).

    Returns
    -------
    torch.nn.Module
    """
    kw = {**DEFAULT_ARCH, **arch}
    kw["channels"] = tuple(int(c) for c in kw["channels"])
    return _cnn_class()(**kw)


# --------------------------------------------------------------------------- weights


def default_weights_path() -> Path:
    """Path of the packaged weights file (it may not exist yet)."""
    return packaged_weights_path(WEIGHTS_NAME)


def load_cell_model(path: str | Path | None = None) -> Any:
    """Load the cell classifier in evaluation mode (cached per path).

    Parameters
    ----------
    path : str or Path, optional
        Weights file written by :func:`napari_stem_defects.training.cell_cnn.save_weights`;
        defaults to the packaged ``models/cell_cnn.pt``.

    Returns
    -------
    torch.nn.Module
        The model on the CPU, in eval mode, with its metadata dict as ``model.metadata``.

    Raises
    ------
    FileNotFoundError
        If the weights file does not exist.
    """
    resolved = Path(path) if path is not None else default_weights_path()
    return _load_cached(str(resolved.expanduser().resolve()))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> Any:
    state, meta = read_weights(path, "cell classifier", "scripts/train_cell_cnn.py")
    model = build_cell_cnn(**meta.get("arch", {}))
    model.load_state_dict(state)
    model.eval()
    model.metadata = meta
    return model


# --------------------------------------------------------------------------- inference


def predict_logits(model: Any, crops: np.ndarray, context: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Run the model on crops (N, 2, S, S) and context (6,) or (N, 6); returns logits (N, C)."""
    import torch

    crops = np.ascontiguousarray(crops, dtype=np.float32)
    ctx = np.asarray(context, dtype=np.float32)
    if ctx.ndim == 1:
        ctx = np.broadcast_to(ctx, (len(crops), ctx.shape[0]))
    out = []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(crops), max(1, int(batch))):
            x = torch.from_numpy(crops[s : s + batch])
            c = torch.from_numpy(np.ascontiguousarray(ctx[s : s + batch]))
            out.append(model(x, c).float().numpy())
    n_classes = int(getattr(model, "metadata", {}).get("arch", DEFAULT_ARCH).get("n_classes", len(CELL_CLASSES)))
    return np.concatenate(out) if out else np.zeros((0, n_classes), dtype=np.float32)


def classify_cells(
    image: np.ndarray,
    m_positions: np.ndarray,
    x_positions: np.ndarray,
    nn_px: float | None,
    material: str | Material,
    pixel_size: float | None = None,
    batch: int = 4096,
    *,
    model: Any = None,
) -> np.ndarray:
    """Class probabilities of unit cells from their metal and X2 positions.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        HAADF image (any dtype, offset or gain).
    m_positions, x_positions : ndarray, shape (N, 2)
        (y, x) in pixels of each cell's metal site and X2 column (from the
        ground truth or a column detector; errors up to ~0.1 nn are tolerated).
    nn_px : float or None
        Metal to chalcogen distance in pixels; None derives it from the
        material's lattice constant and ``pixel_size`` (``a / sqrt(3) / pixel_size``).
    material : str or Material
        Host material (sets the context vector).
    pixel_size : float, optional
        Å per pixel; only used when ``nn_px`` is None.
    batch : int
        Cells per forward pass.
    model : torch.nn.Module, optional
        Classifier to use; defaults to :func:`load_cell_model`.

    Returns
    -------
    ndarray of float32, shape (N, len(CELL_CLASSES))
        Softmax probabilities, columns in the order of ``CELL_CLASSES``.
    """
    mat = parse_material(material)
    if nn_px is None:
        if pixel_size is None or pixel_size <= 0:
            raise ValueError("give nn_px, or a positive pixel_size to derive it from the material")
        nn_px = mat.a / math.sqrt(3.0) / float(pixel_size)
    model = model if model is not None else load_cell_model()
    prepared = prepare_image(image, nn_px)
    m = np.asarray(m_positions, dtype=np.float64).reshape(-1, 2)
    x = np.asarray(x_positions, dtype=np.float64).reshape(-1, 2)
    ctx = context_vector(mat, nn_px)
    parts = []
    step = max(1, int(batch))
    for s in range(0, len(m), step):
        crops = cell_crops(prepared, m[s : s + step], x[s : s + step], nn_px, prepared=True)
        parts.append(predict_logits(model, crops, ctx, batch=step))
    if not parts:
        return np.zeros((0, len(CELL_CLASSES)), dtype=np.float32)
    logits = np.concatenate(parts).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
