"""Discretised output distributions: bin masses, tails, the mixture receiver's KL."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from bsi.engine import DiscretisedOutput, discretised_gaussian_log_prob, levels
from bsi.engine.output import PointOutput


def reference_masses(m: float, s: float, bins: int) -> np.ndarray:
    c = np.linspace(-1, 1, bins)
    edges = np.concatenate([[-np.inf], (c[1:] + c[:-1]) / 2, [np.inf]])
    # logsf/logcdf differences in float64 via scipy: an independent implementation
    upper = stats.norm.cdf((edges[1:] - m) / s)
    lower = stats.norm.cdf((edges[:-1] - m) / s)
    upper_sf = stats.norm.sf((edges[1:] - m) / s)
    lower_sf = stats.norm.sf((edges[:-1] - m) / s)
    return np.where((edges[:-1] + edges[1:]) / 2 > m, lower_sf - upper_sf, upper - lower)


@pytest.mark.parametrize("bins", [2, 17, 256])
@pytest.mark.parametrize("scale", [1.0, 0.1, 1e-3, 1e-6])
@pytest.mark.parametrize("m", [-1.3, -1.0, -0.2001, 0.0, 0.37, 1.0])
def test_bin_masses_match_integral(bins, scale, m):
    out = DiscretisedOutput.from_gaussian(torch.tensor([[m]]), torch.tensor([[scale]]), bins)
    p = out.probs[0, 0].double().numpy()
    ref = reference_masses(m, scale, bins)
    assert abs(p.sum() - 1) < 1e-5
    np.testing.assert_allclose(p, ref, atol=2e-6, rtol=1e-4)


def test_tail_log_masses_stay_accurate_in_float32():
    # A bin 30 standard deviations away: mass ~ 1e-197, far below float32's range, but its log is exact.
    m, s = torch.tensor([[0.0]]), torch.tensor([[1e-3]])
    out = DiscretisedOutput.from_gaussian(m, s, 17)
    k = 9  # level 0.125, bin [0.0625, 0.1875]: 62.5 to 187.5 standard deviations above m
    expected = stats.norm.logsf(62.5) + math.log1p(-math.exp(stats.norm.logsf(187.5) - stats.norm.logsf(62.5)))
    assert out.log_probs.dtype == torch.float32
    assert torch.isfinite(out.log_probs).all()
    assert abs(out.log_probs[0, 0, k].item() - expected) / abs(expected) < 1e-5


def test_gradients_are_finite_at_extreme_scales():
    m = torch.tensor([[-1.5, 0.03, 0.99, 2.0]], requires_grad=True)
    log_s = torch.tensor([[-14.0, -14.0, 0.0, -5.0]], requires_grad=True)
    out = DiscretisedOutput.from_gaussian(m, log_s.exp(), 256)
    (out.mean.sum() + out.log_probs.clamp_min(-1e4).sum()).backward()
    assert torch.isfinite(m.grad).all() and torch.isfinite(log_s.grad).all()


def test_mean_moves_onto_nearest_level_as_scale_shrinks():
    c = levels(17)
    m = torch.tensor([[c[5] + 0.3 * (c[6] - c[5])]])
    errors = []
    for s in [1e-1, 3e-2, 1e-2, 1e-3]:
        x_hat = DiscretisedOutput.from_gaussian(m, torch.tensor([[s]]), 17).mean
        errors.append(abs(x_hat.item() - c[5].item()))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-6


def test_log_prob_of_point_output_is_discretised_gaussian():
    x = torch.tensor([[-1.0, 0.0, 1.0]])
    x_hat = torch.tensor([[-0.98, 0.01, 0.5]])
    alpha_r = 100.0
    got = PointOutput(x_hat, alpha_r, bins=3).log_prob(x)
    s = alpha_r**-0.5
    ref = [
        stats.norm.logcdf((-0.5 + 0.98) / s),
        math.log(stats.norm.cdf((0.5 - 0.01) / s) - stats.norm.cdf((-0.5 - 0.01) / s)),
        stats.norm.logsf((0.5 - 0.5) / s),
    ]
    np.testing.assert_allclose(got[0].numpy(), ref, rtol=1e-5)
    got2 = discretised_gaussian_log_prob(x, x_hat, torch.full_like(x_hat, s), 3)
    torch.testing.assert_close(got, got2)


def test_mixture_kl_matches_quadrature():
    """One-draw estimate of KL(N(x, 1/alpha) || sum_k p_k N(c_k, 1/alpha)) against quadrature over y."""
    bins, alpha, x = 5, 30.0, 0.5
    out = DiscretisedOutput.from_gaussian(torch.tensor([[0.2]]), torch.tensor([[0.3]]), bins)
    p, c = out.probs[0, 0].double().numpy(), np.linspace(-1, 1, bins)
    sd = alpha**-0.5

    def integrand(y):
        log_s = stats.norm.logpdf(y, x, sd)
        log_r = np.log(np.sum(p * stats.norm.pdf(y, c, sd)))
        return np.exp(log_s) * (log_s - log_r)

    exact, _ = integrate.quad(integrand, x - 12 * sd, x + 12 * sd, limit=200)
    n = 200_000
    xs = torch.full((n, 1), x)
    big = DiscretisedOutput(out.log_probs.expand(n, 1, bins))
    draws = big.measurement_kl(xs, torch.full((n,), alpha), generator=torch.Generator().manual_seed(0)).double()
    est, se = draws.mean().item(), draws.std().item() / n**0.5
    assert abs(est - exact) < 4 * se + 1e-4, (est, exact, se)
    # it is far below the point prediction's alpha/2 (x - x_hat)^2 only when mass is on the right level
    assert exact > 0


def test_sampling_returns_levels_only():
    out = DiscretisedOutput.from_gaussian(torch.randn(64, 3) * 0.5, torch.rand(64, 3) * 0.3 + 1e-3, 17)
    draws = out.final_sample(torch.Generator().manual_seed(0))
    on_level = (draws[..., None] - levels(17)).abs().min(-1).values
    assert on_level.max() < 1e-6
    y = out.sample_measurement(torch.full((64,), 1e8), torch.Generator().manual_seed(1))
    assert (y[..., None] - levels(17)).abs().min(-1).values.max() < 1e-3


BOUNDS = [-math.inf, -300.0, -45.0, -37.2, -36.5, -35.0, -20.0, -12.8, -12.0, -11.2, -10.8, -8.0, -3.0, -1.0,
          -0.31, -1e-3, 0.0, 2e-3, 0.3, 1.0, 3.0, 8.0, 10.8, 11.2, 12.0, 12.8, 20.0, 35.0, 36.5, 37.2, 45.0,
          300.0, math.inf]


def exact_log_mass(lo: float, hi: float) -> tuple[float, float, float, float]:
    """``log(Phi(hi) - Phi(lo))``, its partial derivatives in ``lo`` and ``hi``, at 60 digits (mpmath), and
    the mass's condition: the larger tail over the mass (how far a difference of the two tails
    magnifies their rounding), at least 1."""
    import mpmath

    with mpmath.workdps(60):
        # the upper tail of a positive interval by symmetry, so that no digits cancel in 60-digit arithmetic
        lo_, hi_ = (-mpmath.mpf(hi), -mpmath.mpf(lo)) if lo + hi > 0 else (mpmath.mpf(lo), mpmath.mpf(hi))
        mass = mpmath.ncdf(hi_) - mpmath.ncdf(lo_)
        pdf = lambda z: mpmath.npdf(z) if mpmath.isfinite(z) else mpmath.mpf(0)  # noqa: E731
        condition = max(1.0, float(mpmath.ncdf(hi_) / mass))
        return float(mpmath.log(mass)), float(-pdf(mpmath.mpf(lo)) / mass), float(pdf(mpmath.mpf(hi)) / mass), condition


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gather", [True, False])
def test_log_interval_mass_matches_60_digit_arithmetic(dtype, gather):
    # Every pair of bounds from the far tails through 0, across each form's switch (0, -tail, -floor
    # for both dtypes), in both halves; intervals at least 1e-3 standard deviations wide.
    from bsi.engine.output import log_interval_mass

    pairs = [(a, b) for a in BOUNDS for b in BOUNDS if a < b and b - a >= 1e-3]
    lo = torch.tensor([p[0] for p in pairs], dtype=dtype, requires_grad=True)
    hi = torch.tensor([p[1] for p in pairs], dtype=dtype, requires_grad=True)
    got = log_interval_mass(lo, hi, gather=gather)
    got.sum().backward()
    eps = torch.finfo(dtype).eps
    for i, (a, b) in enumerate(pairs):
        value, d_lo, d_hi, condition = exact_log_mass(a, b)
        # a narrow interval loses digits to cancellation, in the difference of its tails (or of their logs)
        assert abs(got[i].item() - value) <= 8 * eps * condition * (1 + abs(value)), (a, b, got[i].item(), value)
        # the gradient as a vector, relative to its size: a bound far beyond the other one's reach
        # has a derivative far below the other's, which may come out as 0
        size = max(abs(d_lo), abs(d_hi))
        relative = 1e-4 if dtype == torch.float32 else 1e-9
        for grad, exact in ((lo.grad[i].item(), d_lo), (hi.grad[i].item(), d_hi)):
            assert math.isfinite(grad)
            assert abs(grad - exact) <= relative * size + 1e-20, (a, b, grad, exact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("bins", [2, 17, 256])
def test_bin_log_mass_and_its_gradient_match_60_digit_arithmetic(dtype, gather, bins):
    # Every level against means inside, on and beyond the levels, at scales from far below a bin to
    # far above the range; the edge bins are open.
    means = [-1.5, -1.0, -0.97, -0.2, 0.0, 0.33, 1.0, 1.4]
    scales = [1e-4, 1e-2, 0.3, 5.0]
    c = np.linspace(-1, 1, bins)
    k = np.arange(bins) if bins <= 17 else np.array([0, 1, 100, 127, 128, 200, 254, 255])
    grid = [(kk, m, s) for kk in k for m in means for s in scales]
    x = torch.tensor([c[kk] for kk, _, _ in grid], dtype=dtype)
    mean = torch.tensor([m for _, m, _ in grid], dtype=dtype, requires_grad=True)
    scale = torch.tensor([s for _, _, s in grid], dtype=dtype, requires_grad=True)
    got = discretised_gaussian_log_prob(x, mean, scale, bins, gather=gather)
    got.sum().backward()
    eps, half = torch.finfo(dtype).eps, 1 / (bins - 1)
    for i, (kk, m, s) in enumerate(grid):
        lo = -math.inf if kk == 0 else (c[kk] - half - m) / s
        hi = math.inf if kk == bins - 1 else (c[kk] + half - m) / s
        value, d_lo, d_hi, condition = exact_log_mass(lo, hi)
        d_mean = -(d_lo + d_hi) / s
        d_scale = -sum(b * d for b, d in ((lo, d_lo), (hi, d_hi)) if math.isfinite(b)) / s
        # the bounds are rounded: level and mean to eps of the range, the scale to eps of itself
        rounding = eps * (abs(d_mean) * (2 + abs(m)) + abs(d_scale) * s)
        assert abs(got[i].item() - value) <= 8 * eps * condition * (1 + abs(value)) + 4 * rounding, (
            kk, m, s, got[i].item(), value)
        # and the derivatives move with the rounded bounds, by about their size per standard deviation
        shift = eps * (2 + abs(m)) / s * (1 + max(abs(b) for b in (lo, hi) if math.isfinite(b)))
        size = max(abs(d_mean), abs(d_scale))
        # a narrow bin's derivatives are differences of the two bounds' larger ones, as ill-conditioned
        # as its mass
        partials = max(abs(d_lo), abs(d_hi)) * (1 + max(abs(b) for b in (lo, hi) if math.isfinite(b))) / s
        tolerance = ((1e-4 if dtype == torch.float32 else 1e-9) * size + 4 * shift * size
                     + 8 * eps * (condition - 1) * partials + 1e-20)
        assert abs(mean.grad[i].item() - d_mean) <= tolerance, (kk, m, s, mean.grad[i].item(), d_mean)
        assert abs(scale.grad[i].item() - d_scale) <= tolerance, (kk, m, s, scale.grad[i].item(), d_scale)


@pytest.mark.parametrize("gather", [True, False])
def test_bin_log_mass_stays_finite_however_far_the_tail(gather):
    # The bottom bin 5e9 standard deviations below the mean: in float32 a lower bound 40 below the upper
    # one would round onto it (a zero mass, -inf); the log-mass is log Phi(z) = -z^2/2 - log(-z sqrt(2 pi)).
    m = torch.tensor([50.0], requires_grad=True)
    s = torch.tensor([1e-8], requires_grad=True)
    got = discretised_gaussian_log_prob(torch.tensor([-1.0]), m, s, 256, gather=gather)
    got.sum().backward()
    z = (-1 + 1 / 255 - 50) / 1e-8
    expected = -0.5 * z * z - math.log(-z * math.sqrt(2 * math.pi))
    assert abs(got.item() - expected) <= 1e-5 * abs(expected)
    assert torch.isfinite(m.grad).all() and torch.isfinite(s.grad).all()
    assert abs(m.grad.item() - z / 1e-8) <= 1e-4 * abs(z / 1e-8)  # d/dm log Phi(z) = -z'(z) phi/Phi ~ z / s
