"""The backbone contract, checked on small variants of every model.

``F(x (B, C, *spatial), t (B,)) -> (B, out_channels, *spatial)``, images ``(H, W)`` or sequences
``(L,)`` (the transformer): exactly zero at init, gradients reach every parameter, deterministic in
eval mode, actually conditioned on ``t``, no mixing across the batch, trainable, and the same under
bf16 autocast and ``torch.compile`` (to within their precision).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bsi.models import build_model, count_parameters

C, OUT, SIZE, BATCH = 2, 4, 8, 4  # out_channels = 2C, as for a discretised output

SMALL = {
    "mlp": dict(width=64, num_blocks=2, embedding_dim=32, dropout=0.1, fourier_features=[2, 4]),
    "mlp_v02": dict(width=64, num_blocks=2, embedding_dim=32, dropout=0.1, fourier_features=[2, 4], block_layers=2,
                    norm=True, time_mlp=True),
    "unet": dict(channels=16, num_blocks=2, dropout=0.1, norm_groups=8),
    "unet_scale_shift": dict(channels=16, num_blocks=1, dropout=0.1, norm_groups=8, conditioning="scale_shift"),
    "dit": dict(dim=32, depth=2, num_heads=2, patch_size=2, dropout=0.1, pos_embed="learned"),
    "transformer": dict(dim=32, depth=2, num_heads=2, dropout=0.1, pos_embed="learned"),
}
SEQUENCES = {"transformer"}  # backbones of 1D data (B, C, L); the rest take images (B, C, H, W)


def spatial(key: str) -> tuple[int, ...]:
    return (SIZE,) if key.split("_")[0] in SEQUENCES else (SIZE, SIZE)


def small_model(key: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(key.split("_")[0], C, OUT, SIZE, **SMALL[key])


def perturb_zero_init(model: nn.Module, scale: float = 0.1, seed: int = 1) -> nn.Module:
    """Give every all-zero tensor (output layers, adaLN-Zero, zeroed residual branches) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


def inputs(key: str, seed: int = 0, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, C, *spatial(key), generator=g), torch.rand(batch, generator=g)


@pytest.fixture(params=list(SMALL))
def key(request) -> str:
    return request.param


def test_exactly_zero_at_init(key):
    model = small_model(key)
    x, t = inputs(key)
    out = model(x, t)
    assert out.shape == (BATCH, OUT, *spatial(key)) and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))


def test_gradients_reach_every_parameter(key):
    model = perturb_zero_init(small_model(key)).eval()
    x, t = inputs(key)
    model(x, t).square().mean().backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not silent, f"no gradient reaches {silent}"


def test_eval_is_deterministic_and_dropout_trains(key):
    model = perturb_zero_init(small_model(key))
    x, t = inputs(key)
    model.eval()
    assert torch.equal(model(x, t), model(x, t))
    model.train()
    assert not torch.equal(model(x, t), model(x, t))  # every small variant has dropout 0.1


def test_conditioning_on_t_is_used(key):
    """Same input, targets that depend on t alone: only a model that reads t can fit them."""
    model = small_model(key).train()
    t = torch.linspace(0, 1, 8)
    x = inputs(key, batch=1)[0].expand(8, C, *spatial(key))
    y = torch.cos(torch.pi * t).view(8, 1, *(1 for _ in spatial(key))).expand(8, OUT, *spatial(key))
    blind = y.var(dim=0, unbiased=False).mean().item()  # the best MSE without t: predict the mean
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss = (model(x, t) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * blind


def test_examples_do_not_mix(key):
    model = perturb_zero_init(small_model(key)).eval()
    x, t = inputs(key)
    whole = model(x, t)
    for i in range(BATCH):
        torch.testing.assert_close(model(x[i : i + 1], t[i : i + 1]), whole[i : i + 1], atol=1e-5, rtol=1e-4)


def test_short_training_fits_a_tiny_batch(key):
    """From the zero output (loss = E y^2 = 1) to a clearly lower MSE in 60 Adam steps."""
    model = small_model(key).train()
    x, t = inputs(key)
    y = torch.randn(BATCH, OUT, *spatial(key), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = (model(x, t) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(y.square().mean().item())
    assert losses[-1] < 0.25 * losses[0], losses[::10]


def test_bf16_autocast_matches_fp32(key):
    model = perturb_zero_init(small_model(key)).eval()
    x, t = inputs(key)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t)
    exact = model(x, t)
    assert low.shape == exact.shape and torch.isfinite(low).all()
    assert (low.float() - exact).abs().max() < 0.05 * exact.abs().max()


def test_compiles_without_graph_breaks(key):
    model = perturb_zero_init(small_model(key)).eval()
    x, t = inputs(key)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a break is an error
    torch.testing.assert_close(compiled(x, t), model(x, t))


def test_parameter_counts_of_the_small_variants():
    counts = {k: count_parameters(small_model(k)) for k in SMALL}
    assert counts == {"mlp": 84_416, "mlp_v02": 95_232, "unet": 57_812, "unet_scale_shift": 48_660, "dit": 52_080, "transformer": 49_700}


def test_mlp_reads_its_input_in_the_order_of_the_flattened_encoded_image():
    """The MLP concatenates pixels, Fourier features and noise features without building the encoded image;
    its first layer must see them in the order that flattening the encoded image gives (checkpoints rely on it)."""
    model = perturb_zero_init(small_model("mlp")).eval()
    x, t = inputs("mlp")
    h = torch.cat([model.encode(x).flatten(1), model.embed(t)], dim=1)
    expected = model.proj_out(nn.functional.silu(model.norm_out(model.blocks(model.proj_in(h))))).view(x.shape[0], OUT,
                                                                                                          SIZE, SIZE)
    torch.testing.assert_close(model(x, t), expected, rtol=0, atol=0)


def test_unet_rejects_an_added_embedding_that_its_group_norm_removes():
    """With one channel per GroupNorm group, a per-channel embedding added before the norm is subtracted again."""
    norm = nn.GroupNorm(4, 4)
    h, shift = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 1, 1)
    torch.testing.assert_close(norm(h + shift), norm(h))  # the fact behind the check
    with pytest.raises(ValueError, match="use norm_groups below the channels or conditioning 'scale_shift'"):
        build_model("unet", C, OUT, SIZE, channels=8, num_blocks=1, norm_groups=8)
    build_model("unet", C, OUT, SIZE, channels=8, num_blocks=1, norm_groups=8, conditioning="scale_shift")
    build_model("unet", C, OUT, SIZE, channels=8, num_blocks=1, norm_groups=4)
