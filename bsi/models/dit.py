"""DiT (Peebles & Xie) on timm's layers, conditioned on the noise level through adaLN-Zero.

Sizes by name: ``DiT-{S,B,L,XL}/{2,4,8}`` (width/depth/heads: S 384/12/6, B 768/12/12,
L 1024/24/16, XL 1152/28/16; the number is the patch size).  The paper setting for ImageNet32 is
``DiT-L/2`` with dropout 0.05.
"""

from __future__ import annotations


import torch
from timm.layers import Mlp, PatchEmbed
from timm.models.vision_transformer import Attention
from torch import Tensor, nn

from .embeddings import NoiseLevelEmbedding, fourier_channels, fourier_features

SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


def parse_name(name: str) -> tuple[int, int, int, int]:
    """``"DiT-L/2"`` -> (width, depth, heads, patch)."""
    try:
        size, patch = name.removeprefix("DiT-").split("/")
        return (*SIZES[size], int(patch))
    except (KeyError, ValueError):
        raise ValueError(f"unknown DiT name '{name}': use DiT-S/2, DiT-B/4, DiT-L/2, DiT-XL/2, ...") from None


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2D sine-cosine position embedding ``(grid*grid, dim)``."""
    pos = torch.arange(grid, dtype=torch.float64)
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    yy, xx = torch.meshgrid(pos, pos, indexing="ij")
    parts = [f(c.flatten()[:, None] * omega) for c in (yy, xx) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1).float()


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated by the condition (adaLN-Zero)."""

    def __init__(self, width: int, heads: int, dropout: float, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, num_heads=heads, qkv_bias=True, attn_drop=dropout, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"), drop=dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """``F(x (B, C, H, W), t (B,)) -> (B, out_channels, H, W)`` as a transformer over patches."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int, name: str = "DiT-S/4", dropout: float = 0.0,
                 learn_pos: bool = False, fourier: tuple[int, int] | None = (6, 8), max_steps: int = 1000):
        super().__init__()
        width, depth, heads, patch = parse_name(name)
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not divisible by the patch size {patch} of {name}")
        self.out_channels, self.patch, self.fourier = out_channels, patch, tuple(fourier) if fourier else None
        self.grid = image_size // patch
        self.patches = PatchEmbed(image_size, patch, fourier_channels(in_channels, self.fourier), width)
        pos = sincos_2d(width, self.grid)[None]
        self.pos = nn.Parameter(pos, requires_grad=learn_pos)
        self.embed = NoiseLevelEmbedding(width, max_steps=max_steps)
        self.blocks = nn.ModuleList(DiTBlock(width, heads, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, patch * patch * out_channels)
        for layer in (self.ada[1], self.out):  # zero output: start from the preconditioning's baseline
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        c = self.embed(t)
        h = self.patches(fourier_features(x, self.fourier)) + self.pos
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada(c).chunk(2, dim=1)
        h = self.out(modulate(self.norm(h), shift, scale))  # (B, grid^2, p*p*C)
        b, g, p = len(x), self.grid, self.patch
        h = h.view(b, g, g, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, self.out_channels, g * p, g * p)


__all__ = ["DiT", "SIZES", "parse_name"]
