"""A residual MLP backbone for low-dimensional data (the 8x8 digits) and tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .embeddings import NoiseEmbedding, encoded_channels, precision_encoding


class ResidualBlock(nn.Module):
    """``h + W2 dropout(silu(W1 norm(h)))`` on ``(B, width)``."""

    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class MLP(nn.Module):
    """``F(x (B, C, H, W), t (B,)) -> (B, out_channels, H, W)`` on the flattened image.

    The flattened input (with its Fourier features) and the noise embedding are concatenated,
    projected to ``width``, passed through ``num_blocks`` residual blocks and projected back to
    ``out_channels * H * W``.  The default is about 170k parameters on 8x8x1 data (180k with a
    discretised output).

    Args:
        in_channels, out_channels, image_size: the data ``(C, H, W = H)`` and the output channels.
        width: hidden width.
        num_blocks: residual blocks.
        embedding_dim: width of the noise embedding (and its number of sinusoidal features).
        dropout: dropout inside the residual blocks.
        fourier_features: ``[k_min, k_max]`` of the precision encoding, or ``None``.
        max_steps: the most sampling steps expected (sets the noise embedding's top frequency).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        width: int = 176,
        num_blocks: int = 2,
        embedding_dim: int = 64,
        dropout: float = 0.0,
        fourier_features: Sequence[int] | None = None,
        max_steps: int = 1000,
    ):
        super().__init__()
        self.out_shape = (out_channels, image_size, image_size)
        pixels = image_size * image_size
        self.encode = precision_encoding(fourier_features)
        self.embed = NoiseEmbedding(embedding_dim, max_steps=max_steps, features=embedding_dim)
        self.proj_in = nn.Linear(encoded_channels(in_channels, fourier_features) * pixels + embedding_dim, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, dropout) for _ in range(num_blocks)))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, out_channels * pixels)
        # A zero output makes the untrained denoiser the preconditioning's baseline.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x (B, C, H, W)``, ``t (B,)`` -> ``(B, out_channels, H, W)``."""
        h = torch.cat([self.encode(x).flatten(1), self.embed(t).to(x.dtype)], dim=1)
        h = self.blocks(self.proj_in(h))
        return self.proj_out(nn.functional.silu(self.norm_out(h))).view(len(x), *self.out_shape)
