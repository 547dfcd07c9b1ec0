"""The papers' processes as builders, and :func:`make_process`, which dispatches to them by name.

| choice               | bsi                         | bfn                     | vdm                          |
|----------------------|-----------------------------|-------------------------|------------------------------|
| precision range      | [1e-2, 1e-2 + 1e6]          | [1, sigma_1^-2]         | [snr_min, snr_max]           |
| start belief         | mu0 ~ N(0, 1/lam0), drawn   | mu0 = 0, lam0 = 1       | lam0 = 0, prior at snr_min   |
| prediction           | edm                         | eps (clipped, mu input) | eps (scaled input z)         |
| proposal             | log_uniform                 | uniform_t (loglinear)   | uniform_t (loglinear)        |
| reconstruction alpha | 2e6                         | sigma_1^-2              | snr_max                      |
| prior term           | 0                           | 0                       | KL at snr_min                |

Every row is a keyword (a field of :class:`GaussianSettings`), so mixes are one override away
(``make_process("bfn", prediction="edm")``).  ``bfn-discrete`` is BFN on K-class data: the same
process on the data's one-hot vectors with ``lam = K beta``, BFN's accuracy schedule
``beta_1 tau^2`` and ``tau ~ U(0, 1)`` (:class:`CategoricalSettings`).

These values are the one source of truth: the method configs name a preset and leave every
setting at ``null``, which means "the preset's".  A setting that a process would ignore is an
error, not a silent no-op.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .belief import BeliefFamily
from .choices import check_choice
from .parameterization import CategoricalParameterization, GaussianParameterization
from .precision import SCHEDULES, PrecisionRange
from .process import Process
from .proposal import make_proposal
from .sampling import SamplingSetup
from .space import Continuous, OneHot

CATEGORICAL_LAMBDA_MIN = 1e-10  # relative to lambda_max: what a belief mean can start from instead of BFN's lam = 0


@dataclass(frozen=True)
class GaussianSettings:
    """Every keyword of the continuous-data presets (precisions are floats; ``alpha_r`` is a precision)."""

    lam0: float
    drawn_start: bool
    lambda_min: float
    lambda_max: float
    prediction: str
    scale_input: bool
    clip: bool
    proposal: str
    alpha_r: float
    output: str = "point"
    data_bins: int | None = None
    schedule: str = "loglinear"
    proposal_options: dict | None = None
    sigma_data: float = 1.0
    min_scale: float = 1e-3
    stratified: bool = True
    elbo_spacing: str = "geometric"
    sample_spacing: str = "geometric"
    sigma_max: float = 80.0
    calibration: float = 0.0
    kstep_estimator: str = "low_variance"


@dataclass(frozen=True)
class CategoricalSettings:
    """Every keyword of ``bfn-discrete``: ``num_classes`` K (or ``data_bins``) and BFN's ``beta_1``."""

    num_classes: int | None = None
    beta_1: float = 3.0
    data_bins: int | None = None
    output: str = "discretised"
    proposal: str = "uniform_t"
    proposal_options: dict | None = None
    schedule: str = "quadratic"
    stratified: bool = True
    elbo_spacing: str = "time"
    sample_spacing: str = "time"
    sigma_max: float = 80.0
    calibration: float = 0.0
    kstep_estimator: str = "low_variance"


BSI = GaussianSettings(lam0=1e-2, drawn_start=True, lambda_min=1e-2, lambda_max=1e-2 + 1e6, prediction="edm",
                       scale_input=True, clip=False, proposal="log_uniform", alpha_r=2e6)
BFN = GaussianSettings(lam0=1.0, drawn_start=False, lambda_min=1.0, lambda_max=1e6, prediction="eps",
                       scale_input=False, clip=True, proposal="uniform_t", alpha_r=1e6)
VDM = GaussianSettings(lam0=0.0, drawn_start=True, lambda_min=6.7379e-3, lambda_max=5.9720e5, prediction="eps",
                       scale_input=True, clip=False, proposal="uniform_t", alpha_r=5.9720e5)


def _settings(name: str, defaults, overrides: dict[str, Any]):
    """``defaults`` with ``overrides``; a ``ValueError`` names keywords the preset does not have."""
    known = {f.name for f in fields(defaults)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for make_process('{name}'): it takes {', '.join(sorted(known))}")
    return replace(defaults, **overrides)


def _refuse_ignored(s: GaussianSettings, given: set[str]) -> None:
    """A setting passed explicitly that this combination would not use is an error."""
    ignored = {
        "alpha_r": s.output == "discretised",  # a distribution output is its own reconstruction
        "clip": s.output == "discretised",      # only a point is clipped
        "min_scale": s.output == "point",
        "scale_input": s.prediction == "edm",   # edm always scales its input
    }
    for key, unused in ignored.items():
        if unused and key in given:
            raise ValueError(f"{key} has no effect with output={s.output}, prediction={s.prediction}: remove it")


def _gaussian(name: str, s: GaussianSettings) -> Process:
    check_choice("schedule", s.schedule, [k for k in SCHEDULES if k != "quadratic"])
    precision = PrecisionRange(float(s.lambda_min), float(s.lambda_max))
    if s.lam0 > s.lambda_min:
        raise ValueError(f"lam0={s.lam0} must not exceed lambda_min={s.lambda_min}")
    if s.output == "discretised" and not s.data_bins:
        raise ValueError("output=discretised needs the data's number of levels: pass data_bins")
    schedule = SCHEDULES[s.schedule](precision)
    bins = None if s.data_bins is None else int(s.data_bins)
    return Process(
        name=name, space=Continuous(bins, float(s.alpha_r)),
        beliefs=BeliefFamily(float(s.lam0), bool(s.drawn_start)), precision=precision, schedule=schedule,
        proposal=make_proposal(s.proposal, precision, schedule, **(s.proposal_options or {})),
        parameterization=GaussianParameterization(s.prediction, s.output, bool(s.scale_input), bool(s.clip),
                                                  float(s.sigma_data), float(s.min_scale)),
        sampling=SamplingSetup(s.sample_spacing, float(s.sigma_max)), elbo_spacing=s.elbo_spacing,
        stratified=bool(s.stratified), calibration=float(s.calibration),
        kstep_estimator=s.kstep_estimator,
    )


def _bsi(overrides: dict[str, Any]) -> GaussianSettings:
    """Bayesian Sample Inference: drawn start belief of precision 1e-2, 1e6 of measurements, EDM preconditioning."""
    return _settings("bsi", BSI, overrides)


def _bfn(overrides: dict[str, Any]) -> GaussianSettings:
    """Continuous-data BFN: ``lam`` from 1 to ``sigma_1^-2`` (which is also the reconstruction precision)."""
    overrides = dict(overrides)
    sigma_1 = float(overrides.pop("sigma_1", 1e-3))
    if "lambda_max" in overrides:
        raise ValueError("bfn sets lambda_max = sigma_1^-2: pass sigma_1, not lambda_max")
    defaults = replace(BFN, lambda_max=sigma_1**-2, alpha_r=sigma_1**-2)
    return _settings("bfn", defaults, overrides)


def _vdm(overrides: dict[str, Any]) -> GaussianSettings:
    """VDM with a fixed log-linear SNR schedule: ``lam`` is the SNR, from ``snr_min`` to ``snr_max``."""
    overrides = dict(overrides)
    snr_min, snr_max = float(overrides.pop("snr_min", 6.7379e-3)), float(overrides.pop("snr_max", 5.9720e5))
    for key in ("lambda_min", "lambda_max"):
        if key in overrides:
            raise ValueError(f"vdm's range is [snr_min, snr_max]: pass those, not {key}")
    defaults = replace(VDM, lambda_min=snr_min, lambda_max=snr_max, alpha_r=snr_max)
    return _settings("vdm", defaults, overrides)


def _bfn_discrete(overrides: dict[str, Any]) -> CategoricalSettings:
    """BFN on ``num_classes``-class data (``beta_1``: BFN's final accuracy; its code sets ``sqrt(beta_1)``,
    ``max_sqrt_beta``: 3 for binarized MNIST and 0.75 for text8, i.e. ``beta_1`` 9 and 0.5625)."""
    s = _settings("bfn-discrete", CategoricalSettings(), overrides)
    classes = s.num_classes or s.data_bins
    if not classes:
        raise ValueError("bfn-discrete needs the number of classes: pass num_classes (or data_bins)")
    if s.data_bins not in (None, classes):
        raise ValueError(f"num_classes={classes} and data_bins={s.data_bins} disagree: pass one of them")
    return replace(s, num_classes=int(classes), data_bins=int(classes))


def _categorical(name: str, s: CategoricalSettings) -> Process:
    lam_max = int(s.num_classes) * float(s.beta_1)
    precision = PrecisionRange(CATEGORICAL_LAMBDA_MIN * lam_max, lam_max)
    schedule = SCHEDULES[check_choice("schedule", s.schedule, SCHEDULES)](precision)
    return Process(
        name=name, space=OneHot(int(s.num_classes)), beliefs=BeliefFamily(0.0, True), precision=precision,
        schedule=schedule, proposal=make_proposal(s.proposal, precision, schedule, **(s.proposal_options or {})),
        parameterization=CategoricalParameterization(s.output), sampling=SamplingSetup(s.sample_spacing, s.sigma_max),
        elbo_spacing=s.elbo_spacing, stratified=bool(s.stratified), calibration=float(s.calibration),
        kstep_estimator=s.kstep_estimator,
    )


# Keywords of make_process besides the settings' fields: they set fields (bfn: lambda_max = alpha_r = sigma_1^-2;
# vdm: the range is [snr_min, snr_max]) and are not recorded themselves.
PRESET_KEYWORDS: dict[str, type] = {"sigma_1": float, "snr_min": float, "snr_max": float}

# name -> (what the overrides resolve to, what builds the process from the resolved settings)
PRESETS = {
    "bsi": (_bsi, _gaussian), "bfn": (_bfn, _gaussian), "vdm": (_vdm, _gaussian),
    "bfn-discrete": (_bfn_discrete, _categorical),
}


def resolve_settings(name: str = "bsi", **overrides: Any) -> dict[str, Any]:
    """Every setting of the process ``name`` with ``overrides`` applied: ``{"name": name, field: value, ...}``.

    The record a run keeps: :func:`process_from_settings` rebuilds the same process from it whatever
    the presets say later.  ``None`` means "the preset's value"; unknown or ignored keywords raise.
    """
    check_choice("process", name, PRESETS)
    given = {key: value for key, value in overrides.items() if value is not None}
    settings = PRESETS[name][0](given)
    if isinstance(settings, GaussianSettings):
        _refuse_ignored(settings, set(given))
    if settings.proposal_options is None:  # no options: recorded as {} so that a record has no null to resolve
        settings = replace(settings, proposal_options={})
    return {"name": name, **asdict(settings)}


def process_from_settings(settings: dict[str, Any]) -> Process:
    """The process of a complete record from :func:`resolve_settings` (no preset value is read)."""
    record = dict(settings)
    name = record.pop("name")
    check_choice("process", name, PRESETS)
    kind = GaussianSettings if PRESETS[name][1] is _gaussian else CategoricalSettings
    missing = sorted({f.name for f in fields(kind)} - set(record))
    if missing:
        raise ValueError(f"the settings of process '{name}' lack {missing}: record them all (see resolve_settings)")
    return PRESETS[name][1](name, _settings(name, kind(**{f.name: record[f.name] for f in fields(kind)}), record))


def preset_differences(settings: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[str]:
    """The settings of a record that today's preset (with ``overrides``) would set otherwise, as ``key: old -> new``."""
    try:
        today = resolve_settings(settings["name"], **(overrides or {}))
    except ValueError:
        return []
    return [f"{key}: {settings.get(key)!r} -> {value!r}" for key, value in today.items() if settings.get(key) != value]


def make_process(name: str = "bsi", **overrides: Any) -> Process:
    """The process ``name`` (``bsi``, ``bfn``, ``vdm``, ``bfn-discrete``) with its paper's settings, any overridden.

    Keywords are the fields of :class:`GaussianSettings` (plus ``sigma_1`` for bfn, ``snr_min`` and
    ``snr_max`` for vdm) or of :class:`CategoricalSettings`; ``None`` means "the preset's value"
    (how the method configs leave a setting to the preset).  Unknown or ignored keywords raise.
    """
    return process_from_settings(resolve_settings(name, **overrides))


__all__ = ["CATEGORICAL_LAMBDA_MIN", "PRESETS", "PRESET_KEYWORDS", "CategoricalSettings", "GaussianSettings", "make_process",
           "preset_differences", "process_from_settings", "resolve_settings"]
