"""Figure 6: sample grids from each method.

``--checkpoint PATH`` (repeatable) draws from trained models; by default the three short
trainings of :mod:`paper_figures.training_curves` are run and sampled.
Run: ``python -m paper_figures.sample_grids``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bsi.checkpoint import latest_checkpoint
from bsi.data import to_float, to_uint8
from bsi.engine import example_generators
from bsi.evaluation import grid_image, to_pixels

from .common import parser, plt, save, trained_model
from .training_curves import train_runs


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", type=Path)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--solver", default="ancestral")
    p.add_argument("--train-steps", type=int, default=3000)
    args = p.parse_args(argv)
    checkpoints = args.checkpoint or [latest_checkpoint(d) for d in train_runs(60 if args.tiny else args.train_steps, 10**9)]
    n = 16 if args.tiny else args.n
    fig, axes = plt.subplots(1, len(checkpoints), figsize=(3.2 * len(checkpoints), 3.4), squeeze=False)
    rows = []
    for ax, ckpt in zip(axes[0], checkpoints):
        model = trained_model(str(ckpt))
        x = model.process.sample(model.denoiser, (n, *model.data_shape), steps=args.steps, solver=args.solver,
                                 generator=example_generators(args.seed, range(n)))
        levels = to_uint8(x, model.bins)
        images = (to_float(levels, model.bins) + 1) / 2
        ax.imshow(grid_image(to_pixels(levels, model.bins)).permute(1, 2, 0), interpolation="nearest")
        ax.set_title(f"{model.name}, {args.solver} {args.steps} steps", fontsize=8)
        ax.axis("off")
        rows.append(dict(model=model.name, checkpoint=str(ckpt), n=n, mean_intensity=float(images.mean()),
                         finite=bool(torch.isfinite(x).all())))
    save(fig, args.out, "sample_grids", rows=rows)


if __name__ == "__main__":
    main()
