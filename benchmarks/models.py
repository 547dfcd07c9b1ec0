"""Training throughput and peak memory of every backbone config.

For each model config: a forward and backward pass (MSE against a random target, random ``t``) on
a batch of the config's data shape, timed after warm-up.  Reports images (for the transformers,
text8 sequences of 256 characters) per second and the peak memory of a step: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak resident set (each
config runs in a fresh process, so peaks don't carry over).

Batch sizes: the papers' (VDM CIFAR-10 128, DiT ImageNet32 512, BFN text8 416, our digits default
128) where they fit; on CUDA a batch that runs out of memory is halved until it fits; on CPU the big
models run at small batches (``CPU_BATCH``) so the whole run takes a few minutes.  The table says
which batch ran.

    python -m benchmarks.models                       # CPU, fp32, every config
    python -m benchmarks.models --device cuda --dtype bf16 --compile
    python -m benchmarks.models --only unet_paper DiT-L/2 --batch 32
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.markdown import command_line, provenance, table
from bsi.atomic import write_json
from bsi.config import CONFIGS

RESULTS = "benchmarks/results/models.json"


@dataclass(frozen=True)
class Case:
    label: str
    config: str  # bsi/configs/model/<config>.yaml
    name: str | None  # model.name override (a DiT size)
    shape: tuple[int, ...]  # data (C, H, W), or (C, L) for sequences
    batch: int  # the paper's (or our default's) batch size
    out_channels: int | None = None  # default 2C, the discretised output; text8's discrete BFN: C logits


CASES = [
    Case("mlp", "mlp", None, (1, 8, 8), 128),
    Case("mlp_v02", "mlp_v02", None, (1, 8, 8), 128),
    Case("unet", "unet", None, (3, 32, 32), 128),
    Case("unet_paper", "unet_paper", None, (3, 32, 32), 128),
    Case("DiT-S/4", "dit", None, (3, 32, 32), 512),
    Case("DiT-S/2", "dit", "DiT-S/2", (3, 32, 32), 512),
    Case("DiT-B/2", "dit", "DiT-B/2", (3, 32, 32), 512),
    Case("DiT-L/2", "dit", "DiT-L/2", (3, 32, 32), 512),
    Case("DiT-XL/2", "dit", "DiT-XL/2", (3, 32, 32), 512),
    Case("transformer", "transformer", None, (27, 256), 416, out_channels=27),
    Case("transformer_paper", "transformer_paper", None, (27, 256), 416, out_channels=27),
]
# CPU batches that keep each measurement to seconds on two cores.
CPU_BATCH = {"mlp": 128, "mlp_v02": 128, "unet": 16, "unet_paper": 2, "DiT-S/4": 32, "DiT-S/2": 8, "DiT-B/2": 2, "DiT-L/2": 1,
             "DiT-XL/2": 1, "transformer": 16, "transformer_paper": 1}


def model_options(case: Case) -> dict:
    """The config's keys, as the training code passes them to ``build_model``."""
    overrides = [f"+model={case.config}"] + ([f"model.name={case.name}"] if case.name else [])
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return OmegaConf.to_container(compose(config_name=None, overrides=overrides).model, resolve=True)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(case: Case, options: dict, batch: int, device: str, dtype: str, compile: bool, steps: int,
            warmup: int) -> dict:
    """Time forward+backward passes (at least ``steps``, at least a second) after ``warmup``."""
    from bsi.models import build_model  # before the memory baseline: imports are not the model's

    torch.manual_seed(0)
    dev = torch.device(device)
    rss_before = peak_rss_bytes()
    channels, size = case.shape[0], case.shape[-1]
    out_channels = case.out_channels or 2 * channels  # 2C: the discretised output
    model = build_model(**options, in_channels=channels, out_channels=out_channels, image_size=size).to(dev).train()
    params = sum(p.numel() for p in model.parameters())
    forward = torch.compile(model) if compile else model
    x = torch.randn(batch, *case.shape, device=dev)
    target = torch.randn(batch, out_channels, *case.shape[1:], device=dev)
    t = torch.rand(batch, device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with autocast:
            loss = (forward(x, t).float() - target).square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start, done = time.perf_counter(), 0
    while done < steps or time.perf_counter() - start < 1.0:
        step()
        done += 1
    sync()
    seconds = (time.perf_counter() - start) / done
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else peak_rss_bytes() - rss_before
    return dict(params=params, batch=batch, ms=1000 * seconds, images_per_s=batch / seconds, peak_bytes=peak)


def run_isolated(case: Case, batch: int, args: argparse.Namespace) -> dict:
    """One measurement in a fresh process; on CUDA, halve the batch until it fits."""
    context = multiprocessing.get_context("spawn")
    while True:
        with context.Pool(1) as pool:
            try:
                return pool.apply(measure, (case, model_options(case), batch, args.device, args.dtype, args.compile,
                                            args.steps, args.warmup))
            except torch.OutOfMemoryError:
                if batch == 1:
                    raise
                batch //= 2


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def rate_text(x: float) -> str:
    """Three significant digits, thousands separated."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def render(results: dict) -> str:
    """One row per config: parameters, then batch and throughput (and peak memory on a GPU) per setting."""
    settings = results["settings"]
    cpu, gpu, compiled = (settings.get(k, {"rows": []}) for k in ("cpu, fp32", "cuda, bf16", "cuda, bf16, compiled"))
    by = {name: {r["label"]: r for r in s["rows"]} for name, s in (("cpu", cpu), ("gpu", gpu), ("compiled", compiled))}
    rows = []
    for case in CASES:
        found = [by[k][case.label] for k in by if case.label in by[k]]
        if not found:
            continue
        unit = " sequences/s" if case.out_channels else ""
        c, g, k = (by[name].get(case.label) for name in ("cpu", "gpu", "compiled"))
        rate = rate_text(g["images_per_s"]) + (f" / {rate_text(k['images_per_s'])} (batch {k['batch']})" if k else "") if g else "–"
        rows.append((f"`{case.config}`" + (f" {case.label}" if case.config == "dit" else ""), f"{found[0]['params']:,}",
                     c["batch"] if c else "–", rate_text(c["images_per_s"]) + unit if c else "–",
                     g["batch"] if g else "–", rate,
                     f"{g['peak_bytes'] / 2**30:.1f} GiB" if g and g["peak_bytes"] else "–"))
    lines = [provenance(*settings.values()), "",
             table(["config (`model=`)", "parameters", "CPU batch", "CPU images/s", "GPU batch",
                    "GPU images/s (eager / compiled)", "GPU peak memory"], rows)]
    small = [f"{c.label} at the paper's batch of {c.batch} (it ran at {by['gpu'][c.label]['batch']})" for c in CASES
             if c.label in by["gpu"] and by["gpu"][c.label]["batch"] < c.batch]
    if small:
        lines += ["", "Does not fit the GPU's memory: " + "; ".join(small) + ". Use several GPUs or `train.accumulate`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast to bfloat16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--only", nargs="+", help="labels of the configs to run (default: all)")
    p.add_argument("--batch", type=int, help="one batch size for every config (default: the paper's; small on CPU)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (at least; and at least a second)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (more with --compile)")
    p.add_argument("--out", default=RESULTS, help="results file; this setting's rows are replaced in it")
    args = p.parse_args(argv)

    cases = [c for c in CASES if not args.only or c.label in args.only]
    setting = f"{'cpu' if args.device == 'cpu' else 'cuda'}, {args.dtype}" + (", compiled" if args.compile else "")
    print(f"| config | data | parameters | batch | {setting}: images/s | ms/step | peak memory |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for case in cases:
        batch = args.batch or (CPU_BATCH[case.label] if args.device == "cpu" else case.batch)
        r = run_isolated(case, batch, args)
        note = "" if r["batch"] == case.batch else f" (paper {case.batch})"
        data = "x".join(map(str, case.shape))
        print(f"| {case.label} | {data} | {r['params'] / 1e6:.2f}M | {r['batch']}{note} | "
              f"{r['images_per_s']:.1f} | {r['ms']:.0f} | {gib(r['peak_bytes'])} |", flush=True)
        rows.append(dict(label=case.label, **r))
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {"settings": {}}
    machine = (f"{os.cpu_count()}-core {platform.machine()} CPU" if args.device == "cpu"
               else torch.cuda.get_device_name(args.device)) + f", {args.dtype}" + (", torch.compile" if args.compile else "")
    previous = results["settings"].get(setting, {"rows": []})["rows"]
    keep = [r for r in previous if r["label"] not in {r["label"] for r in rows}]
    results["settings"][setting] = {"command": command_line("benchmarks.models", argv or sys.argv[1:]),
                                    "machine": machine, "measured": date.today().isoformat(), "rows": keep + rows}
    write_json(path, results)


if __name__ == "__main__":
    main()
