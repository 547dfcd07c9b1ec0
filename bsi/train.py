"""``python -m bsi.train``: train a belief process (BSI, BFN, VDM) on images, from a laptop CPU to many GPUs.

    python -m bsi.train                                   # BSI, MLP, 8x8 digits, CPU: a few minutes
    python -m bsi.train method=vdm train.steps=2000       # any setting from the command line
    python -m bsi.train experiment=cifar10_unet           # the papers' CIFAR-10 setting
    torchrun --nproc_per_node=8 -m bsi.train experiment=imagenet32_dit
    python -m bsi.train hydra.run.dir=runs/a resume=auto  # continue runs/a from its newest checkpoint

Each step draws a batch, takes the importance-weighted loss of ``proc.training_loss`` (with this
rank's own noise generator), and makes an AdamW step with gradient clipping, followed by an EMA
update; the EMA weights serve validation, the test bpd and the sample grids.  A step with a
non-finite loss or gradient is skipped on every rank.  Checkpoints (``bsi.checkpoint``) hold
everything that decides the next step, so a resumed run repeats an uninterrupted one bit for bit
on CPU, checkpoints included.  The loop is a handful of phases (:func:`train_step`,
:func:`evaluate_step`, :func:`save`, :func:`finalize`) over one :class:`Run`.

A resume refuses a configuration that differs from the checkpoint's in anything but
:data:`RESUME_MAY_CHANGE` (how long, where and how the run is carried out, reported and
evaluated) and lists the differences; ``resume_force=true`` continues with the new settings.

Exit status: 0 done; ``EXIT_CONFIG`` (2) the configuration or the data cannot make a run, and
nothing was run; ``EXIT_PREEMPTED`` (3) SIGTERM or SIGUSR1 arrived (during training, validation,
a sample grid or the final evaluation), a checkpoint was saved within seconds and ``resume=auto``
with the same ``hydra.run.dir`` continues; ``EXIT_DIVERGED`` (4) ``train.max_nonfinite``
non-finite losses in a row, the last checkpoint is untouched; ``EXIT_DATA`` (5) the data could not
be read mid-run (a damaged file): a checkpoint of the last good step was saved, and after the
data is repaired ``resume=auto`` continues; ``EXIT_SAVE`` (6) a checkpoint could not be written (a
full disk): the checkpoints already on disk are intact.  Each is the ``exit_status`` of the
:class:`RunError` that :func:`train` raises.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import Container, DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, get_worker_info
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import cli, distributed
from .atomic import write_json
from .build import build_backbone, build_process
from .checkpoint import (
    CheckpointError, CheckpointWriteError, latest_checkpoint, load_checkpoint, prune, require, resolve,
    save_checkpoint,
)
from .data import DatasetError, ImageDataset, ResumableSampler, build_dataset, build_loader, to_float
from .ema import EMA
from .engine import SOLVERS, SPACINGS, Process
from .metrics import (
    KSTEP_DRAWS, Stopped, draw_samples, evaluate_likelihood, grid_image, save_preview, shard, to_pixels, viewing_scale,
)
from .metrics.progress import Progress
from .metrics_log import MetricsLog

EXIT_CONFIG, EXIT_PREEMPTED, EXIT_DIVERGED, EXIT_DATA, EXIT_SAVE = 2, 3, 4, 5, 6
CONFIGS = cli.CONFIGS
log = logging.getLogger(__name__)


class RunError(Exception):
    """A run cannot go on; the message is one line, ``exit_status`` what ``python -m bsi.train`` exits with."""

    exit_status = 1


class ConfigError(RunError):
    """The configuration or the data cannot make a run; raised before any training."""

    exit_status = EXIT_CONFIG


class Preempted(RunError):
    """SIGTERM or SIGUSR1 arrived: a checkpoint was saved and the run stopped."""

    exit_status = EXIT_PREEMPTED


class DivergedError(RunError):
    """Too many non-finite losses in a row; the message says what to try."""

    exit_status = EXIT_DIVERGED


class DataError(RunError):
    """The data could not be read mid-run (a damaged file); a checkpoint of the last good step was saved."""

    exit_status = EXIT_DATA


class SaveError(RunError):
    """A checkpoint could not be written (a full disk, say); the checkpoints already on disk are intact."""

    exit_status = EXIT_SAVE


# -- configuration ---------------------------------------------------------------------------------


def _int(low: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(low: float, high: float = math.inf, low_open: bool = False) -> Any:
    def ok(v: Any) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return False
        return (v > low if low_open else v >= low) and v < high
    return ok


def _optional(rule: Any) -> Any:
    return lambda v: v is None or rule(v)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


# (key, test, what it must be): every setting of the run's own (not of model/method/data, which their
# builders check), so that a wrongly typed value is a one-line error and not a TypeError later.
RULES: tuple[tuple[str, Any, str], ...] = (
    *((f"train.{key}", _int(1), "a positive integer") for key in (
        "steps", "batch_size", "accumulate", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
        "max_nonfinite")),
    ("train.warmup", _int(0), "an integer >= 0"),
    ("train.num_workers", _int(0), "an integer >= 0"),
    ("train.schedule", lambda v: v in ("constant", "cosine"), "constant or cosine"),
    ("train.lr", _number(0, low_open=True), "a number > 0"),
    ("train.min_lr", _number(0), "a number >= 0"),
    ("train.weight_decay", _number(0), "a number >= 0"),
    ("train.betas", lambda v: isinstance(v, list) and len(v) == 2 and all(_number(0, 1)(b) for b in v),
     "two numbers in [0, 1)"),
    ("train.grad_clip", _optional(_number(0, low_open=True)), "a number > 0 or null"),
    ("train.ema_decay", _number(0, 1), "a number in [0, 1)"),
    ("train.bf16", _bool, "true or false"),
    ("train.compile", _bool, "true or false"),
    ("output", lambda v: v in ("point", "discretised"), "point or discretised"),
    ("seed", _int(0), "an integer >= 0"),
    ("cpu_threads", _optional(_int(1)), "a positive integer or null"),
    ("resume_force", _bool, "true or false"),
    ("eval.select", lambda v: v in ("best", "last"), "best or last"),
    ("eval.n_samples", _int(1), "a positive integer"),
    ("eval.val_n_samples", _int(1), "a positive integer"),
    ("eval.batch_size", _int(1), "a positive integer"),
    ("eval.grid", _int(0), "an integer >= 0 (0: no sample grids)"),
    ("eval.ks", lambda v: isinstance(v, list) and all(_int(1)(k) for k in v), "a list of positive integers"),
    ("eval.kstep", lambda v: v in KSTEP_DRAWS, f"one of {', '.join(KSTEP_DRAWS)}"),
    ("eval.sample.solver", lambda v: v in SOLVERS, f"one of {', '.join(SOLVERS)}"),
    ("eval.sample.steps", _int(1), "a positive integer"),
    ("eval.sample.spacing", lambda v: v is None or v in SPACINGS, f"null or one of {', '.join(SPACINGS)}"),
)


def check_config(cfg: DictConfig, world_size: int) -> None:
    """Raise :class:`ConfigError` naming every setting of the run (``train``, ``eval``, ...) that cannot work."""
    problems = []
    for key, ok, what in RULES:
        value = OmegaConf.select(cfg, key, default=None)
        value = OmegaConf.to_object(value) if isinstance(value, Container) else value
        if not ok(value):
            problems.append(f"{key} must be {what}, got {value!r}")
    t = cfg.train
    if not problems and t.batch_size % (world_size * t.accumulate):
        problems.append(f"train.batch_size={t.batch_size} must divide by ranks x train.accumulate = "
                        f"{world_size} x {t.accumulate}")
    if problems:
        raise ConfigError("; ".join(problems))


# Settings that say how long, where and how a run is carried out, reported and evaluated, not what it
# learns: a resume may change them (a key and everything below it).  Any other difference between
# the checkpoint's configuration and the new one makes the resume refuse, unless resume_force=true.
RESUME_MAY_CHANGE = (
    "resume", "resume_force", "run_dir", "device", "cpu_threads", "data.root", "eval", "train.steps",
    "train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints", "train.num_workers",
    "train.compile", "train.max_nonfinite",
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}`` (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_settings(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key=old (now new)`` for each setting outside :data:`RESUME_MAY_CHANGE` that differs."""
    old, new = flatten(saved), flatten(now)
    free = tuple(RESUME_MAY_CHANGE)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if key in free or key.startswith(tuple(f"{k}." for k in free)):
            continue
        if key not in old or key not in new or old[key] != new[key]:
            changes.append(f"{key}={old.get(key, 'unset')} (now {new.get(key, 'unset')})")
    return changes


def listed(changes: list[str], most: int = 8) -> str:
    return ", ".join(changes[:most]) + (f" and {len(changes) - most} more" if len(changes) > most else "")


def lr_factor(step: int, t: Any) -> float:
    """Learning rate of step ``step`` as a factor of ``train.lr``: linear warm-up, then constant or cosine."""
    if step < t.warmup:
        return (step + 1) / t.warmup
    if t.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    floor = t.min_lr / t.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def find_run_dir(cfg: DictConfig, run_dir: str | Path | None) -> Path:
    """``run_dir``, else ``cfg.run_dir`` (``+run_dir=...`` when composing outside hydra), else hydra's output directory."""
    run_dir = run_dir or OmegaConf.select(cfg, "run_dir")
    if run_dir:
        return Path(run_dir)
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        raise ConfigError("train(cfg) outside a hydra app needs run_dir=... (or +run_dir=... in the config)") from None


def remove_unused_run_dir(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but what hydra wrote before the run failed to start.

    Hydra makes ``RUN/.hydra/`` and ``RUN/train.log`` before :func:`train` sees the configuration; a
    start that fails on it should not leave them behind.  Parents left empty go too, up to the
    working directory (``runs/DATE/`` of hydra's default ``runs/DATE/TIME``).
    """
    cwd, run_dir = Path.cwd().resolve(), run_dir.resolve()
    if run_dir == cwd or run_dir in cwd.parents or not run_dir.is_dir():
        return  # never the working directory itself
    if any(p.name != ".hydra" and p.suffix != ".log" for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir)
    for parent in run_dir.parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


# -- what is built before any work -----------------------------------------------------------------


@dataclass
class Setup:
    """Everything a run needs that can fail for a reason the user has to fix."""

    splits: dict[str, ImageDataset]   # train, test and (if data.val_size) val
    proc: Process
    backbone: nn.Module               # on the CPU, initialised from the run seed (or the checkpoint's weights)
    resume_from: Path | None
    state: dict[str, Any] | None      # the checkpoint to resume, if any


# What a checkpoint must hold to be resumed.
RESUME_KEYS = ("config", "step", "model", "ema", "optimizer", "scheduler", "sampler", "rng", "nonfinite_skips")


def prepare(cfg: DictConfig, run_dir: Path, world_size: int) -> Setup:
    """Check the config, open the data, build process and backbone, read the checkpoint to resume.

    Every failure here is the user's to fix and becomes a one-line :class:`ConfigError`.
    """
    check_config(cfg, world_size)
    try:
        distributed.resolve_device(cfg.device)
        names = ["train", "test"] + (["val"] if cfg.data.get("val_size") else [])
        splits = {name: build_dataset(cfg.data, name) for name in names}
        micro = cfg.train.batch_size // (world_size * cfg.train.accumulate)
        if len(splits["train"]) // world_size < micro:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} needs {micro} images per rank and step, but "
                              f"{splits['train'].name}/train has {len(splits['train'])} for {world_size} rank(s)")
        proc = build_process(cfg, splits["train"].bins)
    except (DatasetError, ValueError) as err:
        raise ConfigError(str(err)) from None
    resume_from, state = read_resume(cfg, run_dir)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP would broadcast them anyway)
    try:
        backbone = build_backbone(cfg, splits["train"].shape, proc)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None
    if state is not None:
        try:
            backbone.load_state_dict(state["model"])
        except RuntimeError as err:
            detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err).strip())
            changes = changed_settings(state["config"], OmegaConf.to_container(cfg, resolve=True))
            why = f"it was trained with {listed(changes)}" if changes else "its weights have other shapes"
            raise CheckpointError(f"checkpoint {resume_from} does not fit this model: {why} ({detail})") from None
    return Setup(splits, proc, backbone, resume_from, state)


def read_resume(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint that ``cfg.resume`` names and its state, after checking that it fits ``cfg``."""
    if cfg.resume == "auto":
        path = latest_checkpoint(run_dir)
    else:
        path = resolve(cfg.resume) if cfg.resume else None
    if path is None:
        return None, None
    state = load_checkpoint(path)
    require(state, path, RESUME_KEYS)
    changes = changed_settings(state["config"], OmegaConf.to_container(cfg, resolve=True))
    if changes and not cfg.resume_force:
        raise ConfigError(f"checkpoint {path} was trained with other settings: {listed(changes)}; resume with the "
                          f"checkpoint's settings, or add resume_force=true to continue with the new ones")
    if changes:
        log.warning(f"resume_force=true: continuing {path} with new settings: {listed(changes, len(changes))}")
    return path, state


# -- run-time helpers -------------------------------------------------------------------------------


class Preemption:
    """SIGTERM and SIGUSR1 (a cluster's warning before preemption or the time limit) become a flag.

    Under submitit (``hydra/launcher=slurm``) the warning is submitit's own signal (SIGUSR2 unless
    ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise), whose handler requeues the job.  That signal
    becomes the same flag; once the loop has saved its checkpoint and stopped, the launcher's
    handler runs, so the job is requeued and continues with ``resume=auto``.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _signals(self) -> list[int]:
        extra = [signal.SIGUSR2] if callable(signal.getsignal(signal.SIGUSR2)) else []  # installed by submitit
        return [*self.SIGNALS, *extra]

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in self._signals():
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested, self.signum = True, signum

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        launcher_handler = self._previous.get(self.signum)
        if exc_type is Preempted and callable(launcher_handler):
            launcher_handler(self.signum, None)  # submitit: requeue this job, then exit


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's random state: global torch RNG (dropout), its CUDA RNG, the engine's noise generator."""
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# Random streams of a rank, each seeded from (seed, rank, stream).
GLOBAL_STREAM, NOISE_STREAM, LOADER_STREAM = 0, 1, 2


def seed_rank(seed: int, rank: int, device: torch.device, step: int = 0) -> torch.Generator:
    """Seed the global RNG (dropout) and return the engine's noise generator, both from ``(seed, rank)``."""
    torch.manual_seed(distributed.rank_seed(seed, rank, GLOBAL_STREAM, step))
    return torch.Generator(device=device).manual_seed(distributed.rank_seed(seed, rank, NOISE_STREAM, step))


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank: a collective, so every rank must ask at the same point."""
    if not distributed.initialized():
        return flag
    return bool(distributed.all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def data_failure(err: DatasetError) -> str:
    """A data error's one-line message, also when a DataLoader worker raised it (torch wraps it in a traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1:  # "Caught DatasetError in DataLoader worker process 0. Original Traceback ... DatasetError: msg"
        return lines[-1].split("DatasetError: ", 1)[-1]
    return lines[0] if lines else type(err).__name__


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run: what it was built from, what it trains, and the loop's state.

    Every phase below is a function of this one object.  ``step`` and the counters after it change
    as the loop goes (and are what a checkpoint restores, with the models, optimiser, scheduler,
    sampler, generator and proposal); everything before them is fixed once built.
    """

    cfg: DictConfig
    t: SimpleNamespace                # cfg.train as plain attributes: a DictConfig lookup costs microseconds
    run_dir: Path
    layout: distributed.DistEnv
    device: torch.device
    proc: Process
    splits: dict[str, ImageDataset]
    backbone: nn.Module               # this replica's weights
    params: list[nn.Parameter]        # the backbone's, listed once: walking the module tree costs every step
    model: nn.Module                  # the backbone, or its DDP wrapper
    denoiser: Any                     # proc.parameterize(model), compiled if asked
    ema: EMA
    ema_denoiser: Any                 # proc.parameterize(ema.module): validation, test, grids
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: ResumableSampler
    generator: torch.Generator        # this rank's engine noise
    batches: Iterator[Tensor]         # float micro-batches (micro, *shape) on the device
    micro: int                        # examples per micro-batch and rank
    preemption: Preemption
    # Null objects until open_outputs() opens them at the step the run starts from.
    metrics: MetricsLog = field(default_factory=lambda: MetricsLog(Path("."), enabled=False))
    bar: tqdm = field(default_factory=lambda: tqdm(disable=True))
    step: int = 0                     # optimiser steps taken
    skipped: int = 0                  # non-finite steps skipped, in all
    consecutive: int = 0              # ... in a row now
    best_val: float = math.inf
    best_step: int | None = None
    evaluated: bool = True            # the evaluation due at `step` (validation, grid) is done
    signalled: bool = False           # some rank got a stop signal (learnt at a step's collective)
    first_step: int = 0               # where this session started
    side_seconds: float = 0.0         # this session's validation, grids and checkpoints
    last_grid: tuple[int, Tensor] | None = None  # (step, levels) of the newest grid drawn by this session

    @property
    def main(self) -> bool:
        return self.layout.is_main

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.splits["train"].shape)

    @property
    def bins(self) -> int:
        return self.splits["train"].bins

    def stop_requested(self) -> bool:
        """This rank was signalled, or learnt that some rank was (local: no collective)."""
        return self.preemption.requested or self.signalled


def build(cfg: DictConfig, run_dir: Path, layout: distributed.DistEnv, device: torch.device, setup: Setup,
          preemption: Preemption) -> Run:
    """The run's objects on ``device``, from scratch (step 0); :func:`restore` then loads a checkpoint."""
    t = SimpleNamespace(**OmegaConf.to_container(cfg.train, resolve=True))
    backbone = setup.backbone.to(device)
    ema = EMA(backbone, t.ema_decay)
    if layout.distributed:
        model = DistributedDataParallel(backbone, device_ids=[device] if device.type == "cuda" else None)
    else:
        model = backbone
    if t.compile:
        log.info("train.compile=true: the first step waits while torch.compile compiles the model"
                 + (" (about a minute on a CPU)" if device.type == "cpu" else ""))
    # The fused kernel is several times faster than the default per-tensor loop on CPU, too.
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                                  fused=True)
    train_set = setup.splits["train"]
    micro = t.batch_size // (layout.world_size * t.accumulate)
    sampler = ResumableSampler(len(train_set), seed=cfg.seed, rank=layout.rank, world_size=layout.world_size)
    loader = build_loader(train_set, micro, sampler, num_workers=t.num_workers)
    # A DataLoader draws a base seed for its workers at every epoch, by default from the global RNG,
    # which dropout uses too: a resumed run would draw at a different step and lose bit-exactness.
    loader.loader.generator = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed, layout.rank, LOADER_STREAM))
    return Run(
        cfg=cfg, t=t, run_dir=run_dir, layout=layout, device=device, proc=setup.proc, splits=setup.splits,
        backbone=backbone, params=list(backbone.parameters()), model=model,
        denoiser=setup.proc.parameterize(torch.compile(model) if t.compile else model),
        ema=ema, ema_denoiser=setup.proc.parameterize(ema.module), optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t)), sampler=sampler,
        generator=seed_rank(cfg.seed, layout.rank, device), micro=micro,
        batches=(to_float(b.to(device, non_blocking=True), train_set.bins) for b in loader.forever()),
        preemption=preemption,
    )


def restore(run: Run, state: dict[str, Any]) -> None:
    """Continue from checkpoint ``state``: weights, optimiser, schedule, data order, random streams, counters."""
    run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("proposal"):
        run.proc.proposal.load_state_dict(state["proposal"])
    run.step, run.skipped = int(state["step"]), int(state["nonfinite_skips"])
    run.best_val, run.best_step = float(state.get("best_val", math.inf)), state.get("best_step")
    run.evaluated = bool(state.get("evaluated", True))
    if len(state["rng"]) == run.layout.world_size:
        set_rng_state(state["rng"][run.layout.rank], run.generator, run.device)
    else:  # a different number of ranks: fresh streams, still determined by (seed, rank, step)
        run.generator = seed_rank(run.cfg.seed, run.layout.rank, run.device, run.step)
    try:
        run.sampler.load_state_dict(state["sampler"])
    except ValueError:  # mid-epoch on a different number of ranks: continue with the next epoch
        run.sampler.set_epoch(int(state["sampler"]["epoch"]) + 1)


def checkpoint_state(run: Run) -> dict[str, Any]:
    """Everything that decides the next step; every rank must call it (it gathers RNG states)."""
    return {
        "config": OmegaConf.to_container(run.cfg, resolve=True), "data_shape": list(run.shape), "bins": run.bins,
        "step": run.step, "model": run.backbone.state_dict(), "ema": run.ema.state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "proposal": run.proc.proposal.state_dict(), "sampler": run.sampler.state_dict(),
        "rng": distributed.gather_objects(rng_state(run.generator, run.device)),
        "nonfinite_skips": run.skipped, "best_val": run.best_val, "best_step": run.best_step,
        "evaluated": run.evaluated, "world_size": run.layout.world_size,
    }


def save(run: Run, name: str) -> None:
    """Write ``RUN/checkpoints/NAME`` (main rank) and prune old ones; every rank calls it, and all raise
    :class:`SaveError` if the write failed."""
    payload, failure = checkpoint_state(run), None
    if run.main:
        try:
            save_checkpoint(run.run_dir / "checkpoints" / name, payload)
            prune(run.run_dir, run.t.keep_checkpoints)
        except CheckpointWriteError as err:
            failure = str(err)
    if any_rank(failure is not None, run.device):
        newest = latest_checkpoint(run.run_dir)
        raise SaveError(f"{failure or 'the main rank could not write a checkpoint'}; stopped at step {run.step}: "
                        f"once it can be written (free some space), rerun with resume=auto hydra.run.dir={run.run_dir} "
                        f"to continue from {newest or 'the start (no checkpoint yet)'}")


@contextmanager
def aside(run: Run) -> Iterator[None]:
    """Time spent inside (validation, grids, checkpoints) is not training time: not in the
    steps per second, not in the progress bar's rate."""
    started = time.perf_counter()
    try:
        yield
    finally:
        spent = time.perf_counter() - started
        run.side_seconds += spent
        if not run.bar.disable:  # (a disabled bar has no clock)
            run.bar.start_t += spent  # tqdm's rate and ETA are taken from start_t


def stop(run: Run) -> NoReturn:
    """A stop signal arrived: save this step (every rank) and raise :class:`Preempted`."""
    save(run, f"step_{run.step:07d}.pt")
    distributed.barrier()  # no rank may exit (and make torchrun kill the rest) before the file is written
    raise Preempted(f"signal received: saved step {run.step} in {run.run_dir / 'checkpoints'}; "
                    f"rerun with resume=auto hydra.run.dir={run.run_dir} to continue")


# -- one step ---------------------------------------------------------------------------------------


def fetch(run: Run) -> tuple[list[Tensor], DatasetError | None]:
    """The step's micro-batches; on a read error, stand-ins of the right shape (so that every rank
    still takes part in the step's collectives) and the error."""
    batches: list[Tensor] = []
    try:
        for _ in range(run.t.accumulate):
            batches.append(next(run.batches))
        return batches, None
    except DatasetError as err:
        stand_in = torch.zeros((run.micro, *run.shape), dtype=torch.uint8, device=run.device)
        return [to_float(stand_in, run.bins)] * run.t.accumulate, err


def train_step(run: Run) -> tuple[float, float]:
    """One optimiser step (or a skipped one); returns the loss and gradient norm, each summed over ranks.

    Sets ``run.signalled`` when a rank got a stop signal; raises :class:`DivergedError` after too many
    non-finite steps in a row and :class:`DataError` (after saving the last good step) when a rank
    could not read its batch.
    """
    t = run.t
    before = rng_state(run.generator, run.device), run.sampler.state_dict()  # to undo a step whose data failed
    micro_batches, failure = fetch(run)
    bf16 = t.bf16 and run.device.type == "cuda"
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=run.device)
    lams, integrands = [], []
    for k, x in enumerate(micro_batches):
        # DDP averages gradients on the last micro-batch only
        sync = nullcontext() if k == t.accumulate - 1 or not run.layout.distributed else run.model.no_sync()
        with sync:
            with autocast:
                out = run.proc.training_loss(x, run.denoiser, generator=run.generator)
            loss = out.loss.mean() / t.accumulate
            loss.backward()
        loss_sum += loss.detach()
        lams.append(out.lam.detach())
        integrands.append(out.integrand)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, float(t.grad_clip) if t.grad_clip else math.inf)
    # One collective and one host sync per step: summed over ranks, the losses and gradient norms are
    # finite only if they are finite on every rank, and the flags say whether any rank was signalled
    # or failed to read its data; so all ranks skip, stop or save together.  Both flags are one
    # number, (ranks signalled) + (ranks + 1) x (ranks that failed to read), which divmod splits again.
    flags = float(run.preemption.requested) + (run.layout.world_size + 1) * float(failure is not None)
    status = torch.stack([loss_sum, grad_norm.to(loss_sum.dtype), loss_sum.new_tensor(flags)])
    loss_value, norm_value, flag_sum = distributed.all_reduce_sum(status).tolist()
    n_failed, n_signalled = divmod(round(flag_sum), run.layout.world_size + 1)
    if n_failed:
        run.optimizer.zero_grad(set_to_none=True)
        set_rng_state(before[0], run.generator, run.device)
        run.sampler.load_state_dict(before[1])
        stop_on_data_failure(run, failure)
    run.signalled = run.signalled or n_signalled > 0
    if not math.isfinite(loss_value + norm_value):
        run.skipped, run.consecutive = run.skipped + 1, run.consecutive + 1
        if run.consecutive >= t.max_nonfinite:
            raise DivergedError(
                f"{run.consecutive} non-finite losses in a row (step {run.step + 1}): stopping. The last checkpoint "
                f"({latest_checkpoint(run.run_dir) or 'none yet'}) is untouched; try a lower train.lr, train.grad_clip "
                f"or a restart from it with resume=auto")
    else:
        run.consecutive = 0
        run.optimizer.step()
        run.ema.update(run.backbone)
        # Every replica feeds the proposal the same (gathered) integrands, so they stay equal.
        run.proc.proposal.update(distributed.all_gather_cat(torch.cat(lams)),
                                 distributed.all_gather_cat(torch.cat(integrands)))
    run.scheduler.step()
    run.step += 1
    run.bar.update(1)
    return loss_value, norm_value


def stop_on_data_failure(run: Run, failure: DatasetError | None) -> NoReturn:
    """Some rank could not read its data: save the last good step (every rank) and raise :class:`DataError`."""
    save(run, f"step_{run.step:07d}.pt")
    distributed.barrier()
    what = data_failure(failure) if failure is not None else "another rank could not read its training data"
    raise DataError(f"{what}; saved the last good step {run.step} in {run.run_dir / 'checkpoints'}: once the data is "
                    f"repaired, rerun with resume=auto hydra.run.dir={run.run_dir} to continue")


def log_step(run: Run, loss_value: float, norm_value: float) -> None:
    if run.step % run.t.log_every == 0 or run.step == run.t.steps:
        loss = loss_value / run.layout.world_size
        run.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        run.metrics.log(run.step, loss=loss, lr=run.scheduler.get_last_lr()[0],
                        grad_norm=norm_value / run.layout.world_size, nonfinite_skips=run.skipped)


# -- evaluation -------------------------------------------------------------------------------------


class ReadOrBlank(Dataset):
    """``dataset`` read in batches, where a batch that cannot be read comes back blank and its error is
    kept: a rank that meets bad data still takes part in the evaluation's collectives until every rank
    has heard of it (:func:`bpd`)."""

    def __init__(self, dataset: ImageDataset, shape: tuple[int, ...]):
        self.dataset, self.shape, self.error = dataset, shape, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> Tensor:
        try:
            return self.dataset.__getitems__(indices)
        except DatasetError as err:
            if get_worker_info() is not None:  # a loader worker's copy: the error would stay in the worker
                raise
            self.error = self.error or err
            return torch.zeros((len(indices), *self.shape), dtype=torch.uint8)


def bpd(run: Run, split: str, n_samples: int, ks: list[int]) -> dict[str, float]:
    """bpd of the EMA model on ``split`` per ELBO term (``total``, ``total_stderr``, ``total_k10``, ...).

    Stops with :class:`~bsi.metrics.Stopped` between batches once a stop is requested, and with
    :class:`DatasetError` once some rank could not read its data (all ranks together, either way).
    """
    dataset, final = ReadOrBlank(run.splits[split], run.shape), split == "test"
    run.ema.module.eval()
    try:
        result = evaluate_likelihood(
            run.proc, run.ema_denoiser, dataset, run.bins, run.shape, ks=ks, n_samples=n_samples, seed=run.cfg.seed,
            batch_size=run.cfg.eval.batch_size, device=run.device, kstep=run.cfg.eval.kstep,
            indices=shard(len(dataset), run.layout.rank, run.layout.world_size), n_examples=len(dataset),
            show_progress=run.main, desc="test" if final else "validation", recurring=not final,
            should_stop=lambda: any_rank(run.stop_requested() or dataset.error is not None, run.device),
        )
    except Stopped:
        if any_rank(dataset.error is not None, run.device):
            raise dataset.error or DatasetError(f"another rank could not read its {split} data") from None
        raise
    out = {}
    for row in result.rows:
        suffix = "" if row.steps is None else f"_k{row.steps}"
        for term, est in row.terms.items():
            out[f"{term}{suffix}"], out[f"{term}{suffix}_stderr"] = est.mean, est.stderr
    return out


def draw_grid(run: Run, name: str, tag: str) -> Path:
    """Draw ``eval.grid`` samples of the EMA model (main rank), write ``RUN/samples/NAME`` and show it in TensorBoard."""
    s = run.cfg.eval.sample
    run.ema.module.eval()
    with Progress(total=run.cfg.eval.grid, desc=f"grid {name}", unit="sample", dynamic_ncols=True, leave=False,
                  announce=name == "final.png") as bar:
        levels, _ = draw_samples(run.proc, run.ema_denoiser, run.shape, range(run.cfg.eval.grid), run.bins,
                                 steps=s.steps, solver=s.solver, spacing=s.spacing, seed=run.cfg.seed,
                                 batch_size=run.cfg.eval.batch_size, device=run.device, bar=bar,
                                 should_stop=run.stop_requested)
    run.last_grid = (run.step, levels)
    return show_grid(run, levels, name, tag)


def show_grid(run: Run, levels: Tensor, name: str, tag: str) -> Path:
    """Write samples ``levels`` as ``RUN/samples/NAME`` (a PNG, or text for sequences) and to TensorBoard."""
    levels = levels.cpu()
    path = save_preview(levels, run.bins, run.run_dir / "samples" / name)
    if path.suffix == ".png":
        run.metrics.image(run.step, tag, grid_image(to_pixels(levels, run.bins), upscale=viewing_scale(levels.shape)))
    else:
        run.metrics.text(run.step, tag, path.read_text().splitlines())
    return path


def evaluation_due(run: Run) -> bool:
    return run.step % run.t.eval_every == 0 or run.step == run.t.steps


def evaluate_step(run: Run) -> None:
    """Validation bpd (and ``best.pt``) and a sample grid for this step; a stop signal ends it at once,
    and unreadable validation data after saving this step (unevaluated: a resumed run evaluates it)."""
    run.evaluated, stopped, val = False, False, None
    try:
        if "val" in run.splits:
            val = bpd(run, "val", run.cfg.eval.val_n_samples, [])
        if run.main and run.cfg.eval.grid:
            draw_grid(run, f"step_{run.step:07d}.png", "samples")
    except Stopped:
        stopped = True
    except DatasetError as err:
        stop_on_data_failure(run, err)
    if any_rank(stopped, run.device):  # only the main rank draws grids: the others learn of its stop here
        stop(run)
    run.evaluated = True
    if val is None:
        return
    run.metrics.log(run.step, val_bpd=val["total"])
    improved = val["total"] < run.best_val
    if improved:
        run.best_val, run.best_step = val["total"], run.step
        save(run, "best.pt")
    if run.main:
        log.info(f"step {run.step}: validation bpd {val['total']:.4f} ± {val['total_stderr']:.4f}"
                 + (" (best so far)" if improved else f" (best {run.best_val:.4f} at step {run.best_step})"))


def loop(run: Run) -> None:
    """Train until ``train.steps``: step, log, evaluate and checkpoint when due, stop when signalled."""
    if not run.evaluated:  # resumed from a checkpoint whose evaluation was interrupted: do it first
        if evaluation_due(run):
            with aside(run):
                evaluate_step(run)
                if run.step % run.t.checkpoint_every == 0 or run.step == run.t.steps:
                    save(run, f"step_{run.step:07d}.pt")
        run.evaluated = True
    while run.step < run.t.steps:
        log_step(run, *train_step(run))
        with aside(run):
            if evaluation_due(run):
                evaluate_step(run)
            if run.signalled:
                stop(run)
            if run.step % run.t.checkpoint_every == 0 or run.step == run.t.steps:
                save(run, f"step_{run.step:07d}.pt")
    last = run.run_dir / "checkpoints" / f"step_{run.step:07d}.pt"
    if any_rank(run.main and not last.exists(), run.device):  # resumed at the end from another run directory
        with aside(run):
            save(run, last.name)  # the final evaluation may be interrupted: its run directory must hold the step


# -- the end ----------------------------------------------------------------------------------------


def select_weights(run: Run) -> tuple[str, int]:
    """Put the EMA weights to test in place: those of the best validation bpd (``best.pt``) or the last ones.

    Returns ``("best" | "last", their step)``.  The training is over: nothing is saved after this.
    """
    best = run.run_dir / "checkpoints" / "best.pt"
    distributed.barrier()  # best.pt is written by the main rank
    if run.cfg.eval.select != "best" or run.best_step is None or not best.exists():
        return "last", run.step
    if run.best_step != run.step:
        run.ema.load_state_dict(load_checkpoint(best)["ema"])
    return "best", int(run.best_step)


def announce_final(run: Run, grid_calls: int) -> None:
    """One line with what the final evaluation will cost, in network calls, before it starts."""
    e = run.cfg.eval
    n, ranks = len(run.splits["test"]), run.layout.world_size
    settings = ["inf", *(str(k) for k in e.ks)]
    # Per ELBO and Monte Carlo draw, one call for the measurement term and one for the reconstruction.
    calls = len(settings) * math.ceil(math.ceil(n / ranks) / e.batch_size) * e.n_samples * 2
    grid = (f"{e.grid} samples in {grid_calls} network calls" if grid_calls
            else "the grid of this step, already drawn" if e.grid else "none (eval.grid=0)")
    log.info(f"final evaluation: test bpd of {n} examples x {e.n_samples} draws for the ELBOs with "
             f"{', '.join(settings)} steps, {calls} network calls of up to {e.batch_size} examples"
             f"{' per rank' if ranks > 1 else ''}; final sample grid: {grid} (set by eval.n_samples, eval.ks, "
             f"eval.batch_size, eval.grid and eval.sample.steps)")


def final_metrics(run: Run, test: dict[str, float], selected: str, weights_step: int, seconds: float) -> dict[str, Any]:
    e, done, step_seconds = run.cfg.eval, run.step - run.first_step, seconds - run.side_seconds
    return {
        "test_bpd": test["total"], "test_bpd_stderr": test["total_stderr"],
        "test_nats_per_example": test["total"] * math.prod(run.shape) * math.log(2),  # nats per image (or sequence)
        **{f"test_bpd_{k}_steps{s}": test[f"total_k{k}{s}"] for k in e.ks for s in ("", "_stderr")},
        "test_terms_bpd": {term: test[term] for term in ("measurement", "reconstruction", "prior")},
        "weights": f"ema_{selected}", "weights_step": weights_step,
        "best_val_bpd": run.best_val if "val" in run.splits else None, "best_step": run.best_step,
        "steps": run.step, "train_seconds": seconds, "eval_seconds": run.side_seconds,
        "steps_per_second": done / step_seconds if done else None,  # training steps alone, this session
        "examples_per_second": done * run.t.batch_size / step_seconds if done else None,
        "nonfinite_skips": run.skipped, "world_size": run.layout.world_size, "device": run.device.type,
    }


def finalize(run: Run, seconds: float) -> dict[str, Any]:
    """Test bpd of the selected EMA weights and the final sample grid (each picture drawn once), ``final.json``.

    A stop signal ends it at once: the last step's checkpoint is already on disk, and a run resumed
    from it does the final evaluation.
    """
    e = run.cfg.eval
    selected, weights_step = select_weights(run)
    reuse = run.last_grid is not None and run.last_grid[0] == weights_step
    if run.main:
        announce_final(run, 0 if reuse or not e.grid else (e.sample.steps + 1) * math.ceil(e.grid / e.batch_size))
    test, samples, stopped = None, None, False
    try:
        test = bpd(run, "test", e.n_samples, list(e.ks))
        if run.main and e.grid:
            samples = show_grid(run, run.last_grid[1], "final.png", "final_samples") if reuse \
                else draw_grid(run, "final.png", "final_samples")
    except Stopped:
        stopped = True
    if any_rank(stopped, run.device):
        distributed.barrier()
        raise Preempted(f"signal received during the final evaluation: step {run.step} is saved in "
                        f"{run.run_dir / 'checkpoints'}; rerun with resume=auto hydra.run.dir={run.run_dir} to evaluate it")
    final = final_metrics(run, test, selected, weights_step, seconds)
    if run.main:
        final["samples"] = str(samples) if samples else None
        write_json(run.run_dir / "final.json", final)
        run.metrics.log(run.step, test_bpd=final["test_bpd"])
        ks = "".join(f", {final[f'test_bpd_{k}_steps']:.4f} with {k} steps" for k in e.ks)
        log.info(f"test bpd {final['test_bpd']:.4f} ± {final['test_bpd_stderr']:.4f} ({final['test_nats_per_example']:.2f} "
                 f"nats per example){ks} (EMA weights of step {weights_step}, {e.n_samples} draws per image)")
        log.info(f"outputs in {run.run_dir}: final.json, metrics.csv, "
                 f"{f'samples/{samples.name}, ' if samples else ''}checkpoints/, tensorboard/")
    return final


# -- the run ----------------------------------------------------------------------------------------


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train as configured; returns the final metrics (also in ``RUN/final.json``).

    ``run_dir`` defaults to ``cfg.run_dir``, else hydra's output directory.  Raises a :class:`RunError`:
    :class:`ConfigError` (nothing was run; a run directory that hydra made for it is removed again),
    :class:`Preempted` (a checkpoint was saved), :class:`DivergedError`, :class:`DataError` or :class:`SaveError`.
    """
    made_by_hydra = not run_dir and not OmegaConf.select(cfg, "run_dir")
    run_dir = find_run_dir(cfg, run_dir)
    layout = distributed.detect()
    try:
        setup = prepare(cfg, run_dir, layout.world_size)
    except (ConfigError, CheckpointError) as err:
        if made_by_hydra and layout.is_main:
            remove_unused_run_dir(run_dir)
        raise ConfigError(str(err)) from None
    layout, device = distributed.setup(cfg.device)
    if cfg.cpu_threads and device.type == "cpu":
        torch.set_num_threads(int(cfg.cpu_threads))
    try:
        return _train(cfg, run_dir, layout, device, setup)
    finally:
        distributed.teardown()


def open_outputs(run: Run, setup: Setup) -> None:
    """The metrics log and the progress bar, from the step the run starts at; ``config.yaml``; what runs where."""
    run.first_step = run.step
    run.metrics = MetricsLog(run.run_dir, run.main, resume_step=run.step)
    run.bar = tqdm(total=run.t.steps, initial=run.step, unit="step", desc="train", dynamic_ncols=True,
                   disable=not run.main, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    if not run.main:
        return
    OmegaConf.save(run.cfg, run.run_dir / "config.yaml", resolve=True)
    t, n_params = run.t, sum(p.numel() for p in run.backbone.parameters())
    train_set = run.splits["train"]
    log.info(f"{run.proc.name}, output={run.proc.output}, {run.cfg.model.name} ({n_params / 1e6:.3f}M parameters) on "
             f"{train_set.name} {run.shape} x {len(train_set)}; {run.layout.world_size} rank(s) on {run.device.type}; "
             f"batch {t.batch_size} ({run.micro} per rank x {t.accumulate} micro-batches); run directory {run.run_dir}")
    if setup.resume_from is not None:
        log.info(f"resumed from {setup.resume_from} at step {run.step}")
    elif run.cfg.resume == "auto":
        log.info(f"resume=auto: no checkpoint in {run.run_dir / 'checkpoints'}, starting from scratch")


def _train(cfg: DictConfig, run_dir: Path, layout: distributed.DistEnv, device: torch.device, setup: Setup) -> dict[str, Any]:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    with Preemption() as preemption, logging_redirect_tqdm():
        run = build(cfg, run_dir, layout, device, setup, preemption)
        if setup.state is not None:
            restore(run, setup.state)
            setup.state = None  # everything is in place; free the host copy
        open_outputs(run, setup)
        try:
            with run.bar:
                run.model.train()  # for good: evaluation uses the EMA copy
                started = time.perf_counter()
                loop(run)
                seconds = time.perf_counter() - started
            return finalize(run, seconds)
        except DatasetError as err:  # test data (a training or validation batch's failure is a DataError already)
            raise DataError(f"{data_failure(err)}; the checkpoints in {run_dir / 'checkpoints'} are intact (newest: "
                            f"{latest_checkpoint(run_dir) or 'none'})") from None
        finally:
            run.metrics.close()


# -- command line ----------------------------------------------------------------------------------


def check_command_line(args: list[str]) -> str | None:
    """Why ``python -m bsi.train ARGS`` cannot compose its configuration, in one line, or ``None``."""
    return cli.check_command_line(args, "train")


@hydra.main(config_path=str(CONFIGS), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    try:
        return train(cfg)
    except Preempted as err:
        log.warning(str(err))
        sys.exit(err.exit_status)
    except RunError as err:  # every other way a run stops on purpose: one line, its documented status
        if not isinstance(err, ConfigError):
            log.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_status)


if __name__ == "__main__":
    cli.train()
