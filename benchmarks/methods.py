"""Five processes on the digits, each trained with its own weighting and with the ELBO's: bpd and sample quality.

For each process (bsi, bfn, vdm, edm, flow) and each training weighting (the preset's own and
``elbo``; for bsi, bfn and vdm they are the same, so one row), and each of ``--seeds`` seeds, this
trains the default digits model (``python -m bsi.train method=X method.weighting=W seed=S``, a
subprocess into a temporary run directory, ``--steps`` optimiser steps), reads its ``final.json``
(test bpd, infinite and 10-step) and draws ``--samples`` samples from its best EMA weights with
10 and 50 network calls, scored by the Frechet distance of ``benchmarks/solvers.py`` (features of
a small digit classifier, against the 360 test digits).  Samples use the process's own default
sampler (bsi, bfn, vdm: ancestral, geometric; edm: ode2 on the rho = 7 grid; flow: Euler uniform
in time) and, for a common yardstick, ode2 on the rho = 7 grid.  Results are mean ± sd over seeds,
written to ``benchmarks/results/methods.json``.

Only ``weighting=elbo`` trains the bound that bpd measures; the others trade it for sample quality.
Run: ``python -m benchmarks.methods --jobs 2`` (about 40 minutes of CPU with the defaults; ``--jobs`` trains that many runs at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks.markdown import command_line, model_note, pm, provenance, table
from benchmarks.solvers import (
    config_generator,
    digits_split,
    frechet_distance,
    train_classifier,
)
from bsi.atomic import write_json
from bsi.data import to_float, to_uint8
from bsi.engine import make_process

PROCESSES = ("bsi", "bfn", "vdm", "edm", "flow")
NFES = (10, 50)


def weightings(process: str) -> list[str]:
    """The preset's own training weighting and the ELBO's (one entry where they coincide)."""
    own = make_process(process).weighting.name
    return [own] if own == "elbo" else [own, "elbo"]


def train_run(overrides: list[str], seed: int, steps: int, run_dir: Path) -> dict:
    """One digits run of the default config with ``overrides`` through the CLI (one thread, test bpd at
    infinite and 10 steps, no sample grids); its ``final.json``."""
    command = [sys.executable, "-m", "bsi.train", *overrides, f"seed={seed}", f"train.steps={steps}", "eval.grid=0",
               "eval.ks=[10]", "cpu_threads=1", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "final.json").read_text())


def frechet_rows(checkpoint: Path, classifier, reference, samples: int, seed: int, key: tuple = ()) -> list[dict]:
    """Frechet distances of ``samples`` samples at each NFE, with the default sampler and with ode2 on rho = 7.

    Each (``key``, process, sampler, NFE, seed) draws its own noise: give compared runs of one process
    (another weighting, another network) different keys.
    """
    from bsi.checkpoint import load_trained

    trained = load_trained(checkpoint)
    proc = trained.process
    rows = []
    for label, solver, spacing in (("default", proc.sample_solver, proc.sample_spacing), ("ode2_edm", "ode2", "edm")):
        for nfe in NFES:
            gen = config_generator("methods", *key, proc.name, label, nfe, seed)
            x = proc.sample(trained.denoiser, (samples, *trained.data_shape), steps=nfe - 1, solver=solver,
                            spacing=spacing, generator=gen)
            x = to_float(to_uint8(x, trained.bins), trained.bins)  # images on the levels, as a user saves them
            with torch.no_grad():
                fd = frechet_distance(classifier.features(x).numpy(), reference)
            rows.append(dict(sampler=label, solver=solver, spacing=spacing, nfe=nfe, frechet=fd))
    return rows


def fd_reference():
    """``(classifier, features)``: the digit classifier of ``benchmarks/solvers.py`` and its features of the
    360 test digits, against which samples are scored."""
    _, test = digits_split()
    classifier = train_classifier()
    with torch.no_grad():
        return classifier, classifier.features(test).numpy()


def scored_runs(runs: list[tuple[list[str], int, int, tuple]], jobs: int, samples: int
                ) -> Iterator[tuple[dict, list[dict], float]]:
    """Train each run ``(overrides, seed, steps, noise key)`` (:func:`train_run`, ``jobs`` at a time, in a
    temporary folder) and yield, in order, its ``final.json``, its :func:`frechet_rows` of ``samples``
    samples and its seconds, training and scoring included."""
    classifier, reference = fd_reference()
    with tempfile.TemporaryDirectory(prefix="bsi-runs-") as tmp, ThreadPoolExecutor(jobs) as pool:
        def trained(i: int) -> tuple[dict, float]:
            overrides, seed, steps, _ = runs[i]
            start = time.perf_counter()
            return train_run(overrides, seed, steps, Path(tmp) / f"run{i}"), start

        # the runs train in subprocesses (one thread each) while their samples are scored here in order
        for i, (final, start) in enumerate(pool.map(trained, range(len(runs)))):
            _, seed, _, key = runs[i]
            fd = frechet_rows(Path(tmp) / f"run{i}" / "checkpoints" / "best.pt", classifier, reference, samples,
                              seed, key)
            yield final, fd, time.perf_counter() - start


def mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def summarise(runs: list[dict]) -> list[dict]:
    """Mean ± sd over seeds per (process, weighting)."""
    table = []
    for key in dict.fromkeys((r["process"], r["weighting"]) for r in runs):
        group = [r for r in runs if (r["process"], r["weighting"]) == key]
        row = {"process": key[0], "weighting": key[1], "seeds": len(group),
               "test_bpd": mean_sd([r["test_bpd"] for r in group]),
               "test_bpd_10_steps": mean_sd([r["test_bpd_10_steps"] for r in group])}
        for f in group[0]["frechet"]:
            name = f"frechet_{f['sampler']}_nfe{f['nfe']}"
            row[name] = mean_sd([next(g["frechet"] for g in r["frechet"] if (g["sampler"], g["nfe"]) == (f["sampler"], f["nfe"]))
                                 for r in group])
        table.append(row)
    return table


RESULTS = "benchmarks/results/methods.json"


def render(results: dict) -> str:
    """The five processes with their own training weighting and with the ELBO's: test bpd and Frechet distances."""
    def cell(v: dict, digits: int) -> str:
        return pm(v["mean"], v["sd"], digits)

    rows = [(r["process"], r["weighting"], cell(r["test_bpd"], 3), cell(r["test_bpd_10_steps"], 3),
             *(cell(r[f"frechet_{s}_nfe{n}"], 2) for s in ("default", "ode2_edm") for n in NFES))
            for r in results["summary"]]
    best_fd = min(results["summary"], key=lambda r: r["frechet_ode2_edm_nfe10"]["mean"])
    own = {r["process"]: r for r in results["summary"] if r["weighting"] != "elbo" or r["process"] in ("bsi", "bfn", "vdm")}
    likely = [own[p]["test_bpd"] for p in ("bsi", "bfn", "vdm", "edm") if p in own]
    flow_gap = own["flow"]["test_bpd"]["mean"] - statistics.fmean(v["mean"] for v in likely) if "flow" in own else None
    paired = [(own[p], next(r for r in results["summary"] if r["process"] == p and r["weighting"] == "elbo"))
              for p in ("edm", "flow") if p in own]
    better = all(o["frechet_default_nfe10"]["mean"] < e["frechet_default_nfe10"]["mean"] for o, e in paired)
    return "\n".join([
        provenance(results), "",
        f"The digits with the {'default MLP' if not model_note(results) else 'MLP ' + model_note(results)[2:]}, {results['steps']:,} steps, {results['seeds']} seeds (mean ± sd over "
        f"seeds). Test bpd is the ELBO whatever the training weighting; the Frechet distance (FD, lower is "
        f"better) is that of `benchmarks/solvers.py` on {results['samples']:,} samples, with each process's own "
        "sampler and with `ode2` on the rho = 7 grid, at 10 and 50 network calls.", "",
        table(["process", "weighting", "test bpd", "10-step bpd", "FD own 10", "FD own 50", "FD ode2 10",
               "FD ode2 50"], rows), "",
        f"bsi, bfn, vdm and edm lie within {max(v['mean'] for v in likely) - min(v['mean'] for v in likely):.3f} bpd "
        f"of each other (seed sd up to {max(v['sd'] or 0 for v in likely):.3f})"
        + (f"; flow matching is {flow_gap:.2f} bpd worse than their mean. " if flow_gap is not None else ". ")
        + ("With their own 10-call samplers, the papers' own training weightings (edm, flow) give lower FD than the "
           "ELBO weighting of the same process. " if paired and better else "")
        + f"The lowest 10-call ode2 FD here is {best_fd['process']} with the {best_fd['weighting']} weighting. bfn's "
        "own ancestral sampler is far worse at 10 calls than its ODE solver, as the BFN-Solver paper reports.",
    ])


def headline(results: dict) -> list[tuple[str, str, str, str]]:
    """One summary row: the five processes' test bpd with their own weightings."""
    own = [r for r in results["summary"] if r["weighting"] != "elbo" or r["process"] in ("bsi", "bfn", "vdm")]
    return [(f"Digits, {results['steps']:,} steps, {results['seeds']} seeds, CPU{model_note(results)}",
             " / ".join(r["process"] for r in own) + ", own weighting",
             " / ".join(f"{r['test_bpd']['mean']:.2f}" for r in own) + " bpd",
             "uniform guess: 4.09 bpd")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000, help="samples per Frechet distance")
    parser.add_argument("--processes", default=",".join(PROCESSES))
    parser.add_argument("--jobs", type=int, default=1, help="training runs at a time (each one thread)")
    parser.add_argument("--out", default="benchmarks/results/methods.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs, start = [], time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(process, weighting, seed) for process in args.processes.split(",") for weighting in weightings(process)
            for seed in range(args.seeds)]
    specs = [([f"method={p}", f"method.weighting={w}"], seed, args.steps, (w,)) for p, w, seed in jobs]
    for (process, weighting, seed), (final, fd, seconds) in zip(jobs, scored_runs(specs, args.jobs, args.samples)):
        runs.append(dict(process=process, weighting=weighting, seed=seed, test_bpd=final["test_bpd"],
                         test_bpd_10_steps=final["test_bpd_10_steps"], best_step=final["best_step"],
                         train_seconds=final["train_seconds"], frechet=fd, seconds=seconds))
        print(f"{process:5s} {weighting:7s} seed={seed} bpd={final['test_bpd']:.3f} "
              f"bpd10={final['test_bpd_10_steps']:.3f} "
              + " ".join(f"FD[{f['sampler']},{f['nfe']}]={f['frechet']:.2f}" for f in fd)
              + f" ({seconds:.0f}s)", flush=True)
        report = {
            "what": "digits (8x8, 17 levels), default model (mlp) and training settings; test bpd of the "
                    "best-validation EMA weights (infinite-step and 10-step ELBO); Frechet distance of "
                    "benchmarks/solvers.py at 10 and 50 network calls; mean ± sd over seeds",
            "model": "mlp", "steps": args.steps, "seeds": args.seeds, "samples": args.samples,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
                       "one thread per run",
            "seconds": time.perf_counter() - start,
            "command": command_line("benchmarks.methods", sys.argv[1:]),
            "measured": time.strftime("%Y-%m-%d"),
            "summary": summarise(runs), "runs": runs,
        }
        write_json(out, report)  # after every run: a killed script keeps what it finished
    print(f"\nwrote {out} ({time.perf_counter() - start:.0f}s)\n")
    print(render(report))


if __name__ == "__main__":
    main()
