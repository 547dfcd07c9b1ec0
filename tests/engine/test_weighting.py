"""Training weightings against their papers' losses, written here from the papers on the same inputs."""

import pytest
import torch
from scipy import stats

from bsi.engine import make_process
from bsi.engine.prediction import PREDICTIONS, target, x_from

D = 6


def network(seed=0):
    """A fixed nonlinear backbone F(input, t) on (B, D) inputs."""
    weight = torch.randn(D, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.3
    return lambda z, t: torch.tanh(z @ weight.to(z.dtype)) * (1 + t[:, None])


def data(batch=64, seed=0):
    return torch.rand(batch, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def same_noise(seed, shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", ["bsi", "bfn", "vdm"])
def test_elbo_weighting_is_the_importance_weighted_loss(name):
    proc = make_process(name)
    den = proc.parameterize(network())
    x, u = data().float(), torch.rand(64, dtype=torch.float64)
    out = proc.training_loss(x, den, generator=torch.Generator().manual_seed(1), u=u)
    lam, inv_p = proc.proposal.lam(u)
    mu = proc.family.sample(x, lam, torch.Generator().manual_seed(1))
    h = 0.5 * ((x - den(mu, lam)).float() ** 2).flatten(1).sum(1)
    # the same numbers up to the association of the constant factors (float32 rounding)
    torch.testing.assert_close(out.loss, h * inv_p.float() / D, rtol=1e-6, atol=0)
    assert torch.equal(out.lam, lam) and torch.equal(out.integrand, h)
    assert out.name == "elbo" and proc.weighting.name == "elbo"


def test_edm_loss_is_edms_weighted_denoising_loss():
    """EDM: lambda(sigma) ||D(x + sigma eps; sigma) - x||^2 with its preconditioning and sigma_data = 0.5."""
    proc = make_process("edm")
    backbone = network()
    x, u = data(), torch.rand(64, dtype=torch.float64)
    out = proc.training_loss(x, proc.parameterize(backbone), generator=torch.Generator().manual_seed(2), u=u)
    sigma, sd = out.lam.rsqrt()[:, None], 0.5
    y = x + sigma * same_noise(2, x.shape)
    c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in = 1 / (sigma**2 + sd**2).sqrt()
    denoised = c_skip * y + c_out * backbone(c_in * y, proc.precision.t(out.lam))
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    theirs = (weight * (denoised - x) ** 2).sum(1)
    torch.testing.assert_close(out.loss.double() * D, theirs, rtol=1e-5, atol=1e-7)
    assert out.name == "edm"


def test_edm_noise_levels_are_log_normal():
    """ln sigma ~ N(-1.2, 1.2^2) (truncated to [0.002, 80], which leaves out about 1e-5 of the mass)."""
    proc = make_process("edm")
    u = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    lam, _ = proc.weighting.draw(u, proc.loss_parts())
    log_sigma = -0.5 * lam.log()
    assert stats.kstest(log_sigma.numpy(), stats.norm(-1.2, 1.2).cdf).statistic < 2e-3
    assert lam.min() >= proc.lambda_min and lam.max() <= proc.lambda_max


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_loss_is_min_snr_gammas_loss_for_the_prediction(prediction):
    """min-SNR-5: min(snr, 5)/snr ||eps - eps_hat||^2 for eps, min(snr, 5)/(snr + 1) ||v - v_hat||^2 for v."""
    proc = make_process("vdm", weighting="min_snr", prediction=prediction)
    backbone = network()
    x, u = data(), torch.rand(64, dtype=torch.float64)
    out = proc.training_loss(x, proc.parameterize(backbone), generator=torch.Generator().manual_seed(3), u=u)
    snr = out.lam[:, None]  # VDM's lam is the SNR
    eps = same_noise(3, x.shape)
    alpha, sigma = (snr / (1 + snr)).sqrt(), (1 / (1 + snr)).sqrt()  # VDM's z = alpha x + sigma eps
    z = alpha * x + sigma * eps
    t = proc.precision.t(out.lam)
    if prediction == "eps":
        theirs = (torch.clamp(snr, max=5) / snr * (eps - backbone(z, t)) ** 2).sum(1)
    else:
        v = alpha * eps - sigma * x  # Salimans & Ho
        theirs = (torch.clamp(snr, max=5) / (snr + 1) * (v - backbone(z, t)) ** 2).sum(1)
    torch.testing.assert_close(out.loss.double() * D, theirs, rtol=1e-5, atol=1e-7)
    assert out.name == "min_snr"


def test_flow_loss_is_flow_matchings_velocity_loss():
    """||(eps - x) - v_hat(x_s, s)||^2 with x_s = (1 - s) x + s eps."""
    proc = make_process("flow")
    backbone = network()
    x, u = data(), torch.rand(64, dtype=torch.float64)
    out = proc.training_loss(x, proc.parameterize(backbone), generator=torch.Generator().manual_seed(4), u=u)
    s = (1 / (1 + out.lam.sqrt()))[:, None]
    eps = same_noise(4, x.shape)
    x_s = (1 - s) * x + s * eps
    theirs = (((eps - x) - backbone(x_s, proc.precision.t(out.lam))) ** 2).sum(1)
    torch.testing.assert_close(out.loss.double() * D, theirs, rtol=1e-5, atol=1e-7)
    # s ~ U(t_min, 1 - t_min) at the stratified uniforms
    torch.testing.assert_close(s[:, 0], 1e-3 + (1 - 2e-3) * u, rtol=1e-9, atol=1e-12)


def test_flow_logit_normal_times():
    proc = make_process("flow", weighting_options={"logit_normal": True})
    u = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    lam, _ = proc.weighting.draw(u, proc.loss_parts())
    logit_s = torch.logit(1 / (1 + lam.sqrt()))
    assert stats.kstest(logit_s.numpy(), stats.norm(0, 1).cdf).statistic < 2e-3


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
@pytest.mark.parametrize("scale_input", [False, True])
@pytest.mark.parametrize("name", ["flow", "vdm", "bsi", "bfn"])
def test_v_prediction_converts_to_and_from_x_exactly(name, scale_input, sigma_data):
    """The target of v is the path's velocity, and x -> v -> x and v -> x -> v are the identity.

    With ``y = x/sigma_data``, the input ``z = alpha y + sigma eps`` is on the variance-preserving path
    (``alpha^2 + sigma^2 = 1``, Salimans & Ho's ``v = alpha eps - sigma y``) or on the linear one
    (``alpha + sigma = 1``, flow matching's ``v = eps - y``).
    """
    proc = make_process(name)
    lam = proc.precision.at(torch.linspace(0.05, 0.95, 32, dtype=torch.float64))
    a, s2 = proc.family.mean_coef(lam), proc.family.variance(lam)
    coef = PREDICTIONS["v"]().coefficients(a, s2, sigma_data, scale_input)
    x, eps = data(32), same_noise(5, (32, D))
    y = x / sigma_data
    mu = a[:, None] * x + s2.sqrt()[:, None] * eps
    signal, noise = (a * sigma_data)[:, None], s2.sqrt()[:, None]  # mu = signal y + noise eps
    norm = (signal**2 + noise**2).sqrt() if scale_input else signal + noise
    alpha, sigma = signal / norm, noise / norm
    torch.testing.assert_close(alpha**2 + sigma**2 if scale_input else alpha + sigma, torch.ones_like(alpha))
    velocity = alpha * eps - sigma * y if scale_input else eps - y
    torch.testing.assert_close(target(x, mu, coef), velocity, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(coef["c_in"][:, None] * mu, alpha * y + sigma * eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_from(target(x, mu, coef), mu, coef), x, rtol=0, atol=1e-9)
    f = same_noise(6, (32, D))
    torch.testing.assert_close(target(x_from(f, mu, coef), mu, coef), f, rtol=0, atol=1e-9)


@pytest.mark.parametrize("weighting", ["edm", "min_snr", "flow"])
def test_evaluation_does_not_depend_on_the_weighting(weighting):
    den = make_process("vdm").parameterize(network())
    x = data(16)
    for steps in (None, 5):
        ours = make_process("vdm", weighting=weighting).elbo(x, den, steps, 2, torch.Generator().manual_seed(7))
        today = make_process("vdm").elbo(x, den, steps, 2, torch.Generator().manual_seed(7))
        assert all(torch.equal(ours[k], today[k]) for k in today)


@pytest.mark.parametrize("kwargs, match", [
    (dict(weighting="snr"), "unknown weighting 'snr': choose one of elbo, edm, min_snr, flow"),
    (dict(weighting_options={"gamma": 5}), "weighting_options has no effect with weighting=elbo"),
    (dict(weighting="min_snr", weighting_options={"p_std": 1}), "weighting_options .* do not fit weighting 'min_snr'"),
    (dict(weighting="edm", weighting_options={"p_std": 0}), "needs p_std > 0"),
])
def test_bad_weightings_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_process("bsi", **kwargs)


def test_every_weighting_trains_every_continuous_process_to_a_finite_loss():
    x = data(32).float()
    for name in ("bsi", "bfn", "vdm", "edm", "flow"):
        for weighting in ("elbo", "edm", "min_snr", "flow"):
            proc = make_process(name, weighting=weighting)
            out = proc.training_loss(x, proc.parameterize(network()), generator=torch.Generator().manual_seed(0))
            assert torch.isfinite(out.loss).all() and out.name == weighting, (name, weighting)
            assert bool(((out.lam >= proc.lambda_min * (1 - 1e-9)) & (out.lam <= proc.lambda_max * (1 + 1e-9))).all())
