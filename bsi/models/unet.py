"""The U-Net of VDM's CIFAR-10 model: residual blocks at full resolution, no downsampling.

``num_blocks`` residual blocks on the way down, each output kept; a middle of block, attention,
block; ``num_blocks + 1`` blocks on the way up, each eating one kept activation (the stem's
output is the extra one).  The noise embedding enters every residual block.  Residual branches
end in zero-initialised layers (as in VDM), so every block starts as the identity and the
65-block paper network trains from the first step.

Sizes are set by ``channels`` and ``num_blocks``; the presets are hydra configs
(``bsi/configs/model/unet.yaml``: small, for CPUs; ``unet_paper.yaml``: VDM's 128 channels, 32 blocks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .embeddings import NoiseEmbedding, encoded_channels, precision_encoding

CONDITIONINGS = ("add", "scale_shift")


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # Narrow test networks have fewer channels than the usual 32 groups.
    return nn.GroupNorm(min(groups, channels), channels)


class ResidualBlock(nn.Module):
    """``(B, in, H, W)``, activated embedding ``silu(emb)`` ``(B, E)`` -> ``(B, out, H, W)``.

    ``conditioning="add"`` adds a projection of the embedding after the first convolution (VDM);
    ``"scale_shift"`` modulates the second normalisation instead (``norm(h) (1 + scale) + shift``).
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float,
                 conditioning: str = "add", norm_groups: int = 32):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning '{conditioning}': choose one of {', '.join(CONDITIONINGS)}")
        self.scale_shift = conditioning == "scale_shift"
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        # The embedding's SiLU is shared by all blocks (UNet applies it once); index 1 keeps the
        # parameters' names (cond.1.*) of checkpoints from when each block applied it.
        cond_channels = out_channels * (2 if self.scale_shift else 1)
        self.cond = nn.Sequential(nn.Identity(), nn.Linear(embedding_dim, cond_channels))
        self.norm2 = group_norm(out_channels, norm_groups)
        if not self.scale_shift and self.norm2.num_groups == out_channels:
            # With one channel per group, the normalisation subtracts the added per-channel embedding
            # again: the network would silently ignore the noise level.
            raise ValueError(f"conditioning 'add' with {out_channels} channels in {norm_groups} GroupNorm groups is "
                             "undone by the normalisation: use norm_groups below the channels or conditioning "
                             "'scale_shift'")
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        for layer in self.cond[1], self.conv2:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        cond = self.cond[1](emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = cond.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + cond)
        h = self.conv2(self.dropout(nn.functional.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all ``H*W`` positions: ``(B, C, H, W)`` -> ``(B, C, H, W)``."""

    def __init__(self, channels: int, num_heads: int = 1, norm_groups: int = 32):
        # timm (and the torchvision it imports) only for a U-Net that has attention.
        from timm.models.vision_transformer import Attention

        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.attn = Attention(channels, num_heads=num_heads, qkv_bias=True)
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        return x + self.attn(tokens).transpose(1, 2).reshape(x.shape)


class UNet(nn.Module):
    """``F(x (B, C, H, W), t (B,)) -> (B, out_channels, H, W)``, VDM's full-resolution U-Net.

    Args:
        in_channels, out_channels: data and output channels.
        image_size: accepted for a uniform signature; the network works at any size.
        channels: width of every block (VDM: 128).
        num_blocks: residual blocks on the down path; the up path has one more (VDM: 32).
        dropout: dropout inside the residual blocks (VDM: 0.1).
        attention: one self-attention block in the middle.
        num_heads: heads of that attention (VDM: 1).
        conditioning: ``"add"`` (VDM) or ``"scale_shift"``, see :class:`ResidualBlock`.
        norm_groups: GroupNorm groups (at most the channels; fewer than them with ``conditioning="add"``,
            whose per-channel embedding a group of one channel would normalise away).
        fourier_features: ``[k_min, k_max]`` of the precision encoding, or ``None``.
        max_steps: the most sampling steps expected (sets the noise embedding's top frequency).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        channels: int = 128,
        num_blocks: int = 32,
        dropout: float = 0.1,
        attention: bool = True,
        num_heads: int = 1,
        conditioning: str = "add",
        norm_groups: int = 32,
        fourier_features: Sequence[int] | None = (6, 8),
        max_steps: int = 1000,
    ):
        super().__init__()
        embedding_dim = 4 * channels
        block = dict(embedding_dim=embedding_dim, dropout=dropout, conditioning=conditioning, norm_groups=norm_groups)
        self.encode = precision_encoding(fourier_features)
        self.embed = NoiseEmbedding(embedding_dim, max_steps=max_steps, features=channels)
        self.stem = nn.Conv2d(encoded_channels(in_channels, fourier_features), channels, 3, padding=1)
        self.down = nn.ModuleList(ResidualBlock(channels, channels, **block) for _ in range(num_blocks))
        self.mid1 = ResidualBlock(channels, channels, **block)
        self.mid_attn = AttentionBlock(channels, num_heads, norm_groups) if attention else nn.Identity()
        self.mid2 = ResidualBlock(channels, channels, **block)
        self.up = nn.ModuleList(ResidualBlock(2 * channels, channels, **block) for _ in range(num_blocks + 1))
        self.norm_out = group_norm(channels, norm_groups)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)
        # A zero output makes the untrained denoiser the preconditioning's baseline.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x (B, C, H, W)``, ``t (B,)`` -> ``(B, out_channels, H, W)``."""
        emb = nn.functional.silu(self.embed(t))  # once, not once per block
        h = self.stem(self.encode(x))
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))
