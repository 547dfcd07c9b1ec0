"""Sample quality against network evaluations (NFE) for every solver and process.

Two measurements:

1. ``--part exact``: the exact denoiser of the digits training split (1437 images).  For each
   solver, process and NFE: the fraction of distinct training points a set of samples hits,
   relative to what uniform sampling of the same number of points hits (1.0 = as good as perfect
   sampling), and the RMS distance per dimension from the belief before the final step (``mu/a``)
   to its nearest training point (how far the solver got on its own, before the final denoise).
2. ``--part model --checkpoint PATH``: a trained digits model (``data=digits`` or
   ``data=binarized_digits``, any process).  Frechet distance between samples and the 360 test
   digits in the feature space of a small digit classifier trained here on the training split of
   the same data (an offline stand-in for FID), with the real-data floor beside it.

Methodology: every (process, solver, NFE, seed) draws from its own generator, seeded
from a hash of that key, so no two configurations share noise and the rows of a table are
independent draws of the statistic; each configuration is run with ``--seeds`` seeds and reported
as mean ± sd over the seeds.  The floor is the same statistic for real data: ``--samples`` training
digits drawn with replacement (the split has only 1437) against the same test digits, one draw per
seed, plus the whole training split once (no replacement, no noise of its own).  Drawing with
replacement leaves the floor with the noise of a sample of the stated size, as a model's samples have.

Every solver spends ``steps + 1`` network evaluations, so ``steps = NFE - 1``.
Run: ``python -m benchmarks.solvers --part exact`` (a few minutes on 2 CPU cores) or
``python -m benchmarks.solvers --part model --checkpoint RUN/checkpoints/best.pt`` (about half an
hour with the defaults: 2,000 samples, 3 seeds, 6 solvers x 6 NFEs).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from sklearn.datasets import load_digits

from benchmarks.markdown import command_line, pm, provenance, table
from bsi.atomic import write_json
from bsi.data import build_dataset, to_float
from bsi.engine import SOLVERS, make_process
from bsi.engine.exact import ExactDenoiser

NFES = (5, 10, 20, 50, 100, 200)
METHODS = ("bsi", "bfn", "vdm")


def config_generator(*key) -> torch.Generator:
    """A generator of its own for one configuration, seeded from a hash of ``key`` (e.g. solver, NFE, seed)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)


def digits_split(name: str = "digits") -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed split of ``data=name``: first 1437 images train, last 360 test, (N, 1, 8, 8) on the levels."""
    sets = [build_dataset({"name": name}, split) for split in ("train", "test")]
    return tuple(to_float(d.__getitems__(range(len(d))), d.bins) for d in sets)


def expected_distinct(n_samples: int, n_points: int) -> float:
    """Expected number of distinct points hit by ``n_samples`` uniform draws from ``n_points``."""
    return n_points * (1 - (1 - 1 / n_points) ** n_samples)


def exact_part(n_samples: int, spacing: dict[str, str], nfes: tuple[int, ...] | None = None,
               methods: tuple[str, ...] = METHODS, seeds: int = 1) -> list[dict]:
    train, _ = digits_split()
    flat = train.flatten(1).double()
    rows = []
    for method in methods:
        proc = make_process(method, data_bins=17)
        den = ExactDenoiser(train, proc.beliefs)
        for solver in SOLVERS:
            for nfe in nfes or NFES:
                for seed in range(seeds):
                    last_mu = {}

                    def keep(i, lam, mu, x_hat):
                        last_mu["mu"], last_mu["lam"] = mu, lam

                    sp = spacing["ancestral" if solver == "ancestral" else "ode"] or proc.sample_spacing
                    start = time.perf_counter()
                    x = proc.sample(den, (n_samples, *train.shape[1:]), steps=nfe - 1, solver=solver, spacing=sp,
                                    generator=config_generator("exact", method, solver, sp, nfe, seed), callback=keep)
                    a = proc.beliefs.mean_coef(last_mu["lam"]).float()[:, None, None, None]
                    before = (last_mu["mu"] / a).flatten(1).double()
                    d_before = torch.cdist(before, flat).min(1).values / math.sqrt(flat.shape[1])
                    d_final, nearest = torch.cdist(x.flatten(1).double(), flat).min(1)
                    hit = nearest[d_final / math.sqrt(flat.shape[1]) < 0.05].unique().numel()
                    rows.append(dict(
                        method=method, solver=solver, spacing=sp, nfe=nfe, seed=seed, samples=n_samples,
                        coverage=hit / expected_distinct(n_samples, len(flat)),
                        rms_before_final=d_before.median().item(),
                        seconds=time.perf_counter() - start,
                    ))
                    print(f"{method:4s} {solver:9s} nfe={nfe:4d} seed={seed} coverage={rows[-1]['coverage']:.3f} "
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


FLOOR_SIZES = (360, 720, 1000)


def real_data_floor(train: torch.Tensor, ref: np.ndarray, classifier: DigitClassifier, n_samples: int,
                    seeds: int) -> list[dict]:
    """The Frechet distance of real training digits to the test digits: what a perfect sampler scores.

    Rows (``kind``): ``subset`` -- ``samples`` training digits without replacement for each size in
    :data:`FLOOR_SIZES` and each seed (an iid sample of that size from the data distribution);
    ``all`` -- the whole training split once; ``bootstrap`` -- ``n_samples`` digits drawn with
    replacement, one per seed (counts the sampling noise twice: the split's own and the redraw's);
    ``extrapolated`` -- ``a + b/n`` fitted to the subset and ``all`` rows by least squares, at
    ``n = n_samples`` (the finite-sample bias of a Frechet distance falls as ``1/n``).
    """
    rows = []
    with torch.no_grad():
        feats = classifier.features(train).numpy()
        for size in (s for s in FLOOR_SIZES if s < len(train)):
            for seed in range(seeds):
                idx = torch.randperm(len(train), generator=config_generator("floor-subset", size, seed))[:size]
                rows.append(dict(kind="subset", seed=seed, samples=size, frechet=frechet_distance(feats[idx.numpy()], ref)))
        rows.append(dict(kind="all", seed=-1, samples=len(train), frechet=frechet_distance(feats, ref)))
        for seed in range(seeds):
            idx = torch.randint(len(train), (n_samples,), generator=config_generator("floor", seed))
            rows.append(dict(kind="bootstrap", seed=seed, samples=n_samples, frechet=frechet_distance(feats[idx.numpy()], ref)))
    fit = [r for r in rows if r["kind"] in ("subset", "all")]
    design = np.array([[1.0, 1.0 / r["samples"]] for r in fit])
    (a, b), *_ = np.linalg.lstsq(design, np.array([r["frechet"] for r in fit]), rcond=None)
    rows.append(dict(kind="extrapolated", seed=-1, samples=n_samples, frechet=float(a + b / n_samples)))
    return rows


def model_part(checkpoint: str, n_samples: int, spacing: dict[str, str | None], seeds: int = 3,
               configs: list[tuple[str, int]] | None = None) -> tuple[list[dict], list[dict]]:
    """Per-seed Frechet distances of every (solver, NFE) in ``configs``, and the real-data floor."""
    from bsi.checkpoint import load_trained
    from bsi.data import to_uint8

    trained = load_trained(checkpoint)
    train, test = digits_split(trained.cfg.data.name)
    classifier = train_classifier(trained.cfg.data.name)
    with torch.no_grad():
        ref = classifier.features(test).numpy()
    floor = real_data_floor(train, ref, classifier, n_samples, seeds)
    for r in floor:
        print(f"floor ({r['kind']}, {r['samples']} training digits, seed {r['seed']}): frechet={r['frechet']:.3f}", flush=True)
    rows = []
    for solver, nfe in configs or [(s, n) for s in SOLVERS for n in NFES]:
        sp = spacing["ancestral" if solver == "ancestral" else "ode"] or trained.process.sample_spacing
        for seed in range(seeds):
            start = time.perf_counter()
            gen = config_generator("model", trained.process.name, solver, sp, nfe, seed)
            x = trained.process.sample(trained.denoiser, (n_samples, *trained.data_shape), steps=nfe - 1,
                                       solver=solver, spacing=sp, generator=gen)
            x = to_float(to_uint8(x, trained.bins), trained.bins)  # what a user saves: images on the levels
            with torch.no_grad():
                fd = frechet_distance(classifier.features(x).numpy(), ref)
            rows.append(dict(method=trained.process.name, solver=solver, spacing=sp, nfe=nfe, seed=seed,
                             samples=n_samples, frechet=fd, seconds=time.perf_counter() - start))
            print(f"{solver:9s} nfe={nfe:4d} seed={seed} frechet={fd:.3f} ({rows[-1]['seconds']:.1f}s)", flush=True)
    return rows, floor


def summarise(rows: list[dict], value: str) -> list[dict]:
    """Mean and sd over seeds of ``value`` per (method, solver, spacing, NFE), in first-seen order."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["solver"], r["spacing"], int(r["nfe"])), []).append(float(r[value]))
    return [dict(method=m, solver=s, spacing=sp, nfe=n, mean=statistics.fmean(v),
                 sd=statistics.stdev(v) if len(v) > 1 else float("nan"), seeds=len(v))
            for (m, s, sp, n), v in groups.items()]


def solver_table(summary: list[dict], digits: int = 2) -> str:
    """One row per (method, solver), one column per NFE: ``mean ± sd`` over seeds; the method column only
    when there are several."""
    nfes = sorted({r["nfe"] for r in summary})
    methods = list(dict.fromkeys(r["method"] for r in summary))
    rows = []
    for method in methods:
        for solver in dict.fromkeys(r["solver"] for r in summary if r["method"] == method):
            cells = {r["nfe"]: r for r in summary if r["method"] == method and r["solver"] == solver}
            row = [pm(cells[n]["mean"], cells[n]["sd"], digits) if n in cells else None for n in nfes]
            rows.append(([method] if len(methods) > 1 else []) + [solver] + row)
    return table((["method"] if len(methods) > 1 else []) + ["solver"] + [f"NFE {n}" for n in nfes], rows)


def floor_sentence(floor: list[dict]) -> str:
    """The real-data floor (see :func:`real_data_floor`) in one sentence."""
    def value(kind: str) -> tuple[int, str]:
        n = max(r["samples"] for r in floor if r["kind"] == kind)
        v = [r["frechet"] for r in floor if r["kind"] == kind and r["samples"] == n]
        return n, pm(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None, 2)

    (n_all, all_), (n_ext, ext), (n_sub, sub) = value("all"), value("extrapolated"), value("subset")
    return (f"Real-data floor, the same statistic for real training digits: {all_} for the whole training split "
            f"({n_all:,} digits), {ext} extrapolated to {n_ext:,} digits (`a + b/n` fitted to random subsets and the "
            f"whole split: the finite-sample excess of a Frechet distance falls as `1/n`), {sub} for subsets of "
            f"{n_sub:,}.")


RESULTS = {"exact": "benchmarks/results/solvers_exact.json", "model": "benchmarks/results/solvers_model_bsi.json",
           "convergence": "benchmarks/results/solvers_model_bsi_convergence.json",
           "10k": "benchmarks/results/solvers_model_bsi_10k.json"}


def render(results: dict) -> dict[str, str]:
    """``exact``: coverage per process and solver; ``model``: the trained model's Frechet distances."""
    parts = {}
    if "exact" in results:
        e = results["exact"]
        rms = [r["rms_before_final"] for r in e["rows"]]
        parts["exact"] = "\n".join([
            provenance(e), "",
            f"Coverage: distinct training points hit by {e['samples']} samples relative to perfect uniform sampling "
            f"(1.0 = perfect), mean ± sd over {e['summary'][0]['seeds']} seeds.", "",
            solver_table(e["summary"], 3), "",
            f"The RMS distance per dimension from the belief before the final step (`mu/a`) to its nearest training "
            f"point is {min(rms):.3f} to {max(rms):.3f} for every solver, process and NFE: every solver ends next to "
            "some training point, so coverage is what separates them."])
    if "model" in results:
        m = results["model"]
        summary = m["summary"] + results.get("convergence", {}).get("summary", [])
        ckpt = m["checkpoint"]
        lines = [provenance(m), "",
                 f"Frechet distance (lower is better) between {m['rows'][0]['samples']:,} samples and the 360 test "
                 f"digits in the features of a small digit classifier (test accuracy {m['classifier_accuracy']:.2f}); "
                 f"the default run (`{ckpt['run']}`, EMA weights of the best validation step {ckpt['best_step']:,}, "
                 f"{pm(*ckpt['test_bpd'])} test bpd); mean ± sd over {m['summary'][0]['seeds']} seeds.", "",
                 solver_table(summary), "", floor_sentence(m["floor"])]
        cell = {(r["solver"], r["nfe"]): r["mean"] for r in summary}
        if ("ode2", 10) in cell:
            target = cell["ode2", 10]
            catch = sorted(n for (s, n), v in cell.items() if s == "ancestral" and v <= target)
            lines += ["", f"At 10 NFE ode2 scores {target:.2f}, the ancestral sampler {cell.get(('ancestral', 10), float('nan')):.2f}; "
                      + (f"the ancestral sampler needs {catch[0]} NFE to come down to the same value, a "
                         f"{catch[0] // 10}x saving." if catch else "the ancestral sampler does not reach that value "
                         "at any NFE measured.")]
        if "10k" in results:
            k = results["10k"]
            cells = ", ".join(f"{r['solver']} at {r['nfe']} NFE {pm(r['mean'], r['sd'], 2)}" for r in k["summary"])
            lines += ["", f"The same at {k['rows'][0]['samples']:,} samples: {cells} (floor extrapolated to "
                      f"{k['rows'][0]['samples']:,} digits: {k['floor_extrapolated']:.2f}). The spread over seeds falls "
                      "about as `1/sqrt(n)`: it is the statistic's sampling noise, so differences below about 1 in the "
                      "2,000-sample table are noise."]
        parts["model"] = "\n".join(lines)
    return parts


def parse_configs(solvers: str, nfes: str, extra: list[str]) -> list[tuple[str, int]]:
    """The (solver, NFE) grid of ``solvers`` x ``nfes`` plus ``SOLVER:NFE`` extras (convergence checks)."""
    names = [s for s in solvers.split(",") if s]
    unknown = [s for s in names + [e.split(":")[0] for e in extra] if s not in SOLVERS]
    if unknown:
        raise SystemExit(f"unknown solver(s) {unknown}: choose from {', '.join(SOLVERS)}")
    configs = [(s, int(n)) for s in names for n in nfes.split(",")]
    configs += [(e.split(":")[0], int(e.split(":")[1])) for e in extra]
    return configs


def write_rows(path: Path, rows: list[dict]) -> None:
    """CSV of ``rows`` written to a temporary file and renamed (a killed run leaves no half file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description="Sample quality against NFE for every solver.")
    parser.add_argument("--part", choices=("exact", "model"), default="exact")
    parser.add_argument("--checkpoint", help="checkpoint of a trained digits model (for --part model)")
    parser.add_argument("--samples", type=int, default=None, help="samples per configuration (exact: 720, model: 2000)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration (exact: 1, model: 3)")
    parser.add_argument("--solvers", default=",".join(SOLVERS))
    parser.add_argument("--nfes", default=",".join(str(n) for n in NFES))
    parser.add_argument("--extra", nargs="*", default=[], help="extra SOLVER:NFE configurations, e.g. ode2:500 ancestral:500")
    parser.add_argument("--ancestral-spacing", default=None, help="default: the process's (bsi, bfn: geometric)")
    parser.add_argument("--ode-spacing", default="edm")
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument("--out", default="benchmarks/results", help="directory for the CSV/JSON results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spacing = {"ancestral": args.ancestral_spacing, "ode": args.ode_spacing}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "exact":
        rows, floor = exact_part(args.samples or 720, spacing, nfes=tuple(int(n) for n in args.nfes.split(",")),
                                 seeds=args.seeds or 1), None
        value, name = "coverage", "solvers_exact"
    else:
        if not args.checkpoint:
            parser.error("--part model needs --checkpoint PATH")
        configs = parse_configs(args.solvers, args.nfes, args.extra)
        rows, floor = model_part(args.checkpoint, args.samples or 2000, spacing, seeds=args.seeds or 3, configs=configs)
        value, name = "frechet", f"solvers_model_{rows[0]['method']}"
    name += args.tag
    summary = summarise(rows, value)
    write_rows(out / f"{name}.csv", rows)
    report = {"command": command_line("benchmarks.solvers", sys.argv[1:]),
              "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, one thread",
              "measured": date.today().isoformat(), "value": value, "summary": summary, "rows": rows}
    if floor is not None:
        report["floor"] = floor
    write_json(out / f"{name}.json", report)
    print(f"wrote {out / name}.csv and .json\n")
    print(solver_table(summary, digits=3 if value == "coverage" else 2))
    if floor is not None:
        print("\n" + floor_sentence(floor))


if __name__ == "__main__":
    main()
