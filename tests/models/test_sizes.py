"""Every config and named size: output shapes, parameter counts, ``build_model`` on the config keys.

The paper sizes are built on the ``meta`` device: shapes and counts without the memory.
"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bsi.config import CONFIGS  # noqa: E402
from bsi.models import DiT, SequenceTransformer, UNet, build_model, count_parameters

# Our parameter counts, data (C, H, W), out_channels = C (point output; 2C adds a little to the
# output layer only).  Computed once from the code; a change here is a change of architecture.
DOCUMENTED = {
    # (config, model.name override or None, C, image size): parameters
    ("mlp", None, 1, 8): 154_304,  # the digits default (174_848 with out_channels = 2)
    ("mlp_v02", None, 1, 8): 168_016,  # bsi 0.2's digits default (179_344 with out_channels = 2)
    ("unet", None, 3, 32): 1_335_619,
    ("unet_paper", None, 3, 32): 30_593_155,
    ("dit", None, 3, 32): 32_609_712,  # DiT-S/4
    ("dit", "DiT-S/2", 3, 32): 32_499_084,
    ("dit", "DiT-B/2", 3, 32): 129_583_884,
    ("dit", "DiT-L/2", 3, 32): 456_864_780,
    ("dit", "DiT-XL/2", 3, 32): 673_736_844,
}

# Sequence backbones, data (C, L); text8 with a discrete BFN: 27 channels in (2 theta - 1) and out (logits).
SEQUENCE_DOCUMENTED = {
    # (config, C, length): parameters
    ("transformer", 27, 256): 5_011_227,
    ("transformer_paper", 27, 256): 257_091_867,  # the BFN paper's GPT-style net of this size is 170.2M (no adaLN)
}

# The DiT paper's counts (ImageNet 256px: 32x32x4 latents, patch 2, so the same 256 tokens) include a
# class embedding of 1001 x dim and a 4-channel input, 8-channel output; we have neither the labels
# nor those channel counts.
DIT_PAPER = {"S": (33e6, 384), "B": (130e6, 768), "L": (458e6, 1024), "XL": (675e6, 1152)}


def model_config(config: str, name: str | None = None) -> dict:
    overrides = [f"+model={config}"] + ([f"model.name={name}"] if name else [])
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return OmegaConf.to_container(compose(config_name=None, overrides=overrides).model, resolve=True)


def build_meta(config: str, name: str | None, channels: int, size: int, out_channels: int | None = None):
    with torch.device("meta"):
        return build_model(**model_config(config, name), in_channels=channels,
                           out_channels=out_channels or channels, image_size=size)


@pytest.mark.parametrize(("config", "name", "channels", "size"), list(DOCUMENTED))
def test_every_config_has_documented_size_and_shapes(config, name, channels, size):
    model = build_meta(config, name, channels, size, out_channels=2 * channels)
    x = torch.empty(3, channels, size, size, device="meta")
    assert model(x, torch.empty(3, device="meta")).shape == (3, 2 * channels, size, size)
    assert count_parameters(build_meta(config, name, channels, size)) == DOCUMENTED[(config, name, channels, size)]


@pytest.mark.parametrize(("config", "channels", "length"), list(SEQUENCE_DOCUMENTED))
def test_every_sequence_config_has_documented_size_and_shapes(config, channels, length):
    model = build_meta(config, None, channels, length)
    assert isinstance(model, SequenceTransformer)
    x = torch.empty(3, channels, length, device="meta")
    assert model(x, torch.empty(3, device="meta")).shape == (3, channels, length)
    assert count_parameters(model) == SEQUENCE_DOCUMENTED[(config, channels, length)]


def test_transformer_paper_is_the_bfn_text8_size():
    small, paper = build_meta("transformer", None, 27, 256), build_meta("transformer_paper", None, 27, 256)
    assert (len(small.blocks), small.pos_embed.shape, small.blocks[0].attn.num_heads) == (4, (1, 256, 256), 4)
    assert (len(paper.blocks), paper.pos_embed.shape, paper.blocks[0].attn.num_heads) == (24, (1, 256, 768), 12)
    assert paper.blocks[0].mlp.fc1.out_features == 4 * 768 and paper.blocks[0].mlp.drop1.p == 0.0
    assert "pos_embed" not in dict(paper.named_parameters())  # fixed sin-cos, as in the BFN paper
    # the BFN paper's network: 24 GPT-2 blocks (with LayerNorm affines) and no adaLN, 170.2M parameters;
    # ours adds the adaLN-Zero modulation (dim x 6 dim per block, dim x 2 dim at the end) and the noise MLP
    d = 768
    gpt_blocks = 24 * ((d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d)
    adaln = 24 * (6 * d * d + 6 * d - 4 * d) + (2 * d * d + 2 * d)
    noise = 256 * d + d + d * d + d
    embed, out = 27 * d + d, d * 27 + 27
    assert gpt_blocks + adaln + noise + embed + out == SEQUENCE_DOCUMENTED[("transformer_paper", 27, 256)]


def test_digits_default_has_the_bsi_papers_digits_mlp_shapes_given_its_input():
    """At width 256 with the reference's input (pixels, three Fourier features each, 32 sinusoids of t), the
    default MLP's matrices are the BSI paper's digits MLP's: 480 -> 256 -> 256 -> 64, 205,376 parameters."""
    with torch.device("meta"):
        model = build_model(**{**model_config("mlp"), "width": 256, "fourier_features": [2, 4]}, in_channels=1,
                            out_channels=1, image_size=8)
    shapes = [tuple(p.shape) for p in model.parameters() if p.dim() == 2]
    assert shapes == [(256, 480), (256, 256), (64, 256)]
    assert count_parameters(model) == 480 * 256 + 256 + 256 * 256 + 256 + 256 * 64 + 64 == 205_376


@pytest.mark.parametrize("size", list(DIT_PAPER))
def test_dit_counts_match_the_paper_less_its_class_embedding(size):
    paper, dim = DIT_PAPER[size]
    ours = DOCUMENTED[("dit", f"DiT-{size}/2", 3, 32)]
    assert ours + 1001 * dim == pytest.approx(paper, rel=0.01)


def test_configs_pick_the_right_architecture():
    unet, paper = build_meta("unet", None, 3, 32), build_meta("unet_paper", None, 3, 32)
    assert isinstance(unet, UNet) and isinstance(paper, UNet)
    assert (len(paper.down), len(paper.up), paper.stem.out_channels) == (32, 33, 128)
    assert paper.down[0].dropout.p == 0.1 and len(paper.mid_attn.norm.weight) == 128
    dit = build_meta("dit", "DiT-L/2", 3, 32)
    assert isinstance(dit, DiT) and len(dit.blocks) == 24 and dit.patch_size == 2
    assert dit.blocks[0].attn.num_heads == 16 and dit.pos_embed.shape == (1, 256, 1024)
    assert "pos_embed" not in dict(dit.named_parameters())  # fixed sin-cos by default


def test_build_model_names_and_overrides():
    with torch.device("meta"):
        # a DiT name alone picks the model and its size; explicit keys override the size
        dit = build_model("DiT-S/8", 3, 6, 32, depth=2, pos_embed="learned", dropout=0.05)
        assert (len(dit.blocks), dit.patch_size, dit.grid) == (2, 8, 4)
        assert "pos_embed" in dict(dit.named_parameters()) and dit.blocks[0].mlp.drop1.p == 0.05
        assert isinstance(build_model("unet", 1, 1, 8, channels=32, num_blocks=1, norm_groups=16), UNet)
        assert isinstance(build_model("label", 1, 1, 8, kind="mlp"), torch.nn.Module)
        for bad in [dict(name="resnet"), dict(name="DiT-M/2"), dict(name="unet", size="paper")]:
            with pytest.raises(ValueError):
                build_model(**bad, in_channels=1, out_channels=1, image_size=8)
        with pytest.raises(ValueError):
            build_model("DiT-S/4", 3, 3, 30)  # not a multiple of the patch


@pytest.mark.parametrize(("name", "options", "size"), [("unet", dict(channels=128, num_blocks=32), 8), ("DiT-S/2", {}, 32)])
def test_paper_architectures_start_at_exactly_zero(name, options, size):
    torch.manual_seed(0)
    model = build_model(name, 3, 6, size, **options)
    out = model(torch.randn(1, 3, size, size), torch.rand(1))
    assert out.shape == (1, 6, size, size) and torch.equal(out, torch.zeros_like(out))
