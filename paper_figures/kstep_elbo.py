"""Figure 1: the k-step ELBO against k converges from above to the infinite-step ELBO.

Default: the exact denoiser of the digits for BSI, BFN and VDM.  With ``--checkpoint`` a trained
model on its test split.  Run: ``python -m paper_figures.kstep_elbo``.
"""

from __future__ import annotations

import torch

from bsi.engine import bits_per_dim

from .common import exact_model, parser, plt, save, trained_model


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", help="trained checkpoint(s); default: exact denoisers")
    p.add_argument("--n-samples", type=int, default=4)
    args = p.parse_args(argv)
    ks = [2, 5, 10, 20, 50, 100, 200, 1000] if not args.tiny else [2, 10, 100]
    n_points = 128 if args.tiny else 512
    models = [trained_model(c) for c in args.checkpoint] if args.checkpoint else [
        exact_model(m, n_points=n_points) for m in ("bsi", "bfn", "vdm")
    ]
    rows = []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, model in enumerate(models):
        x = model.data[:n_points]
        dims = x[0].numel()
        g = torch.Generator().manual_seed(args.seed)
        inf = bits_per_dim(model.process.elbo(x, model.denoiser, n_samples=args.n_samples, generator=g)["total"], dims)
        finite = []
        for k in ks:
            est = bits_per_dim(model.process.elbo(x, model.denoiser, steps=k, n_samples=args.n_samples, generator=g)["total"], dims)
            finite.append(est)
            rows.append(dict(model=model.name, k=k, bpd=est.mean, stderr=est.stderr, infinite_bpd=inf.mean))
        color = f"C{i}"
        ax.errorbar(ks, [e.mean for e in finite], yerr=[1.96 * e.stderr for e in finite], marker="o", ms=3, color=color, label=model.name)
        ax.axhline(inf.mean, color=color, ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of steps k")
    ax.set_ylabel("ELBO bound (bits per dimension)")
    ax.set_title("k-step ELBO (solid) vs infinite-step ELBO (dashed)")
    ax.legend(fontsize=8)
    save(fig, args.out, "kstep_elbo", rows=rows)


if __name__ == "__main__":
    main()
