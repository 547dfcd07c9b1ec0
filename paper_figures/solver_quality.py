"""Figure 4: sample quality against network evaluations for every solver (solver benchmark data).

Reads the CSVs that ``python -m benchmarks.solvers`` writes: the exact-denoiser coverage (one
panel per process) and, where it exists, a trained model's classifier Frechet distance (one more
panel, with the real-data floor from the matching JSON, and the ``_convergence`` CSV's long runs).  Each point is the mean over the seeds in
the file, with error bars of one sd over seeds where there are several.  With ``--run`` it computes
a small exact-denoiser version itself.  Run: ``python -m paper_figures.solver_quality``.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from .common import parser, plt, save

RESULTS = Path(__file__).parents[1] / "benchmarks" / "results"
NUMERIC = ("nfe", "seed", "samples", "coverage", "frechet", "rms_before_final", "seconds")


def load(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: (float(v) if k in NUMERIC else v) for k, v in row.items()} for row in csv.DictReader(f)]


def summary(rows: list[dict], metric: str) -> list[dict]:
    """Mean and sd over seeds of ``metric`` per (method, solver, NFE)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["solver"], int(r["nfe"])), []).append(r[metric])
    return [dict(panel=f"{m} ({metric})", method=m, solver=s, nfe=n, metric=metric, mean=statistics.fmean(v),
                 sd=statistics.stdev(v) if len(v) > 1 else 0.0, seeds=len(v)) for (m, s, n), v in groups.items()]


def floor_lines(json_path: Path) -> list[tuple[str, float]]:
    """The real-data floor of a model benchmark: the whole training split and the extrapolation to its sample size."""
    if not json_path.exists():
        return []
    floor = json.loads(json_path.read_text()).get("floor", [])
    return [(f"real digits: {r['kind']} ({int(r['samples'])})", r["frechet"]) for r in floor if r["kind"] in ("all", "extrapolated")]


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS / "solvers_exact.csv")
    p.add_argument("--model-results", type=Path, default=RESULTS / "solvers_model_bsi.csv",
                   help="a trained model's benchmark CSV, plotted as one more panel if it exists")
    p.add_argument("--run", action="store_true", help="compute a small exact-denoiser benchmark instead of reading one")
    args = p.parse_args(argv)
    model_rows: list[dict] = []
    if args.run or args.tiny or not args.results.exists():
        from benchmarks.solvers import exact_part

        rows = exact_part(64 if args.tiny else 360, {"ancestral": "geometric", "ode": "edm"},
                          nfes=(5, 10) if args.tiny else None, methods=("bsi",) if args.tiny else ("bsi", "bfn", "vdm"),
                          seeds=2 if args.tiny else 1)
    else:
        rows = load(args.results)
        if args.model_results.exists():
            model_rows = load(args.model_results)
            convergence = args.model_results.with_name(f"{args.model_results.stem}_convergence.csv")
            if convergence.exists():  # the same benchmark's long runs (e.g. ode2 and ancestral at 500 NFE)
                model_rows += load(convergence)
    points = summary(rows, "coverage" if "coverage" in rows[0] else "frechet")
    if model_rows:
        points += summary(model_rows, "frechet")
    panels = list(dict.fromkeys(r["panel"] for r in points))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        mine = [r for r in points if r["panel"] == panel]
        for solver in dict.fromkeys(r["solver"] for r in mine):
            pts = sorted((r["nfe"], r["mean"], r["sd"]) for r in mine if r["solver"] == solver)
            ax.errorbar([n for n, _, _ in pts], [m for _, m, _ in pts], yerr=[s for _, _, s in pts],
                        marker="o", ms=3, capsize=2, label=solver)
        metric = mine[0]["metric"]
        if metric == "frechet":
            for (label, value), style in zip(floor_lines(args.model_results.with_suffix(".json")), ("--", ":")):
                ax.axhline(value, color="k", ls=style, lw=0.8, label=label)
            ax.set_ylabel("Frechet distance to test digits")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.ScalarFormatter())
        else:
            ax.set_ylabel("coverage of training points (1 = perfect)")
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_title(f"{mine[0]['method']}: " + ("exact denoiser" if metric == "coverage" else "trained digits model"))
        ax.legend(fontsize=7)
    save(fig, args.out, "solver_quality", rows=points)


if __name__ == "__main__":
    main()
