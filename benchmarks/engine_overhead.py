"""What the engine adds to a training step, measured against the bare backbone in one run.

Both loops run forward + backward of the same backbone on the same batch shapes; the engine loop
adds what ``proc.training_loss`` does (proposal draw, belief draw, preconditioning, discretised
output, importance weighting).  Blocks of the two loops alternate (thread CPU time on a CPU; the
overhead is the per-block ratio's median and min-max, see :mod:`benchmarks.timing`).
Run: ``python -m benchmarks.engine_overhead [--model mlp|unet] [--output point|discretised]``.
"""

from __future__ import annotations

import argparse

import torch
from hydra import compose, initialize_config_dir

from benchmarks.timing import alternate, summarise
from bsi.build import build_backbone, build_process
from bsi.config import CONFIGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--data", default="digits", help="digits (1x8x8, 17 levels) or cifar (3x32x32, 256 levels)")
    parser.add_argument("--method", default="bsi")
    parser.add_argument("--output", default="discretised")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    shape, bins = ((1, 8, 8), 17) if args.data == "digits" else ((3, 32, 32), 256)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={args.model}", f"method={args.method}", f"output={args.output}"])
    proc = build_process(cfg, bins)
    backbone = build_backbone(cfg, shape, proc).to(args.device)
    denoiser = proc.parameterize(backbone)
    g = torch.Generator(device=args.device).manual_seed(0)
    x = (torch.randint(0, bins, (args.batch, *shape), device=args.device).float() * 2 / (bins - 1) - 1)
    x_in, t = torch.randn_like(x), torch.rand(args.batch, device=args.device)

    def bare():
        out = backbone(x_in, t)
        out.float().square().mean().backward()

    def engine():
        proc.training_loss(x, denoiser, generator=g).loss.mean().backward()

    if args.device == "cpu":
        torch.set_num_threads(1)
    times = alternate({"bare": bare, "engine": engine}, args.blocks, args.iters, args.device, warmup=5)
    result = summarise(times, "bare")
    bare_ms = 1000 * result["bare"]["seconds"]["median"]
    engine_ms = 1000 * result["engine"]["seconds"]["median"]
    overhead = result["engine"]["ratio"]
    n_params = sum(p.numel() for p in backbone.parameters())
    print(f"| {args.model} ({n_params / 1e6:.2f}M) | {args.method} | {args.output} | {args.data} | {args.batch} | "
          f"{bare_ms:.2f} | {engine_ms:.2f} | {100 * (overhead['median'] - 1):+.1f}% "
          f"({100 * (overhead['min'] - 1):+.1f}% to {100 * (overhead['max'] - 1):+.1f}%) |")


if __name__ == "__main__":
    main()
