"""The default digits MLP against bsi 0.2's and a few variants: test bpd over seeds at two step budgets.

Each variant trains the default digits run (``python -m bsi.train`` with the variant's overrides, a
subprocess into a temporary run directory, one thread) for each budget in ``--steps`` and each of
``--seeds`` seeds, and reads its ``final.json``: test bpd of the best-validation EMA weights at
infinite and 10 steps.  Results are mean ± sd over seeds, written to ``benchmarks/results/digits_mlp.json``.
Runs go ``--jobs`` at a time (they are single-threaded).

    python -m benchmarks.digits_mlp [--steps 2000 6000] [--seeds 5 3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.markdown import command_line, pm, provenance, table
from benchmarks.methods import train_run
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
            for key in ("test_bpd", "test_bpd_10_steps"):
                values = [r[key] for r in group]
                row[f"{key}_{steps}"] = {"mean": statistics.fmean(values), "values": values,
                                         "sd": statistics.stdev(values) if len(values) > 1 else None}
        rows.append(row)
    return rows


def render(results: dict) -> str:
    budgets = results["steps"]
    header = ["MLP", "parameters"] + [f"{h} ({s:,} steps, {n} seeds)" for s, n in zip(budgets, results["seeds"])
                                      for h in ("test bpd", "10-step bpd")]
    rows = [(r["variant"], f"{results['parameters'][r['variant']]:,}",
             *(pm(r[f"{k}_{s}"]["mean"], r[f"{k}_{s}"]["sd"]) for s in budgets for k in ("test_bpd", "test_bpd_10_steps")))
            for r in results["summary"]]
    return "\n".join([
        provenance(results), "",
        "The default digits run (discretised output, batch 128, EMA 0.999) with each MLP; test bpd of the "
        "best-validation EMA weights on the 360 test digits, mean ± sd over seeds.", "",
        table(header, rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[2000, 6000], help="step budgets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 3], help="seeds per budget")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    if len(args.seeds) != len(args.steps):
        parser.error("give one --seeds count per --steps budget")
    jobs = [(i, name, steps, seed) for i, (steps, seed, name) in enumerate(
        (steps, seed, name) for steps, seeds in zip(args.steps, args.seeds) for seed in range(seeds) for name in VARIANTS)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bsi-digits-mlp-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        def one(job: tuple[int, str, int, int]) -> dict:
            i, name, steps, seed = job
            final = train_run(VARIANTS[name], seed, steps, Path(tmp) / f"run{i}")
            print(f"{name}: {steps} steps, seed {seed}: {final['test_bpd']:.3f} bpd", flush=True)
            return dict(variant=name, steps=steps, seed=seed, test_bpd=final["test_bpd"],
                        test_bpd_10_steps=final["test_bpd_10_steps"], best_step=final["best_step"])
        runs = list(pool.map(one, jobs))
    report = {
        "what": "digits, default run with each MLP variant; test bpd (infinite and 10 steps), mean ± sd over seeds",
        "steps": args.steps, "seeds": args.seeds,
        "parameters": {name: parameters(overrides) for name, overrides in VARIANTS.items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), one thread per run",
        "seconds": time.perf_counter() - start, "command": command_line("benchmarks.digits_mlp", sys.argv[1:]),
        "measured": time.strftime("%Y-%m-%d"), "summary": summary(runs), "runs": runs,
    }
    write_json(Path(args.out), report)
    print(render(report))


if __name__ == "__main__":
    main()
