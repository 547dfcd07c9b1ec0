"""The schema of every configuration: Hydra structured configs, registered in its ConfigStore.

The dataclasses here state every key, its type and its allowed values (:func:`setting`);
:func:`bsi.config.validate.validate` checks a composed ``train.yaml`` or ``evaluate.yaml`` against them.

The ``method`` node's schema is derived from the engine's settings dataclasses
(:class:`~bsi.engine.GaussianSettings`, :class:`~bsi.engine.CategoricalSettings`): every field there is
a key here, ``null`` meaning "the preset's value", so ``bsi.engine.presets`` stays the one source of
values.  The ``model`` node's schema is derived likewise from each backbone's constructor, the ``data``
node's from :data:`DATA_KEYS`.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ..engine import SOLVERS, SPACINGS
from ..evaluation.likelihood import KSTEP_DRAWS

DTYPES = ("float32", "float64")
LOGGERS = ("csv", "tensorboard", "wandb")  # bsi.evaluate's dtype: the model and data cast to it


def setting(default: Any = MISSING, *, low: float | None = None, high: float | None = None, low_open: bool = False,
            choices: Sequence[Any] | None = None, each: bool = False, label: str | None = None,
            what: str | None = None) -> Any:
    """A dataclass field with its allowed values: ``[low, high)`` (``(low, high)`` if ``low_open``) or ``choices``
    (``label`` names them in the error: "unknown solver 'x'"); ``each``: the rule applies to every item of a
    list; ``what`` replaces the generated description of what the value must be."""
    rule = {"low": low, "high": high, "low_open": low_open, "choices": tuple(choices) if choices else None, "each": each,
            "label": label, "what": what}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=rule)
    return field(default=default, metadata=rule)


# -- training -----------------------------------------------------------------------------------------


@dataclass
class OptimSettings:
    """``train.*``: the optimisation (counts are optimiser steps; ``batch_size`` is summed over ranks)."""

    steps: int = setting(6000, low=1)
    batch_size: int = setting(128, low=1)
    accumulate: int = setting(1, low=1)
    lr: float = setting(1e-3, low=0, low_open=True)
    betas: List[float] = setting([0.9, 0.99], low=0, high=1, each=True, what="two numbers in [0, 1)")
    weight_decay: float = setting(1e-2, low=0)
    warmup: int = setting(200, low=0)
    schedule: str = setting("cosine", choices=("constant", "cosine"))
    min_lr: float = setting(1e-4, low=0)
    grad_clip: Optional[float] = setting(1.0, low=0, low_open=True)
    ema_decay: float = setting(0.999, low=0, high=1)
    ema_warmup: Optional[int] = setting(None, low=0)
    precision: str = setting("bf16", choices=("bf16", "fp16", "fp32"), label="precision")
    compile: bool = False
    num_workers: int = setting(0, low=0)
    log_every: int = setting(50, low=1)
    eval_every: int = setting(500, low=1)
    checkpoint_every: int = setting(2000, low=1)
    keep_checkpoints: int = setting(3, low=1)
    max_nonfinite: int = setting(20, low=1)


@dataclass
class WandbSettings:
    """``wandb.*``: keywords of ``wandb.init`` when ``logger`` lists wandb."""

    project: str = "bsi"
    entity: Optional[str] = None
    name: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    mode: Optional[str] = setting(None, choices=("online", "offline", "disabled"), label="wandb mode")


@dataclass
class SampleSettings:
    """How sample grids are drawn (``eval.sample.*``; ``steps + 1`` network calls per sample)."""

    solver: Optional[str] = setting(None, choices=SOLVERS, label="solver")  # null: the process's sample_solver
    steps: int = setting(100, low=1)
    spacing: Optional[str] = setting(None, choices=SPACINGS, label="step spacing")


@dataclass
class TrainEvalSettings:
    """``eval.*``: validation during training and the final test of the selected weights."""

    select: str = setting("best", choices=("best", "last"))
    n_samples: int = setting(4, low=1)
    val_n_samples: int = setting(2, low=1)
    ks: List[int] = setting([10, 100], low=1, each=True)
    kstep: str = setting("proposal", choices=KSTEP_DRAWS, label="k-step draw")
    batch_size: int = setting(512, low=1)
    grid: int = setting(64, low=0, what="a whole number >= 0 (0: no sample grids)")
    sample: SampleSettings = field(default_factory=SampleSettings)


@dataclass
class TrainConfig:
    """``python -m bsi.train``: the groups ``method``, ``model``, ``data`` have schemas of their own."""

    method: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    output: str = setting("discretised", choices=("point", "discretised"))
    seed: int = setting(0, low=0)
    device: str = "auto"
    cpu_threads: Optional[int] = setting(1, low=1)
    cpu_retain_memory: bool = True  # keep freed memory for reuse on a CPU (bsi.cpu)
    resume: Optional[str] = None
    resume_force: bool = False
    force_lock: bool = False  # take over RUN/run.lock even from a run that looks alive (bsi.runlock)
    legacy_presets: bool = False  # resume a checkpoint of bsi < 0.2 (no process record) with today's presets
    run_dir: Optional[str] = None  # where train(cfg) writes outside hydra (hydra's run directory otherwise)
    version: Optional[str] = None  # in a run's record: the bsi that made it (null: a request, not a record)
    requested: Optional[Dict[str, Any]] = None  # in a run's record: the method keywords the run asked for
    logger: List[str] = setting(["csv", "tensorboard"], choices=LOGGERS, each=True,
                                what=f"a list of loggers from {', '.join(LOGGERS)}")
    wandb: WandbSettings = field(default_factory=WandbSettings)
    train: OptimSettings = field(default_factory=OptimSettings)
    eval: TrainEvalSettings = field(default_factory=TrainEvalSettings)


# -- evaluation ----------------------------------------------------------------------------------------


@dataclass
class EvalData:
    """``data.*`` of ``bsi.evaluate``: null keeps the checkpoint's (or the samples file's) value."""

    name: Optional[str] = None
    root: Optional[str] = None


@dataclass
class LikelihoodSettings:
    ks: List[int] = setting([10, 100, 1000], low=1, each=True,
                            what="a list of whole numbers >= 1, e.g. likelihood.ks=[10,100] (or [])")
    n_samples: int = setting(4, low=1)
    reconstruction_samples: Optional[int] = setting(None, low=1)
    limit: Optional[int] = setting(None, low=2)  # a standard error needs two examples
    kstep: str = setting("proposal", choices=KSTEP_DRAWS, label="k-step draw")
    pilot: int = setting(64, low=1)


@dataclass
class EvalSampleSettings:
    steps: int = setting(100, low=1)
    solver: Optional[str] = setting(None, choices=SOLVERS, label="solver")  # null: the process's sample_solver
    spacing: Optional[str] = setting(None, choices=SPACINGS, label="step spacing")
    grid: int = setting(64, low=1)
    trajectory: bool = False
    trajectory_n: int = setting(8, low=1)
    autocast: str = setting("bf16", choices=("bf16", "fp16", "none"), label="sample.autocast")


@dataclass
class FidSettings:
    samples: Optional[str] = None
    reference_split: str = setting("train", choices=("train", "val", "test"))
    kid: bool = True
    kid_subset_size: int = setting(1000, low=2)
    feature_extractor: str = "inception-v3-compat"
    inception_weights: Optional[str] = None
    download: bool = False
    isc: bool = False  # Inception Score of the samples
    prc: bool = False  # precision and recall against the reference
    reference_stats: Optional[str] = None  # an .npz of published Inception statistics (mu, sigma)
    batch_size: int = setting(64, low=1)


@dataclass
class EvaluateConfig:
    """``python -m bsi.evaluate likelihood|sample|fid``."""

    task: str = setting(MISSING, choices=("likelihood", "sample", "fid"), label="task")
    checkpoint: Optional[str] = None
    ema: bool = True
    legacy_presets: bool = False
    device: str = "auto"
    cpu_threads: Optional[int] = setting(1, low=1)
    cpu_retain_memory: bool = True  # keep freed memory for reuse on a CPU (bsi.cpu)
    dtype: str = setting("float32", choices=DTYPES)
    seed: int = setting(0, low=0)
    split: str = setting("test", choices=("train", "val", "test"))
    n: Optional[int] = setting(None, low=1)
    batch_size: int = setting(256, low=1)
    num_workers: int = setting(0, low=0)
    out_dir: Optional[str] = None
    data: EvalData = field(default_factory=EvalData)
    likelihood: LikelihoodSettings = field(default_factory=LikelihoodSettings)
    sample: EvalSampleSettings = field(default_factory=EvalSampleSettings)
    fid: FidSettings = field(default_factory=FidSettings)


# -- the groups ----------------------------------------------------------------------------------------


def _plain(annotation: Any) -> Any:
    """An annotation OmegaConf can check: ``X | None`` -> ``Optional[X]``, sequences -> lists, else ``Any``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return Optional[_plain(args[0])] if len(args) == 1 else Any
    if origin in (list, tuple, Sequence):
        inner = _plain(args[0]) if args else Any
        return List[inner if inner in (int, float, str, bool) else Any]
    if annotation is dict or origin is dict:
        return Dict[str, Any]
    return annotation if annotation in (int, float, str, bool) else Any


def optional_schema(name: str, annotations: dict[str, Any], required: dict[str, Any] | None = None) -> type:
    """A dataclass named ``name`` with every key of ``annotations`` optional (default null) plus ``required`` keys."""
    keys = [(key, Optional[_plain(a)] if _plain(a) is not Any else Any, field(default=None))
            for key, a in annotations.items() if key not in (required or {})]
    return dataclasses.make_dataclass(name, [(k, t, field(default=MISSING)) for k, t in (required or {}).items()] + keys)


def method_schema() -> type:
    """``method.*``: ``name`` (a preset) and every keyword of ``make_process``, null for the preset's value."""
    from ..engine import presets

    hints: dict[str, Any] = {}
    for kind in (presets.GaussianSettings, presets.CategoricalSettings):
        hints |= typing.get_type_hints(kind)
    hints |= presets.PRESET_KEYWORDS
    return optional_schema("MethodConfig", hints, {"name": str})


def model_schema(kind: str) -> type:
    """``model.*`` of backbone ``kind``: its constructor's keywords (beyond the data's sizes), ``name`` and ``kind``."""
    from ..models import DATA_SIZES, MODELS

    signature = inspect.signature(MODELS[kind].__init__)
    hints = typing.get_type_hints(MODELS[kind].__init__)
    keys = {p: hints.get(p, Any) for p in signature.parameters if p not in DATA_SIZES}
    return optional_schema(f"{kind.title()}Config", {"kind": str, **keys}, {"name": str})


# Keys of a data config, every dataset's (the dataset checks what it needs when it opens).
DATA_KEYS: dict[str, Any] = {
    "root": str, "val_size": int, "hflip": bool, "verify_md5": bool,  # the built-in datasets
    "path": str, "resolution": int, "val_fraction": float, "test_fraction": float, "split_seed": int,  # your own
}


def data_schema() -> type:
    return optional_schema("DataConfig", DATA_KEYS, {"name": str})


def register() -> None:
    """Store the schemas in hydra's ConfigStore: ``train_schema``, ``evaluate_schema`` (the yaml files' bases)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)


__all__ = [
    "DATA_KEYS", "EvaluateConfig", "TrainConfig", "data_schema", "method_schema", "model_schema", "register", "setting",
]
