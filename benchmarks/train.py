"""What ``bsi.train`` adds to a bare training loop, per step, measured side by side.

Three loops on the same backbone, process and batches (one torch thread, thread CPU time; blocks
alternate with a rotating order, and ratios are per block, see :mod:`benchmarks.timing`):

- bare: ``proc.training_loss``, backward and (fused) AdamW on batches already in memory, nothing else;
- bare + clip + EMA: the same plus the recipe's gradient clipping and EMA update;
- ours: ``bsi.train.train(cfg)`` itself (DataLoader with the resumable sampler, AdamW, warm-up and
  cosine schedule, clipping, EMA, the per-step finiteness and stop checks, metrics, progress bar).
  Its cost per step is the difference of two whole runs, ``steps`` and ``2 * steps`` long, divided
  by ``steps``: what both runs share (building, the last validation, sample grid, test, checkpoint)
  cancels.

Configurations: the default run (digits, MLP, real data) and small CIFAR-10- and ImageNet32-shaped
ones (3x32x32, 256 levels, fabricated uint8 images; a small U-Net and a small DiT).

    python -m benchmarks.train [--configs digits cifar10 imagenet32] [--blocks 7] [--out PATH] [overrides ...]

Each configuration's row replaces its earlier one in :data:`RESULTS`, with the machine and date it ran on.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import bsi.distributed
import bsi.train
import bsi.training.setup
from benchmarks.markdown import provenance, table
from benchmarks.timing import alternate, fmt_ratio, machine, ratios, spread
from bsi.atomic import write_json
from bsi.build import build_backbone, build_process
from bsi.config import CONFIGS
from bsi.cpu import use_cpu_settings
from bsi.data import ImageDataset, build_dataset, to_float
from bsi.data.datasets import ArrayImages
from bsi.ema import EMA

RESULTS = "benchmarks/results/train_cpu.json"
# name: (overrides, fabricated data shape or None for the real dataset, steps per block)
SETTINGS: dict[str, tuple[list[str], tuple[int, int, int] | None, int]] = {
    "digits": ([], None, 2000),
    "cifar10": (["model=unet", "model.channels=32", "model.norm_groups=8", "model.num_blocks=2", "train.batch_size=16"],
                (3, 32, 32), 30),
    "imagenet32": (["model=dit", "model.name=DiT-S/4", "+model.dim=192", "+model.depth=4", "+model.num_heads=3",
                    "train.batch_size=32"], (3, 32, 32), 30),
}
QUIET = ["train.log_every=50", "eval.n_samples=1", "eval.val_n_samples=1", "eval.ks=[]", "eval.grid=4",
         "eval.sample.steps=2"]


def fabricated(shape: tuple[int, int, int], n: int = 512) -> ImageDataset:
    images = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
    return ImageDataset(ArrayImages(images), 256, "fabricated", "train")


def ours(cfg: DictConfig, run_dir: Path) -> float:
    """Examples per second of ``bsi.train.train`` (training steps only, the trainer's own wall clock)."""
    return bsi.train.train(cfg, run_dir=run_dir)["examples_per_second"]


def whole_run(cfg: DictConfig) -> Callable[[], None]:
    """One whole ``bsi.train.train(cfg)`` in a fresh run directory, as a function of no arguments."""

    def run() -> None:
        with tempfile.TemporaryDirectory() as run_dir:
            bsi.train.train(cfg, run_dir=Path(run_dir))

    return run


def bare(cfg: DictConfig, dataset: ImageDataset, device: torch.device, recipe: bool = False) -> Callable[[], None]:
    """``cfg.train.steps`` steps of forward, loss, backward and AdamW on in-memory batches, as one function.

    ``recipe`` adds what the training recipe asks for besides: gradient clipping and the EMA.
    """
    torch.manual_seed(cfg.seed)
    proc = build_process(cfg, dataset.bins)
    backbone = build_backbone(cfg, tuple(dataset.shape), proc).to(device).train()
    denoiser = proc.parameterize(backbone)
    params = list(backbone.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, betas=tuple(cfg.train.betas),
                                  weight_decay=cfg.train.weight_decay, fused=True)
    ema = EMA(backbone, cfg.train.ema_decay)
    generator = torch.Generator(device=device).manual_seed(0)
    batch = cfg.train.batch_size
    data = to_float(dataset.__getitems__(list(range(len(dataset) // batch * batch))), dataset.bins).to(device)
    batches = data.split(batch)

    def loop() -> None:
        for i in range(cfg.train.steps):
            optimizer.zero_grad(set_to_none=True)
            proc.training_loss(batches[i % len(batches)], denoiser, generator=generator).loss.mean().backward()
            if recipe:
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            optimizer.step()
            if recipe:
                ema.update(backbone)

    return loop


def compose_cfg(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=overrides)


def measure(name: str, blocks: int, extra: list[str]) -> dict:
    overrides, shape, steps = SETTINGS[name]

    def cfg_for(n: int) -> DictConfig:
        # the run lengths last: the cost per step is the difference of two lengths
        return compose_cfg([*overrides, *QUIET, *([] if shape is None else ["data.val_size=0"]), *extra,
                            f"train.steps={n}", f"train.eval_every={n}", f"train.checkpoint_every={n}"])

    cfg = cfg_for(steps)
    device = bsi.distributed.resolve_device(cfg.device)
    if device.type == "cpu":  # before the first block, so that every variant runs with bsi.train's settings
        use_cpu_settings(cfg.cpu_threads, cfg.cpu_retain_memory)
    if shape is None:
        dataset = build_dataset(cfg.data, "train")
    else:  # the training loop reads these instead of files
        dataset = fabricated(shape)
        splits = {"train": dataset, "test": fabricated(shape, 32)}
        bsi.training.setup.build_dataset = lambda data_cfg, split: splits[split]
    fns = {"bare": bare(cfg, dataset, device), "recipe": bare(cfg, dataset, device, recipe=True),
           "ours, short": whole_run(cfg), "ours, long": whole_run(cfg_for(2 * steps))}
    try:
        times = alternate(fns, blocks, 1, device)
    finally:
        bsi.training.setup.build_dataset = build_dataset
    per_step = {"bare": [t / steps for t in times["bare"]], "recipe": [t / steps for t in times["recipe"]],
                "ours": [(long - short) / steps for short, long in zip(times["ours, short"], times["ours, long"])]}
    n_params = sum(p.numel() for p in build_backbone(cfg, tuple(dataset.shape), build_process(cfg, dataset.bins)).parameters())
    return {
        "config": name, "model": f"{cfg.model.name} ({n_params / 1e6:.2f}M)", "shape": list(dataset.shape),
        "batch": cfg.train.batch_size, "steps": steps, "device": device.type, "threads": torch.get_num_threads(),
        "ms_per_step": {k: spread([1000 * x for x in v]) for k, v in per_step.items()},
        "ours_over_bare": spread(ratios(per_step["ours"], per_step["bare"])),
        "ours_over_recipe": spread(ratios(per_step["ours"], per_step["recipe"])), "blocks": per_step,
    }


HEADER = ["config", "model", "batch", "device, threads", "bare (ms/step)", "bare + clip + EMA", "ours",
          "ours / bare", "ours / (bare + clip + EMA)"]


def table_rows(rows: list[dict]) -> list[tuple]:
    """The cells of :data:`HEADER` for result rows: milliseconds per step (medians) and per-block ratios."""
    out = []
    for r in rows:
        ms = {k: v["median"] for k, v in r["ms_per_step"].items()}
        out.append((f"{r['config']} {'x'.join(map(str, r['shape']))}", r["model"], r["batch"],
                    f"{r['device']}, {r['threads']}", f"{ms['bare']:.2f}", f"{ms['recipe']:.2f}", f"{ms['ours']:.2f}",
                    fmt_ratio(r["ours_over_bare"]), fmt_ratio(r["ours_over_recipe"])))
    return out


def render(results: dict) -> str:
    rows = results["rows"]
    return "\n".join([provenance(*rows), "",
                      "Milliseconds per step (median over blocks) and per-block ratios, median (min-max):", "",
                      table(HEADER, table_rows(rows))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--blocks", type=int, default=7, help="alternating blocks of the loops")
    parser.add_argument("--out", type=Path, default=Path(RESULTS), help="results file; the configs run replace their rows")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. cpu_threads=2 device=cuda")
    args = parser.parse_args()
    rows = []
    every = args.configs == list(SETTINGS)
    for name in args.configs:
        row = measure(name, args.blocks, args.overrides)
        command = " ".join(["python -m benchmarks.train", *([] if every else ["--configs", name]),
                            *([] if args.blocks == parser.get_default("blocks") else ["--blocks", str(args.blocks)]), *args.overrides])
        rows.append({**row, "command": command, "machine": machine(row["device"]), "measured": date.today().isoformat()})
    print(table(HEADER, table_rows(rows)))
    earlier = json.loads(args.out.read_text()) if args.out.is_file() else {}
    ran = {row["config"] for row in rows}
    kept = [r for r in earlier.get("rows", []) if r["config"] not in ran]
    write_json(args.out, {"rows": sorted(kept + rows, key=lambda r: list(SETTINGS).index(r["config"]))})
    if any(not math.isfinite(r["ours_over_bare"]["median"]) for r in rows):
        raise SystemExit("a measurement failed")


if __name__ == "__main__":
    main()
