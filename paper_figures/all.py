"""``python -m paper_figures.all``: regenerate every figure into ``paper_figures/out/``."""

from __future__ import annotations

import sys

from . import estimator_variance, kstep_elbo, sample_grids, solver_quality, training_curves, trajectory

FIGURES = [kstep_elbo, estimator_variance, training_curves, solver_quality, trajectory, sample_grids]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    for figure in FIGURES:
        figure.main(args)


if __name__ == "__main__":
    main()
