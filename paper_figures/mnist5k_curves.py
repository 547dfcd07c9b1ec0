"""mnist5k: validation bpd against training step for BSI, BFN and VDM (and the BSI reference code).

Reads the run directories of ``python -m benchmarks.mnist5k`` (default ``runs/mnist5k/``): each of
ours has ``metrics.csv`` (``val_bpd`` rows), ``config.yaml`` and ``final.json``; the reference's
(``reference-*``) has ``result.json``, which names its Lightning ``metrics.csv`` (``val/bpd``).
Solid lines are the discretised output, dashed the point output; each run's test bpd (with its
standard error) is a marker at the step of the checkpoint it was measured on.
Run: ``python -m paper_figures.mnist5k_curves [--runs DIR ...]``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .common import parser, plt, save
from .training_curves import read_curve

RUNS = Path(__file__).resolve().parents[1] / "runs" / "mnist5k"
COLOURS = {"bsi": "C0", "bfn": "C1", "vdm": "C2"}


def reference_curve(metrics_csv: Path) -> list[tuple[int, float]]:
    """``(steps done, val bpd)`` from a Lightning CSV log (rows with a ``val/bpd`` value).

    Lightning logs a validation with the 0-based index of the step it follows, so step ``s`` has
    seen ``s + 1`` optimiser steps (our ``metrics.csv`` and every checkpoint count steps done).
    """
    with open(metrics_csv) as f:
        return [(int(r["step"]) + 1, float(r["val/bpd"])) for r in csv.DictReader(f) if r.get("val/bpd")]


def load_run(run: Path) -> dict | None:
    """A run's label parts, validation curve and test result; None for a directory that is not a finished run."""
    from omegaconf import OmegaConf

    if (run / "result.json").exists():  # the reference code's
        result = json.loads((run / "result.json").read_text())
        return dict(code="reference", method="bsi", output="point", curve=reference_curve(Path(result["metrics_csv"])),
                    test=result)
    if (run / "final.json").exists() and (run / "metrics.csv").exists():
        cfg = OmegaConf.load(run / "config.yaml")
        return dict(code="ours", method=cfg.method.name, output=cfg.output, curve=read_curve(run),
                    test=json.loads((run / "final.json").read_text()))
    return None


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, help=f"run directories (default: every run in {RUNS})")
    args = p.parse_args(argv)
    dirs = args.runs or sorted(d for d in RUNS.iterdir() if d.is_dir())
    runs = [r for r in map(load_run, dirs) if r is not None]
    if not runs:
        raise SystemExit(f"no finished runs among {', '.join(map(str, dirs))}: run python -m benchmarks.mnist5k first")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = []
    for r in runs:
        reference = r["code"] == "reference"
        label = f"{r['method']} ({r['output']})" + (", reference code" if reference else "")
        colour = "k" if reference else COLOURS.get(r["method"], None)
        style = ":" if reference else ("-" if r["output"] == "discretised" else "--")
        steps, values = [s for s, _ in r["curve"]], [v for _, v in r["curve"]]
        ax.plot(steps, values, style, color=colour, marker="o", ms=3, label=label)
        test, at = r["test"], r["test"].get("best_step") or (steps[-1] if steps else 0)
        ax.errorbar([at], [test["test_bpd"]], yerr=[test["test_bpd_stderr"]], fmt="*", ms=9, color=colour, capsize=3)
        rows += [dict(run=label, step=s, val_bpd=v, test_bpd="", test_bpd_stderr="") for s, v in r["curve"]]
        rows.append(dict(run=label, step=at, val_bpd="", test_bpd=test["test_bpd"], test_bpd_stderr=test["test_bpd_stderr"]))
    ax.set_xlabel("training step (batch 32)")
    ax.set_ylabel("bits per dimension (infinite-step ELBO)")
    ax.set_title("mnist5k, 256 levels: validation bpd (lines), test bpd (stars)", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, args.out, "mnist5k_curves", rows=rows)


if __name__ == "__main__":
    main()
