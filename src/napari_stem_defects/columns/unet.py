"""Deep atom-column detector: a small U-Net that maps a HAADF image to column peaks.

The network works at a fixed scale: images are resampled so that the metal to
chalcogen (nearest-neighbour) distance becomes :data:`CANONICAL_NN_PX` pixels,
normalised robustly, run in overlapping tiles and the map is resampled back
to the input's shape. The output has a peak (about 1) at the centre of every
occupied atom column (metal, X2 or single X, adatom) and is about 0 elsewhere,
vacancies included.

torch is imported lazily, inside functions, so that importing this module
(and napari's plugin discovery) stays fast.

The weights are trained on digital twins by
``scripts/train_column_unet.py`` (see ``models/column_unet.md``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..network_inputs import CANONICAL_NN_PX, canonical_shape, resample  # noqa: F401 - the model's scale
from ..network_io import load_model, normalize_image, packaged_weights_path
from ..tiling import predict_dense

#: Architecture of the shipped model (channels per level; one max-pool between levels).
DEFAULT_ARCH: dict[str, Any] = {"in_channels": 1, "channels": (16, 32, 64, 64)}
#: File name of the packaged weights (in ``napari_stem_defects/models``).
WEIGHTS_NAME = "column_unet.pt"
#: Context, in canonical pixels, kept around each tile and cropped off (> half the receptive field).
TILE_MARGIN = 64
#: Tile sizes are multiples of this (total down-sampling of the network).
_ALIGN = 8


# --------------------------------------------------------------------------- network


@functools.lru_cache(maxsize=1)
def _unet_class() -> type:
    """The torch module class, defined on first use so that torch is imported lazily."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def double_conv(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    class ColumnUNet(nn.Module):
        """U-Net: double 3x3 conv + BatchNorm + ReLU per level, max-pool down,
        bilinear up with skip connections, 1x1 head giving one logit per pixel."""

        def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 64)) -> None:
            super().__init__()
            ch = [int(c) for c in channels]
            self.down = nn.ModuleList(
                double_conv(c_in, c_out) for c_in, c_out in zip([in_channels] + ch[:-1], ch)
            )
            self.up = nn.ModuleList(double_conv(ch[i + 1] + ch[i], ch[i]) for i in range(len(ch) - 1))
            self.head = nn.Conv2d(ch[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, block in enumerate(self.down):
                if i:
                    x = F.max_pool2d(x, 2)
                x = block(x)
                skips.append(x)
            for i in reversed(range(len(self.up))):
                x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
                x = self.up[i](torch.cat([x, skips[i]], dim=1))
            return self.head(x)

    return ColumnUNet


def build_column_unet(in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 64)) -> Any:
    """Build an untrained column U-Net (a ``torch.nn.Module`` returning logits).

    Parameters
    ----------
    in_channels : int
        Input channels (1 for a HAADF image).
    channels : sequence of int
        Feature channels per level; one 2x max-pool between consecutive levels.

    Returns
    -------
    torch.nn.Module
    """
    return _unet_class()(in_channels=in_channels, channels=tuple(channels))


# --------------------------------------------------------------------------- weights


def default_weights_path() -> Path:
    """Path of the packaged weights file (it may not exist yet)."""
    return packaged_weights_path(WEIGHTS_NAME)


def load_column_model(path: str | Path | None = None) -> Any:
    """Load the column U-Net in evaluation mode on the CPU (cached per path).

    ``path`` is a file written by :func:`napari_stem_defects.training.column_unet.save_weights`, None
    for the packaged ``models/column_unet.pt``; the model carries its metadata as ``model.metadata``
    (see :func:`napari_stem_defects.network_io.load_model`).

    Raises
    ------
    FileNotFoundError, napari_stem_defects.network_io.WeightsFileError
        The file is missing, or not a column U-Net of this package.
    """
    return load_model(path, WEIGHTS_NAME, _build_from_metadata, "column U-Net", "scripts/train_column_unet.py")


def _build_from_metadata(meta: dict[str, Any]) -> Any:
    arch = meta.get("arch", DEFAULT_ARCH)
    return build_column_unet(int(arch.get("in_channels", 1)), tuple(arch.get("channels", DEFAULT_ARCH["channels"])))


# --------------------------------------------------------------------------- inference


def deep_detection_map(
    image: np.ndarray,
    nn_px: float,
    *,
    tile: int = 512,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    model: Any = None,
) -> np.ndarray:
    """Column detection map of a HAADF image from the U-Net.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The image, any dtype, offset or gain.
    nn_px : float
        Metal to chalcogen (nearest-neighbour) distance in pixels, ``a / sqrt(3)``
        over the pixel size (e.g. ``|a1| / sqrt(3)`` from
        :func:`napari_stem_defects.calibration.measure_lattice`).
    tile : int
        Size of the square tiles the network sees, in canonical pixels,
        context margins of :data:`TILE_MARGIN` included (sizes below
        ``2 * TILE_MARGIN + 64`` are raised to that).
    progress : callable, optional
        Called with the fraction done (0 to 1) after each tile.
    cancel : callable, optional
        Polled before each batch of tiles; when it returns True the
        computation stops.
    model : torch.nn.Module or str or Path, optional
        The U-Net to use: a loaded model, or a weights file (e.g. a fine-tuned
        version from :func:`napari_stem_defects.model_registry.resolve_model`);
        default the shipped weights (see :func:`column_model`).

    Returns
    -------
    ndarray of float32, shape (H, W)
        Values in [0, 1]; a peak of about 1 at every occupied column centre.

    Raises
    ------
    ValueError
        If the image is not 2D or ``nn_px`` is not a positive number.
    InterruptedError
        If ``cancel()`` returned True.
    FileNotFoundError
        If the model weights are missing.
    """
    return detection_map_with_model(
        column_model(model), image, nn_px, tile=tile, progress=progress, cancel=cancel
    )


def column_model(model: Any = None) -> Any:
    """The column U-Net to run: the shipped one (None), one loaded from a weights file, or ``model`` itself.

    Parameters
    ----------
    model : torch.nn.Module or str or Path, optional
        A loaded model is returned as is; a path is loaded with
        :func:`load_column_model` (cached, ``weights_only=True``).

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    FileNotFoundError
        If a weights file does not exist.
    """
    if model is None or isinstance(model, (str, Path)):
        return load_column_model(model)
    return model


def detection_map_with_model(
    model: Any,
    image: np.ndarray,
    nn_px: float,
    *,
    tile: int = 512,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """:func:`deep_detection_map` with a given model (e.g. one being trained or evaluated).

    Parameters
    ----------
    model : torch.nn.Module
        A column U-Net in eval mode (see :func:`load_column_model`).
    image, nn_px, tile, progress, cancel
        As in :func:`deep_detection_map`.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {img.shape}")
    if not (np.isfinite(nn_px) and nn_px > 0):
        raise ValueError(f"nn_px must be a positive number, got {nn_px!r}")
    img = img.astype(np.float32, copy=False)
    shape = img.shape
    x = normalize_image(resample(_fill_nan(img), canonical_shape(shape, nn_px)))
    canon = predict_map(model, x, tile=tile, progress=progress, cancel=cancel)
    out = resample(canon, shape) if canon.shape != shape else canon
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def predict_map(
    model: Any,
    x: np.ndarray,
    *,
    tile: int = 512,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Run the network over a normalised, canonical-scale image in overlapping tiles.

    Each tile carries :data:`TILE_MARGIN` pixels of context on every side
    (see :func:`napari_stem_defects.tiling.predict_dense`), so the result does
    not depend on the tiling.

    Parameters
    ----------
    model : torch.nn.Module
        Returns one logit per pixel.
    x : ndarray of float32, shape (h, w)
        Normalised image at the canonical scale.
    tile, progress, cancel
        As in :func:`deep_detection_map`.

    Returns
    -------
    ndarray of float32, shape (h, w)
        Sigmoid of the logits.
    """
    return predict_dense(model, x, tile=tile, margin=TILE_MARGIN, align=_ALIGN, progress=progress,
                         cancel=cancel)[0]


def _fill_nan(image: np.ndarray) -> np.ndarray:
    finite = np.isfinite(image)
    if finite.all():
        return image
    fill = float(np.median(image[finite])) if finite.any() else 0.0
    return np.where(finite, image, fill).astype(np.float32)
