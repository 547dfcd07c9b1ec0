"""The k-step bound's step proposal and trajectory sums (bsi.engine.objectives), against known answers.

The fixture of ``test_quadrature``: iid levels ``~ P_LEVELS`` with the exact per-element posterior as
the denoiser, under VDM's belief family.  There, per level ``c_j``, the start's measurement (the mixture
KL at ``lambda_min`` against the prior ``P_LEVELS``), the ``k`` steps and the reconstruction sum to
``-ln p_j`` in expectation, and along one sender trajectory the steps and the reconstruction sum to
``-ln p(x | mu_0)`` exactly.
"""

import math

import pytest
import torch

from bsi.engine import PointOutput, levels, make_process
from bsi.engine.exact import IidLevelsDenoiser
from bsi.engine.objectives import trajectory_terms
from bsi.engine.quadrature import mixture_kl_quadrature


F64 = torch.float64
P_LEVELS = torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15], dtype=F64)


def vdm_family():
    """``lam0 = 0``: the belief mean is all the measurements know, so the posterior given ``mu`` is exact."""
    return make_process("vdm", data_bins=len(P_LEVELS))


def iid_levels(batch: int, dims: int, gen: torch.Generator) -> torch.Tensor:
    c = levels(len(P_LEVELS), dtype=F64)
    return c[torch.multinomial(P_LEVELS, batch * dims, replacement=True, generator=gen).reshape(batch, dims)]


def exact_denoiser(proc) -> IidLevelsDenoiser:
    return IidLevelsDenoiser(P_LEVELS, proc.beliefs)


def expected_steps_and_reconstruction(proc, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` nats: ``sum over elements of -ln p_j - start_j``, what the steps and reconstruction average to."""
    c = levels(len(P_LEVELS), dtype=F64)
    start = mixture_kl_quadrature(c[:, None], P_LEVELS.log().expand(len(c), 1, -1), c,
                                  torch.full((len(c),), proc.lambda_min, dtype=F64))[:, 0]
    per_level = -P_LEVELS.log() - start
    return per_level[((x + 1) / 2 * (len(c) - 1)).round().long()].sum(1)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_trajectory_of_exact_posterior_telescopes_to_the_start_likelihood(k):
    proc = vdm_family()
    gen = torch.Generator().manual_seed(k)
    x = iid_levels(16, 50, gen)
    lam0 = torch.full((16,), proc.lambda_min, dtype=F64)
    mu0 = proc.beliefs.sample(x, lam0, gen)
    steps, recon = trajectory_terms(proc, x, exact_denoiser(proc), k, gen, mu=mu0)
    expected = -exact_denoiser(proc)(mu0, lam0).log_prob(x).sum(1)
    torch.testing.assert_close(steps + recon, expected, atol=1e-9, rtol=0)


def test_trajectory_elbo_is_unbiased_for_the_known_bound():
    proc = vdm_family()
    gen = torch.Generator().manual_seed(0)
    x = iid_levels(200, 20, gen)
    terms = proc.elbo(x, exact_denoiser(proc), steps=10, n_samples=2, generator=gen, trajectory=True)
    diff = terms["measurement"] + terms["reconstruction"] - expected_steps_and_reconstruction(proc, x)
    se = diff.std() / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se, (diff.mean(), se)


@pytest.mark.parametrize("skew", [0.0, 3.0])
def test_step_proposal_keeps_the_bound_unbiased(skew):
    """A strongly non-uniform ``q`` (``q_i`` growing ``e^skew``-fold over the steps) still averages to the bound."""
    proc = vdm_family()
    gen = torch.Generator().manual_seed(1)
    k = 10
    x = iid_levels(300, 20, gen)
    q = torch.exp(skew * torch.linspace(0, 1, k, dtype=F64))
    q = q / q.sum()
    terms = proc.elbo(x, exact_denoiser(proc), steps=k, n_samples=4, generator=gen, step_proposal=q)
    diff = terms["measurement"] + terms["reconstruction"] - expected_steps_and_reconstruction(proc, x)
    se = diff.std() / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se, (diff.mean(), se)


def test_step_proposal_follows_the_rms_of_each_step():
    """With ``x_hat = 0`` step ``i``'s term is ``alpha_i ||x||^2 / 2`` for every draw: ``q_i`` must follow ``alpha_i``."""
    proc = make_process("bsi", data_bins=17)
    x = torch.linspace(-1, 1, 64, dtype=torch.float32).reshape(1, 1, 8, 8).repeat(3, 1, 1, 1)
    k = 20
    q = proc.step_proposal(x, lambda mu, lam: PointOutput(torch.zeros_like(mu)), k)
    alpha = proc.step_precisions(k).diff()
    torch.testing.assert_close(q, 0.9 * alpha / alpha.sum() + 0.1 / k, rtol=1e-6, atol=0)
    assert float(q.sum()) == pytest.approx(1.0)
    uniform = proc.step_proposal(x, lambda mu, lam: PointOutput(torch.zeros_like(mu)), k, uniform_share=1.0)
    torch.testing.assert_close(uniform, torch.full((k,), 1 / k, dtype=F64))


def test_step_proposal_and_trajectory_reject_what_they_cannot_use():
    proc = make_process("bsi", data_bins=17)
    x = torch.zeros(2, 1, 8, 8)
    den = lambda mu, lam: torch.zeros_like(mu)  # noqa: E731
    with pytest.raises(ValueError, match="positive, finite probabilities"):
        proc.elbo(x, den, steps=10, step_proposal=torch.full((9,), 1 / 9, dtype=F64))
    with pytest.raises(ValueError, match="needs a k-step bound"):
        proc.elbo(x, den, step_proposal=torch.full((10,), 0.1, dtype=F64))
    with pytest.raises(ValueError, match="trajectory sums need a k-step bound"):
        proc.elbo(x, den, trajectory=True)
    with pytest.raises(ValueError, match="trajectory sums"):
        proc.elbo(x, den, steps=10, n_samples=2, reconstruction_samples=1, trajectory=True)
    with pytest.raises(ValueError, match="uniform_share"):
        proc.step_proposal(x, den, 10, uniform_share=0.0)
