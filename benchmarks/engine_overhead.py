"""What the engine adds to a training step, measured against the bare backbone in one run.

Both loops run forward + backward of the same backbone on the same batch shapes; the engine loop
adds what ``proc.training_loss`` does (proposal draw, belief draw, preconditioning, discretised
output, importance weighting).  Blocks of the two loops alternate (thread CPU time on a CPU; the
overhead is the per-block ratio's median and min-max, see :mod:`benchmarks.timing`).

    python -m benchmarks.engine_overhead                     # the standard rows (:data:`STANDARD`)
    python -m benchmarks.engine_overhead --model unet --data cifar --output point --batch 16 --iters 2

Each row replaces the row of the same model, method, output, data, batch and device in :data:`RESULTS`.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from benchmarks.markdown import provenance, table
from benchmarks.timing import alternate, fmt_ratio, machine, summarise
from bsi.atomic import write_json
from bsi.build import build_backbone, build_process
from bsi.config import CONFIGS

RESULTS = "benchmarks/results/engine_overhead.json"
DATA = {"digits": ((1, 8, 8), 17), "cifar": ((3, 32, 32), 256)}  # name -> (shape, levels)
# (model config, data, output, batch, calls per block): the default MLP on the digits and the
# default small U-Net on CIFAR-shaped data, with each output
STANDARD = [("mlp", "digits", "point", 128, 250), ("mlp", "digits", "discretised", 128, 250),
            ("unet", "cifar", "point", 16, 3), ("unet", "cifar", "discretised", 16, 3)]
KEY = ("model_config", "method", "output", "data", "batch", "device")


def measure(model: str, data: str, method: str, output: str, batch: int, iters: int, blocks: int, device: str) -> dict:
    """One row: milliseconds per forward + backward, bare and through the engine, and their per-block ratio."""
    shape, bins = DATA[data]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", f"method={method}", f"output={output}"])
    torch.manual_seed(0)
    proc = build_process(cfg, bins)
    backbone = build_backbone(cfg, shape, proc).to(device)
    denoiser = proc.parameterize(backbone)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, bins, (batch, *shape), device=device).float() * 2 / (bins - 1) - 1
    x_in, t = torch.randn_like(x), torch.rand(batch, device=device)

    def bare():
        backbone(x_in, t).float().square().mean().backward()

    def engine():
        proc.training_loss(x, denoiser, generator=g).loss.mean().backward()

    result = summarise(alternate({"bare": bare, "engine": engine}, blocks, iters, device, warmup=2), "bare")
    n_params = sum(p.numel() for p in backbone.parameters())
    return {"model_config": model, "model": f"{cfg.model.name} ({n_params / 1e6:.2f}M)", "method": method,
            "output": output, "data": "x".join(map(str, shape)), "batch": batch, "device": torch.device(device).type,
            "bare_ms": 1000 * result["bare"]["seconds"]["median"], "engine_ms": 1000 * result["engine"]["seconds"]["median"],
            "ratio": result["engine"]["ratio"], "blocks": blocks, "iters": iters}


def table_rows(rows: list[dict]) -> list[tuple]:
    return [(r["model"], r["method"], r["output"], f"{r['data']}, batch {r['batch']}", r["device"],
             f"{r['bare_ms']:.2f}", f"{r['engine_ms']:.2f}", fmt_ratio(r["ratio"])) for r in rows]


HEADER = ["backbone", "method", "output", "data", "device", "bare (ms)", "engine (ms)", "engine / bare"]


def render(results: dict) -> str:
    rows = results["rows"]
    lines = [provenance(*rows), "",
             "Milliseconds per forward + backward (median over blocks) and the per-block ratio, median (min-max):", "",
             table(HEADER, table_rows(rows))]
    earlier = results.get("earlier")
    if earlier:  # one figure per loop, no blocks: quoted as they were measured, without a spread
        lines += ["", earlier["note"] + " " + "; ".join(
            f"{r['model']}, {r['output']} output, {r['data']} at batch {r['batch']}: {r['bare_ms']:.2f} ms bare, "
            f"{r['engine_ms']:.2f} ms through the engine" for r in earlier["rows"]) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model config (mlp, unet, dit, ...); without it, the standard rows")
    parser.add_argument("--data", default="digits", choices=list(DATA), help="digits (1x8x8, 17 levels) or cifar (3x32x32, 256)")
    parser.add_argument("--method", default="bsi")
    parser.add_argument("--output", default="discretised")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=50, help="calls per block")
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(RESULTS), help="results file; the rows run replace theirs")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    plan = STANDARD if args.model is None else [(args.model, args.data, args.output, args.batch, args.iters)]
    rows = []
    for model, data, output, batch, iters in plan:
        row = measure(model, data, args.method, output, batch, iters, args.blocks, args.device)
        command = ("python -m benchmarks.engine_overhead" if args.model is None else
                   f"python -m benchmarks.engine_overhead --model {model} --data {data} --method {args.method} "
                   f"--output {output} --batch {batch} --iters {iters} --device {row['device']}")
        command += "" if args.blocks == parser.get_default("blocks") else f" --blocks {args.blocks}"
        rows.append({**row, "command": command, "machine": machine(args.device), "measured": date.today().isoformat()})
        print(table(HEADER, table_rows(rows[-1:])), flush=True)
    earlier = json.loads(args.out.read_text()) if args.out.is_file() else {}
    key = {tuple(r[k] for k in KEY) for r in rows}
    kept = [r for r in earlier.get("rows", []) if tuple(r.get(k) for k in KEY) not in key]
    write_json(args.out, {**earlier, "rows": kept + rows})


if __name__ == "__main__":
    main()
