"""The digits likelihood table: method x output (point, discretised), same backbone and budget.

Trains six models with ``python -m bsi.train``'s own ``train`` (default config: MLP of about 200k
parameters, batch 128, the fixed split, checkpoint chosen on the validation split) and writes test
bpd (infinite-step and 10-step, with standard errors over test images) and steps per second to
:data:`RESULTS`.  Run: ``python -m benchmarks.digits_table [--steps 10000] [overrides ...]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

from hydra import compose, initialize_config_dir

from benchmarks.markdown import command_line, model_note, pm, provenance, table
from bsi.atomic import write_json
from bsi.config import CONFIGS
from bsi.train import train

RESULTS = "benchmarks/results/digits_table.json"
UNIFORM_BPD = math.log2(17)  # a uniform guess over the digits' 17 levels


def render(results: dict) -> str:
    """The method x output table, the discretised rows in bold, and the longer default runs if present."""
    rows = results["rows"]
    counts = [r["test_draws"] for r in rows]
    usual = max(set(counts), key=counts.count)
    others = "".join(f" ({r['test_draws']} for {r['method']}, {r['output']})" for r in rows if r["test_draws"] != usual)
    lines = [provenance(results), "",
             f"{results['steps']:,} training steps per run; test bpd on the 360 test digits with "
             f"{usual} draws each{others}, ± standard error over the test digits. "
             f"A uniform guess over the 17 levels scores {UNIFORM_BPD:.2f} bpd.", "",
             table(["method", "output", "test bpd (infinite steps)", "test bpd (10 steps)"],
                   [(r["method"], r["output"], pm(r["test_bpd"], r["test_bpd_stderr"], bold=r["output"] == "discretised"),
                     pm(r["test_bpd_10_steps"], r["test_bpd_10_steps_stderr"], 2 if r["output"] == "point" else 3))
                    for r in rows])]
    disc = [r for r in rows if r["output"] == "discretised"]
    point = {r["method"]: r["test_bpd"] for r in rows if r["output"] == "point"}
    if disc and point:
        ratio = min(point[r["method"]] / r["test_bpd"] for r in disc if r["method"] in point)
        lines += ["", f"With the discretised output every method scores below {math.ceil(100 * max(r['test_bpd'] for r in disc)) / 100:.2f} bpd, "
                  f"at least {ratio:.1f} times below its point output."]
    if "default_runs" in results:
        d = results["default_runs"]
        runs = ", ".join(f"{r['method']} {pm(r['test_bpd'], r['test_bpd_stderr'])}" for r in d["rows"])
        lines += ["", f"The default run with a {d['steps']:,}-step budget (`{d['command']}`, {d['draws']} draws per "
                  f"test digit; the best validation step came at {d['best_steps']}): {runs} test bpd."]
    return "\n".join(lines)


def headline(results: dict) -> list[tuple[str, str, str, str]]:
    """One summary row: the discretised output of every method."""
    disc = [r for r in results["rows"] if r["output"] == "discretised"]
    return [(f"Digits (8x8, 17 levels), {results['steps']:,} steps, CPU{model_note(results)}", " / ".join(r["method"] for r in disc) + ", discretised output",
             " / ".join(f"{r['test_bpd']:.3f}" for r in disc) + " bpd", f"uniform guess: {UNIFORM_BPD:.2f} bpd")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--methods", default="bsi,bfn,vdm")
    parser.add_argument("--outputs", default="point,discretised")
    parser.add_argument("--draws", type=int, default=8, help="Monte Carlo draws per test image")
    parser.add_argument("--out", type=Path, default=Path(RESULTS))
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for every run")
    args = parser.parse_args()
    rows = []
    for output in args.outputs.split(","):
        for method in args.methods.split(","):
            run_dir = tempfile.mkdtemp(prefix=f"bsi-{method}-{output}-")
            overrides = [f"method={method}", f"output={output}", f"train.steps={args.steps}",
                         f"eval.n_samples={args.draws}", f"+run_dir={run_dir}", *args.overrides]
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                cfg = compose("train", overrides=overrides)
            final = train(cfg)
            rows.append(dict(method=method, output=output, test_draws=args.draws, **{k: final[k] for k in (
                "test_bpd", "test_bpd_stderr", "test_bpd_10_steps", "test_bpd_10_steps_stderr", "steps_per_second",
                "best_val_bpd")}))
            print(json.dumps(rows[-1]), flush=True)
    results = {"command": command_line("benchmarks.digits_table", sys.argv[1:]),
               "machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "measured": date.today().isoformat(),
               "model": cfg.model.name, "steps": args.steps, "rows": rows}
    write_json(args.out, results)
    print(render(results))


if __name__ == "__main__":
    main()
