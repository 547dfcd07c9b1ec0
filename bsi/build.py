"""One place that turns a run's configuration into a process, a backbone and a denoiser."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from .engine import Process, make_process
from .models import build_model


def build_process(cfg: DictConfig, bins: int) -> Process:
    """``cfg.method`` (``make_process`` keywords, null for the preset's) with the run's ``output`` and the data's levels."""
    settings: dict[str, Any] = OmegaConf.to_container(cfg.method, resolve=True)
    return make_process(**settings, output=cfg.output, data_bins=bins)


def build_backbone(cfg: DictConfig, data_shape: tuple[int, ...], proc: Process) -> nn.Module:
    """``cfg.model`` sized for data ``(C, H, W)`` and the channels ``proc`` needs."""
    channels, size = data_shape[0], data_shape[-1]
    options: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)
    return build_model(**options, in_channels=proc.in_channels(channels), out_channels=proc.out_channels(channels), image_size=size)
