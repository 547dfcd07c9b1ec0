"""Which process am I? Rank and world size from torchrun or SLURM, and the process group.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.  Under
SLURM (``srun``, or submitit with one task per GPU) the same facts come from ``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID`` and the first host of ``SLURM_JOB_NODELIST``; the port is derived
from the job id so that every task of a job agrees on it without talking.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
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


def detect(env: Mapping[str, str] = os.environ) -> DistEnv:
    """Read the distributed layout from ``env`` (torchrun's variables win over SLURM's)."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        from submitit.slurm.slurm import _parse_node_list  # SLURM's compressed host lists, e.g. gpu[01-04,07]

        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        port = int(env.get("MASTER_PORT", 20000 + int(env.get("SLURM_JOB_ID", 0)) % 40000))
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       _parse_node_list(nodes)[0], port)
    return DistEnv()


def setup(device: str = "auto", env: Mapping[str, str] = os.environ) -> tuple[DistEnv, torch.device]:
    """Join the process group (NCCL on GPU, gloo on CPU) and pick this rank's device."""
    layout = detect(env)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", layout.local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    if layout.distributed and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", init_method=f"tcp://{layout.master_addr}:{layout.master_port}",
            rank=layout.rank, world_size=layout.world_size,
        )
    return layout, dev


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0 (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
