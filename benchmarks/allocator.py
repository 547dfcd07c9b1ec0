"""What keeping freed memory (``cpu_retain_memory``, :mod:`bsi.cpu`) does to a whole CPU run.

Fresh processes run ``bsi.train``'s ``train`` on the mnist5k U-Net (``experiment=mnist5k_unet``, one
torch thread, point output): ``--steps`` training steps, the validation at the last step and the final
test, with ``cpu_retain_memory=true`` and ``false`` in turn, the order rotating by round.  Each
process reports its CPU seconds (user and system, from the start of the run), minor page faults and
peak resident memory; ratios are per round, median and min-max.

    python -m benchmarks.allocator [--rounds 3] [--steps 100] [--out benchmarks/results/allocator_cpu.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.markdown import command_line, table
from benchmarks.timing import fmt_ratio, fresh_rounds, machine, peak_rss_mb, per_round
from bsi.atomic import write_json

RESULTS = "benchmarks/results/allocator_cpu.json"
VARIANTS = {"kept for reuse": "true", "glibc's default": "false"}  # name -> cpu_retain_memory
MEASURES = {"cpu_s": "CPU seconds", "system_s": "of which in the kernel", "minor_faults": "minor page faults",
            "peak_mb": "peak memory (MB)"}


def child(retain: str, steps: int, root: Path) -> None:
    """One run in this process; prints a JSON line of what it cost."""
    from hydra import compose, initialize_config_dir

    from bsi.config import CONFIGS
    from bsi.train import train

    overrides = ["experiment=mnist5k_unet", "output=point", "cpu_threads=1", f"cpu_retain_memory={retain}",
                 f"train.steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
                 "eval.n_samples=1", "eval.ks=[]", "eval.grid=0", "logger=[csv]", f"data.root={root}"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    before = resource.getrusage(resource.RUSAGE_SELF)
    train(cfg, run_dir=Path(tempfile.mkdtemp()))
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                      "system_s": after.ru_stime - before.ru_stime,
                      "minor_faults": after.ru_minflt - before.ru_minflt, "peak_mb": peak_rss_mb()}))


def measure(rounds: int, steps: int) -> dict:
    root = Path(tempfile.mkdtemp())
    # the one-time conversion of the images before any timed run
    subprocess.run([sys.executable, "-m", "bsi.data", "prepare", "mnist5k", "--root", str(root)], check=True,
                   capture_output=True)
    commands = {name: [sys.executable, "-m", "benchmarks.allocator", "--child", retain, "--steps", str(steps),
                       "--root", str(root)] for name, retain in VARIANTS.items()}
    return per_round(fresh_rounds(commands, rounds), list(MEASURES), "glibc's default")


def render(results: dict) -> str:
    rows = []
    for key, label in MEASURES.items():
        default = results["rows"][key]["glibc's default"]["value"]["median"]
        kept = results["rows"][key]["kept for reuse"]
        number = (lambda v: f"{v:,.0f}") if key in ("minor_faults", "peak_mb") else (lambda v: f"{v:.1f}")
        rows.append([label, number(default), number(kept["value"]["median"]),
                     fmt_ratio(kept["ratio"]) if default else ""])
    return (f"Reproduce: `{results['command']}`. Machine: {results['machine']}. Measured: {results['measured']}. "
            f"{results['rounds']} rounds of fresh processes, each a `bsi.train` run of the mnist5k U-Net "
            f"({results['steps']} steps at batch 32, validation and the final test), medians and the per-round "
            "ratio's median (min-max):\n\n"
            + table(["per run", "glibc's default", "kept for reuse", "kept / default"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(RESULTS))
    parser.add_argument("--child", choices=list(VARIANTS.values()), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps, args.root)
    rows = measure(args.rounds, args.steps)
    torch.set_num_threads(1)  # as in the runs, for the machine's description
    results = {"command": command_line("benchmarks.allocator", sys.argv[1:]),
               "machine": machine("cpu").replace("thread CPU time", "CPU time of each process"),
               "measured": datetime.date.today().isoformat(), "rounds": args.rounds, "steps": args.steps, "rows": rows}
    write_json(args.out, results)
    print(render(results))


if __name__ == "__main__":
    main()
