"""The training loop and its entry point :func:`train`: build, restore, loop, finalize."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .. import distributed
from ..atomic import write_text
from ..runlock import RunLock, RunLockError
from ..checkpoint import CheckpointError, latest_checkpoint
from ..cpu import use_cpu_settings
from ..data import DatasetError
from ..exits import ConfigError, DataError, SaveError, full_disk, full_disk_message
from ..metrics_log import open_metrics_log
from .evaluation import evaluate_step, evaluation_due, finalize
from .setup import Setup, find_run_dir, prepare, remove_unused_run_dir
from .state import (
    Preemption,
    Run,
    any_rank,
    aside,
    build,
    data_failure,
    restore,
    save,
    stop,
)
from .step import log_step, train_step

log = logging.getLogger("bsi.train")


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
    if device.type == "cpu":
        use_cpu_settings(cfg.cpu_threads, cfg.cpu_retain_memory)
    try:
        with run_lock(cfg, run_dir, layout, device):
            return _train(cfg, run_dir, layout, device, setup)
    finally:
        distributed.teardown()


@contextmanager
def run_lock(cfg: DictConfig, run_dir: Path, layout: distributed.DistEnv, device: torch.device) -> Iterator[None]:
    """Hold ``RUN/run.lock`` (main rank) for the run; every rank raises :class:`ConfigError` if a live run has it."""
    lock = RunLock(run_dir, force=bool(cfg.force_lock), how_to_force="force_lock=true")
    refusal = None
    if layout.is_main:
        try:
            lock.acquire()
        except RunLockError as err:
            refusal = str(err)
    if any_rank(refusal is not None, device):
        raise ConfigError(refusal or "the main rank could not take the run directory's lock")
    try:
        yield
    finally:
        lock.release()


def out_of_space(run: Run, err: OSError) -> SaveError:
    """A log, sample or result file met a full disk: save this step if possible (one rank: a save is collective,
    and the other ranks are not here), and say what to do."""
    saved = f"the newest checkpoint is {latest_checkpoint(run.run_dir) or 'none yet'}"
    if run.layout.world_size == 1:
        try:
            save(run, f"step_{run.step:07d}.pt")
            saved = f"saved step {run.step} in {run.run_dir / 'checkpoints'}"
        except SaveError:
            pass
    return SaveError(f"{full_disk_message(err)}; {saved}: free some space, then rerun with resume=auto "
                     f"hydra.run.dir={run.run_dir} to continue")


def open_outputs(run: Run, setup: Setup) -> None:
    """The metrics log and the progress bar, from the step the run starts at; ``config.yaml``; what runs where."""
    run.first_step = run.step
    run.metrics = open_metrics_log(run.cfg, run.run_dir, run.main, resume_step=run.step)
    run.metrics.write_unwritten(run.unwritten)
    run.bar = tqdm(total=run.t.steps, initial=run.step, unit="step", desc="train", dynamic_ncols=True,
                   disable=not run.main, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    if not run.main:
        return
    write_text(run.run_dir / "config.yaml", OmegaConf.to_yaml(run.cfg, resolve=True))
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
        run = build(setup.cfg, run_dir, layout, device, setup, preemption)
        if setup.state is not None:
            restore(run, setup.state)
            setup.state = None  # everything is in place; free the host copy
        try:
            open_outputs(run, setup)  # config.yaml and metrics.csv: a full disk here ends with status 6 too
            with run.bar:
                run.model.train()  # for good: evaluation uses the EMA copy
                started = time.perf_counter()
                loop(run)
                seconds = time.perf_counter() - started
            return finalize(run, seconds)
        except DatasetError as err:  # test data (a training or validation batch's failure is a DataError already)
            raise DataError(f"{data_failure(err)}; the checkpoints in {run_dir / 'checkpoints'} are intact (newest: "
                            f"{latest_checkpoint(run_dir) or 'none'})") from None
        except OSError as err:
            if not full_disk(err):
                raise
            raise out_of_space(run, err) from None
        finally:
            run.metrics.close(quiet=sys.exc_info()[0] is not None)  # never hide the error that ends the run
