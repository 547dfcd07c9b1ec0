"""Figure 2: standard error of the bpd estimate against Monte Carlo draws, per importance proposal.

Exact denoiser of the digits (BSI) by default, or ``--checkpoint`` for a trained model.  The
adaptive proposal first learns from training-loss evaluations, as it does during training.
Run: ``python -m paper_figures.estimator_variance``.
"""

from __future__ import annotations

import math

import torch

from bsi.engine import bits_per_dim, make_process

from .common import exact_model, parser, plt, save, trained_model

PROPOSALS = [("log_uniform", "loglinear"), ("uniform_t", "cosine"), ("adaptive", "loglinear")]


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="trained checkpoint; default: the exact denoiser")
    p.add_argument("--method", default="bsi")
    args = p.parse_args(argv)
    draws = [1, 2, 4, 8, 16, 32] if not args.tiny else [1, 4]
    base = trained_model(args.checkpoint) if args.checkpoint else exact_model(args.method, n_points=256 if args.tiny else 1437)
    x = base.data[: 256 if args.tiny else len(base.data)]
    dims = x[0].numel()
    rows = []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for proposal, schedule in PROPOSALS:
        proc = make_process(base.process.name, proposal=proposal, schedule=schedule, data_bins=base.bins,
                            output=base.process.output,
                            prediction=getattr(base.process.parameterization, "prediction", None))
        den = base.denoiser
        g = torch.Generator().manual_seed(args.seed)
        if proposal == "adaptive":
            for _ in range(10 if args.tiny else 50):
                out = proc.training_loss(x[torch.randint(len(x), (256,), generator=g)], den, generator=g)
                proc.proposal.update(out.lam, out.integrand)
        ses = []
        for n in draws:
            est = bits_per_dim(proc.elbo(x, den, n_samples=n, generator=g)["total"], dims)
            ses.append(est.stderr)
            rows.append(dict(proposal=proposal if proposal != "uniform_t" else f"uniform_t ({schedule})", draws=n,
                             bpd=est.mean, stderr=est.stderr))
        ax.plot(draws, ses, marker="o", label=rows[-1]["proposal"])
    ax.plot(draws, [rows[0]["stderr"] / math.sqrt(n) for n in draws], "k:", lw=1, label="1/sqrt(draws)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("Monte Carlo draws per example")
    ax.set_ylabel("standard error of the bpd")
    ax.set_title(f"ELBO estimator variance, {base.name}")
    ax.legend(fontsize=8)
    save(fig, args.out, "estimator_variance", rows=rows)


if __name__ == "__main__":
    main()
