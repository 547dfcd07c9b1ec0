"""DiT (Peebles & Xie, 2023) on timm's layers, conditioned on the noise level by adaLN-Zero.

Unconditional: the only condition is the noise embedding of ``t``.  Sizes by name, the number
after the slash being the patch size:

    ===========  =====  =====  =====
    size         dim    depth  heads
    ===========  =====  =====  =====
    ``DiT-S/p``  384    12     6
    ``DiT-B/p``  768    12     12
    ``DiT-L/p``  1024   24     16
    ``DiT-XL/p`` 1152   28     16
    ===========  =====  =====  =====

The paper setting for ImageNet32 is ``DiT-L/2`` with dropout 0.05.  A 32x32 image with patch 2 has
the same 256 tokens as DiT's 256px latents, so the parameter counts are the DiT paper's minus its
class embedding (see ``tests/models``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

import torch
from timm.layers import Mlp, PatchEmbed, build_sincos2d_pos_embed
from timm.models.vision_transformer import Attention
from torch import Tensor, nn

from .embeddings import NoiseEmbedding, encoded_channels, precision_encoding

SIZES: dict[str, dict[str, int]] = {
    "S": dict(dim=384, depth=12, num_heads=6),
    "B": dict(dim=768, depth=12, num_heads=12),
    "L": dict(dim=1024, depth=24, num_heads=16),
    "XL": dict(dim=1152, depth=28, num_heads=16),
}
POS_EMBEDS = ("sincos", "learned")


def dit_size(name: str) -> dict[str, int]:
    """``"DiT-L/2"`` -> ``{dim, depth, num_heads, patch_size}``."""
    match = re.fullmatch(r"DiT-(S|B|L|XL)/(\d+)", name)
    if match is None:
        raise ValueError(f"unknown DiT size '{name}': use DiT-{{S,B,L,XL}}/{{2,4,8}}, e.g. DiT-L/2")
    return dict(SIZES[match[1]], patch_size=int(match[2]))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``(B, N, D)`` modulated per example by ``(B, D)`` shift and scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms and residual gates come from the condition.

    adaLN-Zero: the modulation is zero-initialised, so the gates start closed and the block is the
    identity until training opens them.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        gelu = partial(nn.GELU, approximate="tanh")
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=gelu, drop=dropout)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """``x (B, N, D)``, condition ``c (B, D)`` -> ``(B, N, D)``."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """Modulated norm and a linear map of each token to its patch: ``(B, N, D)`` -> ``(B, N, p*p*out)``."""

    def __init__(self, dim: int, patch_values: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_values)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """``F(x (B, C, H, W), t (B,)) -> (B, out_channels, H, W)``, a diffusion transformer.

    Args:
        in_channels, out_channels: data and output channels.
        image_size: height = width of the data; a multiple of ``patch_size``.
        patch_size: side of the square patches that become tokens.
        dim, depth, num_heads: width, number of blocks and attention heads.
        mlp_ratio: hidden width of the blocks' MLPs relative to ``dim``.
        dropout: after attention and in the MLPs (paper setting for ImageNet32: 0.05).
        pos_embed: ``"sincos"`` (fixed 2D sine-cosine) or ``"learned"`` (initialised to it).
        fourier_features: ``[k_min, k_max]`` of the precision encoding, or ``None``.
        max_steps: the most sampling steps expected (sets the noise embedding's top frequency).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        patch_size: int = 2,
        dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        pos_embed: str = "sincos",
        fourier_features: Sequence[int] | None = (6, 8),
        max_steps: int = 1000,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"unknown pos_embed '{pos_embed}': choose one of {', '.join(POS_EMBEDS)}")
        self.patch_size, self.out_channels = patch_size, out_channels
        self.grid = image_size // patch_size
        self.encode = precision_encoding(fourier_features)
        self.patch_embed = PatchEmbed(image_size, patch_size, encoded_channels(in_channels, fourier_features), dim)
        self.noise_embed = NoiseEmbedding(dim, max_steps=max_steps)
        positions = build_sincos2d_pos_embed([self.grid, self.grid], dim)[None]  # (1, N, D)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(positions)
        else:
            self.register_buffer("pos_embed", positions, persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.final = FinalLayer(dim, patch_size * patch_size * out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linear maps, zeroed modulations and output."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # The patch embedding is a linear map of flattened patches, initialised as one.
        proj = self.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.out_channels, -1))
        nn.init.zeros_(proj.bias)
        for layer in self.noise_embed.mlp[0], self.noise_embed.mlp[2]:
            nn.init.normal_(layer.weight, std=0.02)
        # adaLN-Zero, and a zero output: the untrained denoiser is the preconditioning's baseline.
        for modulation in [block.modulation for block in self.blocks] + [self.final.modulation]:
            nn.init.zeros_(modulation[1].weight)
            nn.init.zeros_(modulation[1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """``(B, N, p*p*out)`` -> ``(B, out, H, W)``."""
        p, g = self.patch_size, self.grid
        x = x.view(len(x), g, g, p, p, self.out_channels)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(len(x), self.out_channels, g * p, g * p)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x (B, C, H, W)``, ``t (B,)`` -> ``(B, out_channels, H, W)``."""
        tokens = self.patch_embed(self.encode(x)) + self.pos_embed
        c = self.noise_embed(t)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.unpatchify(self.final(tokens, c))
