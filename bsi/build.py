"""One place that turns a run's configuration into a process, a backbone and a denoiser."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from .config import record
from .engine import Process
from .models import build_model, recorded_model


def build_process(cfg: DictConfig, bins: int) -> Process:
    """The process of a run's record (``cfg.method`` complete), or of a request (``make_process`` keywords,
    null for the preset's, with the run's ``output`` and the data's levels): :func:`bsi.config.record.build_process`."""
    return record.build_process(cfg, bins)


def backbone_from(model: Mapping[str, Any], data_shape: tuple[int, ...], proc: Process) -> nn.Module:
    """The backbone of a ``model`` config (plain keys) sized for data ``(C, H, W)`` and the channels ``proc`` needs.

    A config recorded by an earlier bsi builds the network it built then (:func:`bsi.models.recorded_model`).
    """
    channels, size = data_shape[0], data_shape[-1]
    return build_model(**recorded_model(model), in_channels=proc.in_channels(channels), out_channels=proc.out_channels(channels),
                       image_size=size)


def build_backbone(cfg: DictConfig, data_shape: tuple[int, ...], proc: Process) -> nn.Module:
    """``cfg.model`` sized for data ``(C, H, W)`` and the channels ``proc`` needs."""
    return backbone_from(OmegaConf.to_container(cfg.model, resolve=True), data_shape, proc)
