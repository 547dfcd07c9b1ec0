"""The one conversion between stored levels (uint8) and the engine's floats in [-1, 1]."""

from __future__ import annotations

import torch
from torch import Tensor


def to_float(images: Tensor, bins: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Level ``k`` in ``0..bins-1`` (uint8) -> ``-1 + 2k/(bins-1)``."""
    return images.to(dtype) * (2.0 / (bins - 1)) - 1.0


def to_uint8(x: Tensor, bins: int) -> Tensor:
    """Float data -> the nearest level index as uint8 (clamped to ``0..bins-1``)."""
    return torch.round((x.float() + 1) * ((bins - 1) / 2)).clamp(0, bins - 1).to(torch.uint8)
