"""Variance of the k-step ELBO of a trained model: one-draw step term against Gauss-Hermite quadrature (issue 20).

The engine's k-step bound draws one step ``i`` per Monte Carlo draw (stratified over draws), a
belief ``mu ~ q(mu | x, lam_i)`` and one measurement ``y``, and adds the reconstruction at the
top precision: two network calls per draw.  The quadrature estimator makes the same two calls
and replaces the draw of ``y`` by :func:`bsi.engine.quadrature.mixture_kl_quadrature` (the
expectation over ``y`` given the network's output).  Per ``k`` and estimator, with independent
noise per (estimator, k, seed):

* ``se``: the test-set standard error (bpd) of the bound with ``--draws`` stratified draws per
  example, as ``python -m bsi.evaluate likelihood`` computes it (it includes the spread of the
  data itself, which no estimator removes), and ``mc_se``, its Monte Carlo part alone;
* ``sd_single``: the per-example spread of one draw (iid, ``--spread-draws`` per example): the
  mean over examples of the per-example sd, and the largest single draw seen.

``--trajectory-k``: also the bound summed over all k steps of one trajectory of the sender
(``k + 1`` network calls), with one-draw terms (whose ``y`` moves the belief) and with quadrature
terms.  ``--nodes-check``: the mean change of the quadrature bound from 32 to 96 nodes (its bias).

Run: ``python -m benchmarks.kstep_variance --checkpoint RUN/checkpoints/best.pt`` (discretised
output; about 25 minutes with the defaults on the shared 2-core CPU, most of it the k = 100 trajectories).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import time
from pathlib import Path

import torch

from bsi.data import build_dataset, to_float
from bsi.engine.belief import expand_as_batch
from bsi.engine.elbo import sum_dims
from bsi.engine.proposal import stratified_uniform
from bsi.engine.quadrature import mixture_kl_quadrature

ESTIMATORS = ("one_draw", "quadrature", "quadrature_is")


def generator(*key) -> torch.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)


def step_kl(out, x: torch.Tensor, alpha: torch.Tensor, estimator: str, gen: torch.Generator, nodes: int) -> torch.Tensor:
    """One step's measurement term per element (nats): one draw of ``y``, or its expectation by quadrature."""
    if estimator == "one_draw":
        return out.measurement_kl(x, alpha, gen).double()
    return mixture_kl_quadrature(x, out.log_probs, out.levels, alpha, nodes)


@torch.no_grad()
def step_proposal(trained, pilot: torch.Tensor, k: int, gen: torch.Generator, nodes: int = 32) -> torch.Tensor:
    """``(k,)`` step probabilities ``q_i`` proportional to the RMS over ``pilot`` examples of step ``i``'s term.

    One belief draw per pilot example and step, quadrature over ``y`` (``k`` network calls on the
    pilot batch); mixed with 10% uniform so that no step is left out.  ``sqrt(E[KL_i^2])`` is the
    proposal that minimises the variance of ``KL_i / q_i`` over examples.
    """
    proc, den = trained.process, trained.denoiser
    grid = proc.step_precisions(k)
    rms = torch.empty(k, dtype=torch.float64)
    for i in range(k):
        lam = torch.full((pilot.shape[0],), float(grid[i]), dtype=torch.float64)
        alpha = torch.full_like(lam, float(grid[i + 1] - grid[i]))
        out = proc.read_output(den(proc.beliefs.sample(pilot, lam, gen), lam))
        rms[i] = sum_dims(mixture_kl_quadrature(pilot, out.log_probs, out.levels, alpha, nodes)).pow(2).mean().sqrt()
    q = rms / rms.sum()
    return 0.9 * q + 0.1 / k


@torch.no_grad()
def stepwise_draws(trained, x: torch.Tensor, k: int, draws: int, estimator: str, gen: torch.Generator,
                   stratified: bool, nodes: int = 32, proposal: torch.Tensor | None = None) -> torch.Tensor:
    """``(draws, B)`` single-draw k-step bounds (nats per example), as ``Process.elbo`` draws them: 2 calls each.

    With ``proposal`` (``(k,)`` step probabilities) step ``i`` is drawn from it and weighted ``1/q_i``
    instead of uniformly with weight ``k``.
    """
    proc, den = trained.process, trained.denoiser
    grid = proc.step_precisions(k)
    u = stratified_uniform(x.shape[0], draws, gen, stratified)
    top = torch.full((x.shape[0],), proc.lambda_max, dtype=torch.float64)
    out = torch.empty(draws, x.shape[0], dtype=torch.float64)
    cdf = None if proposal is None else proposal.cumsum(0)
    for j in range(draws):
        if cdf is None:
            i = (u[:, j] * k).long().clamp(max=k - 1)
            weight = torch.full((x.shape[0],), float(k), dtype=torch.float64)
        else:
            i = torch.searchsorted(cdf, u[:, j] * cdf[-1]).clamp(max=k - 1)
            weight = 1 / proposal[i]
        lam, alpha = grid[i], grid[i + 1] - grid[i]
        step = proc.read_output(den(proc.beliefs.sample(x, lam, gen), lam))
        measurement = weight * sum_dims(step_kl(step, x, alpha, estimator, gen, nodes))
        recon = proc.read_output(den(proc.beliefs.sample(x, top, gen), top))
        out[j] = measurement - sum_dims(recon.log_prob(x, proc.alpha_r, proc.data_bins).double())
    return out + proc.beliefs.prior_kl(x.double(), proc.lambda_min)


@torch.no_grad()
def trajectory_draws(trained, x: torch.Tensor, k: int, draws: int, estimator: str, gen: torch.Generator,
                     nodes: int = 32) -> torch.Tensor:
    """``(draws, B)`` bounds summed over all ``k`` steps of one sender trajectory each: ``k + 1`` calls per draw."""
    proc, den = trained.process, trained.denoiser
    grid = proc.step_precisions(k)
    batch = x.shape[0]
    out = torch.empty(draws, batch, dtype=torch.float64)
    for j in range(draws):
        mu = proc.beliefs.sample(x, torch.full((batch,), float(grid[0]), dtype=torch.float64), gen)
        total = torch.zeros(batch, dtype=torch.float64)
        for i in range(k):
            lam = torch.full((batch,), float(grid[i]), dtype=torch.float64)
            alpha = torch.full((batch,), float(grid[i + 1] - grid[i]), dtype=torch.float64)
            step = proc.read_output(den(mu, lam))
            # y moves the belief; the one-draw term is evaluated at that same y
            y = x.double() + expand_as_batch(alpha.rsqrt(), x) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
            if estimator == "one_draw":
                lp = step.log_probs.double()
                a = expand_as_batch(alpha, x)
                log_sender = -0.5 * a * (y - x) ** 2
                log_receiver = torch.logsumexp(lp - 0.5 * a[..., None] * (y[..., None] - step.levels.double()) ** 2, -1)
                total += sum_dims(log_sender - log_receiver)
            else:
                total += sum_dims(mixture_kl_quadrature(x, step.log_probs, step.levels, alpha, nodes))
            mu = proc.beliefs.update(mu, lam, y.to(mu.dtype), alpha)
        top = proc.read_output(den(mu, torch.full((batch,), proc.lambda_max, dtype=torch.float64)))
        out[j] = total - sum_dims(top.log_prob(x, proc.alpha_r, proc.data_bins).double())
    return out + proc.beliefs.prior_kl(x.double(), proc.lambda_min)


def to_bpd(nats: torch.Tensor, dims: int) -> torch.Tensor:
    return nats / (dims * math.log(2))


def mean_sd(values: list[float]) -> dict:
    return dict(mean=statistics.fmean(values), sd=statistics.stdev(values) if len(values) > 1 else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--ks", default="10,100,1000")
    parser.add_argument("--draws", type=int, default=4, help="stratified draws per example for the test-set SE")
    parser.add_argument("--spread-draws", type=int, default=16, help="iid draws per example for the per-example spread")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--pilot", type=int, default=64, help="training examples for the step proposal of quadrature_is")
    parser.add_argument("--trajectory-k", default="10", help="k values for the trajectory estimators ('' for none)")
    parser.add_argument("--nodes-check", type=int, default=100, help="k at which 32 and 96 nodes are compared (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kstep_variance.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from bsi.checkpoint import load_trained

    trained = load_trained(args.checkpoint)
    test = build_dataset(trained.cfg.data, "test")
    x = to_float(test.__getitems__(range(len(test))), trained.bins)
    dims = x[0].numel()
    report = {"checkpoint": str(args.checkpoint), "examples": len(x), "nodes": args.nodes, "draws": args.draws, "pilot": args.pilot,
              "spread_draws": args.spread_draws, "seeds": args.seeds, "stepwise": [], "trajectory": []}
    pilot_set = build_dataset(trained.cfg.data, "train")
    pilot = to_float(pilot_set.__getitems__(range(args.pilot)), trained.bins)
    for k in (int(v) for v in args.ks.split(",") if v):
        start = time.perf_counter()
        proposal = step_proposal(trained, pilot, k, generator("pilot", k), args.nodes)
        print(f"k={k}: step proposal from {args.pilot} training examples ({time.perf_counter() - start:.0f}s)", flush=True)
        for estimator in args.estimators.split(","):
            start = time.perf_counter()
            se, mc_se, bpd, sd_single, largest = [], [], [], [], []
            options = dict(nodes=args.nodes, proposal=proposal if estimator == "quadrature_is" else None)
            kind = "quadrature" if estimator == "quadrature_is" else estimator
            for seed in range(args.seeds):
                strat = to_bpd(stepwise_draws(trained, x, k, args.draws, kind, generator("se", estimator, k, seed),
                                              stratified=True, **options), dims)
                per_example = strat.mean(0)
                bpd.append(per_example.mean().item())
                se.append(per_example.std().item() / math.sqrt(len(x)))
                iid = to_bpd(stepwise_draws(trained, x, k, args.spread_draws, kind,
                                            generator("spread", estimator, k, seed), stratified=False, **options), dims)
                sd = iid.std(0)
                sd_single.append(sd.mean().item())
                mc_se.append(math.sqrt((sd**2).mean().item() / args.draws / len(x)))  # iid draws: an upper bound
                largest.append(iid.max().item())
            row = dict(k=k, estimator=estimator, calls_per_draw=2, bpd=mean_sd(bpd), se=mean_sd(se), mc_se_iid=mean_sd(mc_se),
                       sd_single=mean_sd(sd_single), largest_single=max(largest), seconds=time.perf_counter() - start)
            report["stepwise"].append(row)
            print(f"k={k:5d} {estimator:10s} bpd {row['bpd']['mean']:.4f} ± {row['bpd']['sd']:.4f}  "
                  f"SE {row['se']['mean']:.4f} ± {row['se']['sd']:.4f}  single-draw sd {row['sd_single']['mean']:.3f}  "
                  f"largest {row['largest_single']:.1f} bpd ({row['seconds']:.0f}s)", flush=True)
    for k in (int(v) for v in args.trajectory_k.split(",") if v):
        for estimator in [e for e in args.estimators.split(",") if e != "quadrature_is"]:
            start = time.perf_counter()
            bpd, se = [], []
            for seed in range(args.seeds):
                draws = to_bpd(trajectory_draws(trained, x, k, 1, estimator, generator("trajectory", estimator, k, seed),
                                                nodes=args.nodes), dims)[0]
                bpd.append(draws.mean().item())
                se.append(draws.std().item() / math.sqrt(len(x)))
            row = dict(k=k, estimator=estimator, calls_per_draw=k + 1, bpd=mean_sd(bpd), se=mean_sd(se),
                       se_at_stepwise_calls=mean_sd([s * math.sqrt((k + 1) / (2 * args.draws)) for s in se]),
                       seconds=time.perf_counter() - start)
            report["trajectory"].append(row)
            print(f"trajectory k={k:4d} {estimator:10s} bpd {row['bpd']['mean']:.4f} ± {row['bpd']['sd']:.4f}  SE (1 trajectory, "
                  f"{k + 1} calls) {row['se']['mean']:.4f} ± {row['se']['sd']:.4f}; scaled to {2 * args.draws} calls "
                  f"{row['se_at_stepwise_calls']['mean']:.4f} ({row['seconds']:.0f}s)", flush=True)
    if args.nodes_check:
        k = args.nodes_check
        a = stepwise_draws(trained, x, k, args.draws, "quadrature", generator("nodes", k), True, nodes=args.nodes)
        b = stepwise_draws(trained, x, k, args.draws, "quadrature", generator("nodes", k), True, nodes=96)
        diff = to_bpd(a - b, dims)
        report["nodes_check"] = dict(k=k, nodes=(args.nodes, 96), mean_bpd_change=diff.mean().item(),
                                     largest_bpd_change=diff.abs().max().item())
        print(f"k={k}: {args.nodes} -> 96 nodes changes the bound by {diff.mean().item():.2e} bpd on average "
              f"(largest {diff.abs().max().item():.2e})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
