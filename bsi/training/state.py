"""One training run's state: the :class:`Run` every phase works on, built fresh or restored from a checkpoint,
saved whole, and the random streams that make a resumed run repeat an uninterrupted one bit for bit."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import distributed
from ..checkpoint import CheckpointWriteError, latest_checkpoint, prune, save_checkpoint
from ..data import DatasetError, ImageDataset, ResumableSampler, build_loader, to_float
from ..ema import EMA
from ..engine import Process
from ..signals import StopSignal, signal_name
from ..exits import Preempted, SaveError
from ..metrics_log import MetricsLog
from .setup import Setup

log = logging.getLogger("bsi.train")


def lr_factor(step: int, t: Any) -> float:
    """Learning rate of step ``step`` as a factor of ``train.lr``: linear warm-up, then constant or cosine."""
    if step < t.warmup:
        return (step + 1) / t.warmup
    if t.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    floor = t.min_lr / t.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def Preemption() -> StopSignal:
    """SIGTERM, SIGINT, SIGUSR1 (and submitit's signal) become a flag; submitit's requeue runs after the save."""
    return StopSignal(hand_over=(Preempted,))


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
    preemption: StopSignal
    scaler: torch.amp.GradScaler | None  # fp16 on a GPU: the loss scale
    # Null objects until open_outputs() opens them at the step the run starts from.
    metrics: MetricsLog = field(default_factory=lambda: MetricsLog(Path("."), enabled=False))
    bar: tqdm = field(default_factory=lambda: tqdm(disable=True))
    loss_name: str = "elbo"           # the training weighting's name (the loss is the ELBO's only for elbo)
    unwritten: list = field(default_factory=list)  # metrics rows a full disk kept out of the run resumed from
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
          preemption: StopSignal) -> Run:
    """The run's objects on ``device``, from scratch (step 0); :func:`restore` then loads a checkpoint."""
    t = SimpleNamespace(**OmegaConf.to_container(cfg.train, resolve=True))
    backbone = setup.backbone.to(device)
    ema = EMA(backbone, t.ema_decay, warmup=t.ema_warmup)
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
        scaler=torch.amp.GradScaler("cuda") if t.precision == "fp16" and device.type == "cuda" else None,
    )


def restore(run: Run, state: dict[str, Any]) -> None:
    """Continue from checkpoint ``state``: weights, optimiser, schedule, data order, random streams, counters."""
    run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("proposal"):
        run.proc.proposal.load_state_dict(state["proposal"])
    run.unwritten = list(state.get("unwritten_metrics") or [])
    if run.scaler and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
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
        "config": OmegaConf.to_container(run.cfg, resolve=True), "version": run.cfg.version,
        "process": OmegaConf.to_container(run.cfg.method, resolve=True), "data_shape": list(run.shape), "bins": run.bins,
        "step": run.step, "model": run.backbone.state_dict(), "ema": run.ema.state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "proposal": run.proc.proposal.state_dict(), "sampler": run.sampler.state_dict(),
        "rng": distributed.gather_objects(rng_state(run.generator, run.device)),
        "nonfinite_skips": run.skipped, "best_val": run.best_val, "best_step": run.best_step,
        "evaluated": run.evaluated, "world_size": run.layout.world_size,
        "scaler": run.scaler.state_dict() if run.scaler else None,
        "unwritten_metrics": [[step, values] for step, values in run.metrics.unwritten],
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
    raise Preempted(f"{signal_name(run.preemption.signum)} received: saved step {run.step} in {run.run_dir / 'checkpoints'}; "
                    f"rerun with resume=auto hydra.run.dir={run.run_dir} to continue")
