"""``python -m bsi.evaluate likelihood|sample|fid checkpoint=PATH [key=value ...]``.

* ``likelihood``: bpd of the ``split`` (default test) from the infinite-step ELBO and the k-step ELBOs
  for ``likelihood.ks``, each term with its standard error and 95% interval -> ``likelihood.json``
  (``likelihood_<split>.json`` for other splits) and a table.
* ``sample``: ``n`` samples (default 64) with any solver and step count -> ``samples.png`` (the first
  ``sample.grid``), ``samples.npz`` and, with ``sample.trajectory=true``, ``trajectory.npz``.
* ``fid``: FID (and KID) of ``n`` new samples (default 50000), or of ``fid.samples=FILE.npz``, against the
  training split -> ``fid.json``.  Needs torch-fidelity's Inception weights as a local file.

Outputs go to ``out_dir`` (default ``RUN/eval``).  Under torchrun or SLURM every rank takes its
share of the examples; example ``i``'s noise comes from ``(seed, i)`` alone, so the numbers are the
same for any number of ranks and batch size.  Errors in the inputs (missing checkpoint or weights,
unknown task or solver) end with one line on stderr and exit status 2.  Settings:
``configs/evaluate.yaml``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from . import distributed
from .checkpoint import CheckpointError, TrainedModel, load_trained
from .data import DatasetError, build_dataset
from .engine import SOLVERS, SPACINGS
from .metrics import (
    INCEPTION, Progress, RGBImages, WeightsMissing, draw_samples, evaluate_likelihood, fid_kid, gather_examples,
    inception_weights, load_npz, save_npz, save_preview, save_trajectory, shard, to_pixels,
)

TASKS = ("likelihood", "sample", "fid")
USAGE = "usage: python -m bsi.evaluate likelihood|sample|fid checkpoint=PATH [key=value ...]"
DEFAULT_N = {"sample": 64, "fid": 50000}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# An absolute path: hydra resolves a relative one against the calling module's package, which
# fails when main() is called from another program (tests, notebooks) rather than `python -m`.
CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


class EvaluationError(Exception):
    """A setting or input the evaluation cannot use; the message says which."""


# -- inputs ------------------------------------------------------------------------------------------
def check_settings(cfg: DictConfig) -> None:
    """Fail before any loading on settings that cannot work."""
    if cfg.task not in TASKS:
        raise EvaluationError(f"unknown task '{cfg.task}': choose one of {', '.join(TASKS)}")
    if cfg.dtype not in DTYPES:
        raise EvaluationError(f"dtype={cfg.dtype}: choose one of {', '.join(DTYPES)}")
    if cfg.split not in ("train", "val", "test"):
        raise EvaluationError(f"split={cfg.split}: choose train, val or test")
    if cfg.task in ("sample", "fid"):
        if cfg.sample.solver not in SOLVERS:
            raise EvaluationError(f"unknown solver '{cfg.sample.solver}': choose one of {', '.join(SOLVERS)}")
        if cfg.sample.spacing is not None and cfg.sample.spacing not in SPACINGS:
            raise EvaluationError(f"unknown spacing '{cfg.sample.spacing}': choose one of {', '.join(SPACINGS)}")
        if int(cfg.sample.steps) < 1:
            raise EvaluationError(f"sample.steps={cfg.sample.steps} must be at least 1")
    if cfg.task == "likelihood":
        if any(int(k) < 1 for k in cfg.likelihood.ks) or int(cfg.likelihood.n_samples) < 1:
            raise EvaluationError("likelihood.ks and likelihood.n_samples must be positive")
    if cfg.n is not None and int(cfg.n) < 1:
        raise EvaluationError(f"n={cfg.n} must be positive")
    if int(cfg.batch_size) < 1:
        raise EvaluationError(f"batch_size={cfg.batch_size} must be positive")
    needs_checkpoint = cfg.task != "fid" or not cfg.fid.samples
    if needs_checkpoint and not cfg.checkpoint:
        raise EvaluationError(f"{cfg.task} needs checkpoint=PATH (a step_*.pt file or a run directory)")


def load_model(cfg: DictConfig, device: torch.device) -> TrainedModel:
    """The checkpoint's model (EMA weights unless ``ema=false``), cast to ``dtype``."""
    model = load_trained(cfg.checkpoint, device=device, ema=bool(cfg.ema))
    model.backbone.to(DTYPES[cfg.dtype])
    return model


def data_config(cfg: DictConfig, base: Any) -> DictConfig:
    """The data config of the run (``base``) with this command's non-null ``data.*`` overrides."""
    plain = OmegaConf.to_container(base, resolve=True) if isinstance(base, DictConfig) else dict(base or {})
    merged = OmegaConf.create(plain)
    for key, value in cfg.data.items():
        if value is not None:
            merged[key] = value
    if not merged.get("name"):
        raise EvaluationError("which dataset? the samples file names none: pass data.name=... (and data.root=...)")
    return merged


def output_dir(cfg: DictConfig, beside: Path | None = None) -> Path:
    """``out_dir``; else ``beside``; else ``RUN/eval`` of the checkpoint (``RUN/checkpoints/*.pt`` or ``RUN``)."""
    if cfg.out_dir:
        return Path(cfg.out_dir)
    if beside is not None:
        return beside
    checkpoint = Path(cfg.checkpoint)
    if checkpoint.is_dir():
        return checkpoint / "eval"
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run / "eval"


def check_data(model: TrainedModel, dataset) -> None:
    if tuple(dataset.shape) != tuple(model.data_shape) or dataset.bins != model.bins:
        raise EvaluationError(f"the data ({dataset.name}: {tuple(dataset.shape)}, {dataset.bins} levels) does not "
                              f"match the checkpoint ({tuple(model.data_shape)}, {model.bins} levels)")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


# -- tasks -------------------------------------------------------------------------------------------
def run_likelihood(cfg: DictConfig, layout: distributed.DistEnv, device: torch.device) -> dict[str, Any]:
    model = load_model(cfg, device)
    dataset = build_dataset(data_config(cfg, model.cfg.data), cfg.split)
    check_data(model, dataset)
    n = len(dataset) if cfg.likelihood.limit is None else min(int(cfg.likelihood.limit), len(dataset))
    ks = [int(k) for k in cfg.likelihood.ks]
    if layout.is_main:
        settings = ", ".join(["inf", *map(str, ks)])
        print(f"likelihood of {dataset.name}/{cfg.split} ({n} examples, {cfg.likelihood.n_samples} draws each) under "
              f"{'EMA' if cfg.ema else 'raw'} weights of step {model.step}, ELBO steps {settings}; "
              f"{layout.world_size} rank(s) on {device.type}, {cfg.dtype}")
    started = time.perf_counter()
    result = evaluate_likelihood(
        model.process, model.denoiser, dataset, model.bins, model.data_shape, ks=ks,
        n_samples=int(cfg.likelihood.n_samples), seed=int(cfg.seed), batch_size=int(cfg.batch_size), device=device,
        dtype=DTYPES[cfg.dtype], indices=shard(n, layout.rank, layout.world_size), n_examples=n,
        num_workers=int(cfg.num_workers), show_progress=layout.is_main,
    )
    result.extra = {"checkpoint": str(model.path), "step": model.step, "ema": bool(cfg.ema), "dataset": dataset.name,
                    "split": cfg.split, "seed": int(cfg.seed), "world_size": layout.world_size,
                    "seconds": time.perf_counter() - started}
    payload = result.to_json()
    if layout.is_main:
        name = "likelihood.json" if cfg.split == "test" else f"likelihood_{cfg.split}.json"
        path = write_json(output_dir(cfg) / name, payload)
        print(f"bits per dimension, mean ± standard error over {n} examples:")
        print(result.table())
        best = payload["elbo"][0]["total"]
        print(f"infinite-step total: {best['nats']:.3f} ± {best['nats_stderr']:.3f} nats per example "
              f"({result.dims} dimensions each)")
        print(f"wrote {path}")
    return payload


def sample_all(cfg: DictConfig, model: TrainedModel, n: int, layout: distributed.DistEnv, device: torch.device,
               trajectory_n: int = 0):
    """Samples ``0..n-1`` as level indices uint8 ``(n, C, H, W)`` on every rank, and their trajectory."""
    s = cfg.sample
    indices = shard(n, layout.rank, layout.world_size)
    spacing = s.spacing or model.process.sample_spacing
    with Progress(total=len(indices), desc=f"sample ({s.solver}, {s.steps} steps, {spacing})", unit="sample",
                  disable=not layout.is_main, dynamic_ncols=True) as bar:
        levels, traj = draw_samples(
            model.process, model.denoiser, model.data_shape, indices, model.bins, steps=int(s.steps), solver=s.solver,
            spacing=s.spacing, seed=int(cfg.seed), batch_size=int(cfg.batch_size), device=device,
            dtype=DTYPES[cfg.dtype], trajectory_n=trajectory_n, bar=bar,
        )
    levels = gather_examples(levels, indices, n)
    if traj is not None:
        rows = min(trajectory_n, n)
        traj.mu = gather_examples(traj.mu, traj.indices, rows)
        traj.x_hat = gather_examples(traj.x_hat, traj.indices, rows)
        traj.indices = list(range(rows))
    return levels, traj


def sampler_meta(cfg: DictConfig, model: TrainedModel) -> dict[str, Any]:
    return {"checkpoint": str(model.path), "step": model.step, "ema": bool(cfg.ema), "seed": int(cfg.seed),
            "solver": cfg.sample.solver, "steps": int(cfg.sample.steps),
            "spacing": cfg.sample.spacing or model.process.sample_spacing, "dtype": cfg.dtype}


def run_sample(cfg: DictConfig, layout: distributed.DistEnv, device: torch.device) -> dict[str, Any]:
    model = load_model(cfg, device)
    n = int(cfg.n or DEFAULT_N["sample"])
    started = time.perf_counter()
    trajectory_n = int(cfg.sample.trajectory_n) if cfg.sample.trajectory else 0
    levels, traj = sample_all(cfg, model, n, layout, device, trajectory_n)
    meta = {**sampler_meta(cfg, model), "n": n, "seconds": time.perf_counter() - started}
    if layout.is_main:
        out = output_dir(cfg)
        pixels = to_pixels(levels.cpu(), model.bins)
        data = OmegaConf.to_container(model.cfg.data, resolve=True)
        written = [save_preview(levels[: int(cfg.sample.grid)].cpu(), model.bins, out / "samples.png"),
                   save_npz(out / "samples.npz", pixels, range(n), model.bins, data=data,
                            **{k: v for k, v in meta.items() if k != "seconds"})]
        if traj is not None:
            written.append(save_trajectory(out / "trajectory.npz", traj))
        print(f"{n} samples in {meta['seconds']:.1f} s; wrote {', '.join(str(p) for p in written)}")
        meta["files"] = [str(p) for p in written]
    return meta


def run_fid(cfg: DictConfig, layout: distributed.DistEnv, device: torch.device) -> dict[str, Any]:
    f = cfg.fid
    # Check for the weights before minutes of sampling, not after.
    weights = f.inception_weights
    if f.feature_extractor == INCEPTION:
        weights = inception_weights(f.inception_weights, bool(f.download))
    if f.samples:
        path = Path(f.samples)
        if not path.is_file():
            raise EvaluationError(f"samples file {path} does not exist")
        if not layout.is_main:
            return {}
        try:
            pixels, meta = load_npz(path)
        except (ValueError, OSError) as err:
            raise EvaluationError(f"cannot read samples from {path}: {err}") from None
        base = load_trained(cfg.checkpoint).cfg.data if cfg.checkpoint else meta.get("data")
        source = {"samples": str(path), **{k: v for k, v in meta.items() if k != "data"}}
        out = output_dir(cfg, None if cfg.checkpoint else path.parent)
    else:
        model = load_model(cfg, device)
        n = int(cfg.n or DEFAULT_N["fid"])
        levels, _ = sample_all(cfg, model, n, layout, device)
        base, source = model.cfg.data, sampler_meta(cfg, model)
        out = output_dir(cfg)
        if not layout.is_main:
            return {}
        pixels = to_pixels(levels.cpu(), model.bins)
        source["samples"] = str(save_npz(out / "fid_samples.npz", pixels, range(n), model.bins,
                                         data=OmegaConf.to_container(model.cfg.data, resolve=True), **source))
    distributed.teardown()  # the rest runs on the main rank alone
    data = data_config(cfg, base)
    reference = build_dataset(data, f.reference_split)
    if tuple(pixels.shape[1:]) != tuple(reference.shape):
        raise EvaluationError(f"samples of shape {tuple(pixels.shape[1:])} do not match {reference.name} "
                              f"{tuple(reference.shape)}")
    cache_dir = Path(data.get("root") or "data").expanduser() / reference.name / "fid_cache"
    reference_name = f"{reference.name}-{f.reference_split}-{len(reference)}"
    print(f"{'FID/KID' if f.kid else 'FID'} of {len(pixels)} samples against {len(reference)} "
          f"{reference.name}/{f.reference_split} images ({f.feature_extractor}; reference statistics cached in "
          f"{cache_dir})")
    result = fid_kid(
        RGBImages(pixels), RGBImages(reference, functools.partial(to_pixels, bins=reference.bins)),
        reference_name=reference_name, cache_dir=cache_dir, kid=bool(f.kid), kid_subset_size=int(f.kid_subset_size),
        feature_extractor=f.feature_extractor, weights=weights, batch_size=int(f.batch_size),
        cuda=device.type == "cuda",
    )
    result.update(reference=f"{reference.name}/{f.reference_split}", **source)
    path = write_json(out / "fid.json", result)
    kid = f", KID {result['kid']:.5f} ± {result['kid_std']:.5f}" if f.kid else ""
    note = "" if result["n_samples"] == 50000 else " (FIDs compare only at equal sample counts; 50k is the standard)"
    print(f"FID {result['fid']:.3f}{kid} from {result['n_samples']} samples vs {result['n_reference']} "
          f"reference images{note}")
    print(f"wrote {path}")
    return result


RUNNERS = {"likelihood": run_likelihood, "sample": run_sample, "fid": run_fid}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.task``; returns what it wrote to JSON (an empty dict on non-main ranks)."""
    check_settings(cfg)
    try:
        layout, device = distributed.setup(cfg.device)
    except ValueError as err:  # an unusable device name
        raise EvaluationError(str(err)) from None
    try:
        return RUNNERS[cfg.task](cfg, layout, device)
    finally:
        distributed.teardown()


ERRORS = (CheckpointError, DatasetError, EvaluationError, WeightsMissing)


@hydra.main(config_path=CONFIGS, config_name="evaluate", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "task"):
        print(f"error: no task given: choose one of {', '.join(TASKS)} ({USAGE})", file=sys.stderr)
        sys.exit(2)
    try:
        run(cfg)
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Entry point: the first argument names the task, the rest are hydra overrides."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TASKS:
        # Last, not first: hydra's parser wants flags such as -m before the first override.
        args = [*args[1:], f"task={args[0]}"]
    elif not args or not (args[0].startswith("-") or "=" in args[0]):
        # Not a task and not an override: a typo like `likelihod` gets this line, not hydra's traceback.
        what = f"unknown task '{args[0]}'" if args else "no task given"
        print(f"error: {what}: choose one of {', '.join(TASKS)} ({USAGE})", file=sys.stderr)
        sys.exit(2)
    saved = sys.argv
    sys.argv = [saved[0], *args]
    try:
        _hydra_main()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
