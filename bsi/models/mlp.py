"""A residual MLP backbone for small data (the 8x8 digits) and tests."""

from __future__ import annotations

from torch import Tensor, nn

from .embeddings import NoiseLevelEmbedding, fourier_channels, fourier_features


class ResidualBlock(nn.Module):
    """``h + W2 dropout(silu(W1 norm(h) (1 + scale) + shift)))`` conditioned on the noise embedding."""

    def __init__(self, width: int, cond: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(cond, 2 * width)
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.modulation(c).chunk(2, dim=1)
        return h + self.fc2(self.dropout(nn.functional.silu(self.fc1(self.norm(h) * (1 + scale) + shift))))


class MLP(nn.Module):
    """``F(x (B, C, H, W), t (B,)) -> (B, out_channels, H, W)`` through flattened residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int, width: int = 128, depth: int = 3,
                 dropout: float = 0.1, fourier: tuple[int, int] | None = (6, 7), emb_dim: int = 64, max_steps: int = 1000):
        super().__init__()
        self.out_channels, self.image_size, self.fourier = out_channels, image_size, tuple(fourier) if fourier else None
        pixels = image_size * image_size
        self.embed = NoiseLevelEmbedding(emb_dim, max_steps=max_steps)
        self.inp = nn.Linear(fourier_channels(in_channels, self.fourier) * pixels, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, emb_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_channels * pixels)
        nn.init.zeros_(self.out.weight)  # start from the preconditioning's baseline
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        c = nn.functional.silu(self.embed(t))
        h = self.inp(fourier_features(x, self.fourier).flatten(1))
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.norm(h)).view(len(x), self.out_channels, self.image_size, self.image_size)
