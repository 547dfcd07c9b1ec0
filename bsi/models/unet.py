"""A U-Net in the style of VDM's CIFAR-10 network: residual blocks at full resolution, no downsampling.

The down path has ``num_blocks`` residual blocks, the middle a residual block, self-attention and
another residual block, and the up path ``num_blocks + 1`` residual blocks, each fed the matching
down-path activation as a skip connection.  Every block is conditioned on the noise embedding.
The paper setting is ``channels=128, num_blocks=32, dropout=0.1``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .embeddings import NoiseLevelEmbedding, fourier_channels, fourier_features


def _groups(channels: int) -> int:
    return min(32, channels // 4) if channels >= 8 else 1


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, the noise embedding added in between, zero-initialised last conv."""

    def __init__(self, in_channels: int, channels: int, cond: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(in_channels), in_channels), nn.Conv2d(in_channels, channels, 3, padding=1)
        self.cond = nn.Linear(cond, channels)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(channels), channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_channels, channels, 1) if in_channels != channels else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.cond(c)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels (torch's fused scaled-dot-product attention)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv, self.proj = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """``F(x (B, C, H, W), t (B,)) -> (B, out_channels, H, W)``, all at full resolution."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int, channels: int = 64, num_blocks: int = 4,
                 dropout: float = 0.1, attention: bool = True, fourier: tuple[int, int] | None = (6, 8), max_steps: int = 1000):
        super().__init__()
        self.fourier = tuple(fourier) if fourier else None
        cond = 4 * channels
        self.embed = NoiseLevelEmbedding(cond, max_steps=max_steps)
        self.inp = nn.Conv2d(fourier_channels(in_channels, self.fourier), channels, 3, padding=1)
        self.down = nn.ModuleList(ResBlock(channels, channels, cond, dropout) for _ in range(num_blocks))
        self.mid1, self.mid2 = ResBlock(channels, channels, cond, dropout), ResBlock(channels, channels, cond, dropout)
        self.attn = AttnBlock(channels) if attention else nn.Identity()
        self.up = nn.ModuleList(ResBlock(2 * channels, channels, cond, dropout) for _ in range(num_blocks + 1))
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.out = nn.Conv2d(channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # start from the preconditioning's baseline
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        c = F.silu(self.embed(t))
        h = self.inp(fourier_features(x, self.fourier))
        skips = [h]
        for block in self.down:
            h = block(h, c)
            skips.append(h)
        h = self.mid2(self.attn(self.mid1(h, c)), c)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), c)
        return self.out(F.silu(self.norm(h)))

