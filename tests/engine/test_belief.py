"""The belief marginal and update against their closed forms, for every preset."""

import pytest
import torch

from bsi.engine import make_process

METHODS = ["bsi", "bfn", "vdm"]


def closed_form(name, lam):
    """docs/design.md's table: (a, s2) per method, float64."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    if name == "bsi":
        return (lam - 1e-2) / lam, 1 / lam
    if name == "bfn":
        gamma = (lam - 1) / lam
        return gamma, gamma * (1 - gamma)
    return torch.ones_like(lam), 1 / lam


@pytest.mark.parametrize("name", METHODS)
def test_coefficients_match_table(name):
    proc = make_process(name)
    lam = torch.logspace(0.01, 5.5, 50, dtype=torch.float64) * proc.lambda_min
    a, s2 = closed_form(name, lam)
    torch.testing.assert_close(proc.family.mean_coef(lam), a, rtol=1e-12, atol=0)
    # the table's gamma (1 - gamma) itself loses digits near gamma = 1; ours is the accurate form
    torch.testing.assert_close(proc.family.variance(lam), s2, rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_belief_moments_match_closed_form(name):
    proc = make_process(name)
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 5).repeat(20000, 1)  # (B, 5): many draws of five values
    lam_value = {"bsi": 3.0, "bfn": 4.0, "vdm": 2.0}[name]
    lam = torch.full((x.shape[0],), lam_value)
    mu = proc.belief(x, lam, generator=g).double()
    a, s2 = closed_form(name, lam_value)
    torch.testing.assert_close(mu.mean(0), a * x[0].double(), atol=4 * (s2 / len(x)) ** 0.5, rtol=0)
    torch.testing.assert_close(mu.var(0), torch.full((5,), float(s2), dtype=torch.float64), rtol=0.05, atol=0)


@pytest.mark.parametrize("name", ["bsi", "bfn"])
def test_closed_form_equals_simulated_measurements(name):
    """Start belief + explicit noisy measurements of x give the marginal q(mu | x, lam)."""
    proc = make_process(name)
    g = torch.Generator().manual_seed(1)
    n, x = 40000, torch.tensor([0.7, -0.3])
    lam0 = proc.family.lam0
    if proc.family.drawn_start:
        mu = torch.randn(n, 2, generator=g, dtype=torch.float64) / lam0**0.5
    else:
        mu = torch.zeros(n, 2, dtype=torch.float64)
    lam = torch.full((n,), lam0, dtype=torch.float64)
    for alpha_value in [0.5, 2.0, 7.5]:
        alpha = torch.full((n,), alpha_value, dtype=torch.float64)
        y = x + torch.randn(n, 2, generator=g, dtype=torch.float64) / alpha_value**0.5
        mu = proc.family.update(mu, lam, y, alpha)
        lam = lam + alpha
    a, s2 = closed_form(name, lam[0])
    torch.testing.assert_close(mu.mean(0), a * x.double(), atol=4 * (s2 / n) ** 0.5, rtol=0)
    torch.testing.assert_close(mu.var(0), torch.full((2,), float(s2), dtype=torch.float64), rtol=0.04, atol=0)


def test_update_matches_closed_form_and_stays_accurate_at_high_precision():
    proc = make_process("bsi")
    lam, alpha = torch.tensor([1e5, 0.5]), torch.tensor([9e5, 0.25])
    mu, y = torch.tensor([[0.123456], [-0.4]]), torch.tensor([[0.123466], [0.8]])
    expected = (lam[:, None].double() * mu.double() + alpha[:, None].double() * y.double()) / (lam + alpha)[:, None].double()
    out = proc.family.update(mu, lam, y, alpha)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-7)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ends_of_the_range_are_finite_and_accurate(name, dtype):
    proc = make_process(name)
    lo, hi = proc.lambda_min, proc.lambda_max
    lam = torch.tensor([lo, lo * (1 + 1e-6), 1.0001 * lo + 1e-4, hi / 2, hi], dtype=torch.float32)
    x = torch.linspace(-1, 1, 5)[:, None].repeat(1, 4).to(dtype)
    mu = proc.belief(x, lam, generator=torch.Generator().manual_seed(0))
    assert mu.dtype == dtype and torch.isfinite(mu).all()
    # at the top of the range the belief is within a few standard deviations of x
    assert (mu[-1].float() - x[-1].float()).abs().max() < 6 * hi**-0.5 + 1e-2
    # coefficients are computed in float64 from the float32 lam: relative error at float32 rounding
    a = proc.family.mean_coef(lam)
    a_ref, _ = closed_form(name, lam.double())
    assert torch.allclose(a, a_ref, rtol=1e-12, atol=0)
    if name == "bfn":  # gamma = 1e-4 just above lam = 1 keeps its digits
        g = proc.family.mean_coef(torch.tensor([1.0001], dtype=torch.float64))
        torch.testing.assert_close(g, torch.tensor([1e-4 / 1.0001], dtype=torch.float64), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_sigma_inverse_roundtrip(name):
    proc = make_process(name)
    lam = proc.lambda_min * (1 + torch.logspace(-3, 6, 25, dtype=torch.float64))
    sigma = proc.family.sigma(lam)
    torch.testing.assert_close(proc.family.lam_at_sigma(sigma), lam, rtol=1e-9, atol=0)


def test_vdm_prior_term_is_vdms_kl():
    """KL(q(z_1|x) || N(0, I)) in VDM's own variables equals our prior term."""
    proc = make_process("vdm")
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)[None]
    snr = torch.tensor(proc.lambda_min, dtype=torch.float64)
    alpha2 = snr / (1 + snr)
    mean, var = alpha2.sqrt() * x, 1 / (1 + snr)
    kl = 0.5 * (var + mean**2 - 1 + torch.log1p(snr)).sum()
    torch.testing.assert_close(proc.family.prior_kl(x, proc.lambda_min)[0], kl, rtol=1e-9, atol=0)
    assert make_process("bsi").family.prior_kl(x, 1e-2).abs().max() == 0
    assert make_process("bfn").family.prior_kl(x, 1.0).abs().max() == 0


def test_bad_inputs_raise_clear_errors():
    proc = make_process("bsi", data_bins=256)
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="shape"):
        proc.belief(x, torch.ones(3))
    with pytest.raises(ValueError, match="precision range"):
        proc.belief(x, torch.full((4,), 1e-3))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        proc.belief(x + 2, torch.ones(4))
    with pytest.raises(ValueError, match="unknown process"):
        make_process("ddpm")
    with pytest.raises(ValueError, match="unknown setting"):
        make_process("bsi", lamda_min=1.0)
