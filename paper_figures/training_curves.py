"""Figure 3: the same backbone and budget trained as BSI, BFN and VDM: validation bpd against step.

Default: three short digits trainings (a few minutes on a CPU).  ``--runs DIR [DIR ...]`` plots
existing run directories instead (their ``metrics.csv``).  Run: ``python -m paper_figures.training_curves``.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from .common import parser, plt, save

from bsi.config import CONFIGS  # noqa: E402


def train_runs(steps: int, eval_every: int, methods=("bsi", "bfn", "vdm")) -> list[Path]:
    from hydra import compose, initialize_config_dir

    from bsi.train import train

    dirs = []
    for method in methods:
        run_dir = Path(tempfile.mkdtemp(prefix=f"bsi-curve-{method}-"))
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("train", overrides=[f"method={method}", f"train.steps={steps}", f"train.eval_every={eval_every}",
                                              f"train.checkpoint_every={steps}", "eval.ks=[]", "eval.n_samples=1",
                                              f"+run_dir={run_dir}"])
        train(cfg)
        dirs.append(run_dir)
    return dirs


def read_curve(run_dir: Path, metric: str = "val_bpd") -> list[tuple[int, float]]:
    with open(run_dir / "metrics.csv") as f:
        return [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f) if r["metric"] == metric]


def method_of(run_dir: Path) -> str:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    return f"{cfg.method.name} ({cfg.output})"


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, help="run directories; default: train three short runs")
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args(argv)
    runs = args.runs or (train_runs(60, 20) if args.tiny else train_runs(args.steps, max(args.steps // 15, 1)))
    rows = []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run in runs:
        curve = read_curve(run)
        label = method_of(run)
        ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", ms=3, label=label)
        rows += [dict(run=label, step=s, val_bpd=v) for s, v in curve]
    ax.set_xlabel("training step")
    ax.set_ylabel("validation bpd (EMA weights, infinite-step ELBO)")
    ax.set_title("BSI vs BFN vs VDM: same backbone, same budget")
    ax.legend(fontsize=8)
    save(fig, args.out, "training_curves", rows=rows)


if __name__ == "__main__":
    main()
