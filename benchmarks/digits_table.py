"""The digits likelihood table: method x output (point, discretised), same backbone and budget.

Trains six models with ``python -m bsi.train``'s own ``train`` (default config: MLP of about 200k
parameters, batch 128, the fixed split, checkpoint chosen on the validation split) and prints
test bpd (infinite-step and 10-step, with standard errors) and steps per second.
Run: ``python -m benchmarks.digits_table [--steps 10000] [overrides ...]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from bsi.train import train
from bsi.cli import CONFIGS  # the configs ship inside the package



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--methods", default="bsi,bfn,vdm")
    parser.add_argument("--outputs", default="point,discretised")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/digits_table.json"))
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for every run")
    args = parser.parse_args()
    rows = []
    for output in args.outputs.split(","):
        for method in args.methods.split(","):
            run_dir = tempfile.mkdtemp(prefix=f"bsi-{method}-{output}-")
            overrides = [f"method={method}", f"output={output}", f"train.steps={args.steps}", "eval.n_samples=8",
                         f"+run_dir={run_dir}", *args.overrides]
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                cfg = compose("train", overrides=overrides)
            final = train(cfg)
            rows.append(dict(method=method, output=output, **{k: final[k] for k in (
                "test_bpd", "test_bpd_stderr", "test_bpd_10_steps", "test_bpd_10_steps_stderr", "steps_per_second",
                "best_val_bpd")}))
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print("\n| method | output | test bpd (infinite) | test bpd (10 steps) | steps/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['output']} | {r['test_bpd']:.3f} ± {r['test_bpd_stderr']:.3f} | "
              f"{r['test_bpd_10_steps']:.3f} ± {r['test_bpd_10_steps_stderr']:.3f} | {r['steps_per_second']:.0f} |")


if __name__ == "__main__":
    main()
