"""Users' own pieces by name: dotted paths and objects on every axis, records that reload, a user's grid."""

import json
import math
from pathlib import Path

import pytest
import torch
from scipy import stats

from bsi.engine import make_process
from bsi.engine.exact import ExactDenoiser
from bsi.engine.prediction import VPrediction
from bsi.engine.presets import process_from_settings, resolve_settings

EXAMPLE = "user_process_example"


@pytest.fixture
def example(monkeypatch):
    """The worked example of docs/design.md, importable by its dotted path as a user's module would be."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import user_process_example

    return user_process_example


def test_a_users_schedule_by_dotted_path_and_as_a_class(example):
    by_path = make_process("vdm", schedule=f"{EXAMPLE}.Steeper")
    by_class = make_process("vdm", schedule=example.Steeper)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    for proc in (by_path, by_class):
        assert isinstance(proc.schedule, example.Steeper)
        # lam(t) = lam_min (lam_max/lam_min)^(t^2), whatever the class's code says
        expected = proc.lambda_min * (proc.lambda_max / proc.lambda_min) ** (t**2)
        torch.testing.assert_close(proc.schedule.lam(t), expected)
    record = resolve_settings("vdm", schedule=example.Steeper)
    assert record["schedule"] == f"{EXAMPLE}.Steeper"  # the record keeps the path, so it reloads
    assert isinstance(process_from_settings(json.loads(json.dumps(record))).schedule, example.Steeper)


def test_a_whole_users_process_has_the_exact_denoisers_elbo_and_samples(example, digits):
    """STEEP_VE trains on t ~ U(0, 1) under the user's schedule: its ELBO of the exact denoiser is ln N."""
    proc = make_process(f"{EXAMPLE}.STEEP_VE", data_bins=17)
    record = resolve_settings(f"{EXAMPLE}.STEEP_VE", data_bins=17)
    assert record["name"] == proc.name == f"{EXAMPLE}.STEEP_VE" and record["schedule"] == f"{EXAMPLE}.Steeper"
    points = digits[:64].double()
    den = ExactDenoiser(points, proc.beliefs)
    terms = proc.elbo(points.repeat(4, 1, 1, 1), den, n_samples=64, generator=torch.Generator().manual_seed(0))
    total = terms["total"]
    mean, se = total.mean().item(), total.std().item() / math.sqrt(len(total))
    excess = proc.lambda_min * (points.flatten(1).mean(0) ** 2).sum().item() / 2 + 1e-3
    assert math.log(64) - 4 * se - 0.02 < mean < math.log(64) + excess + 4 * se + 0.02, (mean, se)
    pts = points[:4].flatten(1)
    den = ExactDenoiser(pts, proc.beliefs)
    x = proc.sample(den, (200, 64), steps=60, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dist, which = torch.cdist(x, pts).min(1)
    assert dist.max() < 1e-3 and stats.chisquare(torch.bincount(which, minlength=4).numpy()).pvalue > 1e-3


def test_a_users_weighting_by_dotted_path_with_options(example):
    proc = make_process("vdm", weighting=f"{EXAMPLE}.SnrCapped", weighting_options={"cap": 3.0})
    x = torch.rand(32, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    u = torch.rand(32, dtype=torch.float64)
    zero = lambda mu, lam: torch.zeros_like(mu)  # noqa: E731  x_hat = 0: the error is ||x||^2
    out = proc.training_loss(x, zero, u=u)
    lam = proc.proposal.lam(u)[0]  # VDM's lam is the SNR
    expected = torch.clamp(lam, max=3.0) * 0.5 * (x**2).sum(1) / 5
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-6, atol=0)
    assert out.name == "snr_capped"


def test_objects_are_accepted_on_every_axis(example):
    from bsi.engine.proposal import LogUniformProposal
    from bsi.engine.weighting import MinSnrWeighting

    proc = make_process("vdm", prediction=VPrediction(), weighting=MinSnrWeighting(gamma=2.0),
                        proposal=lambda precision, schedule: LogUniformProposal(precision), schedule=example.Steeper)
    assert proc.weighting.gamma == 2.0 and proc.proposal.name == "log_uniform"
    assert proc.parameterization.coefficients(proc.beliefs, torch.tensor([1.0], dtype=torch.float64))["c_out"] < 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="mylab_missing.schedules.Steeper"), "could not import schedule 'mylab_missing.schedules.Steeper'|"
                                                        "unknown schedule 'mylab_missing.schedules.Steeper'"),
    (dict(schedule=f"{EXAMPLE}.Steepest"), f"unknown schedule '{EXAMPLE}.Steepest': .* has no attribute 'Steepest'"),
    (dict(schedule="steeper"), "unknown schedule 'steeper': choose one of loglinear, cosine, rectified_flow or give"),
    (dict(prediction=f"{EXAMPLE}.STEEP_VE"), "must provide name and coefficients"),
    (dict(weighting=f"{EXAMPLE}.Steeper"), "do not fit weighting|must provide name and draw"),
    (dict(proposal="math.pi"), "must provide name, lam"),
])
def test_bad_pieces_are_one_line_errors(example, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        make_process("vdm", **kwargs)
    assert "\n" not in str(err.value)


def test_an_unknown_preset_path_is_an_error(example):
    with pytest.raises(ValueError, match=f"unknown process '{EXAMPLE}.Nope'"):
        make_process(f"{EXAMPLE}.Nope")
    with pytest.raises(ValueError, match="must be GaussianSettings or CategoricalSettings"):
        make_process(f"{EXAMPLE}.Steeper")


def test_sample_on_a_users_grid_of_precisions():
    proc = make_process("vdm")
    pts = torch.tensor([[-0.8, -0.6], [0.7, -0.5], [-0.4, 0.9], [0.6, 0.6]], dtype=torch.float64)
    den = ExactDenoiser(pts, proc.beliefs)
    lams = torch.logspace(math.log10(proc.lambda_min), math.log10(proc.lambda_max), 41, dtype=torch.float64)
    seen = []
    x = proc.sample(den, (300, 2), lams=lams, generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                    callback=lambda i, lam, mu, x_hat: seen.append(lam[0].item()))
    assert seen == lams.tolist()  # exactly the user's grid, one call per precision
    assert torch.cdist(x, pts).min(1).values.max() < 1e-3
    for bad in (lams.flip(0), lams * 10, lams[:1]):
        with pytest.raises(ValueError, match="lams"):
            proc.sample(den, (4, 2), lams=bad)
