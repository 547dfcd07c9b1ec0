"""mnist5k on a CPU: method x output with one backbone and budget, and the BSI reference code beside it.

Trains ``python -m bsi.train experiment=mnist5k_unet method=M output=O`` for every method and
output (same U-Net, steps, batch and evaluation; the checkpoint with the best validation bpd) and
writes test bpd ± standard error, the best validation bpd, steps and wall time of each run to
``--out`` (:data:`RESULTS`; :func:`render` makes its table for ``docs/results.md``).

``--reference PATH`` (a checkout of ``martenlienen/bsi``; nothing is fetched) also trains the BSI
paper's reference code on the same split, U-Net size, steps, batch, learning-rate schedule and EMA
decay through :mod:`benchmarks.mnist5k_reference`, run by ``--reference-python`` (an environment
with the reference's dependencies; they conflict with nothing here but are not ours to install).

Budget: ``--steps N``, or ``--minutes M``, which times a few training steps of the first run's
configuration and sets ``N`` so that its training alone takes about ``M`` minutes (evaluation
comes on top); every run, the reference's included, gets the same ``N``.  Finished runs in
``--runs`` with the same number of steps are reused, so an interrupted benchmark continues.

    python -m benchmarks.mnist5k --steps 1000 --jobs 2 --reference ../bsi-reference --reference-python ../ref-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import h5py
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from benchmarks.markdown import pm, provenance, table
from bsi.atomic import write_json
from bsi.build import build_backbone, build_process
from bsi.config import CONFIGS
from bsi.data import DATASETS, build_dataset, to_float
from bsi.data.h5store import atomic_h5
from bsi.models import count_parameters

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    """One training: ours (``method``, ``output``) or the reference code's."""

    code: str             # "ours" or "reference"
    method: str
    output: str
    run_dir: Path
    command: list[str] = field(default_factory=list)
    result: dict | None = None

    @property
    def name(self) -> str:
        return f"{self.code}:{self.method}/{self.output}"


def compose_config(experiment: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *overrides])


def parameters(cfg) -> int:
    """Trainable parameters of the backbone ``cfg`` builds (on the meta device: nothing is allocated)."""
    train = build_dataset(cfg.data, "train")
    proc = build_process(cfg, train.bins)
    with torch.device("meta"):
        return count_parameters(build_backbone(cfg, tuple(train.shape), proc))


def seconds_per_step(cfg, steps: int = 4) -> float:
    """Median seconds of one training step (loss, backward, AdamW) of ``cfg``'s backbone on one thread."""
    torch.set_num_threads(1)
    train = build_dataset(cfg.data, "train")
    proc = build_process(cfg, train.bins)
    backbone = build_backbone(cfg, tuple(train.shape), proc)
    denoiser = proc.parameterize(backbone)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=cfg.train.lr)
    x = to_float(train.__getitems__(range(cfg.train.batch_size)), train.bins)
    times = []
    for _ in range(steps + 1):  # the first step warms up allocations
        started = time.perf_counter()
        optimizer.zero_grad()
        proc.training_loss(x, denoiser).loss.mean().backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def write_reference_data(cfg, out: Path) -> Path:
    """Our split in the reference's HDF5 format: ``out/{train,val,test}.h5`` with ``data`` float32
    ``(N, 1, 28, 28)`` in [-1, 1] (:func:`bsi.data.to_float`, the reference's own scaling) and
    ``label`` int64 ``(N,)`` (the digits, read from our converted file)."""
    spec = DATASETS[cfg.data.name]
    with h5py.File(spec.file(cfg.data.root), "r") as f:
        stored = {"train": f["train/labels"][:], "test": f["test/labels"][:]}
    n_train = len(build_dataset(cfg.data, "train"))
    labels = {"train": stored["train"][:n_train], "val": stored["train"][n_train:], "test": stored["test"]}
    for split, digits in labels.items():
        path = out / f"{split}.h5"
        if path.exists():
            continue
        dataset = build_dataset(cfg.data, split)
        images = to_float(dataset.__getitems__(range(len(dataset))), dataset.bins)
        with atomic_h5(path, dataset=spec.name, source="bsi mnist5k split for the reference code") as f:
            f.create_dataset("data", data=images.numpy())
            f.create_dataset("label", data=digits.astype(np.int64))
    return out


def finished(run: Run, steps: int) -> dict | None:
    """The result of an earlier run of ``steps`` steps in ``run.run_dir``, if there is one."""
    path = run.run_dir / ("result.json" if run.code == "reference" else "final.json")
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    wall = run.run_dir / "wall_time.json"  # written by this benchmark beside the run's own result
    if wall.exists():
        result.update(json.loads(wall.read_text()))
    return result if result.get("steps") == steps else None


def execute(run: Run, steps: int, log_dir: Path) -> Run:
    """Run ``run.command`` (or reuse a finished run); its wall time includes start-up and evaluation."""
    if (result := finished(run, steps)) is not None:
        run.result = result
        print(f"{run.name}: reusing {run.run_dir}", flush=True)
        return run
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{run.code}-{run.method}-{run.output}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if run.code == "reference":
        env.pop("PYTHONPATH")  # the reference's package is also called bsi
    print(f"{run.name}: started, log {log}", flush=True)
    started = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run(run.command, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(f"{run.name}: failed with status {done.returncode}; see {log}", flush=True)
        return run
    run.result = finished(run, steps)
    if run.result is None:
        print(f"{run.name}: finished without a result for {steps} steps in {run.run_dir}; see {log}", flush=True)
        return run
    run.result["wall_seconds"] = wall
    (run.run_dir / "wall_time.json").write_text(json.dumps({"wall_seconds": wall}) + "\n")
    print(f"{run.name}: test bpd {run.result['test_bpd']:.4f} ± {run.result['test_bpd_stderr']:.4f} "
          f"in {wall / 60:.1f} min", flush=True)
    return run


def row(run: Run, params: int | None, batch: int) -> dict:
    r = run.result or {}
    return dict(code=run.code, method=run.method, output=run.output, parameters=params, steps=r.get("steps"),
                batch_size=batch, test_bpd=r.get("test_bpd"), test_bpd_stderr=r.get("test_bpd_stderr"),
                best_val_bpd=r.get("best_val_bpd"), best_step=r.get("best_step"),
                wall_minutes=r.get("wall_seconds", math.nan) / 60, run_dir=str(run.run_dir))


RESULTS = "benchmarks/results/mnist5k.json"
CODE_NAMES = {"ours": "bsi (this project)", "reference": "BSI paper's reference code"}


def render(results: dict) -> str:
    """Test bpd per run, the best of each output in bold, and how the outputs and the reference compare."""
    rows = [r for r in results["rows"] if r["test_bpd"] is not None]
    lines = [provenance(results), "",
             f"{results['steps']:,} training steps of batch {rows[0]['batch_size']} per run; test bpd on the 1,000 "
             "test digits ± standard error over them.", "",
             table(["code", "method", "output", "parameters", "test bpd"],
                   [(CODE_NAMES[r["code"]], r["method"], r["output"], f"{r['parameters']:,}",
                     pm(r["test_bpd"], r["test_bpd_stderr"], bold=r["output"] == "discretised")) for r in rows])]
    ours = {(r["method"], r["output"]): r["test_bpd"] for r in rows if r["code"] == "ours"}
    gains = [f"{ours[m, 'point'] - ours[m, 'discretised']:.2f} bpd for {m}" for m, o in ours
             if o == "discretised" and (m, "point") in ours]
    if gains:
        lines += ["", "The discretised output beats the point output for every method: by " + ", ".join(gains) + "."]
    ref = [r for r in rows if r["code"] == "reference"]
    if ref and ("bsi", "point") in ours:
        diff = ref[0]["test_bpd"] - ours["bsi", "point"]
        lines += ["", f"With the same point output our BSI scores {abs(diff):.2f} bpd "
                  f"{'below' if diff > 0 else 'above'} the reference code"
                  + (f" and {ref[0]['test_bpd'] - ours['bsi', 'discretised']:.2f} below it with the discretised output."
                     if ("bsi", "discretised") in ours else ".")]
    best = min(r["test_bpd"] for r in rows)
    lines += ["", f"Our best, {best:.2f} bpd, is worse than the about 1.0 bpd that strong models reach on the full "
              "MNIST (60,000 training images, far longer training on GPUs): this is a short CPU budget, "
              "and the validation bpd was still falling when it ended."]
    return "\n".join(lines)


def headline(results: dict) -> list[tuple[str, str, str, str]]:
    """One summary row: our discretised runs against the reference code."""
    rows = [r for r in results["rows"] if r["test_bpd"] is not None]
    disc = [r for r in rows if r["code"] == "ours" and r["output"] == "discretised"]
    ref = [r for r in rows if r["code"] == "reference"]
    other = f"BSI reference code (point output): {ref[0]['test_bpd']:.3f} bpd" if ref else ""
    return [(f"MNIST, 5,000 digits, 256 levels, {results['steps']} steps on a CPU",
             " / ".join(r["method"] for r in disc) + ", discretised output",
             " / ".join(f"{r['test_bpd']:.3f}" for r in disc) + " bpd", other)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps of every run (default: the experiment's)")
    budget.add_argument("--minutes", type=float, help="set the steps so that one run's training takes about this long")
    p.add_argument("--experiment", default="mnist5k_unet")
    p.add_argument("--methods", default="bsi,bfn,vdm")
    p.add_argument("--outputs", default="discretised,point")
    p.add_argument("--reference", type=Path, help="checkout of martenlienen/bsi: also train the reference code")
    p.add_argument("--reference-python", default=sys.executable,
                   help="Python of an environment with the reference's dependencies (default: this one)")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (each on one thread)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "mnist5k", help="where the run directories go")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mnist5k.json")
    p.add_argument("--machine", default=f"{os.cpu_count()}-core {platform.machine()} CPU, one thread per run")
    p.add_argument("overrides", nargs="*", help="extra hydra overrides for every run of ours")
    args = p.parse_args(argv)

    base = compose_config(args.experiment, args.overrides)
    if args.minutes:
        per_step = seconds_per_step(base)
        steps = max(1, int(args.minutes * 60 / per_step))
        print(f"--minutes {args.minutes}: {per_step:.2f} s per step on one thread -> {steps} steps", flush=True)
    else:
        steps = args.steps or int(base.train.steps)
    t, e = base.train, base.eval
    runs, params = [], {}
    for output in args.outputs.split(","):
        for method in args.methods.split(","):
            overrides = [f"method={method}", f"output={output}", f"train.steps={steps}", *args.overrides]
            run_dir = args.runs / f"{method}-{output}"
            command = [sys.executable, "-m", "bsi.train", f"experiment={args.experiment}", *overrides, "cpu_threads=1",
                       f"hydra.run.dir={run_dir}"]
            runs.append(Run("ours", method, output, run_dir, command))
            params[runs[-1].name] = parameters(compose_config(args.experiment, overrides))
    if args.reference is not None:
        if base.model.get("kind", base.model.name) != "unet":
            p.error("--reference drives the reference's U-Net: use a U-Net experiment")
        data = write_reference_data(base, args.runs / "reference-data")
        run_dir = args.runs / "reference-bsi-point"
        command = [args.reference_python, str(ROOT / "benchmarks" / "mnist5k_reference.py"),
                   "--reference", str(args.reference.resolve()), "--data", str(data), "--out", str(run_dir),
                   "--steps", str(steps), "--batch-size", str(t.batch_size), "--eval-every", str(t.eval_every),
                   "--channels", str(base.model.channels), "--blocks", str(base.model.num_blocks),
                   "--dropout", str(base.model.dropout), "--lr", str(t.lr), "--min-lr", str(t.min_lr),
                   "--warmup", str(t.warmup), "--weight-decay", str(t.weight_decay), "--ema-decay", str(t.ema_decay),
                   "--n-samples", str(e.n_samples), "--eval-batch-size", str(e.batch_size), "--seed", str(base.seed)]
        # after the first output's runs: with --jobs > 1 the minimum grid (every method with one output,
        # and the reference) finishes first
        runs.insert(len(args.methods.split(",")), Run("reference", "bsi", "point", run_dir, command))

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda run: execute(run, steps, args.runs / "logs"), runs))
    for run in runs:
        if run.code == "reference" and run.result is not None:
            params[run.name] = run.result["parameters"]
    rows = [row(run, params.get(run.name), t.batch_size) for run in runs]
    command = " ".join(["python -m benchmarks.mnist5k", f"--steps {steps}"]
                       + (["--reference PATH/TO/martenlienen-bsi"] if args.reference else []) + args.overrides)
    results = dict(command=command, machine=args.machine, measured=date.today().isoformat(),
                   experiment=args.experiment, steps=steps, overrides=args.overrides,
                   test_draws_per_image=int(e.n_samples), rows=rows)
    write_json(args.out, results)
    print(render(results))


if __name__ == "__main__":
    main()
