"""Figure 5: a sampling trajectory, the belief ``mu`` and the prediction ``x_hat`` over the steps.

Writes an image strip (top: the belief mean rescaled to the data range, bottom: the prediction)
and an animated GIF.  Default: the exact denoiser of the digits; ``--checkpoint`` for a trained model.
Run: ``python -m paper_figures.trajectory``.
"""

from __future__ import annotations

import numpy as np
import torch

from bsi.engine import example_generators

from .common import exact_model, parser, plt, save, trained_model


def to_image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in about [-1, 1] -> (H, W) or (H, W, 3) in [0, 1] for imshow."""
    img = ((x.float().clamp(-1, 1) + 1) / 2).numpy()
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--method", default="bsi")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--solver", default="ancestral")
    p.add_argument("--frames", type=int, default=10, help="columns in the strip")
    args = p.parse_args(argv)
    model = trained_model(args.checkpoint) if args.checkpoint else exact_model(args.method)
    steps = 10 if args.tiny else args.steps
    trajectory = []

    def record(i, lam, mu, x_hat):
        a = model.process.family.mean_coef(lam)[0].item()
        mu, x_hat = model.process.in_data_space(mu, lam, x_hat)
        # the belief's own estimate of x is mu / a (a = 0 at BSI's start: show the prior mean)
        trajectory.append(dict(step=i, lam=lam[0].item(), belief=(mu[0] / a if a > 0 else mu[0] * 0), x_hat=x_hat[0]))

    model.process.sample(model.denoiser, (1, *model.data_shape), steps=steps, solver=args.solver,
                         generator=example_generators(args.seed, [0]), callback=record)
    picks = np.unique(np.linspace(0, len(trajectory) - 1, args.frames).round().astype(int))
    fig, axes = plt.subplots(2, len(picks), figsize=(1.3 * len(picks), 3.0))
    for col, i in enumerate(picks):
        for row, key in enumerate(("belief", "x_hat")):
            ax = axes[row, col]
            ax.imshow(to_image(trajectory[i][key]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"λ={trajectory[i]['lam']:.2g}", fontsize=7)
        axes[0, 0].set_ylabel("belief μ/a", fontsize=8)
        axes[1, 0].set_ylabel("prediction x̂", fontsize=8)
    fig.suptitle(f"{model.name}: {args.solver}, {steps} steps", fontsize=9)
    rows = [dict(step=t["step"], lam=t["lam"], belief_rms=t["belief"].float().pow(2).mean().sqrt().item(),
                 x_hat_rms=t["x_hat"].float().pow(2).mean().sqrt().item()) for t in trajectory]
    save(fig, args.out, "trajectory", rows=rows)
    # The animation: one frame per step, belief and prediction side by side.
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(4, 2.2))
    im1 = a1.imshow(to_image(trajectory[0]["belief"]), cmap="gray", vmin=0, vmax=1)
    im2 = a2.imshow(to_image(trajectory[0]["x_hat"]), cmap="gray", vmin=0, vmax=1)
    for ax, title in ((a1, "belief μ/a"), (a2, "prediction x̂")):
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])

    def frame(i):
        im1.set_data(to_image(trajectory[i]["belief"]))
        im2.set_data(to_image(trajectory[i]["x_hat"]))
        return im1, im2

    anim = FuncAnimation(fig, frame, frames=len(trajectory), blit=True)
    args.out.mkdir(parents=True, exist_ok=True)
    anim.save(args.out / "trajectory.gif", writer=PillowWriter(fps=8))
    plt.close(fig)
    print(f"wrote {args.out / 'trajectory.gif'}")


if __name__ == "__main__":
    main()
