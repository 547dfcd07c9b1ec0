"""Backbones ``F(x (B, C, H, W), t (B,)) -> (B, out_channels, H, W)``: MLP, U-Net and DiT.

``build_model(kind=..., in_channels=..., out_channels=..., image_size=..., **options)`` takes a
``model`` config node's keys directly (``kind`` picks the backbone; for a DiT ``name`` is its size,
e.g. ``DiT-L/2``).  Output layers are zero-initialised, so an untrained model
returns 0 and the denoiser starts from its preconditioning's baseline.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .dit import DiT
from .mlp import MLP
from .unet import UNet

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet, "dit": DiT}


def build_model(kind: str, in_channels: int, out_channels: int, image_size: int, **options: Any) -> nn.Module:
    """The backbone ``kind`` (``mlp``, ``unet``, ``dit``) with its constructor ``options``."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind '{kind}': choose one of {', '.join(MODELS)}")
    options.pop("size", None)  # a label of the preset, not a constructor argument
    return MODELS[kind](in_channels=in_channels, out_channels=out_channels, image_size=image_size, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["DiT", "MLP", "MODELS", "UNet", "build_model", "count_parameters"]
