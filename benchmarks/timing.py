"""Side-by-side timing on a shared machine: alternating blocks, thread CPU time, per-block ratios.

Wall time on a CPU shared with other busy processes mostly measures how often the scheduler ran us;
the CPU time of the measuring thread (with one torch thread, the only one doing the work) does not.
Variants run in blocks that alternate, and the order rotates from block to block, so that slow
phases of the machine and warm caches hit every variant alike.  A ratio is taken per block (each
block's time over the baseline's time in the same block), and the spread of those ratios is the
figure to quote, not the spread of the raw times.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch


def clock_for(device: str | torch.device = "cpu") -> Callable[[], float]:
    """Seconds on this thread's CPU clock; on a GPU, wall seconds after a synchronisation."""
    device = torch.device(device)
    if device.type == "cpu":
        return time.thread_time

    def clock() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return clock


def alternate(fns: Mapping[str, Callable[[], object]], blocks: int, iters: int, device: str | torch.device = "cpu",
              warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, one entry per block.

    Each block runs every function ``iters`` times in turn; the order rotates by one from block to
    block.  ``warmup`` calls of each function come first and are not timed.
    """
    clock = clock_for(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for b in range(blocks):
        shift = b % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            start = clock()
            for _ in range(iters):
                fn()
            times[name].append((clock() - start) / iters)
    return times


def ratios(times: Sequence[float], base: Sequence[float]) -> list[float]:
    """Per-block ratios ``times[i] / base[i]``."""
    return [t / b for t, b in zip(times, base, strict=True)]


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max"}`` of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(times: Mapping[str, Sequence[float]], base: str) -> dict[str, dict]:
    """Per variant: its seconds per call (median, min, max over blocks) and its per-block ratio to ``base``."""
    return {name: {"seconds": spread(t), "ratio": spread(ratios(t, times[base])), "blocks": list(t)}
            for name, t in times.items()}


def fresh_rounds(commands: Mapping[str, Sequence[str]], rounds: int) -> dict[str, list[dict]]:
    """Each command once per round, each run a fresh process, the order rotating by one from round to round.

    Per name, the JSON object each of its runs printed on the last line of its standard output.
    """
    names = list(commands)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out = subprocess.run(list(commands[name]), check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    return runs


def per_round(runs: Mapping[str, Sequence[Mapping[str, float]]], keys: Sequence[str], base: str) -> dict[str, dict]:
    """Per key and name: the values' spread (``value``) and the per-round ratios' to ``base`` (``ratio``)."""
    return {key: {name: {"value": spread([run[key] for run in rs]),
                         "ratio": spread(ratios([run[key] for run in rs], [run[key] for run in runs[base]]))}
                  for name, rs in runs.items()} for key in keys}


def fmt_ratio(r: Mapping[str, float]) -> str:
    """``1.23x (1.10-1.31)``: median and min-max."""
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's ``VmHWM``, which starts afresh with the new program: ``getrusage``'s ``ru_maxrss`` survives
    ``exec`` and so reports the parent's size at the fork (this benchmark's parent is the larger).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine(device: str | torch.device = "cpu") -> str:
    """What a results file names as the machine: ``2-core x86_64 CPU, 1 torch thread, thread CPU time``,
    or the GPU's name and ``wall time``."""
    device = torch.device(device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return (f"{os.cpu_count()}-core {platform.machine()} CPU, {threads} torch thread{'s' * (threads > 1)}, "
                "thread CPU time")
    return f"{torch.cuda.get_device_name(device)}, wall time"
