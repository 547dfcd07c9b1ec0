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
same for any number of ranks and batch size.  On a CPU the evaluation runs ``cpu_threads`` torch
threads (1 by default, as training does).  Settings: ``configs/evaluate.yaml``.

Exit status: 0 done; ``EXIT_USAGE`` (2) a setting or input cannot work (missing checkpoint or
weights, unknown task, key or solver, a value of the wrong type or range), one line on stderr and
nothing was run; ``EXIT_INTERRUPTED`` (3) SIGTERM or SIGUSR1 arrived, the evaluation stopped within
a network call and wrote no partial results (there is nothing to resume: rerun the command).
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from . import cli, distributed
from .atomic import write_json
from .checkpoint import CheckpointError, TrainedModel, load_trained
from .data import DatasetError, build_dataset
from .engine import SOLVERS, SPACINGS
from .engine.choices import choice_error
from .metrics import (
    INCEPTION, KSTEP_DRAWS, Progress, RGBImages, WeightsMissing, draw_samples, evaluate_likelihood, fid_kid, gather_examples,
    inception_weights, load_npz, save_npz, save_preview, save_trajectory, shard, to_pixels,
)

TASKS, USAGE = cli.EVALUATE_TASKS, cli.EVALUATE_USAGE
DEFAULT_N = {"sample": 64, "fid": 50000}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
EXIT_USAGE, EXIT_INTERRUPTED = cli.EXIT_USAGE, 3
# An absolute path: hydra resolves a relative one against the calling module's package, which
# fails when main() is called from another program (tests, notebooks) rather than `python -m`.
CONFIGS = str(cli.CONFIGS)
# A standard error (and FID's covariance, KID's unbiased estimate) needs at least two examples.
MIN_EXAMPLES = 2


class EvaluationError(Exception):
    """A setting or input the evaluation cannot use; the message says which."""


class Interrupted(BaseException):
    """SIGTERM or SIGUSR1 arrived: the evaluation stopped.

    A ``BaseException``, like ``KeyboardInterrupt``: it is raised wherever the program happens to
    be, and library code that catches ``Exception`` must not swallow it.
    """


# -- inputs ------------------------------------------------------------------------------------------
def whole_number_problem(cfg: DictConfig, key: str, minimum: int, optional: bool = False, why: str = "") -> str | None:
    """Why ``cfg.<key>`` is not a whole number >= ``minimum`` (``null`` allowed if ``optional``), or ``None``."""
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return f"{key}={value!r} must be a whole number >= {minimum}" + (" or null" if optional else "") + why
    return None


def check_settings(cfg: DictConfig) -> None:
    """Fail before any loading on settings that cannot work, naming every one of them."""
    problems: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    if cfg.task not in TASKS:
        raise EvaluationError(f"unknown task '{cfg.task}': choose one of {', '.join(TASKS)}")
    need(cfg.dtype in DTYPES, f"dtype={cfg.dtype}: choose one of {', '.join(DTYPES)}")
    need(cfg.split in ("train", "val", "test"), f"split={cfg.split}: choose train, val or test")
    problems += filter(None, [choice_error("solver", cfg.sample.solver, SOLVERS),
                              cfg.sample.spacing and choice_error("step spacing", cfg.sample.spacing, SPACINGS),
                              choice_error("likelihood.kstep", cfg.likelihood.kstep, KSTEP_DRAWS)])
    for key in ("ema", "sample.trajectory", "fid.kid", "fid.download"):
        need(isinstance(OmegaConf.select(cfg, key), bool), f"{key}={OmegaConf.select(cfg, key)!r} must be true or false")
    ks = cfg.likelihood.ks
    need(OmegaConf.is_list(ks) and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks),
         f"likelihood.ks={ks!r} must be a list of whole numbers >= 1, e.g. likelihood.ks=[10,100] (or [])")
    # n=0 or likelihood.limit=0/1 would end in an empty or nan estimate; refuse instead.
    two = f" (a standard error, FID and KID need at least {MIN_EXAMPLES} examples)"
    n_min, n_why = (MIN_EXAMPLES, two) if cfg.task == "fid" else (1, "")
    checks = [("n", n_min, True, n_why), ("batch_size", 1, False, ""), ("num_workers", 0, False, ""),
              ("seed", 0, False, ""), ("cpu_threads", 1, True, ""), ("likelihood.n_samples", 1, False, ""),
              ("likelihood.reconstruction_samples", 1, True, ""), ("likelihood.limit", MIN_EXAMPLES, True, two),
              ("likelihood.pilot", 1, False, ""), ("sample.steps", 1, False, ""), ("sample.grid", 1, False, ""),
              ("sample.trajectory_n", 1, False, ""), ("fid.kid_subset_size", MIN_EXAMPLES, False, two),
              ("fid.batch_size", 1, False, "")]
    problems += [p for key, *rule in checks if (p := whole_number_problem(cfg, key, *rule))]
    needs_checkpoint = cfg.task != "fid" or not cfg.fid.samples
    need(not needs_checkpoint or bool(cfg.checkpoint),
         f"{cfg.task} needs checkpoint=PATH (a step_*.pt file or a run directory)")
    if problems:
        raise EvaluationError("; ".join(problems))


def enough_examples(n: int, what: str) -> None:
    if n < MIN_EXAMPLES:
        raise EvaluationError(f"{what} has {n} example(s): a standard error needs at least {MIN_EXAMPLES}")


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


class StopOnSignal:
    """SIGTERM and SIGUSR1 stop the evaluation within the current network call.

    The handler raises :class:`Interrupted` wherever the program is, so that a stop takes seconds
    even inside a library's loop (torch-fidelity's); nothing is written until a task has its whole
    result, so nothing partial is left.  Inside :meth:`writing` the signal only sets
    :attr:`signum`, so that files being written are finished; :meth:`check` raises afterwards.
    ``should_stop`` suits a loop that checks a flag itself.  Submitit's SIGUSR2 (requeue before a
    time limit) is left to submitit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.written: list[Path] = []  # complete output files, named in the message of a stop
        self._writing = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if not self._writing:
            raise Interrupted(signal.Signals(signum).name)

    def should_stop(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(signal.Signals(self.signum).name)

    @contextmanager
    def writing(self) -> Iterator[None]:
        self._writing = True
        try:
            yield
        finally:
            self._writing = False


# -- tasks -------------------------------------------------------------------------------------------
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
        num_workers=int(cfg.num_workers), show_progress=layout.is_main,
    )
    result.extra |= {"checkpoint": str(model.path), "step": model.step, "ema": bool(cfg.ema), "dataset": dataset.name,
                    "split": cfg.split, "seed": int(cfg.seed), "world_size": layout.world_size,
                    "seconds": time.perf_counter() - started}
    payload = result.to_json()
    if layout.is_main:
        name = "likelihood.json" if cfg.split == "test" else f"likelihood_{cfg.split}.json"
        with stop.writing():
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


def run_sample(cfg: DictConfig, layout: distributed.DistEnv, device: torch.device,
               stop: StopOnSignal) -> dict[str, Any]:
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
        with stop.writing():
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
        enough_examples(len(pixels), f"samples file {path}")
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
        with stop.writing():
            samples = save_npz(out / "fid_samples.npz", pixels, range(n), model.bins,
                               data=OmegaConf.to_container(model.cfg.data, resolve=True), **source)
        stop.written.append(samples)
        source["samples"] = str(samples)
        stop.check()  # a signal that came while the samples were written
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
    with stop.writing():
        path = write_json(out / "fid.json", result)
    kid = f", KID {result['kid']:.5f} ± {result['kid_std']:.5f}" if f.kid else ""
    note = "" if result["n_samples"] == 50000 else " (FIDs compare only at equal sample counts; 50k is the standard)"
    print(f"FID {result['fid']:.3f}{kid} from {result['n_samples']} samples vs {result['n_reference']} "
          f"reference images{note}")
    print(f"wrote {path}")
    return result


RUNNERS = {"likelihood": run_likelihood, "sample": run_sample, "fid": run_fid}


def interrupted_message(task: str, stop: StopOnSignal) -> str:
    name = signal.Signals(stop.signum).name if stop.signum is not None else "a signal"
    if stop.written:
        samples = stop.written[0]
        return (f"stopped by {name} during the {task}: no result was written, but the samples in {samples} are "
                f"complete; rerun with fid.samples={samples} to compute the FID without sampling again")
    return f"stopped by {name} before the {task} finished: no result was written (rerun the command to start over)"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.task``; returns what it wrote to JSON (an empty dict on non-main ranks).

    Raises :class:`EvaluationError` (and the data and checkpoint errors) on bad input, :class:`Interrupted` on
    SIGTERM or SIGUSR1.
    """
    check_settings(cfg)
    try:
        layout, device = distributed.setup(cfg.device)
    except ValueError as err:  # an unusable device name
        raise EvaluationError(str(err)) from None
    if cfg.cpu_threads and device.type == "cpu":
        torch.set_num_threads(int(cfg.cpu_threads))
    try:
        with StopOnSignal() as stop:
            try:
                return RUNNERS[cfg.task](cfg, layout, device, stop)
            except Interrupted:
                raise Interrupted(interrupted_message(cfg.task, stop)) from None
    finally:
        distributed.teardown()


ERRORS = (CheckpointError, DatasetError, EvaluationError, WeightsMissing)


@hydra.main(config_path=CONFIGS, config_name="evaluate", version_base="1.3")
def hydra_main(cfg: DictConfig) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "task"):
        cli.fail(f"no task given: choose one of {', '.join(TASKS)} ({USAGE})")
    try:
        return run(cfg)
    except ERRORS as err:
        cli.fail(str(err))
    except Interrupted as err:
        cli.fail(str(err), EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """``python -m bsi.evaluate TASK [key=value ...]`` (``argv``: the arguments after the program name)."""
    cli.evaluate(argv)


if __name__ == "__main__":
    main()
