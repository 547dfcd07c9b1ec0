"""bsi against the BSI paper's reference code (``martenlienen/bsi``) at equal parameters, side by side.

The reference is a checkout given by path (``--reference``), never copied here.  Its package is also
called ``bsi``; :func:`benchmarks.reference_models.load_reference` imports its model and loss modules
by path, so both live in one process and alternate block by block.  Only
its network (``bsi.models.mlp.DenoisingMLP`` with its MLP config: width 256, 2 hidden layers,
Nyquist time embedding of 32, Fourier features 6..8: 205,376 parameters on 8x8 digits), its loss
(``bsi.bsi.BSI.train_loss``, EDM preconditioning, low-discrepancy draws) and its EMA
(``bsi.tasks.ema_pytorch``, foreach) are used: its trainer needs Lightning, which this benchmark does
not install; they need ``einops`` and ``jaxtyping`` importable (``pip install einops jaxtyping``).

A training step is what both trainers do per step on in-memory batches: zero the gradients, loss,
backward, clip the gradient norm to 1 (the reference's Lightning ``gradient_clip_val``), fused
AdamW (each with its own settings), EMA update (every step; the reference's warm-up of 1000 steps
without averaging is switched off).  Ours adds the proposal's update, as ``bsi.train`` does.  Our
MLP is sized to 205k parameters by :data:`EQUAL_SIZE` (``point``: 205,376, the reference's matrix shapes;
``discretised``: 204,128); ``default size`` rows keep our config's (154,304 / 174,848).  The reference has
no discretised output: ``discretised`` rows are ours with it against the reference's point output.

Parts:

* ``network``: the MLPs alone, forward + backward, at batch 32, 128, 512: ours and bsi 0.2's
  (:data:`~benchmarks.reference_models.MLP_OPTIONS`), each at 205k parameters.
* ``steps``: seconds per step at batch 32, 128, 512, all variants in alternating blocks of one
  process, one torch thread, thread CPU time; the ratio is per block, its median and min-max.
* ``unet``: the same step with the small U-Nets at batch 16 on 1x28x28 and 3x32x32 (drawn levels).
* ``dit``: the same step with DiT-S/4 on both sides (ours ``model=dit``, the reference's ``DenoisingDiT`` at
  dim 384, depth 12, 6 heads, patch 4) on 3x32x32, at ``--dit-batch``; the table adds images per second.

``--precision bf16`` runs both sides' losses under bfloat16 autocast and ``--compile`` wraps both networks
in ``torch.compile`` (the ``steps``, ``unet`` and ``dit`` parts), as ``train.precision`` and
``train.compile`` do: on a GPU, ``--device cuda --precision bf16 --compile --parts steps unet dit
--dit-batch 256 --json benchmarks/results/reference_cuda.json``.
On a CPU the benchmark's process keeps freed memory for reuse (:func:`bsi.cpu.retain_freed_memory`), as
``bsi.train`` does, so that neither side's steps pay for glibc unmapping and faulting in their memory
again; in the ``process`` part our command-line variants do so too, the reference and ``point, as a
library`` do not.
* ``process``: fresh processes (``--child``) that import, build, load the digits and run N steps,
  in rotating order, a round at a time: CPU seconds to the end of the first step (start-up) and in
  all, and peak resident memory (:func:`benchmarks.timing.peak_rss_mb`).  Ours imports ``bsi.train``, as a
  run does; ``point, as a library`` builds the point variant from ``bsi.engine``, ``bsi.models`` and
  ``bsi.ema`` alone (no hydra), as the reference's side is built from its modules.  Ratios are per round.

    python -m benchmarks.reference --reference /tmp/bsi_ref [--parts network steps unet dit process] [--quick]
        [--json benchmarks/results/reference_cpu.json] [--device cuda] [--precision bf16] [--compile]
    python -m benchmarks.reference --render benchmarks/results/reference_cpu.json   # the tables only
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from benchmarks.reference_models import (
    MLP_OPTIONS,
    cycle,
    digits,
    levels,
    load_reference,
    mlp_option,
    ours_model,
    random_images,
    reference_model,
    reference_network,
)
from benchmarks.reference_report import render_device
from benchmarks.timing import (
    alternate,
    fmt_ratio,
    fresh_rounds,
    machine,
    peak_rss_mb,
    per_round,
    spread,
    summarise,
)
from bsi.atomic import write_json
from bsi.cpu import retain_freed_memory

# one results file per device kind; docs/performance.md shows each that exists
RESULTS = {kind: Path(__file__).resolve().parent / "results" / f"reference_{kind}.json" for kind in ("cpu", "cuda")}
# Our MLP at the reference's 205,376 parameters: with the reference's input (the pixels, three Fourier
# features per pixel and 32 sinusoids of t) the point output's three matrices have the reference's
# shapes exactly; the discretised output's last matrix is twice as tall, so its width is 240 (204,128).
EQUAL_SIZE = {"point": {"width": 256, "embedding_dim": 32, "fourier_features": "[2,4]"},
              "discretised": {"width": 240, "embedding_dim": 32, "fourier_features": "[2,4]"}}
# variant -> (output, MLP options over the config's): ours; "reference": theirs
VARIANTS: dict[str, tuple[str, dict[str, int]] | None] = {
    "reference": None,
    "point": ("point", EQUAL_SIZE["point"]),
    "discretised": ("discretised", EQUAL_SIZE["discretised"]),
    "point, default size": ("point", {}),
    "discretised, default size": ("discretised", {}),
}
PROCESS_VARIANTS = ("reference", "point", "discretised")
# The process part adds the point variant built from the library alone (no hydra, no bsi.train), as
# the reference's side is built from its modules alone.
LIBRARY = "point, as a library"
PROCESS_PART_VARIANTS = (*PROCESS_VARIANTS, LIBRARY)
BATCHES = {32: 100, 128: 40, 512: 12}  # batch -> steps per block
# The small U-Nets at batch 16: ours the mnist5k preset (32 channels in 8 groups, 2 blocks), theirs with
# dim 32 and 2 levels (the size benchmarks.mnist5k runs it at); shape -> steps per block.
UNET_SHAPES = {(1, 28, 28): 2, (3, 32, 32): 2}
UNET_BATCH = 16
# DiT-S/4 at batch 16 on 3x32x32 (on a GPU: --dit-batch), steps per block
DIT_SHAPES = {(3, 32, 32): 2}
PARTS = ["network", "steps", "unet", "dit", "inference", "process", "startup"]


@dataclass(frozen=True)
class StepOptions:
    """How both sides run a step: ``precision`` ``fp32`` or ``bf16`` (autocast around the loss, as
    ``train.precision``), ``compile`` the network with ``torch.compile`` (as ``train.compile``)."""

    precision: str = "fp32"
    compile: bool = False

    def autocast(self, device: str):
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def network(self, net: nn.Module) -> nn.Module:
        return torch.compile(net) if self.compile else net


def reference_step(ref: dict[str, ModuleType], data: torch.Tensor, batch: int, device: str, seed: int = 0,
                   kind: str = "mlp", options: StepOptions = StepOptions()):
    """``(step, parameters)``: the reference's training step on ``data`` ``(N, C, H, W)`` (a backbone ``kind``)."""
    bsi = reference_model(ref, tuple(data.shape[1:]), device, seed, kind)
    net = bsi.model
    bsi.model = options.network(net)
    params = list(net.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, fused=True)
    ema = ref["tasks.ema_pytorch"].EMA(net, beta=0.999, update_after_step=0, update_every=1, include_online_model=False,
                                       use_foreach=True)
    generator = torch.Generator(device).manual_seed(seed + 1)
    next_batch = cycle(data, batch)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with options.autocast(device):
            loss = bsi.train_loss(next_batch(), generator).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.update()

    return step, sum(p.numel() for p in params)


def ours_step(output: str, sizes: dict[str, int], data: torch.Tensor, batch: int, device: str, seed: int = 0,
              kind: str = "mlp", options: StepOptions = StepOptions()):
    """``(step, parameters)``: our training step (as ``bsi.train``'s, on in-memory batches) on ``data``."""
    cfg, proc, backbone, _ = ours_model(output, sizes, tuple(data.shape[1:]), device, seed, kind)
    return training_step(proc, backbone, train_settings(cfg), data, batch, device, seed, options)


TRAIN_SETTINGS = ("lr", "betas", "weight_decay", "ema_decay", "grad_clip")


def train_settings(cfg) -> dict:
    """The optimiser's, EMA's and clipping's settings of a composed config (:data:`TRAIN_SETTINGS`)."""
    return {k: list(cfg.train[k]) if k == "betas" else float(cfg.train[k]) for k in TRAIN_SETTINGS}


def library_step(train: dict, data: torch.Tensor, batch: int, device: str, seed: int = 0):
    """``(step, parameters)``: the ``point`` variant built as a library user builds it, from ``bsi.engine``,
    ``bsi.models`` and ``bsi.ema`` alone (no hydra, no config), with ``train`` (:func:`train_settings`)."""
    from bsi.engine import make_process
    from bsi.models import MLP

    proc = make_process("bsi", output="point", data_bins=levels("mlp"))
    torch.manual_seed(seed)
    sizes = {k: json.loads(v) if isinstance(v, str) else v for k, v in EQUAL_SIZE["point"].items()}
    channels, size = data.shape[1], data.shape[-1]
    backbone = MLP(proc.in_channels(channels), proc.out_channels(channels), size, **sizes).to(device)
    return training_step(proc, backbone, train, data, batch, device, seed)


def training_step(proc, backbone: nn.Module, train: dict, data: torch.Tensor, batch: int, device: str, seed: int = 0,
                  options: StepOptions = StepOptions()):
    """``(step, parameters)``: ``bsi.train``'s step for ``backbone`` under ``proc`` on in-memory batches of ``data``."""
    from bsi.ema import EMA

    denoiser = proc.parameterize(options.network(backbone))
    params = list(backbone.parameters())
    optimizer = torch.optim.AdamW(params, lr=train["lr"], betas=tuple(train["betas"]), weight_decay=train["weight_decay"],
                                  fused=True)
    ema = EMA(backbone, train["ema_decay"])
    generator = torch.Generator(device).manual_seed(seed + 1)
    next_batch = cycle(data, batch)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with options.autocast(device):
            out = proc.training_loss(next_batch(), denoiser, generator=generator, check=False)  # as bsi.train's step
        out.loss.mean().backward()
        torch.nn.utils.clip_grad_norm_(params, train["grad_clip"])
        optimizer.step()
        ema.update(backbone)
        proc.proposal.update(out.lam.detach(), out.integrand)

    return step, sum(p.numel() for p in params)


def build_step(variant: str, reference: Path, data: torch.Tensor, batch: int, device: str, seed: int = 0,
               kind: str = "mlp", options: StepOptions = StepOptions()):
    """``(step, parameters)`` of ``variant`` (a key of :data:`VARIANTS`) with a backbone ``kind``."""
    if VARIANTS[variant] is None:
        return reference_step(load_reference(reference), data, batch, device, seed, kind, options)
    output, sizes = VARIANTS[variant]
    return ours_step(output, sizes if kind == "mlp" else {}, data, batch, device, seed, kind, options)


def part_steps(reference: Path, device: str, blocks: int, batches: dict[int, int],
               options: StepOptions = StepOptions()) -> dict:
    data = digits(device)
    out = {}
    for batch, iters in batches.items():
        steps, params = {}, {}
        for i, variant in enumerate(VARIANTS):  # each variant draws its own noise
            steps[variant], params[variant] = build_step(variant, reference, data, batch, device, seed=10 * i,
                                                         options=options)
        times = alternate(steps, blocks, iters, device, warmup=3)
        out[str(batch)] = {"parameters": params, "iters": iters, **summarise(times, "reference")}
        print(f"batch {batch}: " + ", ".join(f"{v} {fmt_ratio(r['ratio'])}" for v, r in out[str(batch)].items()
                                             if isinstance(r, dict) and "ratio" in r), flush=True)
    return out


def part_network(reference: Path, device: str, blocks: int) -> dict:
    """The networks alone, forward + backward of a mean square, at batch 32, 128 and 512."""
    nets = {"reference": reference_network(load_reference(reference), (1, 8, 8))}
    nets |= {name: mlp_option(options) for name, options in MLP_OPTIONS.items()}
    nets = {k: v.to(device) for k, v in nets.items()}
    out = {}
    for batch, iters in BATCHES.items():
        g = torch.Generator().manual_seed(batch)
        x, t = torch.randn(batch, 1, 8, 8, generator=g).to(device), torch.rand(batch, generator=g).to(device)

        def step(net: nn.Module) -> Callable[[], None]:
            def run() -> None:
                net.zero_grad(set_to_none=True)
                net(x, t).square().mean().backward()
            return run

        times = alternate({k: step(v) for k, v in nets.items()}, blocks, 3 * iters, device, warmup=5)
        out[str(batch)] = {"parameters": {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()},
                           **summarise(times, "reference")}
        print(f"network, batch {batch}: " + ", ".join(f"{k} {fmt_ratio(out[str(batch)][k]['ratio'])}" for k in nets),
              flush=True)
    return out


def part_inference(reference: Path, device: str, blocks: int) -> dict:
    """Likelihood (infinite-step ELBO, one draw, batch 512) and ancestral sampling (10 and 100 steps, 256
    samples) with the untrained equal-size MLPs: the cost of the machinery around equal networks."""
    data = digits(device)[:512]
    bsi = reference_model(load_reference(reference), (1, 8, 8), device)
    ours = {v: ours_model(*VARIANTS[v], (1, 8, 8), device)[1:] for v in ("point", "discretised")}
    g = {v: torch.Generator(device).manual_seed(i) for i, v in enumerate(PROCESS_VARIANTS)}
    out = {}
    with torch.no_grad():
        fns = {"reference": lambda: bsi.elbo(data, 1, 1, g["reference"])}
        fns |= {v: (lambda v=v: ours[v][0].elbo(data, ours[v][2], n_samples=1, generator=g[v])) for v in ours}
        out["likelihood"] = summarise(alternate(fns, blocks, 5, device), "reference")
        for steps in (10, 100):
            grid = torch.linspace(0.0, 1.0, steps + 1, device=device)
            fns = {"reference": lambda: bsi.sample(256, g["reference"], t=grid)}
            fns |= {v: (lambda v=v: ours[v][0].sample(ours[v][2], (256, 1, 8, 8), steps=steps, solver="ancestral",
                                                      generator=g[v], device=device)) for v in ours}
            times = alternate(fns, blocks, max(1, 20 // steps), device)
            out[f"sampling, {steps} steps"] = summarise(times, "reference")
    for name, row in out.items():
        print(f"{name}: " + ", ".join(f"{v} {fmt_ratio(row[v]['ratio'])}" for v in PROCESS_VARIANTS), flush=True)
    return out


def part_images(kind: str, shapes: dict[tuple[int, ...], int], batch: int, reference: Path, device: str,
                blocks: int, options: StepOptions = StepOptions()) -> dict:
    """The training step of a ``kind`` backbone (``unet``, ``dit``) on 8-bit images of each shape, per block."""
    out = {}
    for shape, iters in shapes.items():
        data = random_images(shape, device, n=max(256, batch))
        steps, params = {}, {}
        for i, variant in enumerate(PROCESS_VARIANTS):
            steps[variant], params[variant] = build_step(variant, reference, data, batch, device, 10 * i, kind, options)
        times = alternate(steps, blocks, iters, device, warmup=1 + 2 * options.compile)
        key = "x".join(map(str, shape))
        out[key] = {"parameters": params, "iters": iters, "batch": batch, **summarise(times, "reference")}
        print(f"{kind} {key}: " + ", ".join(f"{v} {fmt_ratio(out[key][v]['ratio'])}" for v in PROCESS_VARIANTS),
              flush=True)
    return out


def child(variant: str, reference: Path, steps: int, batch: int, device: str, cache: Path, train: dict) -> None:
    """One fresh process: import, build, load, ``steps`` steps; prints a JSON line of CPU seconds and memory."""
    torch.set_num_threads(1)
    seed = PROCESS_PART_VARIANTS.index(variant)
    if variant in PROCESS_VARIANTS and VARIANTS[variant] is not None:
        retain_freed_memory()  # as a run of ours does on a CPU (cpu_retain_memory=true)
    if variant == LIBRARY:
        step, _ = library_step(train, digits(device, cache), batch, device, seed)
    else:
        if VARIANTS[variant] is not None:
            import bsi.train  # noqa: F401  (what a run of ours imports before its first step)
        step, _ = build_step(variant, reference, digits(device, cache), batch, device, seed=seed)
    step()
    first = time.process_time()  # CPU seconds of this process since it started, imports included
    for _ in range(steps - 1):
        step()
    print(json.dumps({"first_step_s": first, "total_s": time.process_time(), "maxrss_mb": peak_rss_mb()}))


STARTUP = {  # what a fresh interpreter imports, per row of the start-up table
    "torch alone": "import torch",
    "bsi.train": "import bsi.train",
    "the reference's modules": "from benchmarks.reference_models import load_reference; load_reference(REFERENCE)",
}


def part_startup(reference: Path, rounds: int) -> dict:
    """CPU seconds and peak memory of importing, in fresh interpreters, rotating order."""
    probe = ("import time\nREFERENCE = {ref!r}\n{code}\ncpu = time.process_time()\n"
             "import json\nfrom benchmarks.timing import peak_rss_mb\n"
             "print(json.dumps({{'cpu_s': cpu, 'peak_mb': peak_rss_mb()}}))")
    commands = {name: [sys.executable, "-c", probe.format(ref=str(Path(reference).resolve()), code=code)]
                for name, code in STARTUP.items()}
    return {name: {key: spread([run[key] for run in rs]) for key in ("cpu_s", "peak_mb")}
            for name, rs in fresh_rounds(commands, rounds).items()}


def part_process(reference: Path, device: str, rounds: int, step_counts: tuple[int, ...], batch: int = 128) -> dict:
    cache = Path(tempfile.mkdtemp()) / "digits.pt"
    digits("cpu", cache)
    train = json.dumps(train_settings(ours_model("point", {}, (1, 8, 8), "cpu")[0]))
    variants = PROCESS_PART_VARIANTS
    out = {}
    for steps in step_counts:
        commands = {variant: [sys.executable, "-m", "benchmarks.reference", "--reference", str(reference),
                              "--child", variant, "--cache", str(cache), "--train", train, "--steps", str(steps),
                              "--batch", str(batch), "--device", device] for variant in variants}
        row = per_round(fresh_rounds(commands, rounds), ("first_step_s", "total_s", "maxrss_mb"), "reference")
        out[str(steps)] = {"batch": batch, "rounds": rounds, **row}
        print(f"{steps} steps: " + ", ".join(f"{k} {v} {fmt_ratio(row[k][v]['ratio'])}" for k in row for v in row[k]
                                              if v != "reference"), flush=True)
    return out


def render(results: dict[str, dict]) -> str:
    """:mod:`benchmarks.report`'s entry: the tables of each device's results file that exists."""
    parts = [render_device(results["cpu"])] if "cpu" in results else []
    if "cuda" in results:
        parts += ["### On a GPU", "", render_device(results["cuda"])]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="checkout of martenlienen/bsi (needed unless --render)")
    parser.add_argument("--render", type=Path, help="print the markdown tables of this results file; measure nothing")
    parser.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    parser.add_argument("--quick", action="store_true", help="fewer blocks and rounds")
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--image-blocks", type=int, default=5, help="blocks of the unet and dit parts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="autocast around both sides' losses (steps, unet, dit parts)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides' networks (steps, unet, dit)")
    parser.add_argument("--dit-batch", type=int, default=16, help="DiT-S/4 batch (a GPU: 128 or more)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (default: benchmarks/results/reference_{cpu,cuda}.json)")
    parser.add_argument("--child", choices=PROCESS_PART_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--train", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=300, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        return print(render_device(json.loads(args.render.read_text())))
    if args.reference is None:
        parser.error("--reference is required")
    if args.child:
        return child(args.child, args.reference, args.steps, args.batch, args.device, args.cache, json.loads(args.train))
    torch.set_num_threads(1)
    # What bsi.train does on a CPU, here for the whole process and so for both sides alike: which side's
    # allocation pattern glibc happens to unmap and fault in again each step is not a property of its code.
    retained = args.device == "cpu" and retain_freed_memory()
    results: dict = {"machine": machine(args.device), "device": args.device, "torch": torch.__version__,
                     "date": datetime.date.today().isoformat(), "retain_freed_memory": retained}
    options = StepOptions(args.precision, args.compile)
    results |= {"precision": args.precision, "compile": args.compile}
    if "network" in args.parts:
        results["network"] = part_network(args.reference, args.device, 3 if args.quick else args.blocks)
    if "steps" in args.parts:
        results["steps"] = part_steps(args.reference, args.device, 3 if args.quick else args.blocks, BATCHES, options)
    if "inference" in args.parts:
        results["inference"] = part_inference(args.reference, args.device, 3 if args.quick else args.blocks)
    if "unet" in args.parts:
        results["unet"] = part_images("unet", UNET_SHAPES, UNET_BATCH, args.reference, args.device,
                                      3 if args.quick else args.image_blocks, options)
    if "dit" in args.parts:
        results["dit"] = part_images("dit", DIT_SHAPES, args.dit_batch, args.reference, args.device,
                                     3 if args.quick else args.image_blocks, options)
    if "process" in args.parts:
        results["process"] = part_process(args.reference, args.device, 2 if args.quick else args.rounds,
                                          (50,) if args.quick else (300, 1500))
    if "startup" in args.parts:
        results["startup"] = part_startup(args.reference, 2 if args.quick else args.rounds)
    path = args.json or RESULTS.get(torch.device(args.device).type)
    if path:
        path = Path(path)
        # a run of some parts keeps the other parts' rows from the results file
        earlier = json.loads(path.read_text()) if path.is_file() else {}
        results |= {part: earlier[part] for part in PARTS if part in earlier and part not in args.parts}
        # the parts in a fixed order, so that a rerun of some parts changes only their lines in the file
        order = [key for key in results if key not in PARTS] + [part for part in PARTS if part in results]
        write_json(path, {key: results[key] for key in order})
    print(render_device(results))


if __name__ == "__main__":
    main()

