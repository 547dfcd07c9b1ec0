"""A DiT-style transformer over the positions of a sequence (text8), conditioned on ``t`` by adaLN-Zero.

One token per position (patch size 1): a linear map of the ``C_in`` channels at each position to
``dim``, plus a position embedding, then :mod:`~bsi.models.dit`'s blocks and final layer, and
DiT's initialisation (so the output is exactly 0 until trained).  Attention is bidirectional: the
denoiser sees the whole sequence's belief at once (BFN is not autoregressive).

For text8 with a discrete BFN, ``C_in = C_out = 27``: the input is ``2 theta - 1`` of the class
probabilities ``theta`` at each position, the output 27 logits per position.  The BFN paper's text8
network is a 24-layer, 768-wide, 12-head transformer (GPT-2 small's width and heads, twice its
depth) with fixed sin-cos positions, ``t`` added to the input embedding and no adaLN: 170.2M
parameters; the same size here (``model=transformer_paper``) is 257.1M, the difference being mostly
adaLN-Zero's ``dim x 6 dim`` modulation in every block.
"""

from __future__ import annotations

from torch import Tensor, nn

from .dit import (
    DiTBlock,
    FinalLayer,
    add_pos_embed,
    initialize_weights,
    sincos_pos_embed,
)
from .embeddings import NoiseEmbedding


class SequenceTransformer(nn.Module):
    """``F(x (B, C, L), t (B,)) -> (B, out_channels, L)``, a diffusion transformer on 1D data.

    Args:
        in_channels, out_channels: channels per position of the input and the output.
        image_size: the sequence length ``L`` (the name every backbone takes for its data's size).
        dim, depth, num_heads: width, number of blocks and attention heads.
        mlp_ratio: hidden width of the blocks' MLPs relative to ``dim``.
        dropout: after attention and in the MLPs.
        pos_embed: ``"sincos"`` (fixed 1D sine-cosine) or ``"learned"`` (initialised to it).
        max_steps: the most sampling steps expected (sets the noise embedding's top frequency).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        dim: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        pos_embed: str = "sincos",
        max_steps: int = 1000,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.length = in_channels, out_channels, image_size
        self.embed = nn.Linear(in_channels, dim)
        self.noise_embed = NoiseEmbedding(dim, max_steps=max_steps)
        add_pos_embed(self, sincos_pos_embed([image_size], dim)[None], pos_embed)  # (1, L, D)
        self.blocks = nn.ModuleList(DiTBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.final = FinalLayer(dim, out_channels)
        initialize_weights(self)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x (B, C, L)``, ``t (B,)`` -> ``(B, out_channels, L)``."""
        if x.ndim != 3 or x.shape[1:] != (self.in_channels, self.length):
            raise ValueError(
                f"SequenceTransformer takes sequences (B, {self.in_channels}, {self.length}), got {tuple(x.shape)}"
                + (" (for images use dit, unet or mlp)" if x.ndim == 4 else "")
            )
        tokens = self.embed(x.transpose(1, 2)) + self.pos_embed  # (B, L, D)
        c = self.noise_embed(t)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.final(tokens, c).transpose(1, 2).contiguous()
