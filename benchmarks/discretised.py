"""What the discretised output costs against a point prediction: training step, likelihood, sampling.

Three variants of each measurement run in alternating blocks in one process, on one thread, so that
machine noise hits them alike:

* ``point``: the plain ``x_hat`` output (``output=point``);
* ``discretised``: the discretised Gaussian output as the engine computes it now
  (``bsi.engine.discretised``: the mean in O(1) work per element, level draws by quantising
  ``m + s z``);
* ``discretised, before``: the same network and output with the mean summed over all ``bins - 1``
  inner edges' CDF values and levels drawn from the cumulative probability table, as the engine did
  before its mean took O(1) work per element (a local copy of that code, below).

Parts (``--part``):

* ``step``: forward + backward of backbone + ``proc.training_loss``: the digits MLP (1x8x8, 17 levels)
  at batch 128 and 512, the small U-Net (``model=unet``, 3x32x32, 256 levels) at batch 16 and 64;
  with ``--device cuda``, the U-Net at batch 128 and DiT-S/4 (``model=dit``) at batch 256 on the GPU,
  in bfloat16 autocast;
* ``spread``: the MLP rows of ``step`` (``point`` and ``discretised`` only) in ``--processes`` fresh
  processes, each ratio the median of its blocks: the ratio moves more from one process to the
  next than between blocks of one, so this is the figure to compare with a target;
* ``trainer``: ``bsi.train.train`` itself on the digits with the MLP at batch 128 and 512, seconds per
  training step (clipping, AdamW, EMA and the loop's bookkeeping included), ``point`` against
  ``discretised`` only;
* ``elbo``: ``proc.elbo`` (infinite-step, one draw: two network calls per example) with the MLP,
  time per network call;
* ``sample``: ancestral and ``ode2`` samples/s with the MLP.

Each row holds the median time over blocks, its spread (min-max over blocks) and the ratio to
``point`` (median of the per-round ratios, with their min-max).  A run replaces the parts it ran in
:data:`RESULTS` and keeps the others.
Run: ``python -m benchmarks.discretised [--part step|spread|trainer|elbo|sample|all] [--quick] [--processes 5]
[--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from datetime import date
from functools import cached_property
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from benchmarks.markdown import provenance, table
from benchmarks.timing import alternate
from benchmarks.timing import machine as describe_machine  # `machine` names the string below
from benchmarks.train import QUIET, ours
from bsi.atomic import write_json
from bsi.build import build_backbone, build_process
from bsi.config import CONFIGS
from bsi.engine import DiscretisedOutput
from bsi.engine.random import rand

NAMES = {"mlp": "MLP", "unet": "small U-Net", "dit": "DiT-S/4"}
DATA = {"mlp": ((1, 8, 8), 17), "unet": ((3, 32, 32), 256), "dit": ((3, 32, 32), 256)}


class ExactSumOutput(DiscretisedOutput):
    """The discretised output as it was before the O(1) mean: O(bins) mean and table-based level draws."""

    @cached_property
    def mean(self):
        m, scale, bins = self._gaussian
        inner = (self.levels[1:] + self.levels[:-1]) / 2
        z = (inner - m[..., None]) / scale[..., None]
        return self.levels[0] + 2.0 / (bins - 1) * torch.special.ndtr(-z).sum(-1)

    def _draw_level(self, generator):
        u = rand(self.mean.shape, generator, self.mean.device, self.mean.dtype)
        k = (self.probs.cumsum(-1) < u[..., None]).sum(-1).clamp(max=self.bins - 1)
        return self.levels[k]


def as_variant(denoiser, cls):
    """``denoiser`` with its discretised output re-wrapped as ``cls`` (same network, same m and s)."""

    def wrapped(mu, lam):
        out = denoiser(mu, lam)
        return cls(gaussian=out._gaussian)

    return wrapped


def build(model: str, output: str, seed: int = 0, device: str = "cpu"):
    """``(proc, backbone, denoiser)`` for ``model`` on its data with ``output``, seeded weights on ``device``."""
    shape, bins = DATA[model]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "method=bsi", f"output={output}"])
    proc = build_process(cfg, bins)
    torch.manual_seed(seed)
    backbone = build_backbone(cfg, shape, proc).to(device)
    return proc, backbone, proc.parameterize(backbone)


def variants(model: str, device: str = "cpu") -> dict[str, tuple]:
    """``name -> (proc, backbone, denoiser)`` for point, discretised and discretised-before."""
    proc_p, net_p, den_p = build(model, "point", device=device)
    proc_d, net_d, den_d = build(model, "discretised", device=device)
    out = {
        "point": (proc_p, net_p, den_p),
        "discretised": (proc_d, net_d, den_d),
        "discretised, before": (proc_d, net_d, as_variant(den_d, ExactSumOutput)),
    }
    return out


def measurement(label: str, times: dict[str, list[float]], unit: str = "ms", per: float = 1.0,
                rate: bool = False) -> dict:
    """One result row: per variant the median value (min-max) over blocks and the median per-round ratio
    to ``point`` (min-max); for rates (samples/s) the ratio is of speeds, otherwise of times."""
    base = times["point"]
    scale = 1000.0 if unit == "ms" else 1.0
    row: dict = {"label": label, "unit": "samples/s" if rate else unit, "variants": {}}
    for name, t in times.items():
        vals = [per / x for x in t] if rate else [scale * x / per for x in t]
        ratios = [b / x if rate else x / b for x, b in zip(t, base)]
        row["variants"][name] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                                 "ratio": [statistics.median(ratios), min(ratios), max(ratios)], "blocks": t}
    print(f"{label}: " + ", ".join(f"{n} {v['median']:.3g} {row['unit']} ({v['ratio'][0]:.2f}x)"
                                  for n, v in row["variants"].items()), flush=True)
    return row


def random_levels(batch: int, shape: tuple[int, ...], bins: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, bins, (batch, *shape), generator=g).float() * 2 / (bins - 1) - 1


def step_times(model: str, batch: int, iters: int, blocks: int, names: tuple[str, ...] | None = None,
               device: str = "cpu"):
    """Seconds per forward + backward of backbone + ``proc.training_loss``, per variant and block; on a
    GPU under bfloat16 autocast, as ``bsi.train`` runs there."""
    shape, bins = DATA[model]
    x = random_levels(batch, shape, bins, seed=1).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device != "cpu" else nullcontext()
    fns = {}
    for name, (proc, net, den) in variants(model, device=device).items():
        if names is not None and name not in names:
            continue
        g = torch.Generator(device).manual_seed(2)

        def step(proc=proc, den=den, g=g, net=net):
            net.zero_grad(set_to_none=True)
            with autocast:
                loss = proc.training_loss(x, den, generator=g).loss.mean()
            loss.backward()

        fns[name] = step
    return alternate(fns, blocks, iters, device)


def part_step(quick: bool, device: str = "cpu") -> list[dict]:
    rows = []
    if device == "cpu":
        configs = [("mlp", 128, 20, 9), ("mlp", 512, 10, 9), ("unet", 16, 1, 5), ("unet", 64, 1, 3)]
        if quick:
            configs = [("mlp", 128, 10, 5), ("unet", 16, 1, 3)]
    else:  # the GPU rows: the small U-Net and DiT-S/4 at training batch sizes
        configs = [("unet", 128, 10, 7), ("dit", 256, 10, 7)]
        if quick:
            configs = [("unet", 128, 5, 3), ("dit", 256, 5, 3)]
    for model, batch, iters, blocks in configs:
        shape, bins = DATA[model]
        rows.append(measurement(f"{NAMES[model]} forward + backward, {'x'.join(map(str, shape))}, {bins} levels, "
                                f"batch {batch}", step_times(model, batch, iters, blocks, device=device)))
    return rows


MLP_BATCHES = ((128, 20), (512, 10))  # (batch, iterations a block)


def mlp_ratios(blocks: int) -> dict[int, float]:
    """Median per-round discretised/point ratio of the MLP's forward + backward, per batch size."""
    out = {}
    for batch, iters in MLP_BATCHES:
        t = step_times("mlp", batch, iters, blocks, ("point", "discretised"))
        out[batch] = statistics.median(d / p for d, p in zip(t["discretised"], t["point"]))
    return out


def part_spread(quick: bool, processes: int, threads: int) -> list[dict]:
    """The MLP's discretised/point ratio in fresh processes: it moves more between processes
    (memory placement, the machine's state) than between blocks of one, so this is the spread to quote."""
    ratios: dict[int, list[float]] = {batch: [] for batch, _ in MLP_BATCHES}
    for _ in range(processes):
        line = subprocess.run([sys.executable, "-m", "benchmarks.discretised", "--ratios-json",
                               "--threads", str(threads), *(["--quick"] if quick else [])],
                              check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        for batch, r in json.loads(line).items():
            ratios[int(batch)].append(r)
    rows = []
    for batch, rs in ratios.items():
        rows.append({"label": f"MLP forward + backward, batch {batch}, in {processes} fresh processes",
                     "unit": "ms", "variants": {"discretised": {"ratio": [statistics.median(rs), min(rs), max(rs)],
                                                                "per_process": rs}}})
    return rows


def part_elbo(quick: bool) -> list[dict]:
    shape, bins = DATA["mlp"]
    batch = 512
    x = random_levels(batch, shape, bins, seed=3)
    fns = {}
    for name, (proc, net, den) in variants("mlp").items():
        g = torch.Generator().manual_seed(4)
        fns[name] = lambda proc=proc, den=den, g=g: proc.elbo(x, den, n_samples=1, generator=g)
    times = alternate(fns, 5 if quick else 9, 5 if quick else 10)
    return [measurement(f"likelihood evaluation per network call, MLP, batch {batch}", times, per=2.0)]


def part_sample(quick: bool) -> list[dict]:
    shape, bins = DATA["mlp"]
    n, steps = 256, 100
    rows = []
    for solver in ("ancestral", "ode2"):
        fns = {}
        for name, (proc, net, den) in variants("mlp").items():
            g = torch.Generator().manual_seed(5)
            fns[name] = lambda proc=proc, den=den, g=g: proc.sample(den, (n, *shape), steps=steps, solver=solver, generator=g)
        times = alternate(fns, 3 if quick else 7, 1)
        rows.append(measurement(f"{solver} sampler, {steps} steps, MLP, {n} samples", times, per=float(n), rate=True))
    return rows


def part_trainer(quick: bool) -> list[dict]:
    """``bsi.train.train`` itself on the digits, ``output=point`` against ``output=discretised``.

    The whole training step as a run pays it: the forward and backward of ``step`` plus gradient
    clipping, AdamW, the EMA and the loop's per-step bookkeeping, which cost both outputs the same.
    Examples/s leave out validation, sample grids and checkpoints (``benchmarks.train``).
    """
    rows = []
    for batch in (128, 512):
        steps = (300 if quick else 1500) * 128 // batch
        overrides = [*QUIET, f"train.batch_size={batch}", f"train.steps={steps}", f"train.eval_every={steps}",
                     f"train.checkpoint_every={steps}"]
        cfgs = {}
        for output in ("point", "discretised"):
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                cfgs[output] = compose("train", overrides=[*overrides, f"output={output}"])
        times = {name: [] for name in cfgs}
        for _ in range(3 if quick else 5):
            for name, cfg in cfgs.items():
                with tempfile.TemporaryDirectory() as run_dir:
                    times[name].append(batch / ours(cfg, Path(run_dir)))  # seconds per step
        label = f"MLP `bsi.train` step (clipping, AdamW, EMA, loop included), batch {batch}, wall time"
        rows.append(measurement(label, times))
    return rows


RESULTS = "benchmarks/results/discretised.json"


PART_ORDER = ("step", "spread", "trainer", "elbo", "sample")
VARIANTS = ("discretised", "discretised, before")


def render(results: dict) -> str:
    """One table per device: the point output's time or rate, and each discretised variant's ratio to it."""
    def ratio(v: dict | None) -> str | None:
        if v is None:
            return None
        median, lo, hi = v["ratio"]
        return f"{median:.2f}x ({lo:.2f}-{hi:.2f})"

    def point(v: dict | None, unit: str) -> str | None:
        if v is None:
            return None
        if unit == "samples/s":
            return f"{v['median']:,.0f} {unit}"
        return f"{v['median'] / 1000:.3g} s" if unit == "ms" and v["median"] >= 1000 else f"{v['median']:.3g} {unit}"

    out = []
    for device in ("cpu", "cuda"):
        if device not in results:
            continue
        entry = results[device]
        rows = [(r["label"], point(r["variants"].get("point"), r["unit"]),
                 *(ratio(r["variants"].get(v)) for v in VARIANTS))
                for part in PART_ORDER for r in entry["parts"].get(part, [])]
        out += [provenance(entry), "",
                table(["measurement", "point output", "discretised / point", "before the O(1) mean / point"], rows), ""]
    return "\n".join(out).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=["step", "spread", "trainer", "elbo", "sample", "all"])
    parser.add_argument("--quick", action="store_true", help="fewer configurations and blocks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--processes", type=int, default=5, help="fresh processes for --part spread")
    parser.add_argument("--device", default="cpu", help="cuda: the GPU rows of --part step (U-Net and DiT)")
    parser.add_argument("--out", default=RESULTS, help="results file; the parts run are replaced in it")
    parser.add_argument("--ratios-json", action="store_true", help=argparse.SUPPRESS)  # one process of spread
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ratios_json:
        print(json.dumps(mlp_ratios(5 if args.quick else 11)))
        return
    if args.device != "cpu" and args.part != "step":
        parser.error("--device applies to --part step only: the other parts measure the CPU")
    parts = {"step": lambda quick: part_step(quick, args.device), "spread": lambda quick: part_spread(quick, args.processes, args.threads),
             "trainer": part_trainer, "elbo": part_elbo, "sample": part_sample}
    # Parts run one at a time merge into the results file, so that each stays a short run.
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    device = "cpu" if args.device == "cpu" else "cuda"
    machine = describe_machine(args.device) + ("" if device == "cpu" else ", bfloat16 autocast")
    entry = results.setdefault(device, {"parts": {}})
    entry.update(machine=machine, measured=date.today().isoformat())
    flags = (" --quick" if args.quick else "") + ("" if device == "cpu" else " --device cuda")
    for part in parts if args.part == "all" else (args.part,):
        entry["parts"][part] = parts[part](args.quick)
        entry.setdefault("commands", {})[part] = f"python -m benchmarks.discretised --part {part}{flags}"
        entry["command"] = [entry["commands"][p] for p in PART_ORDER if p in entry["commands"]]
        write_json(path, results)
    print(render(results))


if __name__ == "__main__":
    main()
