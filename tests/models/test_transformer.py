"""The sequence transformer at text8's shape: ``(B, 27, 256)`` in and out, 27 class probabilities in,
27 logits out.  (The generic backbone contract on tiny inputs is in ``test_backbones.py``.)

A small width and depth keep every test to well under a second; the length is text8's.
"""

from __future__ import annotations

import math

import pytest
import torch

from bsi.models import SequenceTransformer, build_model, count_parameters
from bsi.models.dit import sincos_pos_embed

CLASSES, LENGTH, BATCH = 27, 256, 2
TINY = dict(dim=32, depth=2, num_heads=2)


def tiny(seed: int = 0, **options) -> SequenceTransformer:
    torch.manual_seed(seed)
    return build_model("transformer", CLASSES, CLASSES, LENGTH, **{**TINY, **options})


def perturbed(seed: int = 0, **options) -> SequenceTransformer:
    """A tiny model with every all-zero tensor (adaLN-Zero, the output layer) given random values."""
    model = tiny(seed, **options)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def family(seed: int = 0, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random tokens, a BFN-style input ``2 theta - 1`` of beliefs leaning towards them, and ``t``."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(CLASSES, (batch, LENGTH), generator=g)
    logits = 2.0 * torch.nn.functional.one_hot(tokens, CLASSES).float() + torch.randn(batch, LENGTH, CLASSES, generator=g)
    theta = logits.softmax(-1).transpose(1, 2)  # (B, 27, L)
    return tokens, 2 * theta - 1, torch.rand(batch, generator=g)


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_text8_shape_and_exactly_zero_at_init(pos_embed):
    model = tiny(pos_embed=pos_embed)
    _, x, t = family()
    out = model(x, t)
    assert out.shape == (BATCH, CLASSES, LENGTH) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out, torch.zeros_like(out))
    assert ("pos_embed" in dict(model.named_parameters())) == (pos_embed == "learned")
    assert "pos_embed" not in model.state_dict() or pos_embed == "learned"  # a fixed embedding isn't saved


def test_gradients_reach_every_parameter():
    model = perturbed(pos_embed="learned")
    tokens, x, t = family()
    torch.nn.functional.cross_entropy(model(x, t), tokens).backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not silent, f"no gradient reaches {silent}"


def test_eval_is_deterministic_and_dropout_trains():
    model = perturbed(dropout=0.1)
    _, x, t = family()
    assert torch.equal(model(x, t), model(x, t))
    model.train()
    assert not torch.equal(model(x, t), model(x, t))


def test_output_depends_on_t():
    model = perturbed()
    _, x, t = family(batch=1)
    x = x.expand(3, -1, -1)
    out = model(x, torch.tensor([0.0, 0.5, 1.0]))
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[1] - out[2]).abs().max() > 1e-3
    torch.testing.assert_close(model(x, t.expand(3)), model(x[:1], t).expand(3, -1, -1))


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_positions_matter(pos_embed):
    """Without a position embedding a transformer is permutation-equivariant; with one it is not."""
    model = perturbed(pos_embed=pos_embed)
    _, x, t = family()
    perm = torch.randperm(LENGTH, generator=torch.Generator().manual_seed(3))
    moved = model(x[..., perm], t)
    assert (moved - model(x, t)[..., perm]).abs().max() > 1e-2
    with torch.no_grad():
        model.pos_embed.zero_()  # the control: the same network, blind to positions
    torch.testing.assert_close(model(x[..., perm], t), model(x, t)[..., perm], atol=1e-5, rtol=1e-4)


def test_bidirectional_attention():
    """Every output position reads every input position (BFN is not autoregressive)."""
    model = perturbed()
    _, x, t = family(batch=1)
    x.requires_grad_(True)
    model(x, t)[0, :, 0].sum().backward()  # the first position's logits...
    reach = x.grad[0].abs().sum(0)
    assert (reach > 0).all()  # ...depend on the last position too


def test_short_training_lowers_the_cross_entropy():
    """From uniform logits (loss log 27) to a clearly lower cross entropy in 60 Adam steps."""
    model = tiny().train()
    tokens, x, t = family(batch=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x, t), tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(CLASSES))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_bf16_autocast_and_compile():
    model = perturbed()
    _, x, t = family()
    exact = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t)
    assert low.shape == exact.shape and torch.isfinite(low).all()
    assert (low.float() - exact).abs().max() < 0.05 * exact.abs().max()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, t), exact)


def test_only_sequences_of_its_shape():
    model = tiny()
    t = torch.rand(2)
    for bad in [torch.zeros(2, CLASSES, 16, 16), torch.zeros(2, LENGTH), torch.zeros(2, CLASSES, LENGTH // 2),
                torch.zeros(2, 3, LENGTH)]:
        with pytest.raises(ValueError, match="sequences"):
            model(bad, t)
    with pytest.raises(ValueError, match="pos_embed"):
        tiny(pos_embed="rotary")


def test_sincos_1d_known_values():
    pe = sincos_pos_embed([LENGTH], 8)
    assert pe.shape == (LENGTH, 8)
    n = torch.arange(LENGTH, dtype=torch.float64)[:, None]
    w = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 4)
    torch.testing.assert_close(pe.double(), torch.cat([(n * w).sin(), (n * w).cos()], dim=1), atol=1e-4, rtol=0)
    assert len(set(map(tuple, pe.tolist()))) == LENGTH  # every position told apart


def test_tiny_count():
    # embed 27*32+32, noise 256*32+32+32*32+32, 2 blocks of 18_912, final 2*32*32+64 + 32*27+27
    assert count_parameters(tiny()) == 896 + 9_280 + 2 * 18_912 + 2_112 + 891
