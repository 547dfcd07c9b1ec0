"""The default digits MLP against bsi 0.2's and a few variants: test bpd over seeds at two step budgets.

Each variant trains the default digits run (``python -m bsi.train`` with the variant's overrides, a
subprocess into a temporary run directory, one thread) for each budget in ``--steps`` and each of
``--seeds`` seeds, and reads its ``final.json``: test bpd of the best-validation EMA weights at
infinite and 10 steps; and scores ``--samples`` samples of those weights by the Frechet distance of
``benchmarks.methods`` (own sampler and ode2, 10 and 50 calls; each variant draws its own noise).  Results are mean ± sd over seeds, written to ``benchmarks/results/digits_mlp.json``.
Runs go ``--jobs`` at a time (they are single-threaded).

    python -m benchmarks.digits_mlp [--steps 2000 6000] [--seeds 5 3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from benchmarks.markdown import command_line, pm, provenance, table
from benchmarks.methods import NFES, scored_runs
from bsi.atomic import write_json

RESULTS = "benchmarks/results/digits_mlp.json"
# name -> overrides of the default config
VARIANTS: dict[str, list[str]] = {
    "default (width 320, 1 block)": [],
    "width 256": ["model.width=256"],
    "2 blocks": ["model.num_blocks=2"],
    "Fourier features [2, 4]": ["model.fourier_features=[2,4]"],
    "bsi 0.2's MLP (model=mlp_v02)": ["model=mlp_v02"],
}


def parameters(overrides: list[str]) -> int:
    """The backbone's parameters on the digits (discretised output, the default)."""
    import torch
    from hydra import compose, initialize_config_dir

    from bsi.build import build_backbone, build_process
    from bsi.config import CONFIGS
    from bsi.models import count_parameters

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with torch.device("meta"):
        return count_parameters(build_backbone(cfg, (1, 8, 8), build_process(cfg, 17)))


def summary(runs: list[dict]) -> list[dict]:
    rows = []
    for name in VARIANTS:
        row = {"variant": name, "overrides": VARIANTS[name]}
        for steps in sorted({r["steps"] for r in runs}):
            group = [r for r in runs if r["variant"] == name and r["steps"] == steps]
            for r in group:  # the Frechet distances as flat keys
                r.update({f"fd_{f['sampler']}_{f['nfe']}": f["frechet"] for f in r["frechet"]})
            for key in ("test_bpd", "test_bpd_10_steps", *(f"fd_{s}_{n}" for s in ("default", "ode2_edm") for n in NFES)):
                values = [r[key] for r in group]
                row[f"{key}_{steps}"] = {"mean": statistics.fmean(values), "values": values,
                                         "sd": statistics.stdev(values) if len(values) > 1 else None}
        rows.append(row)
    return rows


def render(results: dict) -> str:
    budgets = results["steps"]
    columns = {"test bpd": ("test_bpd", 3), "10-step bpd": ("test_bpd_10_steps", 3),
               "FD own 10": ("fd_default_10", 2), "FD ode2 10": ("fd_ode2_edm_10", 2)}
    lines = [provenance(results), "",
             "The default digits run (discretised output, batch 128, EMA 0.999) with each MLP; test bpd of the "
             "best-validation EMA weights on the 360 test digits, and the Frechet distance (FD) of "
             f"{results['samples']:,} samples at 10 network calls with the process's own sampler and with ode2, "
             "as in the five-process table; mean ± sd over seeds."]
    for steps, seeds in zip(budgets, results["seeds"]):
        rows = [(r["variant"], f"{results['parameters'][r['variant']]:,}",
                 *(pm(r[f"{key}_{steps}"]["mean"], r[f"{key}_{steps}"]["sd"], digits) for key, digits in columns.values()))
                for r in results["summary"]]
        lines += ["", f"{steps:,} steps, {seeds} seeds:", "", table(["MLP", "parameters", *columns], rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[2000, 6000], help="step budgets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 3], help="seeds per budget")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--samples", type=int, default=1000, help="samples per Frechet distance")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    if len(args.seeds) != len(args.steps):
        parser.error("give one --seeds count per --steps budget")
    jobs = [(i, name, steps, seed) for i, (steps, seed, name) in enumerate(
        (steps, seed, name) for steps, seeds in zip(args.steps, args.seeds) for seed in range(seeds) for name in VARIANTS)]
    start, runs = time.perf_counter(), []
    specs = [(VARIANTS[name], seed, steps, (name, steps)) for _, name, steps, seed in jobs]
    for (_, name, steps, seed), (final, fd, _) in zip(jobs, scored_runs(specs, args.jobs, args.samples)):
        runs.append(dict(variant=name, steps=steps, seed=seed, test_bpd=final["test_bpd"],
                         test_bpd_10_steps=final["test_bpd_10_steps"], best_step=final["best_step"], frechet=fd))
        print(f"{name}: {steps} steps, seed {seed}: {final['test_bpd']:.3f} bpd, "
              + " ".join(f"FD[{f['sampler']},{f['nfe']}]={f['frechet']:.2f}" for f in fd), flush=True)
    report = {
        "what": "digits, default run with each MLP variant; test bpd (infinite and 10 steps), mean ± sd over seeds",
        "steps": args.steps, "seeds": args.seeds, "samples": args.samples,
        "parameters": {name: parameters(overrides) for name, overrides in VARIANTS.items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), one thread per run",
        "seconds": time.perf_counter() - start, "command": command_line("benchmarks.digits_mlp", sys.argv[1:]),
        "measured": time.strftime("%Y-%m-%d"), "summary": summary(runs), "runs": runs,
    }
    write_json(Path(args.out), report)
    print(render(report))


if __name__ == "__main__":
    main()
