"""A residual MLP backbone for low-dimensional data (the 8x8 digits) and tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .embeddings import NoiseEmbedding, SinusoidalEmbedding, encoded_channels, precision_encoding


class ResidualBlock(nn.Module):
    """``h + net(h)`` on ``(B, width)``.

    ``layers=1``: ``net = W dropout(silu(norm(h)))`` (pre-activation, one matrix per block).
    ``layers=2``: ``net = W2 dropout(silu(W1 norm(h)))``.  ``norm`` is a LayerNorm or the identity.
    """

    def __init__(self, width: int, dropout: float = 0.0, layers: int = 1, norm: bool = False):
        super().__init__()
        if layers not in (1, 2):
            raise ValueError(f"block_layers must be 1 or 2, got {layers}")
        first = [nn.LayerNorm(width)] if norm else []
        if layers == 2:
            first.append(nn.Linear(width, width))
        self.net = nn.Sequential(*first, nn.SiLU(), nn.Dropout(dropout), nn.Linear(width, width))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class MLP(nn.Module):
    """``F(x (B, C, H, W), t (B,)) -> (B, out_channels, H, W)`` on the flattened image.

    The flattened input (with its Fourier features) and the noise features of ``t`` are concatenated,
    projected to ``width``, passed through ``num_blocks`` residual blocks and projected back to
    ``out_channels * H * W`` after a SiLU.  The default (width 320, one one-matrix block, 32 sinusoids
    of ``t``) has 154,304 parameters on 8x8x1 data (174,848 with a discretised output).  At width 256
    with Fourier features ``[6, 8]`` its matrices have the shapes of the BSI paper's digits MLP
    (205,376 parameters).

    Earlier versions (bsi < 0.3) defaulted to ``block_layers=2, norm=True, time_mlp=True``, width 176 and
    two blocks: their checkpoints record no such keys and are rebuilt with those values.

    Args:
        in_channels, out_channels, image_size: the data ``(C, H, W = H)`` and the output channels.
        width: hidden width.
        num_blocks: residual blocks.
        embedding_dim: number of sinusoidal features of ``t`` (and the width of its MLP, if any).
        dropout: dropout inside the residual blocks.
        fourier_features: ``[k_min, k_max]`` of the precision encoding, or ``None``.
        max_steps: the most sampling steps expected (sets the noise features' top frequency).
        block_layers: matrices per residual block, 1 or 2.
        norm: a LayerNorm at the start of every block and before the output projection.
        time_mlp: pass the sinusoids of ``t`` through a 2-layer MLP (DiT's embedder) first.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        width: int = 320,
        num_blocks: int = 1,
        embedding_dim: int = 32,
        dropout: float = 0.0,
        fourier_features: Sequence[int] | None = None,
        max_steps: int = 1000,
        block_layers: int = 1,
        norm: bool = False,
        time_mlp: bool = False,
    ):
        super().__init__()
        self.out_shape = (out_channels, image_size, image_size)
        pixels = image_size * image_size
        self.encode = precision_encoding(fourier_features)
        self.fourier = fourier_features is not None
        self.embed = (NoiseEmbedding(embedding_dim, max_steps=max_steps, features=embedding_dim) if time_mlp
                      else SinusoidalEmbedding(embedding_dim, max_steps=max_steps))
        self.proj_in = nn.Linear(encoded_channels(in_channels, fourier_features) * pixels + embedding_dim, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, dropout, block_layers, norm) for _ in range(num_blocks)))
        self.norm_out = nn.LayerNorm(width) if norm else nn.Identity()
        self.proj_out = nn.Linear(width, out_channels * pixels)
        # A zero output makes the untrained denoiser the preconditioning's baseline.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x (B, C, H, W)``, ``t (B,)`` -> ``(B, out_channels, H, W)``."""
        # one concatenation of the pixels, their Fourier features and the noise features: the order of
        # flattening the encoded image, without building it
        parts = [x.flatten(1), self.encode.features(x).flatten(1)] if self.fourier else [x.flatten(1)]
        h = torch.cat([*parts, self.embed(t).to(x.dtype)], dim=1)
        h = self.blocks(self.proj_in(h))
        return self.proj_out(nn.functional.silu(self.norm_out(h))).view(len(x), *self.out_shape)
