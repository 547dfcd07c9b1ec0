"""The edm and flow presets on known answers: the papers' values, the exact denoiser's ELBO and samples."""


import pytest
import torch
from scipy import stats

from bsi.engine import make_process
from bsi.engine.exact import ExactDenoiser

N_POINTS = 64


def test_the_papers_settings():
    p = make_process("edm")
    assert (p.family.lam0, p.lambda_min, p.lambda_max) == (0.0, 80.0**-2, 0.002**-2)
    sigma = p.family.sigma(torch.tensor([p.lambda_max, p.lambda_min], dtype=torch.float64))
    torch.testing.assert_close(sigma, torch.tensor([0.002, 80.0], dtype=torch.float64))
    assert (p.parameterization.prediction, p.parameterization.sigma_data) == ("edm", 0.5)
    assert (p.weighting.name, p.weighting.p_mean, p.weighting.p_std) == ("edm", -1.2, 1.2)
    assert (p.sample_solver, p.sample_spacing) == ("ode2", "edm")
    q = make_process("flow")
    s = 1 / (1 + torch.tensor([q.lambda_min, q.lambda_max], dtype=torch.float64).sqrt())
    torch.testing.assert_close(s, torch.tensor([1 - 1e-3, 1e-3], dtype=torch.float64))
    assert (q.parameterization.prediction, q.parameterization.scale_input) == ("v", False)
    assert (q.weighting.name, q.sample_solver, q.sample_spacing, q.schedule.name) == ("flow", "ode1", "time", "rectified_flow")
    # the sampling grid is uniform in flow matching's time s, from noise to data
    grid = q.sampling_grid(4)
    torch.testing.assert_close(1 / (1 + grid.sqrt()), torch.linspace(1 - 1e-3, 1e-3, 5, dtype=torch.float64))
    assert make_process("edm", sigma_min=0.01).lambda_max == pytest.approx(1e4)
    assert make_process("flow", t_min=0.01).lambda_max == pytest.approx(99.0**2)


def test_edm_grid_is_rho_7_in_sigma():
    """EDM's sigma_i = (sigma_max^(1/7) + i/(n-1) (sigma_min^(1/7) - sigma_max^(1/7)))^7."""
    proc = make_process("edm")
    grid = proc.sampling_grid(8)
    i = torch.arange(9, dtype=torch.float64)
    sigma = (80 ** (1 / 7) + i / 8 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(grid.rsqrt(), sigma, rtol=1e-9, atol=0)


def test_rectified_flow_schedule_is_consistent():
    sched = make_process("flow").schedule
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(sched.t(sched.lam(t)), t, rtol=0, atol=1e-9)
    h = 1e-6
    numeric = (sched.lam(t[1:-1] + h) - sched.lam(t[1:-1] - h)) / (2 * h)
    torch.testing.assert_close(sched.dlam_dt(t[1:-1]), numeric, rtol=1e-5, atol=0)


@pytest.fixture(scope="module")
def points(digits):
    return digits[:N_POINTS].double()


def four_points():
    return torch.tensor([[-0.8, -0.6], [0.7, -0.5], [-0.4, 0.9], [0.6, 0.6]], dtype=torch.float64)


@pytest.mark.parametrize("name", ["edm", "flow"])
@pytest.mark.parametrize("solver", [None, "ancestral", "ode3", "sde2"])
def test_samplers_cover_the_points_uniformly(name, solver):
    """The default sampler (edm: ode2 on rho = 7; flow: Euler uniform in s) and others land on the points."""
    proc = make_process(name)
    pts = four_points()
    den = ExactDenoiser(pts, proc.family)
    x = proc.sample(den, (400, 2), steps=40, solver=solver, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    dist, which = torch.cdist(x, pts).min(1)
    assert dist.max() < 1e-3, dist.max()
    counts = torch.bincount(which, minlength=4).double()
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3, counts


def test_default_samplers_on_the_digits_at_low_nfe(points):
    """10 network calls of each preset's own sampler already land near the points."""
    for name in ("edm", "flow"):
        proc = make_process(name)
        den = ExactDenoiser(points, proc.family)
        x = proc.sample(den, (256, *points.shape[1:]), steps=9, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
        rms = torch.cdist(x.flatten(1), points.flatten(1)).min(1).values / 8
        assert rms.median() < 0.05, (name, rms.median())
