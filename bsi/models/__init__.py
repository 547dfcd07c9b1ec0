"""Backbones ``F(x, t)`` for the engine's parameterizations: MLP, U-Net, DiT and a sequence transformer.

Every backbone maps ``x (B, C, *spatial)`` (the scaled belief mean; for discrete data ``2 theta - 1``
of the class probabilities) and ``t (B,)`` in [0, 1] (0 = no information, 1 = data) to
``(B, out_channels, *spatial)``, and returns exactly 0 until trained, so an untrained denoiser is
its preconditioning's baseline.  The MLP, U-Net and DiT take images, ``spatial = (H, W)``; the
transformer takes sequences (text8), ``spatial = (L,)``.  Constructors take ``in_channels``,
``out_channels`` and ``image_size`` (the side ``H = W``, or the length ``L``) plus their own options.

``build_model`` takes a ``model`` config node's keys as they are::

    build_model(**cfg.model, in_channels=3, out_channels=6, image_size=32)

``name`` is ``mlp``, ``unet``, ``dit``, ``transformer`` or a DiT size, ``DiT-{S,B,L,XL}/{2,4,8}``,
which sets the width, depth, heads and patch (explicit keys override it).  An optional ``kind``
(``mlp``, ``unet``, ``dit``, ``transformer``) names the backbone outright; ``name`` is then a label,
and a DiT size for a DiT.  Every other key is a constructor argument.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .dit import DiT, dit_size
from .embeddings import FourierFeatures, NoiseEmbedding
from .mlp import MLP
from .transformer import SequenceTransformer
from .unet import UNet

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet, "dit": DiT, "transformer": SequenceTransformer}


def build_model(
    name: str,
    in_channels: int,
    out_channels: int,
    image_size: int,
    *,
    kind: str | None = None,
    **options: Any,
) -> nn.Module:
    """The backbone named by ``kind`` and/or ``name`` (see the module docstring) with ``options``."""
    if kind is None:
        kind = "dit" if name.startswith("DiT-") else name
    if kind not in MODELS:
        raise ValueError(f"unknown model '{kind}': choose one of {', '.join(MODELS)} (or a DiT name like DiT-L/2)")
    if "size" in options:
        raise ValueError("there is no 'size' option: pick a preset config (model=unet_paper, model.name=DiT-L/2)")
    if kind == "dit" and name != "dit":
        options = {**dit_size(name), **options}
    return MODELS[kind](in_channels=in_channels, out_channels=out_channels, image_size=image_size, **options)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; works on the ``meta`` device too."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "DiT", "MLP", "MODELS", "FourierFeatures", "NoiseEmbedding", "SequenceTransformer", "UNet", "build_model",
    "count_parameters",
]
