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

The blocks, the final layer, the position embeddings and :func:`initialize_weights` serve any token
sequence: :class:`~bsi.models.transformer.SequenceTransformer` is the same network on 1D tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

import torch
from timm.layers import Mlp, PatchEmbed, build_sincos2d_pos_embed, freq_bands
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


def sincos_pos_embed(grid: Sequence[int], dim: int) -> Tensor:
    """Fixed sine-cosine embedding of the tokens of a 1D ``[L]`` or 2D ``[H, W]`` grid: ``(N, dim)``.

    2D is timm's (DiT's, dim a multiple of 4); 1D is the same construction on one axis (MAE's):
    ``[sin(n w), cos(n w)]`` at position ``n``, ``dim / 2`` frequencies ``w = 10000^(-2i/dim)``.
    """
    if len(grid) == 2:
        return build_sincos2d_pos_embed(list(grid), dim)
    if len(grid) != 1 or dim % 2:
        raise ValueError(f"sin-cos position embedding of a 1D or 2D grid and an even dim, got {list(grid)}, {dim}")
    phase = torch.arange(grid[0], dtype=torch.float32)[:, None] * freq_bands(dim // 2, step=1)
    return torch.cat([phase.sin(), phase.cos()], dim=1)


def add_pos_embed(module: nn.Module, positions: Tensor, kind: str) -> None:
    """``module.pos_embed = positions``: fixed (a buffer) for ``"sincos"``, a parameter for ``"learned"``."""
    if kind not in POS_EMBEDS:
        raise ValueError(f"unknown pos_embed '{kind}': choose one of {', '.join(POS_EMBEDS)}")
    if kind == "learned":
        module.pos_embed = nn.Parameter(positions)
    else:
        module.register_buffer("pos_embed", positions, persistent=False)


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


def initialize_weights(model: nn.Module) -> None:
    """DiT's initialisation of a model built from these pieces, found by type.

    Xavier-uniform linear maps (a patch embedding too: it is a linear map of flattened patches),
    N(0, 0.02) noise embeddings, and zeros for every adaLN modulation and the final linear map, so the
    untrained denoiser is its preconditioning's baseline.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, PatchEmbed):
            proj = module.proj
            nn.init.xavier_uniform_(proj.weight.view(proj.out_channels, -1))
            nn.init.zeros_(proj.bias)
    for module in model.modules():
        if isinstance(module, NoiseEmbedding):
            for layer in module.mlp[0], module.mlp[2]:
                nn.init.normal_(layer.weight, std=0.02)
    for module in model.modules():
        if isinstance(module, (DiTBlock, FinalLayer)):
            nn.init.zeros_(module.modulation[1].weight)
            nn.init.zeros_(module.modulation[1].bias)
        if isinstance(module, FinalLayer):
            nn.init.zeros_(module.linear.weight)
            nn.init.zeros_(module.linear.bias)


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
        self.patch_size, self.out_channels = patch_size, out_channels
        self.grid = image_size // patch_size
        self.encode = precision_encoding(fourier_features)
        self.patch_embed = PatchEmbed(image_size, patch_size, encoded_channels(in_channels, fourier_features), dim)
        self.noise_embed = NoiseEmbedding(dim, max_steps=max_steps)
        add_pos_embed(self, sincos_pos_embed([self.grid, self.grid], dim)[None], pos_embed)  # (1, N, D)
        self.blocks = nn.ModuleList(DiTBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.final = FinalLayer(dim, patch_size * patch_size * out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation (:func:`initialize_weights`)."""
        initialize_weights(self)

    def unpatchify(self, x: Tensor) -> Tensor:
        """``(B, N, p*p*out)`` -> ``(B, out, H, W)``."""
        p, g = self.patch_size, self.grid
        x = x.view(len(x), g, g, p, p, self.out_channels)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(len(x), self.out_channels, g * p, g * p)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x (B, C, H, W)``, ``t (B,)`` -> ``(B, out_channels, H, W)``."""
        # timm's PatchEmbed returns a transposed view (B, N, D); elementwise ops keep an input's layout,
        # so without this one copy the whole residual stream stays transposed and every LayerNorm and
        # Linear copies it again, forward and backward.
        tokens = self.patch_embed(self.encode(x)).contiguous() + self.pos_embed
        c = self.noise_embed(t)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.unpatchify(self.final(tokens, c))
