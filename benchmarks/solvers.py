"""Sample quality against network evaluations (NFE) for every solver and process.

Two measurements (issue 9):

1. ``--part exact``: the exact denoiser of the digits training split (1437 images).  For each
   solver, process and NFE: the fraction of distinct training points a set of samples hits,
   relative to what uniform sampling of the same number of points hits (1.0 = as good as perfect
   sampling), and the RMS distance per dimension from the belief before the final step (``mu/a``)
   to its nearest training point (how far the solver got on its own, before the final denoise).
2. ``--part model --checkpoint PATH``: a trained digits model (``data=digits`` or
   ``data=binarized_digits``, any process).  Frechet distance between samples and the test split in
   the feature space of a small digit classifier trained here on the training split of the same data
   (an offline stand-in for FID).

Every solver spends ``steps + 1`` network evaluations, so ``steps = NFE - 1``.
Run: ``python -m benchmarks.solvers --part exact`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from sklearn.datasets import load_digits

from bsi.data import build_dataset, to_float
from bsi.engine import SOLVERS, example_generators, make_process
from bsi.engine.exact import ExactDenoiser

NFES = (5, 10, 20, 50, 100, 200)
METHODS = ("bsi", "bfn", "vdm")


def digits_split(name: str = "digits") -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed split of ``data=name``: first 1437 images train, last 360 test, (N, 1, 8, 8) on the levels."""
    sets = [build_dataset({"name": name}, split) for split in ("train", "test")]
    return tuple(to_float(d.__getitems__(range(len(d))), d.bins) for d in sets)


def expected_distinct(n_samples: int, n_points: int) -> float:
    """Expected number of distinct points hit by ``n_samples`` uniform draws from ``n_points``."""
    return n_points * (1 - (1 - 1 / n_points) ** n_samples)


def exact_part(n_samples: int, spacing: dict[str, str], nfes: tuple[int, ...] | None = None,
               methods: tuple[str, ...] = METHODS) -> list[dict]:
    train, _ = digits_split()
    flat = train.flatten(1).double()
    rows = []
    for method in methods:
        proc = make_process(method, data_bins=17)
        den = ExactDenoiser(train, proc.beliefs)
        for solver in SOLVERS:
            for nfe in nfes or NFES:
                last_mu = {}

                def keep(i, lam, mu, x_hat):
                    last_mu["mu"], last_mu["lam"] = mu, lam

                sp = spacing["ancestral" if solver == "ancestral" else "ode"] or proc.sample_spacing
                start = time.perf_counter()
                x = proc.sample(den, (n_samples, *train.shape[1:]), steps=nfe - 1, solver=solver, spacing=sp,
                                generator=torch.Generator().manual_seed(nfe), callback=keep)
                a = proc.beliefs.mean_coef(last_mu["lam"]).float()[:, None, None, None]
                before = (last_mu["mu"] / a).flatten(1).double()
                d_before = torch.cdist(before, flat).min(1).values / math.sqrt(flat.shape[1])
                d_final, nearest = torch.cdist(x.flatten(1).double(), flat).min(1)
                hit = nearest[d_final / math.sqrt(flat.shape[1]) < 0.05].unique().numel()
                rows.append(dict(
                    method=method, solver=solver, spacing=sp, nfe=nfe,
                    coverage=hit / expected_distinct(n_samples, len(flat)),
                    rms_before_final=d_before.median().item(),
                    seconds=time.perf_counter() - start,
                ))
                print(f"{method:4s} {solver:9s} nfe={nfe:4d} coverage={rows[-1]['coverage']:.3f} "
                      f"rms_before_final={rows[-1]['rms_before_final']:.4f}", flush=True)
    return rows


class DigitClassifier(torch.nn.Module):
    """A small MLP whose penultimate layer is the feature space of the Frechet distance."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.SiLU(), torch.nn.Linear(width, width), torch.nn.SiLU()
        )
        self.head = torch.nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.features(x))


def train_classifier(data: str = "digits", seed: int = 0) -> DigitClassifier:
    """The classifier of the digits' labels (the same file order for every digits dataset) on ``data``."""
    train, test = digits_split(data)
    labels = torch.tensor(load_digits().target)
    torch.manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = train, labels[: len(train)]
    for _ in range(300):
        idx = torch.randint(len(x), (128,))
        loss = torch.nn.functional.cross_entropy(model(x[idx] + 0.05 * torch.randn_like(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(test).argmax(1) == labels[len(train):]).float().mean().item()
    print(f"classifier test accuracy: {acc:.3f}")
    return model


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def model_part(checkpoint: str, n_samples: int, spacing: dict[str, str | None]) -> list[dict]:
    from bsi.checkpoint import load_trained
    from bsi.data import to_uint8

    trained = load_trained(checkpoint)
    _, test = digits_split(trained.cfg.data.name)
    classifier = train_classifier(trained.cfg.data.name)
    with torch.no_grad():
        ref = classifier.features(test).numpy()
    rows = []
    for solver in SOLVERS:
        for nfe in NFES:
            sp = spacing["ancestral" if solver == "ancestral" else "ode"] or trained.process.sample_spacing
            start = time.perf_counter()
            x = trained.process.sample(trained.denoiser, (n_samples, *trained.data_shape), steps=nfe - 1, solver=solver,
                                       spacing=sp, generator=example_generators(0, range(n_samples)))
            x = to_float(to_uint8(x, trained.bins), trained.bins)  # what a user saves: images on the levels
            with torch.no_grad():
                fd = frechet_distance(classifier.features(x).numpy(), ref)
            rows.append(dict(method=trained.process.name, solver=solver, spacing=sp, nfe=nfe, frechet=fd,
                             seconds=time.perf_counter() - start))
            print(f"{solver:9s} nfe={nfe:4d} frechet={fd:.3f} ({rows[-1]['seconds']:.1f}s)", flush=True)
    return rows


def markdown_table(rows: list[dict], value: str) -> str:
    """One row per (method, solver), one column per NFE."""
    lines = ["| method | solver | " + " | ".join(f"NFE {n}" for n in NFES) + " |", "|---|---|" + "---|" * len(NFES)]
    for method in dict.fromkeys(r["method"] for r in rows):
        for solver in SOLVERS:
            cells = {r["nfe"]: r[value] for r in rows if r["method"] == method and r["solver"] == solver}
            lines.append(f"| {method} | {solver} | " + " | ".join(f"{cells[n]:.3f}" for n in NFES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Sample quality against NFE for every solver.")
    parser.add_argument("--part", choices=("exact", "model"), default="exact")
    parser.add_argument("--checkpoint", help="checkpoint of a trained digits model (for --part model)")
    parser.add_argument("--samples", type=int, default=720)
    parser.add_argument("--ancestral-spacing", default=None, help="default: the process's (bsi, bfn: geometric)")
    parser.add_argument("--ode-spacing", default="edm")
    parser.add_argument("--out", default="benchmarks/results", help="directory for the CSV/JSON results")
    args = parser.parse_args()
    spacing = {"ancestral": args.ancestral_spacing, "ode": args.ode_spacing}
    if args.part == "exact":
        rows = exact_part(args.samples, spacing)
    else:
        if not args.checkpoint:
            parser.error("--part model needs --checkpoint PATH")
        rows = model_part(args.checkpoint, args.samples, spacing)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"solvers_{args.part}" + ("" if args.part == "exact" else f"_{rows[0]['method']}")
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {out / name}.csv\n")
    print(markdown_table(rows, "coverage" if args.part == "exact" else "frechet"))


if __name__ == "__main__":
    main()
