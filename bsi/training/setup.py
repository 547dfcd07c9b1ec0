"""What is built before any work, and can fail for a reason the user has to fix: the checked configuration,
the data, the process (from the run's record), the backbone and the checkpoint to resume."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .. import distributed
from ..build import build_backbone
from ..checkpoint import (
    CheckpointError,
    checkpoint_dir,
    load_checkpoint,
    newest_intact,
    require,
    resolve,
)
from ..config import record
from ..config.resume import changed_settings, listed
from ..config.validate import validate
from ..data import DatasetError, ImageDataset, build_dataset, has_val
from ..engine import Process
from ..engine.presets import process_from_settings, resolve_settings
from ..exits import ConfigError
from ..metrics_log import check_loggers
from ..models import model_settings, recorded_model

log = logging.getLogger("bsi.train")


def find_run_dir(cfg: DictConfig, run_dir: str | Path | None) -> Path:
    """``run_dir``, else ``cfg.run_dir`` (``+run_dir=...`` when composing outside hydra), else hydra's output directory."""
    run_dir = run_dir or OmegaConf.select(cfg, "run_dir")
    if run_dir:
        return Path(run_dir)
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        raise ConfigError("train(cfg) outside a hydra app needs run_dir=... (or +run_dir=... in the config)") from None


def remove_unused_run_dir(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but what hydra wrote before the run failed to start.

    Hydra makes ``RUN/.hydra/`` and ``RUN/train.log`` before :func:`train` sees the configuration; a
    start that fails on it should not leave them behind.  Parents left empty go too, up to the
    working directory (``runs/DATE/`` of hydra's default ``runs/DATE/TIME``).
    """
    cwd, run_dir = Path.cwd().resolve(), run_dir.resolve()
    if run_dir == cwd or run_dir in cwd.parents or not run_dir.is_dir():
        return  # never the working directory itself
    if any(p.name != ".hydra" and p.suffix != ".log" for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir)
    for parent in run_dir.parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


@dataclass
class Setup:
    """Everything a run needs that can fail for a reason the user has to fix."""

    cfg: DictConfig                   # the run's record: the configuration with its process's complete settings
    splits: dict[str, ImageDataset]   # train, test and (if data.val_size) val
    proc: Process
    backbone: nn.Module               # on the CPU, initialised from the run seed (or the checkpoint's weights)
    resume_from: Path | None
    state: dict[str, Any] | None      # the checkpoint to resume, if any


# What a checkpoint must hold to be resumed.
RESUME_KEYS = ("config", "step", "model", "ema", "optimizer", "scheduler", "sampler", "rng", "nonfinite_skips")


def check_config(cfg: DictConfig, world_size: int) -> None:
    """Raise :class:`ConfigError` naming every setting that cannot work (unknown keys, types, ranges, batch split)."""
    problems = validate(cfg, "train")
    t = cfg.train
    if not problems and t.batch_size % (world_size * t.accumulate):
        problems.append(f"train.batch_size={t.batch_size} must divide by ranks x train.accumulate = "
                        f"{world_size} x {t.accumulate}")
    if problems:
        raise ConfigError("; ".join(problems))


def prepare(cfg: DictConfig, run_dir: Path, world_size: int) -> Setup:
    """Check the config, open the data, read the checkpoint to resume, build process and backbone.

    The process comes from the run's record: a fresh run's request resolved with the presets, a resumed
    run's checkpoint.  Every failure here is the user's to fix and becomes a one-line :class:`ConfigError`.
    """
    check_config(cfg, world_size)
    try:
        distributed.resolve_device(cfg.device)
        check_loggers(cfg.logger)
        names = ["train", "test"] + (["val"] if has_val(cfg.data) else [])
        splits = {name: build_dataset(cfg.data, name) for name in names}
        micro = cfg.train.batch_size // (world_size * cfg.train.accumulate)
        if len(splits["train"]) // world_size < micro:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} needs {micro} images per rank and step, but "
                              f"{splits['train'].name}/train has {len(splits['train'])} for {world_size} rank(s)")
        bins = splits["train"].bins
        resume_from, state = read_resume(cfg, run_dir)
        settings = record.resolve(cfg, bins) if state is None else resumed_record(cfg, state, resume_from, bins)
        proc = process_from_settings(settings)
    except (DatasetError, ValueError) as err:
        raise ConfigError(str(err)) from None
    kept = record.as_record(cfg, settings) if state is None else resumed_config(cfg, state, settings)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP would broadcast them anyway)
    try:
        backbone = build_backbone(kept, splits["train"].shape, proc)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None
    if state is not None:
        try:
            backbone.load_state_dict(state["model"])
        except RuntimeError as err:
            detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err).strip())
            changes = changed_settings(state["config"], OmegaConf.to_container(cfg, resolve=True))
            why = f"it was trained with {listed(changes)}" if changes else "its weights have other shapes"
            raise CheckpointError(f"checkpoint {resume_from} does not fit this model: {why} ({detail})") from None
    return Setup(kept, splits, proc, backbone, resume_from, state)


def read_resume(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint that ``cfg.resume`` names and its state, after checking that it fits ``cfg``."""
    if cfg.resume == "auto":
        found = newest_intact(run_dir, keys=RESUME_KEYS)
        if found.skipped and found.path is None:
            raise ConfigError(f"resume=auto: no usable checkpoint in {checkpoint_dir(run_dir)} ({found.skipped[0][1]}); "
                              f"resume from a copy with resume=PATH, or train into a new run directory")
        if found.skipped:
            log.warning(found.note())
        if found.path is None:
            return None, None
        path, state = found.path, found.state
    else:
        path = resolve(cfg.resume) if cfg.resume else None
        if path is None:
            return None, None
        state = load_checkpoint(path)
        require(state, path, RESUME_KEYS)
    saved, now = dict(state["config"]), OmegaConf.to_container(cfg, resolve=True)
    # both sides as complete records, so a default that changed since the checkpoint counts as a change
    saved["model"], now["model"] = recorded_model(saved["model"]), model_settings(now["model"])
    changes = changed_settings(saved, now)
    if record.is_record(saved):
        changes += record.method_changes(saved["method"], saved.get("requested"), cfg)
    if changes and not cfg.resume_force:
        raise ConfigError(f"checkpoint {path} was trained with other settings: {listed(changes)}; resume with the "
                          f"checkpoint's settings, or add resume_force=true to continue with the new ones")
    if changes:
        log.warning(f"resume_force=true: continuing {path} with new settings: {listed(changes, len(changes))}")
    return path, state


def resumed_record(cfg: DictConfig, state: dict[str, Any], path: Path, bins: int) -> dict[str, Any]:
    """The process settings a resume continues with: the checkpoint's record (with ``resume_force``'s changes)."""
    saved = state["config"]
    if not record.is_record(saved):
        if not cfg.legacy_presets:
            raise ConfigError(f"checkpoint {path} was written by bsi < 0.2, which did not record its process's "
                              f"settings; {record.LEGACY_HINT}")
        log.warning(f"legacy_presets=true: {path} records no process settings; rebuilding them from today's presets")
        return record.resolve(saved, bins)
    kept, requested = dict(saved["method"]), saved.get("requested") or {}
    if cfg.resume_force and (record.method_changes(kept, requested, cfg) or kept.get("output") != cfg.output):
        asked = {**requested, **record.requested_keywords(cfg)}
        return resolve_settings(cfg.method.name, **asked, output=cfg.output, data_bins=bins)
    if note := record.preset_note(kept, requested):
        log.info(note)
    return kept


def resumed_config(cfg: DictConfig, state: dict[str, Any], settings: dict[str, Any]) -> DictConfig:
    """The record a resumed run keeps: this command's configuration with the process it continues."""
    saved = state["config"]
    out = record.as_record(cfg, settings)
    if record.is_record(saved) and not cfg.resume_force:
        out.requested = saved.get("requested")
    return out
