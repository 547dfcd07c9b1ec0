"""Estimator variance of the bpd per importance proposal, with the exact denoiser of the digits.

For each proposal the infinite-step ELBO of the 1797 sklearn digits is estimated with the same
number of network evaluations, and the standard error of the dataset-mean bpd is reported two
ways: from the per-example spread, and as the spread over independent repetitions.  The exact
denoiser's answer is known (about log2(1797)/64 = 0.1689 bpd), so the mean column doubles as a
check.  Run:  python -m benchmarks.estimator_variance [--draws 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from sklearn.datasets import load_digits

from bsi.engine import bits_per_dim, make_process
from bsi.engine.exact import ExactDenoiser


def digits() -> torch.Tensor:
    images = torch.tensor(load_digits().images, dtype=torch.float64)
    return (images / 16 * 2 - 1)[:, None]


def adapt(proc, den, x, steps: int, generator: torch.Generator) -> None:
    """Let the adaptive proposal learn from training-loss integrands, as it does during training."""
    for _ in range(steps):
        idx = torch.randint(len(x), (256,), generator=generator)
        out = proc.training_loss(x[idx], den, generator=generator)
        proc.proposal.update(out.lam, out.integrand)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="bsi")
    parser.add_argument("--draws", type=int, default=8, help="Monte Carlo draws per example")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    x = digits()
    dims = x[0].numel()
    settings = [
        ("log_uniform", "loglinear", True),
        ("log_uniform", "loglinear", False),
        ("uniform_t", "cosine", True),
        ("adaptive", "loglinear", True),
    ]
    print(f"exact denoiser, {len(x)} digits, {args.draws} draws per example, method={args.method}")
    print(f"target: log2(N)/D = {math.log2(len(x)) / dims:.4f} bpd (plus a small method-specific excess)\n")
    print("| proposal | stratified | bpd | SE (per-example) | SE (over repeats) | time (s) |")
    print("|---|---|---|---|---|---|")
    for proposal, schedule, stratified in settings:
        proc = make_process(args.method, proposal=proposal, schedule=schedule, stratified=stratified, data_bins=17)
        den = ExactDenoiser(x, proc.beliefs)
        g = torch.Generator().manual_seed(0)
        if proposal == "adaptive":
            adapt(proc, den, x, 50, g)
        start = time.perf_counter()
        means, ses = [], []
        for _ in range(args.repeats):
            est = bits_per_dim(proc.elbo(x, den, n_samples=args.draws, generator=g)["total"], dims)
            means.append(est.mean)
            ses.append(est.stderr)
        spread = torch.tensor(means).std().item()
        name = proposal if proposal != "uniform_t" else f"uniform_t ({schedule})"
        print(
            f"| {name} | {'yes' if stratified else 'no'} | {sum(means) / len(means):.4f} | "
            f"{sum(ses) / len(ses):.5f} | {spread:.5f} | {(time.perf_counter() - start) / args.repeats:.1f} |"
        )


if __name__ == "__main__":
    main()
