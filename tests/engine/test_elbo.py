"""The ELBO on known answers: the exact denoiser of a point set, and each paper's own loss formula."""

import math

import pytest
import torch

from bsi.engine import bits_per_dim, make_process
from bsi.engine.exact import ExactDenoiser

N_POINTS = 64


@pytest.fixture(scope="module")
def points(digits):
    return digits[:N_POINTS].double()


def expected_excess_nats(name, proc, points):
    """How far above ln N the exact denoiser's ELBO lands (docs/design.md): an upper bound."""
    if name == "bsi":
        return proc.family.lam0 * points.flatten(1).var(0).sum().item() / 2
    if name in ("vdm", "edm", "flow"):  # one belief family: a = 1, the prior at the bottom of the range
        return proc.lambda_min * (points.flatten(1).mean(0) ** 2).sum().item() / 2 + 1e-3
    return 0.0


@pytest.mark.parametrize("name", ["bsi", "bfn", "vdm", "edm", "flow"])
@pytest.mark.parametrize("output", ["point", "discretised"])
def test_exact_denoiser_elbo_is_ln_n(name, output, points):
    proc = make_process(name, data_bins=17, output=output)
    den = ExactDenoiser(points, proc.family, bins=17 if output == "discretised" else None)
    x = points.repeat(4, 1, 1, 1)
    terms = proc.elbo(x, den, n_samples=8, generator=torch.Generator().manual_seed(0))
    total = terms["total"]
    mean, se = total.mean().item(), total.std().item() / math.sqrt(len(total))
    ln_n = math.log(N_POINTS)
    excess = expected_excess_nats(name, proc, points)
    assert ln_n - 4 * se - 0.02 < mean < ln_n + excess + 4 * se + 0.02, (mean, ln_n, excess, se)
    assert terms["reconstruction"].abs().max() < 1e-3  # the posterior is certain at the top
    est = bits_per_dim(total, 64)
    assert abs(est.mean - mean / (64 * math.log(2))) < 1e-12


@pytest.mark.parametrize("name", ["bsi", "bfn", "vdm", "edm", "flow"])
def test_k_step_elbo_falls_towards_infinite_step(name, points):
    proc = make_process(name, data_bins=17)
    den = ExactDenoiser(points, proc.family)
    x = points.repeat(8, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    l_inf = proc.elbo(x, den, n_samples=4, generator=g)["total"].mean().item()
    l_k = [proc.elbo(x, den, steps=k, n_samples=4, generator=g)["total"].mean().item() for k in (4, 16, 64, 512)]
    assert all(a > b for a, b in zip(l_k, l_k[1:])), l_k
    assert l_k[0] > 2 * l_inf
    assert abs(l_k[-1] - l_inf) < 0.25 * l_inf, (l_k, l_inf)


def test_vdm_loss_equals_vdms_formula():
    """VDM's continuous loss 1/2 (gamma_max - gamma_min) ||eps - eps_hat(z_t, t)||^2 with the linear schedule."""
    proc = make_process("vdm")
    torch.manual_seed(0)
    weight = torch.randn(6, 6, dtype=torch.float64) * 0.3
    backbone = lambda z, t: torch.tanh(z @ weight) * (1 + t[:, None])  # noqa: E731
    x = torch.rand(16, 6, dtype=torch.float64) * 2 - 1
    u = torch.rand(16, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    ours = proc.training_loss(x, proc.parameterize(backbone), generator=g, u=u).loss * 6
    # VDM's own variables, same noise: gamma = -log SNR linear between -log snr_max and -log snr_min
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gamma_min, gamma_max = -math.log(proc.lambda_max), -math.log(proc.lambda_min)
    t_vdm = 1 - u  # VDM's t runs from data (0) to noise (1)
    gamma = gamma_min + (gamma_max - gamma_min) * t_vdm
    alpha, sigma = torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()
    z = alpha[:, None] * x + sigma[:, None] * eps
    eps_hat = backbone(z, u)  # the network sees our noise level t = 1 - t_vdm
    theirs = 0.5 * (gamma_max - gamma_min) * ((eps - eps_hat) ** 2).sum(1)
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-6, atol=1e-8)


def test_bfn_loss_equals_bfns_formula():
    """BFN's continuous-time loss -ln(sigma_1) sigma_1^(-2t) ||x - x_hat||^2 for the same predictor."""
    sigma_1 = 1e-3
    proc = make_process("bfn", sigma_1=sigma_1)
    torch.manual_seed(0)
    weight = torch.randn(5, 5, dtype=torch.float64) * 0.3
    backbone = lambda mu, t: torch.tanh(mu @ weight) + t[:, None]  # noqa: E731
    x = torch.rand(32, 5, dtype=torch.float64) * 2 - 1
    t = torch.rand(32, dtype=torch.float64)
    ours = proc.training_loss(x, proc.parameterize(backbone), generator=torch.Generator().manual_seed(2), u=t).loss * 5
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gamma = (1 - sigma_1 ** (2 * t))[:, None]
    mu = gamma * x + (gamma * (1 - gamma)).sqrt() * eps
    x_hat = (mu / gamma - ((1 - gamma) / gamma).sqrt() * backbone(mu, t)).clamp(-1, 1)
    theirs = -math.log(sigma_1) * sigma_1 ** (-2 * t) * ((x - x_hat) ** 2).sum(1)
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-6, atol=1e-8)


def bfn_discretised(mu, gamma, out_mu, out_log_sigma, bins):
    """BFN's discretised output (its section 5) in its own terms: bin probabilities (B, D, K)."""
    from scipy import stats

    mu_x = mu / gamma - ((1 - gamma) / gamma).sqrt() * out_mu
    sigma_x = ((1 - gamma) / gamma).sqrt() * out_log_sigma.exp()
    c = torch.linspace(-1, 1, bins, dtype=torch.float64)
    half = 1 / (bins - 1)
    cdf = lambda v: torch.tensor(stats.norm.cdf(((v - mu_x[..., None]) / sigma_x[..., None]).numpy()))  # noqa: E731
    upper = torch.where(c < 1 - 1e-9, cdf(c + half), torch.ones(()))  # G(x) = 1 above the range
    lower = torch.where(c > -1 + 1e-9, cdf(c - half), torch.zeros(()))  # and 0 below it
    return upper - lower


def test_bfn_discretised_loss_equals_bfns_formula():
    """Continuous-time and k-step discretised losses against BFN's formulas on the same network outputs."""
    sigma_1, bins, k = 0.02, 16, 10
    proc = make_process("bfn", sigma_1=sigma_1, output="discretised", data_bins=bins)
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, bins, dtype=torch.float64)[torch.randint(0, bins, (12, 4))]
    raw = torch.randn(12, 8, dtype=torch.float64) * 0.5
    backbone = lambda mu, t: raw  # noqa: E731  (fixed network outputs: mean part, log-scale part)
    den = proc.parameterize(backbone)
    # continuous time
    t = torch.rand(12, dtype=torch.float64)
    ours = proc.training_loss(x, den, generator=torch.Generator().manual_seed(3), u=t).loss * 4
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gamma = (1 - sigma_1 ** (2 * t))[:, None]
    mu = gamma * x + (gamma * (1 - gamma)).sqrt() * eps
    probs = bfn_discretised(mu, gamma, raw[:, :4], raw[:, 4:], bins)
    k_hat = (probs * torch.linspace(-1, 1, bins, dtype=torch.float64)).sum(-1)
    theirs = -math.log(sigma_1) * sigma_1 ** (-2 * t) * ((x - k_hat) ** 2).sum(1)
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-6)
    # k steps: BFN's alpha_i = sigma_1^(-2i/n) (1 - sigma_1^(2/n)) at t = (i-1)/n is our geometric grid
    grid = proc.step_precisions(k)
    i = torch.arange(1, k + 1, dtype=torch.float64)
    torch.testing.assert_close(grid[1:] - grid[:-1], sigma_1 ** (-2 * i / k) * (1 - sigma_1 ** (2 / k)))
    # one step's KL(sender || mixture receiver) with the same drawn y
    step = 3
    lam = grid[step].expand(12)
    alpha = (grid[step + 1] - grid[step]).expand(12)
    gamma = ((lam - 1) / lam)[:, None]
    mu = proc.belief(x, lam, generator=torch.Generator().manual_seed(4))
    out = den(mu, lam)
    ours_step = out.measurement_kl(x, alpha, generator=torch.Generator().manual_seed(5)).sum(1)
    y = x + alpha[:, None].rsqrt() * torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    probs = bfn_discretised(mu, gamma, raw[:, :4], raw[:, 4:], bins)
    c = torch.linspace(-1, 1, bins, dtype=torch.float64)
    a = alpha[:, None]
    log_sender = -0.5 * a * (y - x) ** 2 + 0.5 * torch.log(a / (2 * math.pi))
    receiver = (probs * torch.exp(-0.5 * a[..., None] * (y[..., None] - c) ** 2)).sum(-1) * (a / (2 * math.pi)).sqrt()
    theirs_step = (log_sender - receiver.log()).sum(1)
    torch.testing.assert_close(ours_step.double(), theirs_step, rtol=1e-5, atol=1e-5)


def test_elbo_rejects_bad_denoisers():
    proc = make_process("bsi", data_bins=17)
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="shape"):
        proc.elbo(x, lambda mu, lam: mu[:, :2])
    with pytest.raises(ValueError, match="non-finite"):
        proc.elbo(x, lambda mu, lam: mu * float("nan"))
