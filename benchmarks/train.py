"""Training throughput of ``bsi.train`` and its overhead over a bare loop, measured side by side.

For each configuration, blocks of three loops alternate (so machine noise hits all alike) and the
best block of each counts:

- bare: the same backbone, process and ``proc.training_loss`` with (fused) AdamW on batches already
  in memory, and nothing else;
- bare + clip + EMA: the same plus the recipe's gradient clipping and EMA update;
- ours: ``bsi.train.train(cfg)`` itself: DataLoader with the resumable sampler, AdamW, warm-up and
  cosine schedule, clipping, EMA, the per-step finiteness/preemption check, metrics and progress
  bar.  Its ``examples_per_second`` leaves out validation, sample grids and checkpoints.

Configurations: the default run (digits, MLP, real data) and small CIFAR-10- and ImageNet32-shaped
ones (3x32x32, 256 levels, fabricated uint8 images; a small U-Net and a small DiT).

    python -m benchmarks.train [--configs digits cifar10 imagenet32] [--blocks 3] [--json PATH] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import bsi.distributed
import bsi.train
from bsi.build import build_backbone, build_process
from bsi.data import ImageDataset, build_dataset, to_float
from bsi.data.datasets import ArrayImages
from bsi.ema import EMA

from bsi.cli import CONFIGS  # noqa: E402  (the configs ship inside the package)
# name: (overrides, fabricated data shape or None for the real dataset, steps per block)
SETTINGS: dict[str, tuple[list[str], tuple[int, int, int] | None, int]] = {
    "digits": ([], None, 1500),
    "cifar10": (["model=unet", "model.channels=32", "model.num_blocks=2", "train.batch_size=16"], (3, 32, 32), 15),
    "imagenet32": (["model=dit", "model.name=DiT-S/4", "+model.dim=192", "+model.depth=4", "+model.num_heads=3",
                    "train.batch_size=32"], (3, 32, 32), 15),
}
QUIET = ["train.log_every=50", "eval.n_samples=1", "eval.val_n_samples=1", "eval.ks=[]", "eval.grid=4",
         "eval.sample.steps=2"]


def fabricated(shape: tuple[int, int, int], n: int = 512) -> ImageDataset:
    images = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
    return ImageDataset(ArrayImages(images), 256, "fabricated", "train")


def ours(cfg: DictConfig, run_dir: Path) -> float:
    """Examples per second of ``bsi.train.train`` (training steps only)."""
    return bsi.train.train(cfg, run_dir=run_dir)["examples_per_second"]


def bare(cfg: DictConfig, dataset: ImageDataset, device: torch.device, recipe: bool = False) -> float:
    """Examples per second of forward, loss, backward and AdamW on in-memory batches.

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
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(cfg.train.steps):
        optimizer.zero_grad(set_to_none=True)
        proc.training_loss(batches[i % len(batches)], denoiser, generator=generator).loss.mean().backward()
        if recipe:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        if recipe:
            ema.update(backbone)
    sync()
    return cfg.train.steps * batch / (time.perf_counter() - start)


def measure(name: str, blocks: int, extra: list[str]) -> dict:
    overrides, shape, steps = SETTINGS[name]
    overrides = [*overrides, *QUIET, f"train.steps={steps}", f"train.eval_every={steps}",
                 f"train.checkpoint_every={steps}", *([] if shape is None else ["data.val_size=0"]), *extra]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    device = bsi.distributed.resolve_device(cfg.device)
    if cfg.cpu_threads and device.type == "cpu":
        torch.set_num_threads(int(cfg.cpu_threads))
    if shape is None:
        dataset = build_dataset(cfg.data, "train")
    else:  # the training loop reads these instead of files
        dataset = fabricated(shape)
        splits = {"train": dataset, "test": fabricated(shape, 32)}
        bsi.train.build_dataset = lambda data_cfg, split: splits[split]
    results: dict[str, list[float]] = {"bare": [], "recipe": [], "ours": []}
    try:
        for _ in range(blocks):
            results["bare"].append(bare(cfg, dataset, device))
            results["recipe"].append(bare(cfg, dataset, device, recipe=True))
            with tempfile.TemporaryDirectory() as run_dir:
                results["ours"].append(ours(cfg, Path(run_dir)))
    finally:
        bsi.train.build_dataset = build_dataset
    best = {k: max(v) for k, v in results.items()}
    n_params = sum(p.numel() for p in build_backbone(cfg, tuple(dataset.shape), build_process(cfg, dataset.bins)).parameters())
    return {
        "config": name, "model": f"{cfg.model.name} ({n_params / 1e6:.2f}M)", "shape": list(dataset.shape),
        "batch": cfg.train.batch_size, "steps": steps, "device": device.type, "threads": torch.get_num_threads(),
        **{f"{k}_examples_per_s": v for k, v in best.items()},
        "overhead_percent": 100 * (best["bare"] / best["ours"] - 1),
        "overhead_over_recipe_percent": 100 * (best["recipe"] / best["ours"] - 1), "blocks": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks per loop; the best counts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. cpu_threads=2 device=cuda")
    args = parser.parse_args()
    rows = [measure(name, args.blocks, args.overrides) for name in args.configs]
    print("| config | model | batch | device, threads | bare | bare + clip + EMA | ours (examples/s) | "
          "overhead over bare | over bare + clip + EMA |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} {'x'.join(map(str, r['shape']))} | {r['model']} | {r['batch']} | {r['device']}, "
              f"{r['threads']} | {r['bare_examples_per_s']:.0f} | {r['recipe_examples_per_s']:.0f} | "
              f"{r['ours_examples_per_s']:.0f} | {r['overhead_percent']:+.1f}% | {r['overhead_over_recipe_percent']:+.1f}% |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if any(not math.isfinite(r["overhead_percent"]) for r in rows):
        raise SystemExit("a measurement failed")


if __name__ == "__main__":
    main()
