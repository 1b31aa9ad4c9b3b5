"""The learning-rate schedule all training loops share."""

from __future__ import annotations

import math
from typing import Any


def warmup_cosine(optimizer: Any, steps: int) -> Any:
    """Linear warm-up over the first 1/30 of ``steps``, then cosine decay to 0 at ``steps``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    steps : int
        Total optimiser steps.

    Returns
    -------
    torch.optim.lr_scheduler.LambdaLR
        Call ``step()`` after each optimiser step.
    """
    import torch

    warm = max(1, steps // 30)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
