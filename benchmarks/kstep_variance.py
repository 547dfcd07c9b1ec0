"""Variance of the k-step ELBO of a trained model, per estimator, as ``Process.elbo`` computes it (issue 20).

Estimators (all through the engine; independent noise per (estimator, k, seed)):

* ``one_draw``: one stratified step per draw, one measurement ``y`` (``kstep_estimator=one_draw``,
  ``kstep=uniform``): the estimator before issue 20;
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
import json
import math
import statistics
import time
from pathlib import Path

import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--ks", default="10,100,1000")
    parser.add_argument("--draws", type=int, default=4, help="draws per example (bsi.evaluate's default)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pilot", type=int, default=64, help="training examples the step proposal is built from")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kstep_variance.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from bsi.checkpoint import load_trained

    trained = load_trained(args.checkpoint)
    test = build_dataset(trained.cfg.data, "test")
    x = to_float(test.__getitems__(range(len(test))), trained.bins)
    pilot = to_float(build_dataset(trained.cfg.data, "train").__getitems__(range(args.pilot)), trained.bins)
    report = {"checkpoint": str(args.checkpoint), "examples": len(x), "draws": args.draws, "pilot": args.pilot,
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
