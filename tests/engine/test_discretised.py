"""The discretised Gaussian's mean in O(1) work and its level draws, against the exact O(bins) sums."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bsi.engine import DiscretisedOutput, levels
from bsi.engine.discretised import (
    _mean_and_partials,
    discretised_level_draw,
    discretised_mean,
)
from bsi.engine.output import level_index
from bsi.engine.random import example_generators

EPS32 = torch.finfo(torch.float32).eps
# Every regime and its boundaries: the open edge bins, means far outside [-1, 1], scales from the
# denoiser's clamp minimum (1e-3) to its maximum (1e6).
GRID_M = torch.cat([torch.linspace(-3, 3, 481), torch.tensor([-1e30, -1e5, -1e3, -10.0, 10.0, 1e3, 1e5, 1e30])])
GRID_S = torch.logspace(-3, 6, 181)
BINS = [2, 17, 25, 26, 256]  # 25 and 26: either side of the widest float32 window (24 edges)


def exact(m: torch.Tensor, s: torch.Tensor, bins: int) -> dict[str, torch.Tensor]:
    """The O(bins) sums in float64: mean, its partials and their partials (for the rounding bounds)."""
    m, s = m.double()[..., None], s.double()[..., None]
    n_edges = bins - 1
    edges = (2 * torch.arange(1, bins, dtype=torch.float64) - 1 - n_edges) / n_edges
    w = 2 / n_edges
    z = (m - edges) / s
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    r = w / s[..., 0]
    return {
        "mean": (w / 2 * torch.erf(z / math.sqrt(2))).sum(-1),
        "dm": r * phi.sum(-1),
        "ds": -r * (z * phi).sum(-1),
        "dmm": -r / s[..., 0] * (z * phi).sum(-1),
        "dms": r / s[..., 0] * ((z * z - 1) * phi).sum(-1),
        "dss": r / s[..., 0] * ((2 * z - z**3) * phi).sum(-1),
    }


def grid(dtype=torch.float32):
    m, s = torch.meshgrid(GRID_M.to(dtype), GRID_S.to(dtype), indexing="ij")
    return m.contiguous(), s.contiguous()


def rounding_bound(value, d_m, d_s, m, s):
    """What float rounding of ``m - e`` and ``s`` alone moves a quantity by, in units of eps, plus one."""
    return value.abs() + (m.double().abs() + 1) * d_m.abs() + s.double() * d_s.abs()


@pytest.mark.parametrize("bins", BINS)
def test_mean_matches_the_exact_sum_to_float32_rounding(bins):
    m, s = grid()
    ref = exact(m, s, bins)
    got = discretised_mean(m, s, bins)
    assert got.dtype == torch.float32
    bound = 4 * EPS32 * (1 + (m.double().abs() + 1) * ref["dm"] + s.double() * ref["ds"].abs())
    err = (got.double() - ref["mean"]).abs()
    assert (err <= bound).all(), f"worst error {(err / bound).max():.2f} bounds"


@pytest.mark.parametrize("bins", BINS)
def test_gradients_match_the_exact_sums_to_float32_rounding(bins):
    m, s = grid()
    m.requires_grad_(True)
    s.requires_grad_(True)
    discretised_mean(m, s, bins).sum().backward()
    ref = exact(m.detach(), s.detach(), bins)
    # Relative to each gradient's scale at that s (its largest value over m), plus rounding of the inputs.
    for got, name, d_m, d_s in ((m.grad, "dm", "dmm", "dms"), (s.grad, "ds", "dms", "dss")):
        scale = ref[name].abs().amax(0, keepdim=True)
        bound = 4 * EPS32 * (scale + rounding_bound(ref[name], ref[d_m], ref[d_s], m.detach(), s.detach()))
        err = (got.double() - ref[name]).abs()
        assert (err <= bound).all(), f"{name}: worst error {(err / bound).max():.2f} bounds"


@pytest.mark.parametrize("bins", [17, 256])
def test_every_regime_on_every_element_gives_the_same_numbers(bins):
    # The gathered evaluation (CPU default) against where-merging every form (accelerator default).
    m, s = grid()
    gathered = _mean_and_partials(m, s, bins, grad=True, gather=True)
    merged = _mean_and_partials(m, s, bins, grad=True, gather=False)
    for a, b in zip(gathered, merged):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def precise_mean(m: float, s: float, bins: int) -> float:
    """The sum with each term's argument rounded once and the terms added exactly (math.fsum)."""
    n_edges = bins - 1
    terms = [math.erf((m * n_edges - (2 * j - 1 - n_edges)) / (n_edges * s * math.sqrt(2))) for j in range(1, bins)]
    return math.fsum(terms) / n_edges


@pytest.mark.parametrize("bins", [17, 256, 1024])
def test_float64_mean_is_accurate_to_float64_rounding(bins):
    w = 2 / (bins - 1)
    # scales in each float64 regime: window (32 edges), Euler-Maclaurin (from 1.9 w), moment expansion
    for s in (0.05 * w, 0.9 * w, 1.95 * w, 3 * w, 0.7, 2.5, 40.0):
        for m in (-1.3, -0.97, -0.2001, 0.0, 0.4123, 0.999, 2.5):
            got = discretised_mean(torch.tensor([m], dtype=torch.float64), torch.tensor([s], dtype=torch.float64), bins)
            assert got.dtype == torch.float64
            assert abs(got.item() - precise_mean(m, s, bins)) < 1e-14, (m, s)


@pytest.mark.parametrize("bins", [17, 256])
def test_gradcheck_in_float64(bins):
    w = 2 / (bins - 1)
    # inside each regime, away from the switches between them
    m = torch.tensor([-1.3, -0.99, -0.2001, 0.0, 0.37, 1.02, 2.0, 0.6, -0.8], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.1 * w, 0.5 * w, 1.5 * w, 4 * w, 0.3, 1.0, 3.0, 50.0, 0.02], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m_, s_: discretised_mean(m_, s_, bins), (m, s))


def test_bf16_inputs_are_computed_in_float32():
    g = torch.Generator().manual_seed(0)
    m = (torch.randn(64, 3, generator=g) * 0.7).bfloat16().requires_grad_(True)
    s = (torch.rand(64, 3, generator=g) * 0.3 + 1e-3).bfloat16().requires_grad_(True)
    out = discretised_mean(m, s, 256)
    assert out.dtype == torch.float32
    m32, s32 = m.detach().float().requires_grad_(True), s.detach().float().requires_grad_(True)
    ref = discretised_mean(m32, s32, 256)
    assert torch.equal(out, ref)
    out.sum().backward()
    ref.sum().backward()
    assert m.grad.dtype == torch.bfloat16
    assert torch.equal(m.grad, m32.grad.bfloat16()) and torch.equal(s.grad, s32.grad.bfloat16())


def test_output_mean_is_the_table_mean():
    g = torch.Generator().manual_seed(1)
    m, s = torch.randn(32, 4, generator=g), torch.rand(32, 4, generator=g) * 0.5 + 1e-3
    out = DiscretisedOutput.from_gaussian(m, s, 17)
    torch.testing.assert_close(out.mean, (out.probs * out.levels).sum(-1), atol=2e-6, rtol=0)
    torch.testing.assert_close(out.mean, discretised_mean(m, s, 17), atol=0, rtol=0)


def test_fewer_than_two_bins_is_an_error():
    with pytest.raises(ValueError, match="bins >= 2"):
        discretised_mean(torch.zeros(1), torch.ones(1), 1)


def level_masses(m: float, s: float, bins: int) -> np.ndarray:
    edges = np.concatenate([[-np.inf], (2 * np.arange(1, bins) - bins) / (bins - 1), [np.inf]])
    lo, hi = (edges[:-1] - m) / s, (edges[1:] - m) / s
    # upper-tail differences where the bin lies above m keep the small masses accurate
    return np.where(lo > 0, stats.norm.sf(lo) - stats.norm.sf(hi), stats.norm.cdf(hi) - stats.norm.cdf(lo))


@pytest.mark.parametrize(
    "m,s,bins",
    [(0.3, 0.2, 17), (-0.95, 0.1, 17), (2.0, 1.0, 17), (0.02, 1e-3, 17), (0.01, 0.02, 256), (-1.2, 0.05, 256), (0.1, 5.0, 2)],
)
def test_level_draws_have_the_level_probabilities(m, s, bins):
    n = 200_000
    draws = discretised_level_draw(torch.full((n,), m), torch.full((n,), s), bins, torch.Generator().manual_seed(7))
    k = level_index(draws, bins)
    assert torch.equal(draws, levels(bins)[k])  # exactly the levels
    counts = torch.bincount(k, minlength=bins).double().numpy()
    p = level_masses(m, s, bins)
    expected = n * p
    se = np.sqrt(n * p * (1 - p))
    assert (np.abs(counts - expected) <= 5 * se + 1).all()
    big = expected >= 5
    if big.sum() > 1:
        rest = expected[~big].sum(), counts[~big].sum()
        f_obs = np.append(counts[big], rest[1])
        f_exp = np.append(expected[big], rest[0])
        keep = f_exp > 0
        assert stats.chisquare(f_obs[keep], f_exp[keep] * f_obs[keep].sum() / f_exp[keep].sum()).pvalue > 1e-4


def test_level_draws_depend_only_on_each_examples_generator():
    g = torch.Generator().manual_seed(3)
    m, s = torch.randn(6, 5, generator=g), torch.rand(6, 5, generator=g) * 0.3 + 1e-3
    full = discretised_level_draw(m, s, 17, example_generators(11, range(6)))
    part = discretised_level_draw(m[2:4], s[2:4], 17, example_generators(11, range(2, 4)))
    assert torch.equal(full[2:4], part)


def test_output_samples_are_level_draws():
    g = torch.Generator().manual_seed(4)
    m, s = torch.randn(16, 3, generator=g), torch.rand(16, 3, generator=g) * 0.3 + 1e-3
    out = DiscretisedOutput.from_gaussian(m, s, 256)
    drawn = out.final_sample(torch.Generator().manual_seed(5))
    assert torch.equal(drawn, discretised_level_draw(m, s, 256, torch.Generator().manual_seed(5)))
