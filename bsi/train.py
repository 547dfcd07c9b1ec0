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
on CPU.

Exit status: 0 done; ``EXIT_CONFIG`` (2) the configuration or the data cannot make a run, and
nothing was run; ``EXIT_PREEMPTED`` (3) SIGTERM or SIGUSR1 arrived, a checkpoint was saved and
``resume=auto`` with the same ``hydra.run.dir`` continues; ``EXIT_DIVERGED`` (4)
``train.max_nonfinite`` non-finite losses in a row, the last checkpoint is untouched.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import cli, distributed
from .build import build_backbone, build_process
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, prune, resolve, save_checkpoint
from .data import DatasetError, ImageDataset, ResumableSampler, build_dataset, build_loader, to_float
from .ema import EMA
from .engine import SOLVERS, Process
from .metrics import draw_samples, evaluate_likelihood, save_preview, shard
from .metrics_log import MetricsLog

EXIT_CONFIG, EXIT_PREEMPTED, EXIT_DIVERGED = 2, 3, 4
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
log = logging.getLogger(__name__)


class ConfigError(Exception):
    """The configuration or the data cannot make a run; raised before any training."""


class Preempted(Exception):
    """SIGTERM or SIGUSR1 arrived: a checkpoint was saved and the run stopped."""


class DivergedError(Exception):
    """Too many non-finite losses in a row; the message says what to try."""


# -- configuration ---------------------------------------------------------------------------------


def check_config(cfg: DictConfig, world_size: int) -> None:
    """Raise :class:`ConfigError` naming every setting of ``train``/``eval`` that cannot work."""
    t, e = cfg.train, cfg.eval
    problems = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    for key in ("steps", "batch_size", "accumulate", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                "max_nonfinite"):
        need(isinstance(t[key], int) and t[key] >= 1, f"train.{key} must be a positive integer, got {t[key]!r}")
    need(isinstance(t.warmup, int) and t.warmup >= 0, f"train.warmup must be an integer >= 0, got {t.warmup!r}")
    need(t.schedule in ("constant", "cosine"), f"train.schedule must be constant or cosine, got {t.schedule!r}")
    need(t.lr > 0 and t.min_lr >= 0, "train.lr must be > 0 and train.min_lr >= 0")
    need(t.grad_clip is None or t.grad_clip > 0, f"train.grad_clip must be > 0 or null, got {t.grad_clip!r}")
    need(0 <= t.ema_decay < 1, f"train.ema_decay must lie in [0, 1), got {t.ema_decay!r}")
    need(cfg.output in ("point", "discretised"), f"output must be point or discretised, got {cfg.output!r}")
    need(e.solver in SOLVERS, f"eval.solver must be one of {', '.join(SOLVERS)}, got {e.solver!r}")
    need(all(isinstance(k, int) and k >= 1 for k in e.ks), f"eval.ks must be positive integers, got {list(e.ks)}")
    need(e.select in ("best", "last"), f"eval.select must be best or last, got {e.select!r}")
    if isinstance(t.batch_size, int) and isinstance(t.accumulate, int) and t.batch_size % (world_size * t.accumulate):
        problems.append(f"train.batch_size={t.batch_size} must divide by ranks x train.accumulate = "
                        f"{world_size} x {t.accumulate}")
    if problems:
        raise ConfigError("; ".join(problems))


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


# -- what is built before any work -----------------------------------------------------------------


@dataclass
class Setup:
    """Everything a run needs that can fail for a reason the user has to fix."""

    splits: dict[str, ImageDataset]   # train, test and (if data.val_size) val
    proc: Process
    backbone: nn.Module               # on the CPU, initialised from the run seed
    resume_from: Path | None
    state: dict[str, Any] | None      # the checkpoint to resume, if any


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
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP would broadcast them anyway)
    try:
        backbone = build_backbone(cfg, splits["train"].shape, proc)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None
    resume_from = None
    if cfg.resume == "auto":
        resume_from = latest_checkpoint(run_dir)
    elif cfg.resume:
        resume_from = resolve(cfg.resume)
    state = None
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        try:
            backbone.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {resume_from} does not fit this model: "
                                  f"{str(err).strip().splitlines()[0]}") from None
    return Setup(splits, proc, backbone, resume_from, state)


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


# -- the run ----------------------------------------------------------------------------------------


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train as configured; returns the final metrics (also in ``RUN/final.json``).

    ``run_dir`` defaults to ``cfg.run_dir``, else hydra's output directory.  Raises :class:`ConfigError` (nothing was
    run), :class:`Preempted` (a checkpoint was saved) or :class:`DivergedError`.
    """
    run_dir = find_run_dir(cfg, run_dir)
    layout = distributed.detect()
    try:
        setup = prepare(cfg, run_dir, layout.world_size)
    except CheckpointError as err:
        raise ConfigError(str(err)) from None
    layout, device = distributed.setup(cfg.device)
    if cfg.cpu_threads and device.type == "cpu":
        torch.set_num_threads(int(cfg.cpu_threads))
    try:
        return _train(cfg, run_dir, layout, device, setup)
    finally:
        distributed.teardown()


def _train(cfg: DictConfig, run_dir: Path, layout: distributed.DistEnv, device: torch.device, setup: Setup) -> dict[str, Any]:
    # Plain attributes: a DictConfig lookup costs microseconds, and the loop makes several per step.
    t = SimpleNamespace(**OmegaConf.to_container(cfg.train, resolve=True))
    proc, state = setup.proc, setup.state
    train_set, val_set, test_set = setup.splits["train"], setup.splits.get("val"), setup.splits["test"]
    bins, shape = train_set.bins, tuple(train_set.shape)
    main_rank = layout.is_main
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    backbone = setup.backbone.to(device)
    ema = EMA(backbone, t.ema_decay)
    if layout.distributed:
        model = DistributedDataParallel(backbone, device_ids=[device] if device.type == "cuda" else None)
    else:
        model = backbone
    denoiser = proc.parameterize(torch.compile(model) if t.compile else model)
    ema_denoiser = proc.parameterize(ema.module)
    params = list(backbone.parameters())
    # The fused kernel is several times faster than the default per-tensor loop on CPU, too.
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t))
    micro = t.batch_size // (layout.world_size * t.accumulate)
    sampler = ResumableSampler(len(train_set), seed=cfg.seed, rank=layout.rank, world_size=layout.world_size)
    generator = seed_rank(cfg.seed, layout.rank, device)

    step, skipped, best_val, best_step = 0, 0, math.inf, None
    if state is not None:
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("proposal"):
            proc.proposal.load_state_dict(state["proposal"])
        step, skipped = int(state["step"]), int(state["nonfinite_skips"])
        best_val, best_step = float(state.get("best_val", math.inf)), state.get("best_step")
        if len(state["rng"]) == layout.world_size:
            set_rng_state(state["rng"][layout.rank], generator, device)
        else:  # a different number of ranks: fresh streams, still determined by (seed, rank, step)
            generator = seed_rank(cfg.seed, layout.rank, device, step)
        try:
            sampler.load_state_dict(state["sampler"])
        except ValueError:  # mid-epoch on a different number of ranks: continue with the next epoch
            sampler.set_epoch(int(state["sampler"]["epoch"]) + 1)
        setup.state = state = None  # everything is in place; free the host copy
    loader = build_loader(train_set, micro, sampler, num_workers=t.num_workers)
    # A DataLoader draws a base seed for its workers at every epoch, by default from the global RNG,
    # which dropout uses too: a resumed run would draw at a different step and lose bit-exactness.
    loader.loader.generator = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed, layout.rank, LOADER_STREAM))
    batches: Iterator[torch.Tensor] = (to_float(b.to(device, non_blocking=True), bins) for b in loader.forever())

    def checkpoint_state() -> dict[str, Any]:
        """Everything that decides the next step; every rank must call it (it gathers RNG states)."""
        return {
            "config": OmegaConf.to_container(cfg, resolve=True), "data_shape": list(shape), "bins": bins,
            "step": step, "model": backbone.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "proposal": proc.proposal.state_dict(), "sampler": sampler.state_dict(),
            "rng": distributed.gather_objects(rng_state(generator, device)),
            "nonfinite_skips": skipped, "best_val": best_val, "best_step": best_step,
            "world_size": layout.world_size,
        }

    def save(name: str) -> None:
        payload = checkpoint_state()
        if main_rank:
            save_checkpoint(run_dir / "checkpoints" / name, payload)
            prune(run_dir, t.keep_checkpoints)

    def bpd(dataset: ImageDataset, n_samples: int, ks: list[int], progress: bool) -> dict[str, float]:
        """Test/validation bpd of the EMA model per ELBO term (``total``, ``total_stderr``, ``total_k10``, ...)."""
        ema.module.eval()
        result = evaluate_likelihood(
            proc, ema_denoiser, dataset, bins, shape, ks=ks, n_samples=n_samples, seed=cfg.seed,
            batch_size=cfg.eval.batch_size, device=device, indices=shard(len(dataset), layout.rank, layout.world_size),
            n_examples=len(dataset), show_progress=progress and main_rank,
        )
        out = {}
        for row in result.rows:
            suffix = "" if row.steps is None else f"_k{row.steps}"
            for term, est in row.terms.items():
                out[f"{term}{suffix}"], out[f"{term}{suffix}_stderr"] = est.mean, est.stderr
        return out

    def grid(name: str) -> Path | None:
        if not main_rank:
            return None
        ema.module.eval()
        levels, _ = draw_samples(proc, ema_denoiser, shape, range(cfg.eval.grid), bins, steps=cfg.eval.sample_steps,
                                 solver=cfg.eval.solver, spacing=None, seed=cfg.seed, batch_size=cfg.eval.batch_size,
                                 device=device)
        return save_preview(levels.cpu(), bins, run_dir / "samples" / name)

    metrics = MetricsLog(run_dir, main_rank, resume_step=step)
    if main_rank:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        n_params = sum(p.numel() for p in backbone.parameters())
        log.info(f"{proc.name}, output={proc.output}, {cfg.model.name} ({n_params / 1e6:.3f}M parameters) on "
                 f"{train_set.name} {shape} x {len(train_set)}; {layout.world_size} rank(s) on {device.type}; "
                 f"batch {t.batch_size} ({micro} per rank x {t.accumulate} micro-batches); run directory {run_dir}")
        if setup.resume_from is not None:
            log.info(f"resumed from {setup.resume_from} at step {step}")
        elif cfg.resume == "auto":
            log.info(f"resume=auto: no checkpoint in {run_dir / 'checkpoints'}, starting from scratch")

    bf16 = bool(t.bf16) and device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    max_norm = float(t.grad_clip) if t.grad_clip else math.inf
    first_step, consecutive, started, side_seconds = step, 0, time.perf_counter(), 0.0
    bar = tqdm(total=t.steps, initial=step, unit="step", desc="train", dynamic_ncols=True, disable=not main_rank,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    model.train()  # for good: evaluation uses the EMA copy
    with Preemption() as preemption, logging_redirect_tqdm(), bar:
        while step < t.steps:
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            lams, integrands = [], []
            for k in range(t.accumulate):
                x = next(batches)
                # DDP averages gradients on the last micro-batch only
                sync = nullcontext() if k == t.accumulate - 1 or not layout.distributed else model.no_sync()
                with sync:
                    with autocast:
                        out = proc.training_loss(x, denoiser, generator=generator)
                    loss = out.loss.mean() / t.accumulate
                    loss.backward()
                loss_sum += loss.detach()
                lams.append(out.lam.detach())
                integrands.append(out.integrand)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            # One collective and one host sync per step: summed over ranks, the losses and gradient
            # norms are finite only if they are finite on every rank, and the flags say whether any
            # rank was signalled; so all ranks skip, stop or save together.
            status = torch.stack([loss_sum, grad_norm, torch.tensor(float(preemption.requested), device=device)])
            loss_value, norm_value, n_signalled = distributed.all_reduce_sum(status).tolist()
            if not math.isfinite(loss_value + norm_value):
                skipped, consecutive = skipped + 1, consecutive + 1
                if consecutive >= t.max_nonfinite:
                    last = latest_checkpoint(run_dir)
                    raise DivergedError(
                        f"{consecutive} non-finite losses in a row (step {step + 1}): stopping. The last checkpoint "
                        f"({last or 'none yet'}) is untouched; try a lower train.lr, train.grad_clip or a restart "
                        f"from it with resume=auto")
            else:
                consecutive = 0
                optimizer.step()
                ema.update(backbone)
                # Every replica feeds the proposal the same (gathered) integrands, so they stay equal.
                proc.proposal.update(distributed.all_gather_cat(torch.cat(lams)),
                                     distributed.all_gather_cat(torch.cat(integrands)))
            scheduler.step()
            step += 1
            bar.update(1)

            if step % t.log_every == 0 or step == t.steps:
                loss_value /= layout.world_size
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                metrics.log(step, loss=loss_value, lr=scheduler.get_last_lr()[0], grad_norm=norm_value / layout.world_size,
                            nonfinite_skips=skipped)
            side_started = time.perf_counter()  # validation, grids and checkpoints do not count as training
            if step % t.eval_every == 0 or step == t.steps:
                if val_set is not None:
                    val = bpd(val_set, cfg.eval.val_n_samples, [], progress=False)
                    metrics.log(step, val_bpd=val["total"])
                    improved = val["total"] < best_val
                    if improved:
                        best_val, best_step = val["total"], step
                        save("best.pt")
                    if main_rank:
                        log.info(f"step {step}: validation bpd {val['total']:.4f} ± {val['total_stderr']:.4f}"
                                 + (" (best so far)" if improved else f" (best {best_val:.4f} at step {best_step})"))
                grid(f"step_{step:07d}.png")
            if step % t.checkpoint_every == 0 or step == t.steps or n_signalled:
                save(f"step_{step:07d}.pt")
            side_seconds += time.perf_counter() - side_started
            if n_signalled:
                distributed.barrier()  # no rank may exit (and make torchrun kill the rest) before the file is written
                raise Preempted(f"signal received: saved step {step} in {run_dir / 'checkpoints'}; "
                                f"rerun with resume=auto hydra.run.dir={run_dir} to continue")
    seconds = time.perf_counter() - started

    # The test bpd of the EMA weights with the best validation bpd (or the last ones).
    selected = "last"
    if cfg.eval.select == "best" and (run_dir / "checkpoints" / "best.pt").exists():
        ema.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["ema"])
        selected = "best"
    test = bpd(test_set, cfg.eval.n_samples, list(cfg.eval.ks), progress=True)
    done, step_seconds = step - first_step, seconds - side_seconds
    final: dict[str, Any] = {
        "test_bpd": test["total"], "test_bpd_stderr": test["total_stderr"],
        "test_nats_per_example": test["total"] * math.prod(shape) * math.log(2),  # nats per image (or sequence)
        **{f"test_bpd_{k}_steps{e}": test[f"total_k{k}{e}"] for k in cfg.eval.ks for e in ("", "_stderr")},
        "test_terms_bpd": {term: test[term] for term in ("measurement", "reconstruction", "prior")},
        "weights": f"ema_{selected}", "weights_step": best_step if selected == "best" else step,
        "best_val_bpd": best_val if val_set is not None else None, "best_step": best_step,
        "steps": step, "train_seconds": seconds, "eval_seconds": side_seconds,
        "steps_per_second": done / step_seconds if done else None,  # training steps alone, this session
        "examples_per_second": done * t.batch_size / step_seconds if done else None,
        "nonfinite_skips": skipped, "world_size": layout.world_size, "device": device.type,
    }
    sample_path = grid("final.png")
    if main_rank:
        final["samples"] = str(sample_path)
        (run_dir / "final.json").write_text(json.dumps(final, indent=1) + "\n")
        metrics.log(step, test_bpd=final["test_bpd"])
        ks = "".join(f", {final[f'test_bpd_{k}_steps']:.4f} with {k} steps" for k in cfg.eval.ks)
        log.info(f"test bpd {final['test_bpd']:.4f} ± {final['test_bpd_stderr']:.4f} ({final['test_nats_per_example']:.2f} "
                 f"nats per example){ks} (EMA weights of step "
                 f"{final['weights_step']}, {cfg.eval.n_samples} draws per image)")
        log.info(f"outputs in {run_dir}: final.json, metrics.csv, samples/{sample_path.name}, checkpoints/, tensorboard/")
    metrics.close()
    return final


# -- command line ----------------------------------------------------------------------------------


def check_command_line(args: list[str]) -> str | None:
    """Why ``python -m bsi.train ARGS`` cannot compose its configuration, in one line, or ``None``."""
    return cli.check_command_line(args, "train")


@hydra.main(config_path=str(CONFIGS), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    try:
        return train(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except Preempted as err:
        log.warning(str(err))
        sys.exit(EXIT_PREEMPTED)
    except DivergedError as err:
        log.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)


if __name__ == "__main__":
    cli.train()
