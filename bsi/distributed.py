"""Which process am I? Rank and world size from torchrun or SLURM, the process group, per-rank seeds.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.  Under
SLURM (``srun``, or submitit with one task per GPU) the same facts come from ``SLURM_PROCID``,
``SLURM_NTASKS`` (``SLURM_STEP_NUM_TASKS`` when srun runs a step smaller than the allocation),
``SLURM_LOCALID`` and the first host of ``SLURM_JOB_NODELIST`` / ``SLURM_NODELIST``; the port is
``MASTER_PORT`` if set, else derived from the job id so that every task of a job agrees on it
without talking.  torchrun's variables win, so ``torchrun`` inside a SLURM job works too.

Every collective here is the identity without a process group, so single-process code calls them
unconditionally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: global rank, world size, rank on its node, rendezvous address."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: ``gpu[07-09,12],cpu1`` -> ``gpu07`` (zero padding kept)."""
    prefix, ranges, suffix = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", nodelist.strip()).groups()
    first = ranges.split(",")[0].split("-")[0] if ranges else ""
    return prefix + first + suffix


def detect(env: Mapping[str, str] = os.environ) -> DistEnv:
    """Read the distributed layout from ``env`` (torchrun's variables win over SLURM's)."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)))
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    if "SLURM_PROCID" in env and tasks > 1:
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        # Ports below 20000 are often taken; 20000-59999 stays clear of Linux's ephemeral range.
        port = int(env.get("MASTER_PORT") or 20000 + int(env.get("SLURM_JOB_ID", 0)) % 40000)
        return DistEnv(int(env["SLURM_PROCID"]), tasks, int(env.get("SLURM_LOCALID", 0)),
                       env.get("MASTER_ADDR") or first_host(nodes), port)
    return DistEnv()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast of the network on a GPU: ``precision`` ``bf16`` or ``fp16``; ``fp32``/``none`` (and CPUs): none."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype and device.type == "cuda" else contextlib.nullcontext()


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` if a GPU is visible, else ``cpu``; ``cpu``, ``cuda`` or ``mps`` (Apple GPUs) by name;
    ``ValueError`` for an unusable name.  ``auto`` never picks ``mps``: some of its kernels are missing."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device: use auto, cpu, cuda or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported: use auto, cpu, cuda or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no GPU is visible to torch: use device=cpu (or device=auto)")
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device=mps but this torch sees no Apple GPU: use device=cpu (or device=auto)")
        if os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1") == "1":
            log.info("device=mps: operations MPS lacks run on the CPU (PYTORCH_ENABLE_MPS_FALLBACK=1)")
    return dev


def setup(device: str = "auto", env: Mapping[str, str] = os.environ) -> tuple[DistEnv, torch.device]:
    """Join the process group (NCCL on GPU, gloo on CPU) and pick this rank's device."""
    layout = detect(env)
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", layout.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if layout.distributed and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", init_method=f"tcp://{layout.master_addr}:{layout.master_port}",
            rank=layout.rank, world_size=layout.world_size,
        )
    return layout, dev


def rank_seed(seed: int, rank: int, stream: int = 0, step: int = 0) -> int:
    """A 63-bit seed for random stream ``stream`` of ``rank`` in a run seeded with ``seed``.

    numpy's SeedSequence hashes the tuple, so nearby seeds and ranks give unrelated streams
    (``seed * 1000 + rank`` would make seed 0 rank 1000 collide with seed 1 rank 0).  ``step``
    reseeds a stream part-way through a run.
    """
    entropy = [int(seed), int(rank), int(stream), int(step)]
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> 1)


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0 (identity without a process group)."""
    if not initialized():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place and return it."""
    if initialized():
        dist.all_reduce(t)
    return t


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects)."""
    if not initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if initialized():
        dist.barrier()


def teardown(wait_s: float = 60.0) -> None:
    """Leave the process group together with every other rank.

    The barrier matters for gloo: a rank that destroys its group while a peer is still working
    (rank 0 writing results, say) closes the peer's connections under it, and the peer's
    ``destroy_process_group`` then aborts the process ("terminate called without an active
    exception") after its work is done.  A peer that never arrives (it crashed) costs ``wait_s``
    seconds, not the group's half-hour timeout.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1 and dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=wait_s))
        except RuntimeError:
            pass  # a peer is gone; leaving is all that is left to do
    dist.destroy_process_group()
