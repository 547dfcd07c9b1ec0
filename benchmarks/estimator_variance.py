"""Estimator variance of the bpd per importance proposal, with the exact denoiser of the digits.

For each (method, proposal) the infinite-step ELBO of the 1797 sklearn digits is estimated with the
same number of network evaluations, and the standard error of the dataset-mean bpd is reported two
ways: from the per-example spread, and as the spread over independent repetitions.  The exact
denoiser's answer is known (``log2(1797)/64`` bpd plus a small method-specific excess), so the mean
column doubles as a check.

Run: ``python -m benchmarks.estimator_variance [--draws 8] [--repeats 5]`` (writes :data:`RESULTS`).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from benchmarks.markdown import provenance
from bsi.atomic import write_json
from bsi.engine import bits_per_dim, make_process
from bsi.engine.exact import ExactDenoiser

RESULTS = "benchmarks/results/estimator_variance.json"
# (proposal, schedule, stratified); the alternatives to the default are run for bsi only.
SETTINGS = {
    "bsi": [("log_uniform", "loglinear", True), ("log_uniform", "loglinear", False),
            ("uniform_t", "cosine", True), ("adaptive", "loglinear", True)],
    "vdm": [("log_uniform", "loglinear", True), ("adaptive", "loglinear", True)],
    "bfn": [("log_uniform", "loglinear", True), ("adaptive", "loglinear", True)],
}


def digits() -> torch.Tensor:
    """All 1797 sklearn digits as ``(N, 1, 8, 8)`` float64 in [-1, 1]."""
    images = torch.tensor(load_digits().images, dtype=torch.float64)
    return (images / 16 * 2 - 1)[:, None]


def adapt(proc, den, x, steps: int, generator: torch.Generator) -> None:
    """Let the adaptive proposal learn from training-loss integrands, as it does during training."""
    for _ in range(steps):
        idx = torch.randint(len(x), (256,), generator=generator)
        out = proc.training_loss(x[idx], den, generator=generator)
        proc.proposal.update(out.lam, out.integrand)


def measure(method: str, proposal: str, schedule: str, stratified: bool, x: torch.Tensor, draws: int,
            repeats: int) -> dict:
    """Mean bpd, mean per-example SE and the SE over ``repeats`` independent estimates."""
    proc = make_process(method, proposal=proposal, schedule=schedule, stratified=stratified, data_bins=17)
    den = ExactDenoiser(x, proc.beliefs)
    g = torch.Generator().manual_seed(0)
    if proposal == "adaptive":
        adapt(proc, den, x, 50, g)
    start = time.perf_counter()
    means, ses = [], []
    for _ in range(repeats):
        est = bits_per_dim(proc.elbo(x, den, n_samples=draws, generator=g)["total"], x[0].numel())
        means.append(est.mean)
        ses.append(est.stderr)
    return dict(method=method, proposal=proposal, schedule=schedule, stratified=stratified,
                bpd=statistics.fmean(means), se_per_example=statistics.fmean(ses),
                se_over_repeats=statistics.stdev(means), seconds=(time.perf_counter() - start) / repeats)


def render(results: dict) -> str:
    """The table of :func:`main`'s results, the lowest standard errors in bold per method."""
    lines = [provenance(results), "",
             f"Exact denoiser of the {results['examples']:,} digits, {results['draws']} draws per example, "
             f"{results['repeats']} repetitions; the known answer is {results['target_bpd']:.4f} bpd plus a small "
             "method-specific excess.", "",
             "| method | proposal | stratified | bpd | SE (per example) | SE (over repeats) |",
             "|---|---|---|---|---|---|"]
    rows = results["rows"]
    for r in rows:
        same = [o for o in rows if o["method"] == r["method"]]
        best = {k: min(o[k] for o in same) for k in ("se_per_example", "se_over_repeats")}
        cells = [f"**{r[k]:.5f}**" if r[k] == best[k] and len(same) > 1 else f"{r[k]:.5f}" for k in best]
        name = r["proposal"] if r["proposal"] != "uniform_t" else f"uniform_t ({r['schedule']})"
        lines.append(f"| {r['method']} | {name} | {'yes' if r['stratified'] else 'no'} | {r['bpd']:.4f} | "
                     + " | ".join(cells) + " |")
    ratios = []
    for method in dict.fromkeys(r["method"] for r in rows):
        by = {r["proposal"]: r for r in rows if r["method"] == method and r["stratified"]}
        if "adaptive" in by and "log_uniform" in by:
            ratios.append(f"{by['adaptive']['se_per_example'] / by['log_uniform']['se_per_example']:.2f} ({method})")
    if ratios:
        lines += ["", "At equal cost the adaptive proposal's per-example standard error is " + ", ".join(ratios)
                  + " times the log-uniform proposal's."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(SETTINGS))
    parser.add_argument("--draws", type=int, default=8, help="Monte Carlo draws per example")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = digits()
    results = {"command": "python -m benchmarks.estimator_variance",
               "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, one thread", "measured": date.today().isoformat(),
               "examples": len(x), "draws": args.draws, "repeats": args.repeats,
               "target_bpd": math.log2(len(x)) / x[0].numel(), "rows": []}
    for method in args.methods.split(","):
        for setting in SETTINGS[method]:
            results["rows"].append(measure(method, *setting, x, args.draws, args.repeats))
            print(results["rows"][-1], flush=True)
    write_json(args.out, results)
    print(render(results))


if __name__ == "__main__":
    main()
