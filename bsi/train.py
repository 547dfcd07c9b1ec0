"""``python -m bsi.train``: train a belief process on a dataset, from a laptop CPU to many GPUs.

The loop is plain: draw a batch, ``proc.training_loss``, AdamW step, EMA update; every
``eval_every`` steps a validation bpd of the EMA model and a sample grid; every
``checkpoint_every`` steps an atomic checkpoint that makes a resumed run bit-identical to an
uninterrupted one on CPU.  SIGTERM or SIGUSR1 (what a cluster sends before preemption or the time
limit) saves a checkpoint and exits with status ``EXIT_PREEMPTED`` so that the job can be requeued
and continue with ``resume=auto``.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from . import distributed
from .build import build_backbone, build_process
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, prune, save_checkpoint
from .data import DatasetError, ResumableSampler, build_dataset, build_loader, to_float
from .engine import bits_per_dim, example_generators

EXIT_PREEMPTED = 3  # saved on SIGTERM/SIGUSR1; rerun with resume=auto to continue


class TrainingError(Exception):
    """The run cannot go on (e.g. too many non-finite losses); the message says why."""


def lr_factor(step: int, cfg: DictConfig) -> float:
    """Linear warm-up, then constant or cosine decay to ``min_lr``, as a factor of ``lr``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def batches(loader, bins: int, device: torch.device) -> Iterator[torch.Tensor]:
    for images in loader:
        yield to_float(images.to(device, non_blocking=True), bins)


class Preemption:
    """Turns SIGTERM and SIGUSR1 into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MetricsLog:
    """Appends metrics to ``metrics.csv`` (and TensorBoard) on the main rank."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True):
        self.enabled, self.path = enabled, run_dir / "metrics.csv"
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "metric", "value"])
            for key, value in values.items():
                writer.writerow([step, key, f"{value:.6g}"])
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()


@torch.no_grad()
def evaluate_bpd(proc, denoiser, dataset, bins: int, device, layout, n_samples: int, steps: int | None, seed: int,
                 batch_size: int) -> tuple[dict[str, float], dict[str, float]]:
    """Mean bpd (and its standard error) of every ELBO term over ``dataset``, shared across ranks.

    Example ``i`` always uses the generators of ``(seed, i)``, so the number does not depend on
    the batch size or the number of ranks.
    """
    indices = list(range(layout.rank, len(dataset), layout.world_size))
    sums = torch.zeros(4, 2, dtype=torch.float64, device=device)  # per term: sum and sum of squares
    keys = ("measurement", "reconstruction", "prior", "total")
    dims = math.prod(dataset.shape)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        x = to_float(dataset.__getitems__(chunk).to(device), bins)
        terms = proc.elbo(x, denoiser, steps=steps, n_samples=n_samples, generator=example_generators(seed, chunk))
        for j, key in enumerate(keys):
            bpd = terms[key].double() / (dims * math.log(2))
            sums[j, 0] += bpd.sum()
            sums[j, 1] += (bpd**2).sum()
    distributed.all_reduce_sum(sums)
    n = len(dataset)
    mean = sums[:, 0] / n
    stderr = ((sums[:, 1] / n - mean**2).clamp_min(0) / max(n - 1, 1)).sqrt()
    return dict(zip(keys, mean.tolist())), dict(zip(keys, stderr.tolist()))


@torch.no_grad()
def save_grid(proc, denoiser, shape, bins: int, path: Path, cfg: DictConfig, device) -> None:
    from torchvision.utils import save_image

    from .data import to_uint8

    n = cfg.eval.grid
    x = proc.sample(denoiser, (n, *shape), steps=cfg.eval.sample_steps, solver=cfg.eval.solver,
                    generator=example_generators(cfg.seed, range(n)), device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_float(to_uint8(x, bins), bins).add(1).div(2), path, nrow=int(math.sqrt(n)), padding=1)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_objects(obj: Any, layout) -> list[Any]:
    if not layout.distributed:
        return [obj]
    out = [None] * layout.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def run_directory(cfg: DictConfig) -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called without hydra (tests, notebooks): use hydra.run.dir or a default
        return Path(OmegaConf.select(cfg, "run_dir", default="runs/unnamed"))


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; returns the final metrics (also written to ``RUN/final.json``)."""
    layout, device = distributed.setup(cfg.device)
    run_dir = run_directory(cfg)
    tcfg = cfg.train
    if tcfg.batch_size % (layout.world_size * tcfg.accumulate):
        raise TrainingError(f"train.batch_size={tcfg.batch_size} must divide by ranks x accumulate = "
                            f"{layout.world_size * tcfg.accumulate}")
    micro = tcfg.batch_size // (layout.world_size * tcfg.accumulate)

    train_set = build_dataset(cfg.data, "train")
    val_set = build_dataset(cfg.data, "val") if cfg.data.get("val_size", 0) else None
    test_set = build_dataset(cfg.data, "test")
    bins, shape = train_set.bins, train_set.shape

    # Dropout draws from the global RNG, the engine's noise from `generator`: both differ per rank.
    torch.manual_seed(cfg.seed * 1000 + layout.rank)
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + layout.rank + 1)
    proc = build_process(cfg, bins)
    backbone = build_backbone(cfg, shape, proc).to(device)
    ema = AveragedModel(backbone, multi_avg_fn=get_ema_multi_avg_fn(tcfg.ema_decay), use_buffers=True)
    model = DistributedDataParallel(backbone) if layout.distributed else backbone
    forward = torch.compile(model) if tcfg.compile else model
    denoiser = proc.parameterize(forward)
    ema_denoiser = proc.parameterize(ema.module)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas), weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, tcfg))
    sampler = ResumableSampler(len(train_set), seed=cfg.seed, rank=layout.rank, world_size=layout.world_size)

    step, skipped, best_val = 0, 0, float("inf")
    resume_from = latest_checkpoint(run_dir) if cfg.resume == "auto" else (Path(cfg.resume) if cfg.resume else None)
    if resume_from is not None:
        state = load_checkpoint(resume_from, device)
        backbone.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        proc.proposal.load_state_dict(state["proposal"])
        set_rng_state(state["rng"][layout.rank], generator)
        step, skipped, best_val = state["step"], state["nonfinite_skips"], state.get("best_val", float("inf"))
        sampler.load_state_dict(state["sampler"])
        if layout.is_main:
            print(f"resumed from {resume_from} at step {step}")
    loader = build_loader(train_set, micro, sampler, num_workers=tcfg.num_workers)
    data = batches(loader.forever(), bins, device)

    def state_dict() -> dict[str, Any]:
        return {
            "config": OmegaConf.to_container(cfg, resolve=True), "data_shape": list(shape), "bins": bins,
            "step": step, "model": backbone.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "proposal": proc.proposal.state_dict(), "sampler": sampler.state_dict(),
            "rng": gather_objects(rng_state(generator), layout), "nonfinite_skips": skipped, "best_val": best_val,
        }

    def checkpoint() -> None:
        state = state_dict()  # every rank takes part in gathering the RNG states
        if layout.is_main:
            save_checkpoint(run_dir / "checkpoints" / f"step_{step:07d}.pt", state)
            prune(run_dir, tcfg.keep_checkpoints)

    log = MetricsLog(run_dir, layout.is_main)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bool(tcfg.bf16) and device.type == "cuda")
    if layout.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml")
        n_params = sum(p.numel() for p in backbone.parameters())
        print(f"{proc.name} / output={proc.output} / {cfg.model.kind} ({n_params / 1e6:.3f}M parameters) on "
              f"{cfg.data.name} {tuple(shape)}, {layout.world_size} rank(s) on {device.type}; run directory {run_dir}")

    consecutive, grad_norm, started = 0, float("nan"), time.perf_counter()
    bar = tqdm(total=tcfg.steps, initial=step, disable=not layout.is_main, dynamic_ncols=True, desc="train")
    with Preemption() as preemption:
        while step < tcfg.steps:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            for k in range(tcfg.accumulate):
                x = next(data)
                sync = k == tcfg.accumulate - 1 or not layout.distributed
                with (model.no_sync() if not sync else torch.enable_grad()), autocast:
                    out = proc.training_loss(x, denoiser, generator=generator)
                    loss = out.loss.mean() / tcfg.accumulate
                loss.backward()
                total += loss.detach()
                proc.proposal.update(distributed.all_gather_cat(out.lam.to(device)), distributed.all_gather_cat(out.integrand))
            finite = distributed.all_reduce_sum(torch.isfinite(total).float()).item() == layout.world_size
            if not finite:
                skipped, consecutive = skipped + 1, consecutive + 1
                optimizer.zero_grad(set_to_none=True)
                if consecutive >= tcfg.max_nonfinite:
                    raise TrainingError(
                        f"{consecutive} non-finite losses in a row at step {step}: stopping; the last good checkpoint "
                        f"in {run_dir / 'checkpoints'} is intact (try a lower train.lr or train.grad_clip)"
                    )
            else:
                consecutive = 0
                grad_norm = torch.nn.utils.clip_grad_norm_(backbone.parameters(), tcfg.grad_clip)
                optimizer.step()
                ema.update_parameters(backbone)
            scheduler.step()
            step += 1
            bar.update(1)

            if step % tcfg.log_every == 0 or step == tcfg.steps:
                loss_value = distributed.all_reduce_sum(total.clone()).item() / layout.world_size
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                log.log(step, loss=loss_value, lr=scheduler.get_last_lr()[0], nonfinite_skips=skipped,
                        grad_norm=float(grad_norm) if finite else float("nan"))
            if step % tcfg.eval_every == 0 or step == tcfg.steps:
                ema.module.eval()
                if val_set is not None:
                    mean, _ = evaluate_bpd(proc, ema_denoiser, val_set, bins, device, layout, cfg.eval.val_n_samples,
                                           None, cfg.seed, cfg.eval.batch_size)
                    log.log(step, val_bpd=mean["total"])
                    bar.write(f"step {step}: validation bpd {mean['total']:.4f}")
                    if mean["total"] < best_val:
                        best_val = mean["total"]
                        state = state_dict()
                        if layout.is_main:
                            save_checkpoint(run_dir / "checkpoints" / "best.pt", state)
                if layout.is_main:
                    save_grid(proc, ema_denoiser, shape, bins, run_dir / "samples" / f"step_{step:07d}.png", cfg, device)
            if step % tcfg.checkpoint_every == 0 or step == tcfg.steps:
                checkpoint()
            if preemption.requested:
                checkpoint()
                bar.close()
                if layout.is_main:
                    print(f"signal received: saved step {step} in {run_dir / 'checkpoints'}; continue with resume=auto")
                distributed.teardown()
                sys.exit(EXIT_PREEMPTED)
    bar.close()
    seconds = time.perf_counter() - started

    # Final evaluation on the test split with the best (validation) or final EMA weights.
    if (run_dir / "checkpoints" / "best.pt").exists():
        ema.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt", device)["ema"])
    ema.module.eval()
    final: dict[str, Any] = {"steps": step, "seconds": seconds, "steps_per_second": step / max(seconds, 1e-9),
                             "nonfinite_skips": skipped, "best_val_bpd": best_val if val_set is not None else None}
    mean, stderr = evaluate_bpd(proc, ema_denoiser, test_set, bins, device, layout, cfg.eval.n_samples, None,
                                cfg.seed, cfg.eval.batch_size)
    final.update(test_bpd=mean["total"], test_bpd_stderr=stderr["total"],
                 test_terms={k: mean[k] for k in ("measurement", "reconstruction", "prior")})
    for k in cfg.eval.steps:
        mean_k, stderr_k = evaluate_bpd(proc, ema_denoiser, test_set, bins, device, layout, cfg.eval.n_samples, int(k),
                                        cfg.seed, cfg.eval.batch_size)
        final[f"test_bpd_{k}_steps"], final[f"test_bpd_{k}_steps_stderr"] = mean_k["total"], stderr_k["total"]
    if layout.is_main:
        save_grid(proc, ema_denoiser, shape, bins, run_dir / "samples" / "final.png", cfg, device)
        (run_dir / "final.json").write_text(json.dumps(final, indent=1))
        log.log(step, test_bpd=final["test_bpd"])
        print(f"test bpd {final['test_bpd']:.4f} ± {final['test_bpd_stderr']:.4f} (infinite steps)"
              + "".join(f", {final[f'test_bpd_{k}_steps']:.4f} ({k} steps)" for k in cfg.eval.steps))
        print(f"outputs in {run_dir}: final.json, metrics.csv, samples/final.png, checkpoints/")
    distributed.teardown()
    return final


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    try:
        return train(cfg)
    except (DatasetError, CheckpointError, TrainingError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
