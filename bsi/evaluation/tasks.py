"""The tasks of ``python -m bsi.evaluate``: likelihood, sample and FID of a trained model.

Each task takes the checked configuration, the process layout, the device and the stop handler, and
returns what it wrote to JSON (an empty dict on ranks other than the main one).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..atomic import write_json
from ..checkpoint import TrainedModel, load_trained
from ..data import build_dataset, cache_folder
from ..exits import ConfigError
from . import (
    INCEPTION,
    Progress,
    RGBImages,
    draw_samples,
    evaluate_likelihood,
    fid_kid,
    gather_examples,
    inception_weights,
    load_npz,
    save_npz,
    save_preview,
    save_trajectory,
    shard,
    to_pixels,
)
from .fid import load_reference_stats
from .stop import StopOnSignal

DEFAULT_N = {"sample": 64, "fid": 50000}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# A standard error (and FID's covariance, KID's unbiased estimate) needs at least two examples.
MIN_EXAMPLES = 2


def enough_examples(n: int, what: str) -> None:
    if n < MIN_EXAMPLES:
        raise ConfigError(f"{what} has {n} example(s): a standard error needs at least {MIN_EXAMPLES}")


def load_model(cfg: DictConfig, device: torch.device) -> TrainedModel:
    """The checkpoint's model (EMA weights unless ``ema=false``), cast to ``dtype``."""
    model = load_trained(cfg.checkpoint, device=device, ema=bool(cfg.ema), legacy_presets=bool(cfg.legacy_presets))
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
        raise ConfigError("which dataset? the samples file names none: pass data.name=... (and data.root=...)")
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
        raise ConfigError(f"the data ({dataset.name}: {tuple(dataset.shape)}, {dataset.bins} levels) does not "
                              f"match the checkpoint ({tuple(model.data_shape)}, {model.bins} levels)")


def run_likelihood(cfg: DictConfig, layout: distributed.DistEnv, device: torch.device,
                   stop: StopOnSignal) -> dict[str, Any]:
    model = load_model(cfg, device)
    dataset = build_dataset(data_config(cfg, model.cfg.data), cfg.split)
    check_data(model, dataset)
    n = len(dataset) if cfg.likelihood.limit is None else min(int(cfg.likelihood.limit), len(dataset))
    enough_examples(n, f"{dataset.name}/{cfg.split}")
    ks = [int(k) for k in cfg.likelihood.ks]
    if layout.is_main:
        settings = ", ".join(["inf", *map(str, ks)])
        print(f"likelihood of {dataset.name}/{cfg.split} ({n} examples, {cfg.likelihood.n_samples} draws each) under "
              f"{'EMA' if cfg.ema else 'raw'} weights of step {model.step}, ELBO steps {settings}; "
              f"{layout.world_size} rank(s) on {device.type}, {cfg.dtype}")
    started = time.perf_counter()
    result = evaluate_likelihood(
        model.process, model.denoiser, dataset, model.bins, model.data_shape, ks=ks,
        n_samples=int(cfg.likelihood.n_samples), reconstruction_samples=cfg.likelihood.reconstruction_samples,
        kstep=cfg.likelihood.kstep, pilot=int(cfg.likelihood.pilot),
        seed=int(cfg.seed), batch_size=int(cfg.batch_size), device=device,
        dtype=DTYPES[cfg.dtype], indices=shard(n, layout.rank, layout.world_size), n_examples=n,
        num_workers=int(cfg.num_workers), show_progress=layout.is_main, should_stop=stop.poll,
    )
    result.extra |= {"checkpoint": str(model.path), "step": model.step, "ema": bool(cfg.ema), "dataset": dataset.name,
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
               stop: StopOnSignal,
               trajectory_n: int = 0):
    """Samples ``0..n-1`` as level indices uint8 ``(n, C, H, W)`` on every rank, and their trajectory."""
    s = cfg.sample
    indices = shard(n, layout.rank, layout.world_size)
    spacing = s.spacing or model.process.sample_spacing
    # the network under autocast on a GPU; a float64 evaluation stays float64
    autocast = distributed.autocast(device, s.autocast if cfg.dtype == "float32" else "none")
    with Progress(total=len(indices), desc=f"sample ({s.solver or model.process.sample_solver}, {s.steps} steps, "
                  f"{spacing})", unit="sample", disable=not layout.is_main, dynamic_ncols=True) as bar, autocast:
        levels, traj = draw_samples(
            model.process, model.denoiser, model.data_shape, indices, model.bins, steps=int(s.steps), solver=s.solver,
            spacing=s.spacing, seed=int(cfg.seed), batch_size=int(cfg.batch_size), device=device,
            dtype=DTYPES[cfg.dtype], trajectory_n=trajectory_n, bar=bar, should_stop=stop.poll,
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
            "solver": cfg.sample.solver or model.process.sample_solver, "steps": int(cfg.sample.steps),
            "spacing": cfg.sample.spacing or model.process.sample_spacing, "dtype": cfg.dtype}


def run_sample(cfg: DictConfig, layout: distributed.DistEnv, device: torch.device,
               stop: StopOnSignal) -> dict[str, Any]:
    model = load_model(cfg, device)
    n = int(cfg.n or DEFAULT_N["sample"])
    started = time.perf_counter()
    trajectory_n = int(cfg.sample.trajectory_n) if cfg.sample.trajectory else 0
    levels, traj = sample_all(cfg, model, n, layout, device, stop, trajectory_n)
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


def run_fid(cfg: DictConfig, layout: distributed.DistEnv, device: torch.device, stop: StopOnSignal) -> dict[str, Any]:
    f = cfg.fid
    # Check for the weights before minutes of sampling, not after.
    weights = f.inception_weights
    if f.feature_extractor == INCEPTION:
        weights = inception_weights(f.inception_weights, bool(f.download))
    if f.reference_stats:
        load_reference_stats(f.reference_stats)  # a bad file is one line now, not after the sampling
    if f.samples:
        path = Path(f.samples)
        if not path.is_file():
            raise ConfigError(f"samples file {path} does not exist")
        if not layout.is_main:
            return {}
        try:
            pixels, meta = load_npz(path)
        except (ValueError, OSError) as err:
            raise ConfigError(f"cannot read samples from {path}: {err}") from None
        enough_examples(len(pixels), f"samples file {path}")
        base = load_model(cfg, device).cfg.data if cfg.checkpoint else meta.get("data")
        source = {"samples": str(path), **{k: v for k, v in meta.items() if k != "data"}}
        out = output_dir(cfg, None if cfg.checkpoint else path.parent)
    else:
        model = load_model(cfg, device)
        n = int(cfg.n or DEFAULT_N["fid"])
        levels, _ = sample_all(cfg, model, n, layout, device, stop)
        base, source = model.cfg.data, sampler_meta(cfg, model)
        out = output_dir(cfg)
        if not layout.is_main:
            return {}
        pixels = to_pixels(levels.cpu(), model.bins)
        samples = save_npz(out / "fid_samples.npz", pixels, range(n), model.bins,
                           data=OmegaConf.to_container(model.cfg.data, resolve=True), **source)
        stop.written.append(samples)
        source["samples"] = str(samples)
        stop.raise_if_stopped()  # a signal that came while the samples were written
    distributed.teardown()  # the rest runs on the main rank alone
    data = data_config(cfg, base)
    reference = build_dataset(data, f.reference_split)
    if tuple(pixels.shape[1:]) != tuple(reference.shape):
        raise ConfigError(f"samples of shape {tuple(pixels.shape[1:])} do not match {reference.name} "
                              f"{tuple(reference.shape)}")
    cache_dir = cache_folder(data, "fid_cache")
    reference_name = f"{reference.name}-{f.reference_split}-{len(reference)}"
    print(f"{'FID/KID' if f.kid else 'FID'} of {len(pixels)} samples against {len(reference)} "
          f"{reference.name}/{f.reference_split} images ({f.feature_extractor}; reference statistics cached in "
          f"{cache_dir})")
    result = fid_kid(
        RGBImages(pixels, should_stop=stop.poll),
        RGBImages(reference, functools.partial(to_pixels, bins=reference.bins), should_stop=stop.poll),
        reference_name=reference_name, cache_dir=cache_dir, kid=bool(f.kid), kid_subset_size=int(f.kid_subset_size),
        isc=bool(f.isc), prc=bool(f.prc), reference_stats=f.reference_stats, feature_extractor=f.feature_extractor, weights=weights, batch_size=int(f.batch_size),
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
