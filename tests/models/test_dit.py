"""The DiT's own properties (the backbone contract is in test_backbones.py)."""

import torch

from bsi.models import build_model


def test_the_residual_stream_is_contiguous():
    """timm's PatchEmbed hands over a transposed view; the stream must not keep that layout, or every
    LayerNorm and Linear of every block copies it (forward and backward)."""
    torch.manual_seed(0)
    model = build_model("dit", 2, 4, 8, dim=32, depth=2, num_heads=2, patch_size=2)
    layouts = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda module, args: layouts.append(args[0].is_contiguous()))
        block.register_forward_hook(lambda module, args, out: layouts.append(out.is_contiguous()))
    model(torch.randn(3, 2, 8, 8), torch.rand(3))
    assert layouts == [True] * 4
