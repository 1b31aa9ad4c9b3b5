"""The two heatmap networks, built lazily so that importing this module does not import torch.

- :func:`build_patch_net`: the sliding-window patch classifier. A 64 x 64
  window (:data:`WINDOW`) gives five sigmoid outputs: is there a defect of each
  family (:data:`~napari_stem_defects.heatmaps.classes.HEATMAP_CLASSES`) within
  :data:`CENTRE_RADIUS_NN` nn of the window centre. It is written with
  unpadded convolutions, max-pools and a final 6 x 6 convolution in place of
  a dense layer, so applied to a whole image it returns the classifier's
  output for every window at a stride of :data:`NATIVE_STRIDE` pixels in one
  pass (no Python loop over windows).
- :func:`build_attention_unet`: a U-Net with attention gates on its skip
  connections (Oktay et al. 2018) giving five per-pixel logits.

Both take the material context (:data:`N_CONTEXT` numbers: the first six of
:func:`napari_stem_defects.cells.cnn.context_vector`, composition and scale),
added as a bias to the deepest features.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..network_inputs import CANONICAL_NN_PX  # noqa: F401 - the attention U-Net's scale
from .classes import HEATMAP_CLASSES

#: Side of the patch classifier's window, in network pixels.
WINDOW: int = 64
#: Step between windows of one pass (the classifier's total down-sampling).
NATIVE_STRIDE: int = 8
#: A window is positive for a family when a defect of it lies this many nn from its centre or closer.
CENTRE_RADIUS_NN: float = 0.9
#: Context pixels around each U-Net tile; beyond the image's edges they are its mirror image
#: (:func:`napari_stem_defects.tiling.predict_dense`), and training crops show such edges too.
UNET_TILE_MARGIN: int = 64
#: Material context numbers (composition and scale).
N_CONTEXT: int = 6
#: Architecture of the shipped patch classifier.
PATCH_ARCH: dict[str, Any] = {"channels": (16, 32, 64), "hidden": 96, "n_out": len(HEATMAP_CLASSES)}
#: Architecture of the shipped attention U-Net.
UNET_ARCH: dict[str, Any] = {"channels": (16, 32, 64, 96), "n_out": len(HEATMAP_CLASSES)}


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[type, type]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class PatchNet(nn.Module):
        """Unpadded CNN: 64 x 64 window -> (n_out,) logits; on larger inputs, one output per 8 px."""

        def __init__(self, channels: Sequence[int] = (16, 32, 64), hidden: int = 96,
                     n_out: int = len(HEATMAP_CLASSES), n_context: int = N_CONTEXT) -> None:
            super().__init__()
            c1, c2, c3 = (int(c) for c in channels)

            def block(c_in: int, c_out: int, k: int) -> nn.Sequential:
                return nn.Sequential(nn.Conv2d(c_in, c_out, k, bias=False), nn.BatchNorm2d(c_out),
                                     nn.ReLU(inplace=True), nn.MaxPool2d(2))

            self.features = nn.Sequential(block(1, c1, 5), block(c1, c2, 3), block(c2, c3, 3))  # 64 -> 6
            self.dense = nn.Conv2d(c3, hidden, 6)  # the 6 x 6 map -> one vector per window
            self.context = nn.Linear(n_context, hidden)
            self.drop = nn.Dropout(0.1)
            self.head = nn.Conv2d(hidden, n_out, 1)

        def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
            h = self.dense(self.features(x)) + self.context(context)[:, :, None, None]
            return self.head(self.drop(F.relu(h)))

    def double_conv(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )

    class AttentionGate(nn.Module):
        """Weights a skip connection by a map computed from it and the coarser decoder features."""

        def __init__(self, c_skip: int, c_gate: int, c_mid: int) -> None:
            super().__init__()
            self.wx = nn.Conv2d(c_skip, c_mid, 1, bias=False)
            self.wg = nn.Conv2d(c_gate, c_mid, 1)
            self.psi = nn.Conv2d(c_mid, 1, 1)

        def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
            a = torch.sigmoid(self.psi(F.relu(self.wx(skip) + self.wg(gate))))
            return skip * a

    class AttentionUNet(nn.Module):
        """U-Net (double conv per level, max-pool down, bilinear up) with attention-gated skips."""

        def __init__(self, channels: Sequence[int] = (16, 32, 64, 96), n_out: int = len(HEATMAP_CLASSES),
                     n_context: int = N_CONTEXT) -> None:
            super().__init__()
            ch = [int(c) for c in channels]
            self.down = nn.ModuleList(double_conv(a, b) for a, b in zip([1] + ch[:-1], ch))
            self.context = nn.Linear(n_context, ch[-1])
            self.gates = nn.ModuleList(AttentionGate(ch[i], ch[i + 1], max(8, ch[i] // 2)) for i in range(len(ch) - 1))
            self.up = nn.ModuleList(double_conv(ch[i + 1] + ch[i], ch[i]) for i in range(len(ch) - 1))
            self.head = nn.Conv2d(ch[0], n_out, 1)

        def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, block in enumerate(self.down):
                if i:
                    x = F.max_pool2d(x, 2)
                x = block(x)
                skips.append(x)
            x = F.relu(x + self.context(context)[:, :, None, None])
            for i in reversed(range(len(self.up))):
                x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
                x = self.up[i](torch.cat([x, self.gates[i](skips[i], x)], dim=1))
            return self.head(x)

    return PatchNet, AttentionUNet


def build_patch_net(**arch: Any) -> Any:
    """Untrained sliding-window patch classifier (``torch.nn.Module``; see :data:`PATCH_ARCH`)."""
    kw = {**PATCH_ARCH, **arch}
    return _classes()[0](channels=tuple(kw["channels"]), hidden=int(kw["hidden"]), n_out=int(kw["n_out"]))


def build_attention_unet(**arch: Any) -> Any:
    """Untrained attention U-Net (``torch.nn.Module``; see :data:`UNET_ARCH`)."""
    kw = {**UNET_ARCH, **arch}
    return _classes()[1](channels=tuple(kw["channels"]), n_out=int(kw["n_out"]))
