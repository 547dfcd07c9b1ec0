"""Figure 4: sample quality against network evaluations for every solver (solver benchmark data).

Reads the CSV that ``python -m benchmarks.solvers`` writes (exact-denoiser coverage, and with a
trained model the classifier Frechet distance); with ``--run`` it computes a small exact-denoiser
version itself.  Run: ``python -m paper_figures.solver_quality``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .common import parser, plt, save

RESULTS = Path(__file__).parents[1] / "benchmarks" / "results"


def load(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: (float(v) if k in ("nfe", "coverage", "frechet", "rms_before_final", "seconds") else v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS / "solvers_exact.csv")
    p.add_argument("--run", action="store_true", help="compute a small exact-denoiser benchmark instead of reading one")
    args = p.parse_args(argv)
    if args.run or args.tiny or not args.results.exists():
        from benchmarks.solvers import exact_part

        rows = exact_part(64 if args.tiny else 360, {"ancestral": "geometric", "ode": "edm"},
                          nfes=(5, 10) if args.tiny else None, methods=("bsi",) if args.tiny else ("bsi", "bfn", "vdm"))
    else:
        rows = load(args.results)
    metric = "coverage" if "coverage" in rows[0] else "frechet"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        for solver in dict.fromkeys(r["solver"] for r in rows):
            pts = sorted((r["nfe"], r[metric]) for r in rows if r["method"] == method and r["solver"] == solver)
            ax.plot([n for n, _ in pts], [v for _, v in pts], marker="o", ms=3, label=solver)
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_title(method)
    axes[0][0].set_ylabel("coverage of training points (1 = perfect)" if metric == "coverage" else "Frechet distance (classifier features)")
    axes[0][-1].legend(fontsize=8)
    save(fig, args.out, "solver_quality", rows=rows)


if __name__ == "__main__":
    main()
