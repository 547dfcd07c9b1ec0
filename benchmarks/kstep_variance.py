"""Variance of the k-step ELBO of a trained model, per estimator, as ``Process.elbo`` computes it.

Estimators (all through the engine; independent noise per (estimator, k, seed)):

* ``one_draw``: one stratified step per draw, one measurement ``y`` (``kstep_estimator=one_draw``,
  ``kstep=uniform``): the simplest estimator;
* ``quadrature``: the same step, the expectation over ``y`` by Gauss-Hermite quadrature
  (``kstep_estimator=low_variance``, the engine's default);
* ``quadrature_proposal``: quadrature, and the step drawn from a step proposal built on ``--pilot``
  training examples (``kstep=proposal``, bsi.evaluate's default);
* ``trajectory``: all ``k`` steps of one sender trajectory per draw (``kstep=trajectory``).

Per ``k`` and estimator: the bound (bpd), its test-set standard error with ``--draws`` draws per
example, and the network calls per example; mean ± sd over ``--seeds`` seeds.  The step-wise
estimators make 2 calls per draw; a trajectory makes ``k + 1``, so its SE is also given scaled to the
step-wise estimators' calls (``SE sqrt((k + 1) / (2 draws))``).

Run: ``python -m benchmarks.kstep_variance --checkpoint RUN/checkpoints/best.pt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from benchmarks.markdown import command_line, pm, provenance, table
from bsi.atomic import write_json
from bsi.data import build_dataset, to_float
from bsi.engine import example_generators

ESTIMATORS = {  # name: (kstep_estimator, kstep)
    "one_draw": ("one_draw", "uniform"),
    "quadrature": ("low_variance", "uniform"),
    "quadrature_proposal": ("low_variance", "proposal"),
    "trajectory": ("one_draw", "trajectory"),
}


def mean_sd(values: list[float]) -> dict:
    return dict(mean=statistics.fmean(values), sd=statistics.stdev(values) if len(values) > 1 else float("nan"))


@torch.no_grad()
def bound(proc, denoiser, x: torch.Tensor, k: int, draws: int, kstep: str, seed: int, pilot: torch.Tensor) -> torch.Tensor:
    """``(B,)`` per-example k-step bounds in bpd (``draws`` draws each), noise from ``seed``."""
    options = {}
    if kstep == "proposal":
        options["step_proposal"] = proc.step_proposal(pilot, denoiser, k, torch.Generator().manual_seed(10_000 + seed))
    options["trajectory"] = kstep == "trajectory"
    terms = proc.elbo(x, denoiser, steps=k, n_samples=draws, generator=example_generators(seed, range(len(x))), **options)
    return terms["total"] / (x[0].numel() * math.log(2))


RESULTS = {"main": "benchmarks/results/kstep_variance.json", "k1000": "benchmarks/results/kstep_variance_k1000.json"}
LABELS = {"one_draw": "one draw", "quadrature": "quadrature", "quadrature_proposal": "quadrature + step proposal",
          "trajectory": "trajectory"}


def render(results: dict) -> str:
    """Bound, test-set SE and SE at equal calls per (k, estimator), from every result file present."""
    files = [results[name] for name in ("main", "k1000") if name in results]
    first = files[0]
    lines = [provenance(*files), "",
             "The default digits run (BSI, discretised output, `python -m bsi.train`"
             + (f", test bpd {pm(*first['test_bpd'])}" if "test_bpd" in first else "")
             + f") on its {first['examples']} test digits, {first['draws']} draws per example; test-set standard "
             f"error (it includes the data's own spread); mean ± sd over {first['seeds']} seeds with independent "
             f"noise. The step proposal is built from {first['pilot']} training digits.", ""]
    rows = []
    for f in files:
        for r in f["rows"]:
            calls = str(r["calls_per_example"])
            if r["estimator"] == "quadrature_proposal":
                calls += f" (+{r['k']} x {f['pilot']} rows)"
            best = r["estimator"] == "quadrature_proposal"
            rows.append((r["k"], LABELS[r["estimator"]], calls, pm(r["bpd"]["mean"], r["bpd"]["sd"]),
                         pm(r["se"]["mean"], r["se"]["sd"], 4, bold=best),
                         f"{r['se_at_stepwise_calls']['mean']:.4f}"))
    lines.append(table(["k", "estimator", "calls / example", "bound (bpd)", "test-set SE",
                        f"SE at {2 * first['draws']} calls"], rows))
    by = {(r["k"], r["estimator"]): r for f in files for r in f["rows"]}
    if (100, "one_draw") in by and (100, "quadrature_proposal") in by:
        one, best = by[100, "one_draw"]["se"]["mean"], by[100, "quadrature_proposal"]["se"]["mean"]
        lines += ["", f"At k = 100 the step proposal with quadrature has a standard error {one / best:.1f} times smaller "
                  f"than one draw at the same number of calls ({best:.3f} against {one:.3f}); it is "
                  "`bsi.evaluate`'s default (`likelihood.kstep=proposal`)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--ks", default="10,100,1000")
    parser.add_argument("--draws", type=int, default=4, help="draws per example (bsi.evaluate's default)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pilot", type=int, default=64, help="training examples the step proposal is built from")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--out", type=Path, default=Path(RESULTS["main"]))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from bsi.checkpoint import load_trained

    trained = load_trained(args.checkpoint)
    test = build_dataset(trained.cfg.data, "test")
    x = to_float(test.__getitems__(range(len(test))), trained.bins)
    pilot = to_float(build_dataset(trained.cfg.data, "train").__getitems__(range(args.pilot)), trained.bins)
    report = {"command": command_line("benchmarks.kstep_variance", sys.argv[1:]),
              "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, one thread",
              "measured": date.today().isoformat(), "checkpoint": str(args.checkpoint), "examples": len(x), "draws": args.draws, "pilot": args.pilot,
              "seeds": args.seeds, "rows": []}
    for k in (int(v) for v in args.ks.split(",") if v):
        for name in args.estimators.split(","):
            estimator, kstep = ESTIMATORS[name]
            proc = dataclasses.replace(trained.process, kstep_estimator=estimator)
            start = time.perf_counter()
            bpd, se = [], []
            for seed in range(args.seeds):
                per_example = bound(proc, trained.denoiser, x, k, args.draws, kstep, 1000 * seed + k, pilot)
                bpd.append(per_example.mean().item())
                se.append(per_example.std().item() / math.sqrt(len(x)))
            calls = args.draws * (k + 1 if kstep == "trajectory" else 2)
            scaled = [s * math.sqrt(calls / (2 * args.draws)) for s in se]
            row = dict(k=k, estimator=name, calls_per_example=calls, bpd=mean_sd(bpd), se=mean_sd(se),
                       se_at_stepwise_calls=mean_sd(scaled), seconds=time.perf_counter() - start)
            report["rows"].append(row)
            print(f"k={k:5d} {name:20s} bpd {row['bpd']['mean']:.4f} ± {row['bpd']['sd']:.4f}  "
                  f"SE {row['se']['mean']:.4f} ± {row['se']['sd']:.4f} ({calls} calls/example; at {2 * args.draws} calls "
                  f"{row['se_at_stepwise_calls']['mean']:.4f})  ({row['seconds']:.0f}s)", flush=True)
    write_json(args.out, report)
    print(render({"main": report}))


if __name__ == "__main__":
    main()
