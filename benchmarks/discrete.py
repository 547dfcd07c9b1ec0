"""Discrete data: BFN on binarized digits against the uniform and independent-Bernoulli baselines.

Trains ``method=bfn-discrete data=binarized_digits`` with ``python -m bsi.train``'s own ``train``
(default config otherwise: MLP, batch 128, the fixed split, checkpoint chosen on validation) for
each ``beta_1`` and each extra variant, and writes test nats per image (infinite-step and k-step
ELBOs, with standard errors) beside the two baselines, fitted on the same training part:

* uniform: ``64 ln 2`` nats per image;
* independent Bernoullis: one probability per pixel from the training part (add-one smoothing).

Run: ``python -m benchmarks.discrete [--steps 6000] [--beta-1 3,9] [--variants method.proposal=adaptive model.dropout=0.1] [overrides ...]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
from datetime import date
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from benchmarks.markdown import model_note, pm, provenance, table
from bsi.atomic import write_json
from bsi.config import CONFIGS
from bsi.data import build_dataset
from bsi.train import train


def bernoulli_nats(train_split: str = "train") -> tuple[float, float]:
    """Test nats per image (mean, standard error) of per-pixel Bernoullis fitted on ``train_split``."""
    data = {"name": "binarized_digits", "val_size": 137}
    fit, test = (build_dataset(data, s) for s in (train_split, "test"))
    x_fit = fit.__getitems__(range(len(fit))).flatten(1).double()
    x_test = test.__getitems__(range(len(test))).flatten(1).double()
    p = (x_fit.sum(0) + 1) / (len(x_fit) + 2)
    nll = -(x_test * p.log() + (1 - x_test) * (1 - p).log()).sum(1)
    return nll.mean().item(), nll.std().item() / math.sqrt(len(nll))


RESULTS = {"runs": "benchmarks/results/discrete_digits.json",
           "solvers": "benchmarks/results/solvers_model_bfn-discrete.json"}


def render(results: dict) -> str:
    """The likelihood table against the baselines and, when measured, sample quality per solver."""
    lines = []
    if "runs" in results:
        r = results["runs"]
        bern, bern_se = r["bernoulli"]
        best = min(r["runs"], key=lambda run: run["nats"])
        default = r["runs"][0]
        rows = [("uniform (1 bit per pixel)", f"{r['uniform']:.2f}", None, None, None, None),
                ("independent Bernoullis per pixel", pm(bern, bern_se, 2), None, None, None, None)]
        rows += [(f"bfn-discrete, {run['run'].replace('beta_1=', 'β₁ = ')}", pm(run["nats"], run["nats_stderr"], 2, run is best),
                  pm(run["nats_10_steps"], run["nats_10_steps_stderr"], 2),
                  pm(run["nats_100_steps"], run["nats_100_steps_stderr"], 2), f"{run['steps_per_second']:.0f}",
                  f"{run['best_step']:,}") for run in r["runs"]]
        lines += [provenance(r), "",
                  f"{r['steps']:,} training steps, the checkpoint with the best validation bpd; test nats per image on "
                  f"the 360 test digits with {r['test_draws']} draws each, ± standard error over them; the baselines "
                  "are fitted on the same training images.", "",
                  table(["model", "test nats/image (infinite steps)", "10 steps", "100 steps", "steps/s", "best step"], rows),
                  "", f"BFN with the default β₁ = {default['run'].split('=')[1]} beats the independent Bernoullis by "
                  f"{bern - default['nats']:.1f} nats per image ({(bern - default['nats']) / bern:.0%}) and the uniform "
                  f"baseline by a factor of {r['uniform'] / default['nats']:.1f}."]
    if "solvers" in results:
        s = results["solvers"]
        from benchmarks.solvers import floor_sentence, solver_table

        ckpt = s["checkpoint"]
        lines += ["", "Sample quality: Frechet distance (lower is better) of "
                  f"{s['rows'][0]['samples']:,} samples to the 360 binarized test digits in the features of a digit "
                  f"classifier trained on the binarized training split (test accuracy {s['classifier_accuracy']:.2f}), "
                  f"for a default run (`{ckpt['run']}`, best validation step {ckpt['best_step']:,}, "
                  f"{pm(*ckpt['test_nats'], 2)} test nats per image); mean ± sd over {s['summary'][0]['seeds']} seeds. "
                  + provenance(s), "", solver_table(s["summary"]), "", floor_sentence(s["floor"])]
    return "\n".join(lines)


def headline(results: dict) -> list[tuple[str, str, str, str]]:
    """One summary row: the first (default) BFN run against the per-pixel baseline."""
    if "runs" not in results:
        return []
    r = results["runs"]
    default = r["runs"][0]
    return [(f"Binarized digits (8x8), CPU{model_note(results)}", f"bfn-discrete, {default['run'].replace('beta_1=', 'β₁ = ')}",
             pm(default["nats"], default["nats_stderr"], 2) + " nats/image",
             f"independent Bernoullis: {r['bernoulli'][0]:.2f} nats/image")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--beta-1", default="3,9", help="comma-separated beta_1 values (BFN's final accuracy)")
    parser.add_argument("--variants", nargs="*", default=[], help="hydra overrides (one variant each, e.g. method.proposal=adaptive) run at the first beta_1")
    parser.add_argument("--out", type=Path, default=Path(RESULTS["runs"]))
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for every run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    nats = 64 * math.log(2)
    bern, bern_se = bernoulli_nats()
    betas = [float(b) for b in args.beta_1.split(",")]
    runs = [(f"beta_1={b}", [f"method.beta_1={b}"]) for b in betas]
    runs += [(f"beta_1={betas[0]}, {v}", [f"method.beta_1={betas[0]}", v]) for v in args.variants]
    rows = []
    for label, extra in runs:
        run_dir = tempfile.mkdtemp(prefix="bsi-discrete-")
        overrides = ["method=bfn-discrete", "data=binarized_digits", f"train.steps={args.steps}", "eval.n_samples=8",
                     "eval.ks=[10,100]", f"+run_dir={run_dir}", *extra, *args.overrides]
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        final = train(cfg)
        row = {"run": label, "steps_per_second": final["steps_per_second"], "best_step": final["best_step"]}
        for key in ("", "_10_steps", "_100_steps"):
            row[f"nats{key}"] = final[f"test_bpd{key}"] * nats
            row[f"nats{key}_stderr"] = final[f"test_bpd{key}_stderr"] * nats
        rows.append(row)
        print(json.dumps(row), flush=True)
    variants = "".join(f" {v}" for v in args.variants)
    results = {"command": f"python -m benchmarks.discrete --steps {args.steps} --beta-1 {args.beta_1}"
                          + (f" --variants{variants}" if variants else ""),
               "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, one thread",
               "measured": date.today().isoformat(), "steps": args.steps, "test_draws": 8,
               "uniform": nats, "bernoulli": [bern, bern_se], "runs": rows}
    write_json(args.out, results)
    print(render({"runs": results}))


if __name__ == "__main__":
    main()
