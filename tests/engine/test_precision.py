"""Precision ranges, schedules and step grids."""

import math

import pytest
import torch

from bsi.engine import SPACINGS, make_process


@pytest.mark.parametrize("name", ["bsi", "bfn", "vdm"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_grids_are_increasing_and_hit_both_ends(name, spacing):
    proc = make_process(name)
    start = proc.sampling.start_precision(proc.family, proc.precision, "ode2", spacing)
    lams = proc.sampling_grid(25, "ode2", spacing)
    assert lams.shape == (26,) and lams.dtype == torch.float64
    assert lams[0] == start and lams[-1] == proc.lambda_max
    assert (lams[1:] > lams[:-1]).all()


def test_edm_spacing_is_rho_spacing_in_sigma():
    proc = make_process("vdm")
    lams = proc.step_precisions(10, "edm", start=proc.lambda_min)
    sigma = proc.family.sigma(lams)
    s0, s1, rho = sigma[0], sigma[-1], 7.0
    i = torch.arange(11, dtype=torch.float64) / 10
    expected = (s0 ** (1 / rho) + i * (s1 ** (1 / rho) - s0 ** (1 / rho))) ** rho
    torch.testing.assert_close(sigma, expected, rtol=1e-9, atol=0)


def test_time_spacing_under_loglinear_is_geometric_and_bfns():
    proc = make_process("bfn", sigma_1=1e-3)
    lams = proc.step_precisions(8, "time")
    t = torch.arange(9, dtype=torch.float64) / 8
    torch.testing.assert_close(lams, 1e-3 ** (-2 * t))
    torch.testing.assert_close(lams, proc.step_precisions(8, "geometric"))


def test_cosine_schedule_matches_its_definition_and_derivative():
    proc = make_process("vdm", schedule="cosine")
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    lam = proc.schedule.lam(t)
    assert abs(lam[0] - proc.lambda_min) < 1e-12 and abs(lam[-1] / proc.lambda_max - 1) < 1e-9
    torch.testing.assert_close(proc.schedule.t(lam), t)
    h = 1e-6
    numeric = (proc.schedule.lam(t[1:-1] + h) - proc.schedule.lam(t[1:-1] - h)) / (2 * h)
    torch.testing.assert_close(proc.schedule.dlam_dt(t[1:-1]), numeric, rtol=1e-5, atol=0)


def test_network_time_is_the_one_log_mapping():
    proc = make_process("bsi")
    lam = torch.tensor([proc.lambda_min, math.sqrt(proc.lambda_min * proc.lambda_max), proc.lambda_max])
    torch.testing.assert_close(proc.precision.t(lam), torch.tensor([0.0, 0.5, 1.0]), atol=1e-6, rtol=0)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="spacing"):
        make_process("bsi").step_precisions(5, "linear")
    with pytest.raises(ValueError, match="positive"):
        make_process("bsi").step_precisions(0)
    with pytest.raises(ValueError, match="lambda_min < lambda_max"):
        make_process("bsi", lambda_min=10.0, lambda_max=1.0, lam0=0.0)
