"""Low-variance k-step terms: Gauss-Hermite rules, the mixture KL by quadrature, antithetic draws.

Known answers: Gauss-Hermite moments of N(0, 1); the mixture KL against an adaptive numerical
integral and against the closed form of a one-level receiver; the engine's one-draw estimators
are unbiased for what the quadrature computes; and iid levels with the exact per-element
posterior make the k-step bound equal the entropy for every k.
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from bsi.engine import CategoricalOutput, DiscretisedOutput, levels, make_process
from bsi.engine.exact import IidLevelsDenoiser
from bsi.engine.output import gaussian_log_prob
from bsi.engine.quadrature import categorical_kl_antithetic, gauss_hermite, mixture_kl_quadrature

F64 = torch.float64


# -- Gauss-Hermite ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 32])
def test_gauss_hermite_integrates_normal_moments_exactly(n):
    z, w = gauss_hermite(n)
    assert z.dtype == w.dtype == F64 and z.shape == w.shape == (n,)
    for degree in range(min(2 * n, 24)):  # exact up to degree 2n - 1
        exact = 0.0 if degree % 2 else float(np.prod(np.arange(degree - 1, 0, -2)))  # (d - 1)!!
        scale = (w * z.abs() ** degree).sum().item()  # the size of the terms that cancel in odd moments
        assert (w * z**degree).sum().item() == pytest.approx(exact, rel=1e-11, abs=1e-13 * scale)
    if n > 1:
        assert (w * z**2).sum().item() == pytest.approx(1.0, rel=1e-13)
    # one degree beyond the rule's reach it is no longer exact: E[z^(2n)] = (2n - 1)!! (error n!)
    if n <= 5:
        assert (w * z ** (2 * n)).sum().item() != pytest.approx(float(np.prod(np.arange(2 * n - 1, 0, -2))), rel=1e-6)


def test_gauss_hermite_is_cached_but_returns_fresh_tensors():
    z, w = gauss_hermite(8)
    z.zero_()
    z2, w2 = gauss_hermite(8)
    assert z2.abs().sum() > 0 and torch.equal(w, w2)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_gauss_hermite_rejects_bad_node_counts(n):
    with pytest.raises(ValueError, match="positive integer"):
        gauss_hermite(n)


# -- the mixture KL by quadrature ----------------------------------------------------------------
def reference_kl(x: float, log_p: np.ndarray, c: np.ndarray, alpha: float) -> float:
    """``E_z[log N(y; x) - log sum_k p_k N(y; c_k)]`` by adaptive quadrature over ``y`` on many pieces."""
    sd = alpha**-0.5

    def integrand(y):
        log_sender = -0.5 * alpha * (y - x) ** 2
        t = log_p - 0.5 * alpha * (y - c) ** 2
        m = t.max()
        log_receiver = m + math.log(np.exp(t - m).sum())
        return math.exp(log_sender) / math.sqrt(2 * math.pi) / sd * (log_sender - log_receiver)

    edges = np.linspace(x - 12 * sd, x + 12 * sd, 193)
    return sum(integrate.quad(integrand, lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
               for lo, hi in zip(edges[:-1], edges[1:]))


@pytest.mark.parametrize("alpha", [1e-2, 1.0, 30.0, 1e3, 1e4, 1e6])
def test_mixture_kl_matches_numerical_integral(alpha):
    gen = torch.Generator().manual_seed(int(alpha * 10) % 1000)
    c = levels(17, dtype=F64)
    cases = 12
    log_p = torch.log_softmax(1.5 * torch.randn(cases, 17, generator=gen, dtype=F64), -1)
    x = c[torch.randint(17, (cases,), generator=gen)]  # data lie on the levels
    ours = mixture_kl_quadrature(x[:, None], log_p[:, None], c, torch.full((cases,), alpha, dtype=F64))[:, 0]
    ref = torch.tensor([reference_kl(x[i].item(), log_p[i].numpy(), c.numpy(), alpha) for i in range(cases)], dtype=F64)
    assert (ref >= -1e-12).all()  # a KL
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=0)
    # and 64 nodes are ten times closer where 32 are not yet exact
    ours64 = mixture_kl_quadrature(x[:, None], log_p[:, None], c, torch.full((cases,), alpha, dtype=F64), nodes=64)[:, 0]
    torch.testing.assert_close(ours64, ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("alpha", [1e-3, 1.0, 1e5])
def test_one_level_receiver_has_the_gaussian_closed_form(alpha):
    # KL(N(x, 1/alpha) || N(c, 1/alpha)) = alpha (x - c)^2 / 2, also for x off the level; the integrand is linear in z.
    x = torch.tensor([[-0.3, 0.0, 0.77]], dtype=F64)
    c = torch.tensor([0.25], dtype=F64)
    ours = mixture_kl_quadrature(x, torch.zeros(1, 3, 1, dtype=F64), c, torch.tensor([alpha], dtype=F64), nodes=3)
    torch.testing.assert_close(ours, 0.5 * alpha * (x - c) ** 2, rtol=1e-12, atol=1e-14)


def test_mixture_kl_does_not_depend_on_the_chunk_size():
    gen = torch.Generator().manual_seed(3)
    x = levels(17, dtype=F64)[torch.randint(17, (4, 1, 3, 5), generator=gen)]
    log_p = torch.log_softmax(torch.randn(4, 1, 3, 5, 17, generator=gen, dtype=F64), -1)
    alpha = torch.tensor([0.1, 10.0, 300.0, 1e5], dtype=F64)
    whole = mixture_kl_quadrature(x, log_p, levels(17, dtype=F64), alpha)
    assert whole.shape == x.shape and whole.dtype == F64
    chunked = mixture_kl_quadrature(x, log_p, levels(17, dtype=F64), alpha, max_chunk=32 * 17 * 7)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)


def test_mixture_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="log_probs"):
        mixture_kl_quadrature(torch.zeros(2, 3), torch.zeros(2, 3, 4), levels(5), torch.ones(2))
    with pytest.raises(ValueError, match="alpha"):
        mixture_kl_quadrature(torch.zeros(2, 3), torch.zeros(2, 3, 5), levels(5), torch.ones(3))


@pytest.mark.parametrize("alpha", [0.5, 50.0, 2e3])
def test_one_draw_estimator_is_unbiased_for_the_quadrature(alpha):
    # The engine's DiscretisedOutput.measurement_kl (one y per element) averages to the quadrature.
    gen = torch.Generator().manual_seed(7)
    cases, draws = 6, 40_000
    c = levels(17, dtype=F64)
    log_p = torch.log_softmax(2.0 * torch.randn(cases, 17, generator=gen, dtype=F64), -1)
    x = c[torch.randint(17, (cases,), generator=gen)]
    quad = mixture_kl_quadrature(x[None], log_p[None], c, torch.tensor([alpha], dtype=F64), nodes=96)[0]
    out = DiscretisedOutput(log_p.expand(draws, cases, 17))
    one = out.measurement_kl(x.expand(draws, cases), torch.full((draws,), alpha, dtype=F64), gen)
    z = (one.mean(0) - quad) / (one.std(0) / math.sqrt(draws))
    assert z.abs().max() < 4.5, z


# -- the antithetic categorical estimator ---------------------------------------------------------
def categorical_kl_reference(e_index: int, log_p: torch.Tensor, alpha: float, nodes: int = 40) -> float:
    """The categorical k-step KL for K = 3 by a product Gauss-Hermite rule over the 3-dimensional noise."""
    z, w = gauss_hermite(nodes)
    k = log_p.shape[-1]
    grids = torch.meshgrid(*([z] * k), indexing="ij")
    eps = torch.stack([g.reshape(-1) for g in grids], -1)  # (nodes^K, K)
    weight = torch.ones(eps.shape[0], dtype=F64)
    for g in torch.meshgrid(*([w] * k), indexing="ij"):
        weight = weight * g.reshape(-1)
    e = torch.nn.functional.one_hot(torch.tensor(e_index), k).to(F64)
    terms = log_p + alpha * (e - 1) + math.sqrt(alpha) * (eps - eps[:, e_index : e_index + 1])
    return float((-torch.logsumexp(terms, -1) * weight).sum())


@pytest.mark.parametrize("alpha", [0.3, 3.0, 30.0])
def test_antithetic_categorical_estimator_is_unbiased_and_has_a_smaller_variance(alpha):
    gen = torch.Generator().manual_seed(11)
    log_p = torch.log_softmax(torch.tensor([[0.2, -1.0, 1.1], [2.0, -0.5, 0.0]], dtype=F64), -1)
    classes = [2, 1]
    ref = torch.tensor([categorical_kl_reference(j, log_p[i], alpha) for i, j in enumerate(classes)], dtype=F64)
    draws = 40_000
    e = torch.nn.functional.one_hot(torch.tensor(classes), 3).to(F64).expand(draws, 2, 3)
    lp = log_p.expand(draws, 2, 3)
    a = torch.full((draws,), alpha, dtype=F64)
    anti = categorical_kl_antithetic(e, lp, a, gen)
    one = CategoricalOutput(lp).measurement_kl(e, a, gen).double()
    assert anti.shape == (draws, 2)
    for est in (anti, one):  # both estimate the reference without bias
        z = (est.mean(0) - ref) / (est.std(0) / math.sqrt(draws))
        assert z.abs().max() < 4.5, z
    if alpha <= 3:  # where the estimator's odd part in eps dominates, the pair beats two independent draws
        assert (anti.var(0) < 0.5 * one.var(0)).all(), anti.var(0) / one.var(0)


# -- the known answer: iid levels, the exact per-element posterior ---------------------------------
P_LEVELS = torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15], dtype=F64)
ENTROPY = float(-(P_LEVELS * P_LEVELS.log()).sum())


def exact_posterior(proc, mu: torch.Tensor, lam: torch.Tensor) -> DiscretisedOutput:
    """The exact per-element posterior over the levels of iid data ``~ P_LEVELS`` given the belief mean ``mu``."""
    return IidLevelsDenoiser(P_LEVELS, proc.family)(mu, lam)


def vdm_family():
    """``lam0 = 0`` (VDM's belief family, ``mu = x + noise``): the belief mean is all the measurements know."""
    return make_process("vdm", data_bins=len(P_LEVELS))


@pytest.mark.parametrize("k", [1, 10, 100])
def test_kstep_bound_of_exact_posterior_equals_entropy(k):
    """Each step's expectation over the belief and the measurement by nested Gauss-Hermite: a number, not a draw.

    The bound is the start's measurement at ``lambda_min`` against the prior ``P_LEVELS`` (the exact
    prior term), the ``k`` steps of the grid and the reconstruction at ``lambda_max``; per level
    ``c_j`` it must be ``-ln p_j``, so over iid elements it is the entropy per element.
    """
    proc = vdm_family()
    grid = proc.step_precisions(k)
    c = levels(len(P_LEVELS), dtype=F64)
    zm, wm = gauss_hermite(128)
    per_level = []
    for j in range(len(c)):
        x = c[j].expand(len(zm), 1)
        bound = mixture_kl_quadrature(c[j : j + 1, None], P_LEVELS.log()[None, None], c, grid[:1]).item()
        for i in range(k + 1):
            lam = torch.full((len(zm),), float(grid[i]), dtype=F64)
            mu = (proc.family.mean_coef(lam) * c[j] + proc.family.variance(lam).sqrt() * zm)[:, None]
            out = exact_posterior(proc, mu, lam)
            if i < k:
                term = mixture_kl_quadrature(x, out.log_probs, out.levels, torch.full_like(lam, float(grid[i + 1] - grid[i])))
            else:
                term = -out.log_prob(x)
            bound += float((term[:, 0] * wm).sum())
        per_level.append(bound)
    per_level = torch.tensor(per_level, dtype=F64)
    torch.testing.assert_close(per_level, -P_LEVELS.log(), atol=2e-5, rtol=0)
    dims = 64
    assert dims * float((P_LEVELS * per_level).sum()) == pytest.approx(dims * ENTROPY, abs=dims * 2e-5)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_kstep_bound_along_trajectories_equals_entropy(k):
    """Monte Carlo trajectories of the sender: the quadrature summed over all k steps is unbiased for ``-ln p(x)``.

    Along the same trajectory the engine's one-draw terms (their ``y`` is the measurement that
    moves the belief) telescope: they sum to exactly ``-ln p(x)`` for every element.
    """
    proc = vdm_family()
    gen = torch.Generator().manual_seed(k)
    batch, dims = 20, 100
    c = levels(len(P_LEVELS), dtype=F64)
    idx = torch.multinomial(P_LEVELS, batch * dims, replacement=True, generator=gen).reshape(batch, dims)
    x, nll = c[idx], -P_LEVELS.log()[idx]
    grid = proc.step_precisions(k)
    prior = DiscretisedOutput(P_LEVELS.log().expand(batch, dims, -1))
    start = torch.full((batch,), float(grid[0]), dtype=F64)
    mu = proc.family.sample(x, start, gen)  # the start is itself a measurement of precision lambda_min
    quad = mixture_kl_quadrature(x, prior.log_probs, prior.levels, start)
    one = gaussian_log_prob(mu, x, grid[0]) - torch.logsumexp(prior.log_probs + gaussian_log_prob(mu[..., None], c, grid[0]), -1)
    for i in range(k):
        lam = torch.full((batch,), float(grid[i]), dtype=F64)
        alpha = torch.full((batch,), float(grid[i + 1] - grid[i]), dtype=F64)
        out = exact_posterior(proc, mu, lam)
        quad = quad + mixture_kl_quadrature(x, out.log_probs, out.levels, alpha)
        replay = torch.Generator()
        replay.set_state(gen.get_state())
        one = one + out.measurement_kl(x, alpha, gen)
        y = x + alpha[:, None].rsqrt() * torch.randn(x.shape, generator=replay, dtype=F64)  # the same draw
        mu = proc.family.update(mu, lam, y, alpha)
    top = exact_posterior(proc, mu, torch.full((batch,), float(grid[-1]), dtype=F64))
    one, quad = one - top.log_prob(x), quad - top.log_prob(x)
    torch.testing.assert_close(one, nll, atol=1e-9, rtol=0)
    diff = quad - nll
    se = diff.std() / math.sqrt(diff.numel())
    assert abs(diff.mean()) < 4 * se + 1e-6, (diff.mean(), se)
    assert abs(quad.mean() - ENTROPY) < 4 * se + 4 * nll.std() / math.sqrt(nll.numel())


def test_drawn_start_leaves_a_small_excess_over_the_entropy():
    """BSI's drawn start: the posterior given ``mu`` alone forgets the start's draw, so the bound sits above -ln p.

    The excess shrinks with the start's precision ``lam0`` (measured: about 5e-3 nats at BSI's
    ``lam0 = 1e-2`` on these levels, 10 steps).
    """
    excess = []
    for lam0 in (1e-2, 1e-4):
        proc = make_process("bsi", data_bins=len(P_LEVELS), lam0=lam0, lambda_min=lam0)
        grid = proc.step_precisions(10)
        c = levels(len(P_LEVELS), dtype=F64)
        zm, wm = gauss_hermite(96)
        j = 0  # an edge level, where the excess is largest
        x = c[j].expand(len(zm), 1)
        bound = 0.0
        for i in range(11):
            lam = torch.full((len(zm),), float(grid[i]), dtype=F64)
            mu = (proc.family.mean_coef(lam) * c[j] + proc.family.variance(lam).sqrt() * zm)[:, None]
            out = exact_posterior(proc, mu, lam)
            term = (mixture_kl_quadrature(x, out.log_probs, out.levels, torch.full_like(lam, float(grid[i + 1] - grid[i])))
                    if i < 10 else -out.log_prob(x))
            bound += float((term[:, 0] * wm).sum())
        excess.append(bound + math.log(P_LEVELS[j]))
    assert 1e-3 < excess[0] < 1e-2
    assert 0 < excess[1] < excess[0] / 10
