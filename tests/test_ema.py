"""The EMA of the weights: the closed-form weighted average, AveragedModel's state and arithmetic, resuming."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bsi.ema import EMA


def model_with_a_counter() -> nn.Module:
    """A float parameter and buffer and an integer buffer (a step counter, as BatchNorm keeps one)."""
    model = nn.Linear(3, 2).double()
    model.register_buffer("scale", torch.ones(2, dtype=torch.float64))
    model.register_buffer("count", torch.tensor(0))
    return model


def test_the_average_is_the_closed_form_weighted_sum():
    """avg_n = d^(n-1) w_1 + sum_{k=2..n} (1 - d) d^(n-k) w_k: the first update copies, then each lerps."""
    decay, n = 0.9, 6
    model = model_with_a_counter()
    ema = EMA(model, decay)
    gen = torch.Generator().manual_seed(0)
    weights = []
    for k in range(1, n + 1):
        with torch.no_grad():
            model.weight.copy_(torch.randn(2, 3, generator=gen, dtype=torch.float64))
            model.scale.fill_(k)
            model.count.fill_(10 * k)
        weights.append(model.weight.detach().clone())
        ema.update(model)
    want = decay ** (n - 1) * weights[0] + sum((1 - decay) * decay ** (n - k) * weights[k - 1] for k in range(2, n + 1))
    assert torch.allclose(ema.module.weight, want, rtol=1e-12, atol=0)
    scale = decay ** (n - 1) * 1 + sum((1 - decay) * decay ** (n - k) * k for k in range(2, n + 1))
    assert ema.module.scale.tolist() == pytest.approx([scale] * 2, rel=1e-12)
    assert int(ema.module.count) == 10 * n  # integer buffers follow the model, they are not averaged
    assert int(ema.n_averaged) == n
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_state_and_arithmetic_are_those_of_averaged_model():
    decay = 0.99
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 4, generator=gen)).square().mean().backward()  # also moves BatchNorm's statistics
        opt.step()
        ema.update(model)
        reference.update_parameters(model)
    mine, theirs = ema.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        if mine[key].is_floating_point() or key == "n_averaged":
            assert torch.equal(mine[key], theirs[key]), key
    # The one intended difference: an integer buffer follows the model (AveragedModel keeps its first copy).
    assert int(mine["module.1.num_batches_tracked"]) == int(model[1].num_batches_tracked) == 5


def test_a_loaded_average_continues_where_it_left_off():
    decay = 0.5
    model = model_with_a_counter()
    whole, first = EMA(model, decay), EMA(model, decay)
    for step in range(1, 4):
        with torch.no_grad():
            model.weight.fill_(step)
        whole.update(model)
        if step < 3:
            first.update(model)
    resumed = EMA(model, decay)
    resumed.load_state_dict(first.state_dict())  # after two updates: the third must average, not copy
    resumed.update(model)
    assert torch.equal(resumed.module.weight, whole.module.weight)
    assert resumed.module.weight[0, 0].item() == 0.5 * (0.5 * 1 + 0.5 * 2) + 0.5 * 3


def test_decay_outside_the_unit_interval_is_refused():
    for decay in (1.0, -0.1):
        with pytest.raises(ValueError, match="decay"):
            EMA(nn.Linear(1, 1), decay)


def test_one_update_is_the_per_tensor_lerp_bit_for_bit():
    """The foreach update equals ``avg.lerp(w, 1 - decay)`` per tensor exactly (float32, known values)."""
    decay = 0.999
    model = nn.Sequential(nn.Linear(5, 3), nn.LayerNorm(3))
    ema = EMA(model, decay)
    ema.update(model)  # the first update copies
    g = torch.Generator().manual_seed(2)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 3)
    ema.update(model)
    for name, new in model.state_dict().items():
        assert torch.equal(ema.module.state_dict()[name], before[name].lerp(new, 1 - decay)), name


def test_warmup_decays_follow_the_reference_schedule():
    from bsi.ema import decay_at

    assert [decay_at(n, 0.999) for n in range(3)] == [0.0, 0.999, 0.999]
    # warm-up N = 2: updates 0..3 copy; update n >= 4 uses 1 - (n - 2)^(-2/3)
    assert [decay_at(n, 0.999, warmup=2) for n in range(4)] == [0.0] * 4
    assert decay_at(4, 0.999, warmup=2) == pytest.approx(1 - 2 ** (-2 / 3))  # 0.37004
    assert decay_at(10, 0.999, warmup=2) == pytest.approx(0.75)  # 8^(-2/3) = 1/4
    assert decay_at(10**9, 0.999, warmup=2) == 0.999  # capped at the configured decay


def test_an_average_with_warmup_copies_then_lerps_by_the_schedule():
    model = nn.Linear(1, 1, bias=False).double()
    ema = EMA(model, 0.999, warmup=1)
    seen = []
    for k in range(5):
        with torch.no_grad():
            model.weight.fill_(float(k))
        ema.update(model)
        seen.append(float(ema.module.weight))
    # updates 0, 1, 2 copy (0, 1, 2); update 3: d = 1 - 2^(-2/3); update 4: d = 1 - 3^(-2/3)
    d3, d4 = 1 - 2 ** (-2 / 3), 1 - 3 ** (-2 / 3)
    after3 = d3 * 2 + (1 - d3) * 3
    assert seen[:3] == [0.0, 1.0, 2.0]
    assert seen[3] == pytest.approx(after3) and seen[4] == pytest.approx(d4 * after3 + (1 - d4) * 4)
    with pytest.raises(ValueError, match="warm-up must be an integer >= 0"):
        EMA(model, 0.9, warmup=-1)
