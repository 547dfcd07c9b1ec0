"""The one conversion between stored levels (uint8) and the engine's floats in [-1, 1].

Images stay uint8 (level indices ``0..bins-1``) from disk through the DataLoader; they become
floats only here, on the device, right before the engine sees them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_float(images: Tensor, bins: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Levels -> floats: uint8 levels of any shape, level ``k`` -> ``-1 + 2k/(bins-1)`` in ``dtype``."""
    return images.to(dtype) * (2.0 / (bins - 1)) - 1.0


def to_uint8(x: Tensor, bins: int) -> Tensor:
    """Floats -> levels: the nearest level index of ``x`` (any float shape) as uint8, clamped to ``0..bins-1``."""
    return torch.round((x.float() + 1) * ((bins - 1) / 2)).clamp(0, bins - 1).to(torch.uint8)
