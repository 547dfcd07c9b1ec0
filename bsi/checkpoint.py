"""Checkpoints: written atomically, found again, and loaded as a ready-to-use model."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .engine import Process

STEP_FILE = re.compile(r"step_(\d+)\.pt$")


class CheckpointError(Exception):
    """A checkpoint is missing or unreadable; the message says which file."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to a temporary file beside ``path`` and rename it: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def checkpoints(run_dir: str | Path) -> list[Path]:
    """``RUN/checkpoints/step_*.pt`` sorted by step (a run directory or its checkpoints/ folder)."""
    folder = Path(run_dir)
    if folder.name != "checkpoints":
        folder = folder / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := STEP_FILE.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints."""
    for path in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no checkpoints/step_*.pt under {path}")
        path = found
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})") from None


def ema_weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's weights inside a ``torch.optim.swa_utils.AveragedModel`` state dict."""
    return {k.removeprefix("module."): v for k, v in ema_state.items() if k.startswith("module.")}


@dataclass
class TrainedModel:
    """A checkpoint made usable: its config, process, backbone (eval mode) and denoiser."""

    cfg: DictConfig
    process: Process
    backbone: nn.Module
    denoiser: Any
    data_shape: tuple[int, int, int]
    bins: int
    step: int
    path: Path


def load_trained(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> TrainedModel:
    """Load a training checkpoint (or a run directory's newest) with EMA weights by default."""
    from .build import build_backbone, build_process

    state = load_checkpoint(path, device)
    try:
        cfg = OmegaConf.create(state["config"])
        shape, bins = tuple(state["data_shape"]), int(state["bins"])
        proc = build_process(cfg, bins)
        if "proposal" in state:
            proc.proposal.load_state_dict(state["proposal"])
        backbone = build_backbone(cfg, shape, proc)
        backbone.load_state_dict(ema_weights(state["ema"]) if ema else state["model"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} does not match this version of bsi ({err})") from None
    backbone.to(device).eval()
    return TrainedModel(cfg, proc, backbone, proc.parameterize(backbone), shape, bins, int(state["step"]), Path(path))
