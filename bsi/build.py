"""One place that turns a run's configuration into a process, a backbone and a denoiser."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from .engine import Process
from .engine.presets import process_from_settings, resolve_settings
from .models import build_model


def process_record(cfg: DictConfig, bins: int) -> dict[str, Any]:
    """The complete process record (:func:`~bsi.engine.presets.resolve_settings`) of ``cfg.method``
    (``make_process`` keywords, null for the preset's) with the run's ``output`` and the data's levels."""
    settings: dict[str, Any] = OmegaConf.to_container(cfg.method, resolve=True)
    return resolve_settings(**settings, output=cfg.output, data_bins=bins)


def build_process(cfg: DictConfig, bins: int) -> Process:
    """The process of :func:`process_record`."""
    return process_from_settings(process_record(cfg, bins))


def backbone_from(model: Mapping[str, Any], data_shape: tuple[int, ...], proc: Process) -> nn.Module:
    """The backbone of a ``model`` config (plain keys) sized for data ``(C, H, W)`` and the channels ``proc`` needs."""
    channels, size = data_shape[0], data_shape[-1]
    return build_model(**model, in_channels=proc.in_channels(channels), out_channels=proc.out_channels(channels),
                       image_size=size)


def build_backbone(cfg: DictConfig, data_shape: tuple[int, ...], proc: Process) -> nn.Module:
    """``cfg.model`` sized for data ``(C, H, W)`` and the channels ``proc`` needs."""
    return backbone_from(OmegaConf.to_container(cfg.model, resolve=True), data_shape, proc)
