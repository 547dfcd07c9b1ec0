"""The presets are the papers' settings, the one source of truth, and refuse what they would ignore."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from bsi.engine import (
    CategoricalParameterization, Continuous, GaussianParameterization, OneHot, make_process,
)
from bsi.engine.presets import (
    BSI, CATEGORICAL_LAMBDA_MIN, PRESETS, preset_differences, process_from_settings, resolve_settings,
)

METHOD_CONFIGS = Path(__file__).resolve().parents[2] / "bsi" / "configs" / "method"


def test_the_papers_settings():
    p = make_process("bsi")
    assert (p.beliefs.lam0, p.beliefs.drawn_start, p.lambda_min, p.lambda_max) == (1e-2, True, 1e-2, 1e-2 + 1e6)
    assert p.parameterization == GaussianParameterization("edm", "point", True, False)
    assert p.space == Continuous(None, 2e6) and p.proposal.name == "log_uniform"
    p = make_process("bfn", sigma_1=1e-2)
    assert (p.beliefs.lam0, p.beliefs.drawn_start, p.lambda_min, p.lambda_max) == (1.0, False, 1.0, pytest.approx(1e4))
    assert p.space.alpha_r == pytest.approx(1e4) and p.parameterization.prediction == "eps" and p.parameterization.clip
    assert not p.parameterization.scale_input and p.proposal.name == "uniform_t"
    p = make_process("vdm", snr_min=1e-3, snr_max=1e5)
    assert (p.beliefs.lam0, p.lambda_min, p.lambda_max, p.space.alpha_r) == (0.0, 1e-3, 1e5, 1e5)
    p = make_process("bfn-discrete", num_classes=27, beta_1=0.5625)
    assert p.space == OneHot(27) and p.lambda_max == pytest.approx(27 * 0.5625)
    assert p.lambda_min == pytest.approx(CATEGORICAL_LAMBDA_MIN * 27 * 0.5625)
    assert p.parameterization == CategoricalParameterization() and p.schedule.name == "quadratic"
    assert (p.elbo_spacing, p.sample_spacing, p.proposal.name) == ("time", "time", "uniform_t")


def settings(p):
    """A process's choices as comparable values (schedules and proposals compare by kind and range)."""
    return (p.name, p.space, p.beliefs, p.precision, p.parameterization, p.sampling, p.elbo_spacing, p.stratified,
            p.schedule.name, p.schedule.precision, p.proposal.name)


def test_none_means_the_presets_value():
    assert resolve_settings("bfn", sigma_1=1e-2, proposal=None) == resolve_settings("bfn", sigma_1=1e-2)
    assert make_process("vdm", schedule="cosine").schedule.name == "cosine"
    assert resolve_settings("bsi", lam0=None, data_bins=None) == resolve_settings("bsi")
    assert settings(make_process("bfn-discrete", data_bins=2)) == settings(make_process("bfn-discrete", num_classes=2))
    assert set(PRESETS) == {"bsi", "bfn", "vdm", "edm", "flow", "bfn-discrete"}


@pytest.mark.parametrize("name, kwargs", [
    ("bsi", {}), ("bfn", {"sigma_1": 1e-2, "output": "discretised", "data_bins": 17}), ("vdm", {"snr_max": 1e4}),
    ("bfn-discrete", {"num_classes": 27}),
])
def test_the_resolved_settings_are_complete_and_rebuild_the_same_process(name, kwargs):
    record = resolve_settings(name, **kwargs)
    assert None not in [v for k, v in record.items() if k not in ("data_bins", "proposal_options", "num_classes")]
    assert settings(process_from_settings(record)) == settings(make_process(name, **kwargs))
    assert preset_differences(record, kwargs) == []


def test_a_record_rebuilds_its_process_after_the_preset_changes(monkeypatch):
    record = resolve_settings("bsi")
    monkeypatch.setattr("bsi.engine.presets.BSI", replace(BSI, lam0=5e-3, proposal="uniform_t"))
    assert process_from_settings(record).beliefs.lam0 == 1e-2
    assert make_process("bsi").beliefs.lam0 == 5e-3
    assert preset_differences(record) == ["lam0: 0.01 -> 0.005", "proposal: 'log_uniform' -> 'uniform_t'"]
    with pytest.raises(ValueError, match=r"lack \['lam0'\]"):
        process_from_settings({k: v for k, v in record.items() if k != "lam0"})


@pytest.mark.parametrize("name, kwargs, match", [
    ("bsi", dict(lamda_min=1.0), r"unknown setting\(s\) \['lamda_min'\]"),
    ("bsi", dict(sigma_1=1e-3), r"unknown setting\(s\) \['sigma_1'\]"),
    ("bfn-discrete", dict(num_classes=2, prediction="eps"), r"\['prediction'\]"),
    ("bfn-discrete", dict(num_classes=2, alpha_r=1.0), r"\['alpha_r'\]"),
    ("bsi", dict(output="discretised", data_bins=17, alpha_r=1e5), "alpha_r has no effect"),
    ("bfn", dict(output="discretised", data_bins=17, clip=True), "clip has no effect"),
    ("bsi", dict(min_scale=1e-2), "min_scale has no effect"),
    ("bsi", dict(scale_input=False), "scale_input has no effect"),
    ("bsi", dict(proposal_options={"bins": 8}), "proposal=adaptive only"),
    ("bfn", dict(lambda_max=1e4), "pass sigma_1"),
    ("vdm", dict(lambda_min=1e-3), "snr_min, snr_max"),
    ("bsi", dict(output="discretised"), "needs the data's number of levels"),
    ("bsi", dict(prediction="w"), "unknown prediction 'w'"),
    ("bsi", dict(schedule="quadratic"), "unknown schedule"),
    ("vdm", dict(sample_spacing="uniform"), "unknown step spacing"),
    ("ddpm", {}, "unknown process 'ddpm'"),
])
def test_unknown_and_ignored_settings_are_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_process(name, **kwargs)


def test_overrides_that_are_used_are_accepted():
    p = make_process("bsi", output="discretised", data_bins=17, min_scale=1e-2)
    assert p.parameterization.min_scale == 1e-2
    p = make_process("bfn", prediction="edm", scale_input=None, proposal="adaptive", proposal_options={"bins": 8})
    assert p.parameterization.prediction == "edm" and p.proposal.bins == 8
    assert make_process("vdm", output="point", data_bins=256, alpha_r=1e4).space.alpha_r == 1e4


@pytest.mark.parametrize("path", sorted(METHOD_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_method_configs_hold_no_preset_values_and_only_real_keywords(path):
    """Every key but the name is null (the preset decides), and each is a keyword the preset takes."""
    cfg = yaml.safe_load(path.read_text())
    assert cfg["name"] == path.stem and cfg["name"] in PRESETS
    assert {k: v for k, v in cfg.items() if k != "name" and v is not None} == {}
    bins = 2 if cfg["name"] == "bfn-discrete" else 17
    for key in cfg:
        if key != "name":  # a real keyword: setting it alone to a valid value must not be "unknown"
            try:
                make_process(cfg["name"], data_bins=bins, **{key: VALID[key]})
            except ValueError as err:
                assert "unknown setting" not in str(err), (key, err)


VALID = dict(lam0=0.0, drawn_start=True, lambda_min=0.5, lambda_max=10.0, prediction="x", scale_input=True,
             clip=False, sigma_data=0.5, min_scale=1e-2, alpha_r=10.0, proposal="adaptive", proposal_options={},
             schedule="cosine", stratified=False, elbo_spacing="edm", sample_spacing="edm", sigma_max=10.0,
             sigma_1=1e-2, snr_min=1e-2, snr_max=1e4, beta_1=2.0, calibration=0.5,
             kstep_estimator="one_draw", weighting="min_snr", weighting_options={}, sample_solver="ode2", sigma_min=0.01,
             t_min=0.01)


def test_presets_build_working_processes_on_data():
    x = torch.linspace(-1, 1, 17).repeat(4, 1)[:, None]
    for name in ("bsi", "bfn", "vdm"):
        proc = make_process(name, data_bins=17, output="discretised")
        lam = torch.full((4,), 10.0 * proc.lambda_min, dtype=torch.float64)
        assert proc.belief(x, lam, torch.Generator().manual_seed(0)).shape == x.shape


@pytest.mark.parametrize("name, kwargs", [
    ("edm", {"sigma_min": 0.01}), ("flow", {"weighting": "min_snr", "t_min": 0.01}),
    ("bsi", {"weighting": "edm", "weighting_options": {"p_mean": -1.0}}), ("vdm", {"sample_solver": "ode3"}),
])
def test_the_new_axes_are_recorded_and_a_written_record_rebuilds_them(name, kwargs):
    import json

    record = resolve_settings(name, **kwargs)
    proc = process_from_settings(json.loads(json.dumps(record)))
    assert settings(proc) == settings(make_process(name, **kwargs))
    assert (proc.weighting.name, proc.sample_solver) == (record["weighting"], record["sample_solver"])
    assert preset_differences(record, kwargs) == []
    if "weighting_options" in kwargs:
        assert proc.weighting.p_mean == -1.0
