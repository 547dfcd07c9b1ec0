"""Evaluation during and after training: validation bpd and ``best.pt``, sample grids, the final test and
``final.json``."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from .. import distributed
from ..atomic import write_json
from ..checkpoint import load_checkpoint
from ..data import DatasetError, ImageDataset
from ..evaluation import (
    Stopped,
    likelihood_cost,
    draw_samples,
    evaluate_likelihood,
    grid_image,
    save_preview,
    shard,
    to_pixels,
    viewing_scale,
)
from ..evaluation.progress import Progress
from ..exits import Preempted
from .state import Run, any_rank, save, stop
from .step import stop_on_data_failure

log = logging.getLogger("bsi.train")


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

    Stops with :class:`~bsi.evaluation.Stopped` between batches once a stop is requested, and with
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
    cost = likelihood_cost(math.ceil(n / ranks), list(e.ks), n_samples=e.n_samples, batch_size=e.batch_size,
                           kstep=e.kstep, pilot_rows=min(64, n))
    grid = (f"{e.grid} samples in {grid_calls} network calls" if grid_calls
            else "the grid of this step, already drawn" if e.grid else "none (eval.grid=0)")
    log.info(f"final evaluation: test bpd of {n} examples x {e.n_samples} draws for the ELBOs with "
             f"{', '.join(settings)} steps, {cost}"
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
        "version": run.cfg.version, "process": OmegaConf.to_container(run.cfg.method, resolve=True),
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
