"""Parameterizations against the papers' formulas."""

import math

import pytest
import torch

from bsi.engine import make_process


def test_edm_preconditioning_is_bsis():
    """c_skip = alpha/kappa, c_out = kappa^-1/2, c_in = sqrt(lam/kappa), kappa = 1 + alpha^2/lam."""
    proc = make_process("bsi")
    den = proc.parameterize(lambda x, t: x)
    lam = torch.logspace(-2, 6, 40, dtype=torch.float64) + 1e-9
    alpha = lam - 1e-2
    kappa = 1 + alpha**2 / lam
    coef = den.coefficients(lam)
    torch.testing.assert_close(coef["c_skip"], alpha / kappa, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(coef["c_out"], kappa.rsqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(coef["c_in"], (lam / kappa).sqrt(), rtol=1e-12, atol=0)


def test_eps_prediction_is_bfns_and_vdms():
    lam = torch.tensor([1.5, 40.0, 3e5], dtype=torch.float64)
    mu = torch.randn(3, 4, dtype=torch.float64)
    eps = torch.randn(3, 4, dtype=torch.float64)
    bfn = make_process("bfn", clip=False).parameterize(lambda x, t: eps)
    gamma = ((lam - 1) / lam)[:, None]
    torch.testing.assert_close(bfn(mu, lam), mu / gamma - ((1 - gamma) / gamma).sqrt() * eps)
    vdm = make_process("vdm").parameterize(lambda z, t: eps)
    torch.testing.assert_close(vdm(mu, lam), mu - eps / lam.sqrt()[:, None])


def test_network_sees_scaled_input_and_noise_level():
    seen = {}

    def backbone(x, t):
        seen["x"], seen["t"] = x, t
        return torch.zeros_like(x)

    proc = make_process("vdm")
    lam = torch.tensor([proc.lambda_min, 10.0, proc.lambda_max], dtype=torch.float64)
    mu = torch.ones(3, 2, dtype=torch.float64)
    proc.parameterize(backbone)(mu, lam)
    alpha_t = (lam / (1 + lam)).sqrt()  # VDM feeds z = alpha_t mu
    torch.testing.assert_close(seen["x"], alpha_t[:, None] * mu)
    expected_t = torch.log(lam / proc.lambda_min) / math.log(proc.lambda_max / proc.lambda_min)
    torch.testing.assert_close(seen["t"].double(), expected_t, rtol=1e-6, atol=1e-7)
    assert seen["t"][0] == 0 and abs(seen["t"][-1] - 1) < 1e-6


def test_discretised_scale_follows_bfn():
    proc = make_process("bfn", output="discretised", data_bins=16)
    lam = torch.tensor([2.0, 100.0], dtype=torch.float64)
    raw = torch.zeros(2, 2, dtype=torch.float64)
    raw[:, 1] = torch.tensor([0.3, -2.0], dtype=torch.float64)
    coef = proc.parameterize(lambda x, t: raw).coefficients(lam)
    gamma = (lam - 1) / lam
    torch.testing.assert_close(coef["base_scale"], ((1 - gamma) / gamma).sqrt())


def test_zero_backbone_gives_each_methods_baseline():
    """With F = 0 (zero-initialised output layers) edm returns the linear posterior mean, eps returns mu/a."""
    x = torch.zeros(2, 3)
    lam = torch.tensor([0.5, 1e3])
    for name in ("bsi", "vdm"):
        proc = make_process(name)
        out = proc.parameterize(lambda x_in, t: torch.zeros_like(x_in))(x + 1, lam)
        assert torch.isfinite(out).all()


def test_backbone_with_wrong_channels_is_a_clear_error():
    proc = make_process("bsi", output="discretised", data_bins=17)
    den = proc.parameterize(lambda x, t: x)
    with pytest.raises(ValueError, match="out_channels=2"):
        den(torch.zeros(2, 1, 8, 8), torch.ones(2))
    assert proc.out_channels(3) == 6 and make_process("bsi").out_channels(3) == 3
