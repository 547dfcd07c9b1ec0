"""The papers' processes as builders, and :func:`make_process`, which dispatches to them by name.

| choice               | bsi                       | bfn                     | vdm                        | edm                        | flow                          |
|----------------------|---------------------------|-------------------------|----------------------------|----------------------------|-------------------------------|
| precision range      | [1e-2, 1e-2 + 1e6]        | [1, sigma_1^-2]         | [snr_min, snr_max]         | [80^-2, 0.002^-2] (sigma)  | s in [1e-3, 1 - 1e-3]         |
| start belief         | mu0 ~ N(0, 1/lam0), drawn | mu0 = 0, lam0 = 1       | lam0 = 0, prior at snr_min | lam0 = 0 (a = 1, s2 = sigma^2) | lam0 = 0, lam = ((1-s)/s)^2 |
| prediction           | edm                       | eps (clipped, mu input) | eps (scaled input z)       | edm, sigma_data = 0.5      | v on the linear path          |
| proposal (ELBO)      | log_uniform               | uniform_t (loglinear)   | uniform_t (loglinear)      | log_uniform                | log_uniform                   |
| training weighting   | elbo                      | elbo                    | elbo                       | edm: ln sigma ~ N(-1.2, 1.2^2) | flow: s ~ U, v - v_hat    |
| reconstruction alpha | 2e6                       | sigma_1^-2              | snr_max                    | 0.002^-2                   | ((1 - 1e-3)/1e-3)^2           |
| prior term           | 0                         | 0                       | KL at snr_min              | KL at sigma = 80           | KL at s = 1 - 1e-3            |
| default sampler      | ancestral, geometric      | ancestral, geometric    | ancestral, geometric       | ode2, rho = 7 in sigma     | ode1 (Euler), uniform in s    |

Every row is a keyword (a field of :class:`GaussianSettings`), so mixes are one override away
(``make_process("bfn", prediction="edm")``, ``make_process("vdm", weighting="min_snr")``).  The
schedule, proposal, prediction, weighting and the preset itself also take a dotted path to a
user's own piece (``schedule="mylab.schedules.Steeper"``; see ``registry.py``).  ``bfn-discrete``
is BFN on K-class data: the same process on the data's one-hot vectors with ``lam = K beta``, BFN's
accuracy schedule ``beta_1 tau^2`` and ``tau ~ U(0, 1)`` (:class:`CategoricalSettings`).

EDM's sampler is Heun's second-order method (two network calls per step); the preset's ``ode2``
is second order too, with one call per step.  Rectified flow's Euler step on the linear path is
exactly ``ode1`` (DDIM's first-order step) in the belief's coordinates.

These values are the one source of truth: the method configs name a preset and leave every
setting at ``null``, which means "the preset's".  A setting that a process would ignore is an
error, not a silent no-op.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .belief import BeliefFamily
from .parameterization import CategoricalParameterization, GaussianParameterization
from .precision import SCHEDULES, PrecisionRange
from .process import Process
from .proposal import make_proposal
from .registry import ScheduleLike, dotted_path, is_factory, resolve
from .sampling import SamplingSetup
from .space import Continuous, OneHot
from .weighting import make_weighting

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
    weighting: str = "elbo"  # a name or a dotted path (make_process also takes the object itself)
    weighting_options: dict = field(default_factory=dict)  # options of the weighting (e.g. edm: p_mean, p_std)
    sample_solver: str = "ancestral"


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
    weighting: str = "elbo"  # a name or a dotted path (make_process also takes the object itself)
    weighting_options: dict = field(default_factory=dict)  # options of the weighting (e.g. edm: p_mean, p_std)
    sample_solver: str = "ancestral"


BSI = GaussianSettings(lam0=1e-2, drawn_start=True, lambda_min=1e-2, lambda_max=1e-2 + 1e6, prediction="edm",
                       scale_input=True, clip=False, proposal="log_uniform", alpha_r=2e6)
BFN = GaussianSettings(lam0=1.0, drawn_start=False, lambda_min=1.0, lambda_max=1e6, prediction="eps",
                       scale_input=False, clip=True, proposal="uniform_t", alpha_r=1e6)
VDM = GaussianSettings(lam0=0.0, drawn_start=True, lambda_min=6.7379e-3, lambda_max=5.9720e5, prediction="eps",
                       scale_input=True, clip=False, proposal="uniform_t", alpha_r=5.9720e5)
# EDM: mu = x + sigma eps with sigma in [0.002, 80], i.e. VDM's family (a = 1, s2 = 1/lam = sigma^2)
EDM = GaussianSettings(lam0=0.0, drawn_start=True, lambda_min=80.0**-2, lambda_max=0.002**-2, prediction="edm",
                       scale_input=True, clip=False, proposal="log_uniform", alpha_r=0.002**-2, sigma_data=0.5,
                       weighting="edm", sample_spacing="edm", sigma_max=80.0, sample_solver="ode2")
FLOW_T_MIN = 1e-3  # rectified flow's time s runs over [t_min, 1 - t_min]: lam = ((1 - s)/s)^2 stays finite
FLOW = GaussianSettings(lam0=0.0, drawn_start=True, lambda_min=(FLOW_T_MIN / (1 - FLOW_T_MIN)) ** 2,
                        lambda_max=((1 - FLOW_T_MIN) / FLOW_T_MIN) ** 2, prediction="v", scale_input=False,
                        clip=False, proposal="log_uniform", alpha_r=((1 - FLOW_T_MIN) / FLOW_T_MIN) ** 2,
                        schedule="rectified_flow", weighting="flow", sample_spacing="time",
                        sigma_max=(1 - FLOW_T_MIN) / FLOW_T_MIN, sample_solver="ode1")


def _settings(name: str, defaults, overrides: dict[str, Any]):
    """``defaults`` with ``overrides``; a ``ValueError`` names keywords the preset does not have."""
    known = {f.name for f in fields(defaults)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for make_process('{name}'): it takes {', '.join(sorted(known))}")
    return replace(defaults, **overrides)


def _refuse_ignored(s: GaussianSettings | CategoricalSettings, given: set[str]) -> None:
    """A setting passed explicitly that this combination would not use is an error."""
    gaussian = isinstance(s, GaussianSettings)
    ignored = {
        "alpha_r": gaussian and s.output == "discretised",  # a distribution output is its own reconstruction
        "clip": gaussian and s.output == "discretised",      # only a point is clipped
        "min_scale": gaussian and s.output == "point",
        "scale_input": gaussian and s.prediction == "edm",   # edm always scales its input
        "weighting_options": s.weighting == "elbo",          # the ELBO's weighting has no options
    }
    for key, unused in ignored.items():
        if unused and key in given:
            what = f"output={s.output}, prediction={s.prediction}" if key != "weighting_options" else "weighting=elbo"
            raise ValueError(f"{key} has no effect with {what}: remove it")


def _schedule(s: GaussianSettings | CategoricalSettings, precision: PrecisionRange, choices: dict) -> Any:
    found = resolve("schedule", s.schedule, choices)
    found = found(precision) if is_factory(found) else found
    if not isinstance(found, ScheduleLike):
        raise ValueError(f"schedule {s.schedule!r} must provide name, lam(t), t(lam) and dlam_dt(t): "
                         "see bsi.engine.registry.ScheduleLike")
    return found


def _gaussian(name: str, s: GaussianSettings) -> Process:
    precision = PrecisionRange(float(s.lambda_min), float(s.lambda_max))
    if s.lam0 > s.lambda_min:
        raise ValueError(f"lam0={s.lam0} must not exceed lambda_min={s.lambda_min}")
    if s.output == "discretised" and not s.data_bins:
        raise ValueError("output=discretised needs the data's number of levels: pass data_bins")
    schedule = _schedule(s, precision, {k: v for k, v in SCHEDULES.items() if k != "quadratic"})
    bins = None if s.data_bins is None else int(s.data_bins)
    return Process(
        name=name, space=Continuous(bins, float(s.alpha_r)),
        beliefs=BeliefFamily(float(s.lam0), bool(s.drawn_start)), precision=precision, schedule=schedule,
        proposal=make_proposal(s.proposal, precision, schedule, **(s.proposal_options or {})),
        parameterization=GaussianParameterization(s.prediction, s.output, bool(s.scale_input), bool(s.clip),
                                                  float(s.sigma_data), float(s.min_scale)),
        sampling=SamplingSetup(s.sample_spacing, float(s.sigma_max), s.sample_solver), elbo_spacing=s.elbo_spacing,
        stratified=bool(s.stratified), calibration=float(s.calibration),
        kstep_estimator=s.kstep_estimator, weighting=make_weighting(s.weighting, s.weighting_options),
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
    schedule = _schedule(s, precision, SCHEDULES)
    return Process(
        name=name, space=OneHot(int(s.num_classes)), beliefs=BeliefFamily(0.0, True), precision=precision,
        schedule=schedule, proposal=make_proposal(s.proposal, precision, schedule, **(s.proposal_options or {})),
        parameterization=CategoricalParameterization(s.output),
        sampling=SamplingSetup(s.sample_spacing, s.sigma_max, s.sample_solver),
        elbo_spacing=s.elbo_spacing, stratified=bool(s.stratified), calibration=float(s.calibration),
        kstep_estimator=s.kstep_estimator, weighting=make_weighting(s.weighting, s.weighting_options),
    )


def _edm(overrides: dict[str, Any]) -> GaussianSettings:
    """EDM (Karras et al.): ``sigma`` from ``sigma_max`` = 80 down to ``sigma_min`` = 0.002, ``sigma_data`` 0.5."""
    overrides = dict(overrides)
    sigma_min = float(overrides.pop("sigma_min", 0.002))
    sigma_max = float(overrides.get("sigma_max", EDM.sigma_max))
    for key in ("lambda_min", "lambda_max"):
        if key in overrides:
            raise ValueError(f"edm's range is [sigma_min, sigma_max] in noise level: pass those, not {key}")
    defaults = replace(EDM, lambda_min=sigma_max**-2, lambda_max=sigma_min**-2, alpha_r=sigma_min**-2)
    return _settings("edm", defaults, overrides)


def _flow(overrides: dict[str, Any]) -> GaussianSettings:
    """Rectified flow: ``(1 - s) x + s eps`` for ``s`` in ``[t_min, 1 - t_min]``, velocity prediction, Euler sampling."""
    overrides = dict(overrides)
    t_min = float(overrides.pop("t_min", FLOW_T_MIN))
    if not 0 < t_min < 0.5:
        raise ValueError(f"flow needs 0 < t_min < 0.5, got {t_min}")
    for key in ("lambda_min", "lambda_max"):
        if key in overrides:
            raise ValueError(f"flow's range is s in [t_min, 1 - t_min]: pass t_min, not {key}")
    top = ((1 - t_min) / t_min) ** 2
    defaults = replace(FLOW, lambda_min=1 / top, lambda_max=top, alpha_r=top, sigma_max=(1 - t_min) / t_min)
    return _settings("flow", defaults, overrides)

# Keywords of make_process besides the settings' fields: they set fields (bfn: lambda_max = alpha_r = sigma_1^-2;
# vdm: the range is [snr_min, snr_max]; edm: lambda_max = alpha_r = sigma_min^-2; flow: the range is
# s in [t_min, 1 - t_min]) and are not recorded themselves.
PRESET_KEYWORDS: dict[str, type] = {"sigma_1": float, "snr_min": float, "snr_max": float, "sigma_min": float,
                                    "t_min": float}


# name -> (what the overrides resolve to, what builds the process from the resolved settings)
PRESETS = {
    "bsi": (_bsi, _gaussian), "bfn": (_bfn, _gaussian), "vdm": (_vdm, _gaussian), "edm": (_edm, _gaussian),
    "flow": (_flow, _gaussian), "bfn-discrete": (_bfn_discrete, _categorical),
}
AXES = ("schedule", "proposal", "prediction", "weighting")  # settings that may name a user's piece by dotted path


def _user_settings(name: str, preset: Any, given: dict[str, Any]) -> GaussianSettings | CategoricalSettings:
    """A user's preset: settings (its defaults) or a function ``(overrides) -> settings``."""
    if isinstance(preset, (GaussianSettings, CategoricalSettings)):
        return _settings(name, preset, given)
    settings = preset(given) if callable(preset) else None
    if not isinstance(settings, (GaussianSettings, CategoricalSettings)):
        raise ValueError(f"process '{name}' must be GaussianSettings or CategoricalSettings, or a function "
                         "(overrides: dict) -> settings")
    return settings


def _resolve_preset(name: Any, given: dict[str, Any]) -> tuple[str, GaussianSettings | CategoricalSettings]:
    """The record's name for ``name`` and its settings with ``given`` applied."""
    preset = resolve("process", name, PRESETS)
    name = dotted_path(name)
    if isinstance(preset, tuple):
        return name, preset[0](given)
    return name, _user_settings(name, preset, given)


def resolve_settings(name: Any = "bsi", **overrides: Any) -> dict[str, Any]:
    """Every setting of the process ``name`` with ``overrides`` applied: ``{"name": name, field: value, ...}``.

    ``name`` is a preset (``bsi``, ``bfn``, ``vdm``, ``edm``, ``flow``, ``bfn-discrete``) or a user's, by
    dotted path or as the object (:class:`GaussianSettings` of its defaults or a function
    ``(overrides) -> settings``).  The record a run keeps: :func:`process_from_settings` rebuilds the
    same process from it whatever the presets say later.  Classes and functions given for a preset,
    schedule, proposal, prediction or weighting are recorded as their dotted paths, so the record
    reloads.  ``None`` means "the preset's value"; unknown or ignored keywords raise.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    name, settings = _resolve_preset(name, given)
    _refuse_ignored(settings, set(given))
    if settings.proposal_options is None:  # no options: recorded as {} so that a record has no null to resolve
        settings = replace(settings, proposal_options={})
    record = {"name": name, **asdict(settings)}
    for axis in AXES:
        if axis in record:
            record[axis] = dotted_path(record[axis])
    return record


def process_from_settings(settings: dict[str, Any]) -> Process:
    """The process of a complete record from :func:`resolve_settings` (no preset value is read)."""
    record = dict(settings)
    name = record.pop("name")
    preset = resolve("process", name, PRESETS)
    if isinstance(preset, tuple):
        kind = GaussianSettings if preset[1] is _gaussian else CategoricalSettings
    else:  # a user's preset: only the kind of its settings is read
        kind = type(_user_settings(name, preset, {}))
    missing = sorted({f.name for f in fields(kind)} - set(record))
    if missing:
        raise ValueError(f"the settings of process '{name}' lack {missing}: record them all (see resolve_settings)")
    build = _gaussian if kind is GaussianSettings else _categorical
    return build(name, _settings(name, kind(**{f.name: record[f.name] for f in fields(kind)}), record))


def preset_differences(settings: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[str]:
    """The settings of a record that today's preset (with ``overrides``) would set otherwise, as ``key: old -> new``."""
    try:
        today = resolve_settings(settings["name"], **(overrides or {}))
    except ValueError:
        return []
    return [f"{key}: {settings.get(key)!r} -> {value!r}" for key, value in today.items() if settings.get(key) != value]


def make_process(name: Any = "bsi", **overrides: Any) -> Process:
    """The process ``name`` (``bsi``, ``bfn``, ``vdm``, ``edm``, ``flow``, ``bfn-discrete`` or a user's) with its
    paper's settings, any overridden.

    Keywords are the fields of :class:`GaussianSettings` (plus ``sigma_1`` for bfn, ``snr_min`` and
    ``snr_max`` for vdm, ``sigma_min`` for edm, ``t_min`` for flow) or of :class:`CategoricalSettings`;
    ``None`` means "the preset's value" (how the method configs leave a setting to the preset).  The
    schedule, proposal, prediction and weighting take a registered name, a dotted path to a user's
    class or function, or the object itself.  Unknown or ignored keywords raise.
    """
    return process_from_settings(resolve_settings(name, **overrides))


__all__ = ["AXES", "CATEGORICAL_LAMBDA_MIN", "EDM", "FLOW", "PRESETS", "PRESET_KEYWORDS", "CategoricalSettings",
           "GaussianSettings", "make_process", "preset_differences", "process_from_settings", "resolve_settings"]
