"""Discrete data: BFN on binarized digits against the uniform and independent-Bernoulli baselines.

Trains ``method=bfn-discrete data=binarized_digits`` with ``python -m bsi.train``'s own ``train``
(default config otherwise: MLP, batch 128, the fixed split, checkpoint chosen on validation) for
each ``beta_1`` and each extra variant, and prints test nats per image (infinite-step and k-step
ELBOs, with standard errors) beside the two baselines, fitted on the same training part:

* uniform: ``64 ln 2`` nats per image;
* independent Bernoullis: one probability per pixel from the training part (add-one smoothing).

Run: ``python -m benchmarks.discrete [--steps 6000] [--beta-1 3,9] [--variants method.proposal=adaptive model.dropout=0.1] [overrides ...]``.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from bsi.data import build_dataset
from bsi.train import train
from bsi.cli import CONFIGS  # the configs ship inside the package



def bernoulli_nats(train_split: str = "train") -> tuple[float, float]:
    """Test nats per image (mean, standard error) of per-pixel Bernoullis fitted on ``train_split``."""
    data = {"name": "binarized_digits", "val_size": 137}
    fit, test = (build_dataset(data, s) for s in (train_split, "test"))
    x_fit = fit.__getitems__(range(len(fit))).flatten(1).double()
    x_test = test.__getitems__(range(len(test))).flatten(1).double()
    p = (x_fit.sum(0) + 1) / (len(x_fit) + 2)
    nll = -(x_test * p.log() + (1 - x_test) * (1 - p).log()).sum(1)
    return nll.mean().item(), nll.std().item() / math.sqrt(len(nll))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--beta-1", default="3,9", help="comma-separated beta_1 values (BFN's final accuracy)")
    parser.add_argument("--variants", nargs="*", default=[], help="hydra overrides (one variant each, e.g. method.proposal=adaptive) run at the first beta_1")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/discrete_digits.json"))
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"uniform": nats, "bernoulli": [bern, bern_se], "runs": rows}, indent=1))
    print("\n| model | test nats/image (infinite steps) | 10 steps | 100 steps | steps/s | best step |")
    print("|---|---|---|---|---|---|")
    print(f"| uniform (1 bit per pixel) | {nats:.2f} | | | | |")
    print(f"| independent Bernoullis per pixel | {bern:.2f} ± {bern_se:.2f} | | | | |")
    for r in rows:
        print(f"| bfn-discrete, {r['run']} | {r['nats']:.2f} ± {r['nats_stderr']:.2f} | "
              f"{r['nats_10_steps']:.2f} ± {r['nats_10_steps_stderr']:.2f} | "
              f"{r['nats_100_steps']:.2f} ± {r['nats_100_steps_stderr']:.2f} | {r['steps_per_second']:.0f} | "
              f"{r['best_step']} |")


if __name__ == "__main__":
    main()
