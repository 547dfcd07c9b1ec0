"""Checkpoints: written atomically, found again, and loaded as a ready-to-use model.

A training checkpoint ``RUN/checkpoints/step_0000100.pt`` is a dict with (at least)

- ``config``: the run's resolved configuration as plain data (``OmegaConf.to_container``),
- ``process``: the complete process record (:func:`bsi.engine.presets.resolve_settings`) and
  ``version``: ``bsi.__version__`` (older checkpoints lack both: their process is resolved from
  ``config.method`` with today's presets),
- ``data_shape`` ``[C, H, W]`` and ``bins`` (levels of the data), ``step`` (optimiser steps taken),
- ``model``, ``ema`` (a ``torch.optim.swa_utils.AveragedModel`` state: ``module.*`` and ``n_averaged``),
  ``optimizer``, ``scheduler``, ``proposal`` (the importance proposal's learned state, if any),
- ``sampler`` (the data order: epoch and position), ``rng`` (one entry per rank: the global torch
  RNG, the CUDA RNGs and the engine's noise generator), ``nonfinite_skips``, ``best_val``.

``best.pt`` beside them holds the same for the step with the lowest validation bpd.  A
checkpoint saved while the evaluation of its step was interrupted has ``evaluated`` false: a run
resumed from it does that evaluation first (checkpoints without the key count as evaluated).

Every checkpoint also holds ``sha256``: the SHA-256 of its contents (:func:`state_digest`), checked
on every load, so that a file damaged after it was written (a flipped bit on a disk or in a copy)
is refused instead of resuming on damaged weights.  Checkpoints written before the checksum
existed load with a one-line note.  :func:`newest_intact` is ``resume=auto``'s choice: the
newest checkpoint that loads and matches its checksum, and the damaged ones it skipped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .atomic import atomic_file, stale_temporaries
from .engine import CategoricalDenoiser, Denoiser, Process

log = logging.getLogger(__name__)
STEP_FILE = re.compile(r"step_(\d+)\.pt$")
CHECKSUM_KEY = "sha256"


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or does not fit this code; the message says which file."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, quota, permissions); the files already there are intact."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` and its checksum (:func:`state_digest`) to ``path`` atomically (:func:`bsi.atomic.atomic_file`).

    A crash or kill at any moment leaves either the old file or the new one, never half of one (at
    worst a stray ``.NAME.tmp-PID``, which :func:`prune` removes).  A failed write (a full disk, say)
    removes the temporary file and raises :class:`CheckpointWriteError`, saying where and that the
    existing files are untouched.
    """
    path = Path(path)
    payload = {**contents(state), CHECKSUM_KEY: state_digest(state)}
    try:
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as err:
        raise CheckpointWriteError(write_failure(path, err)) from None
    return path


def write_failure(path: Path, err: BaseException) -> str:
    """Why writing ``path`` failed, in one line, and that nothing already on disk was touched."""
    folder = path.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "free space unknown"
    code = getattr(err, "errno", None)
    text = str(err)
    # torch's zip writer reports a short write as "[enforce fail at inline_container.cc:...] unexpected
    # pos ..." or "... file write failed": what a full disk looks like from inside torch.save.
    if code == errno.ENOSPC or "unexpected pos" in text or "file write failed" in text:
        why = f"the disk holding {folder} is full ({free})"
    elif code == errno.EDQUOT:
        why = f"the disk quota for {folder} is exhausted ({free})"
    else:
        reason = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        why = f"{type(err).__name__}: {reason}"
    return (f"could not write checkpoint {path}: {why}; nothing was lost: the checkpoints already in {folder} "
            f"are intact and the partial file was removed")


def contents(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` without its stored checksum: what the checksum covers."""
    return {key: value for key, value in state.items() if key != CHECKSUM_KEY}


def state_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's contents: every tensor's dtype, shape and bytes and every other
    value, dictionaries in sorted key order, so that the same contents give the same digest after a
    save and a load on any device."""
    digest = hashlib.sha256()
    _feed(digest, contents(state))
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    # Every value is prefixed by a type tag and its length, so that different structures never
    # hash the same bytes: ["ab"] and ["a", "b"] differ.
    if isinstance(value, torch.Tensor):
        t = value.detach().resolve_conj().resolve_neg()
        digest.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, Mapping):
        # Keys may mix types (optimizer states use ints): order by type, then by their text.
        items = sorted(value.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        digest.update(f"D{len(items)};".encode())
        for key, item in items:
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):  # a save and a load may turn one into the other
        digest.update(f"L{len(value)};".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (str, bytes)):
        data = value.encode() if isinstance(value, str) else value
        digest.update(f"{type(value).__name__}{len(data)};".encode())
        digest.update(data)
    else:  # None, bool, int, float (repr is exact and platform-independent), torch.dtype, ...
        text = repr(value)
        digest.update(f"{type(value).__name__}{len(text)};{text}".encode())


def verify(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """``state`` loaded from ``path`` without its checksum, after checking it; :class:`CheckpointError` if damaged."""
    stored = state.get(CHECKSUM_KEY)
    if stored is None:
        log.warning(f"checkpoint {path} has no checksum (written by an earlier bsi version): loaded unchecked")
        return state
    if stored != state_digest(state):
        raise CheckpointError(f"checkpoint {path} is damaged: its contents do not match the SHA-256 stored in it "
                              f"(changed on disk after it was written); resume from an earlier one (resume=auto "
                              f"skips damaged checkpoints)")
    return contents(state)


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``RUN/checkpoints`` for a run directory (or the checkpoints folder itself)."""
    folder = Path(run_dir)
    return folder if folder.name == "checkpoints" else folder / "checkpoints"


def checkpoints(run_dir: str | Path) -> list[Path]:
    """``RUN/checkpoints/step_*.pt`` sorted by step."""
    found = [(int(m.group(1)), p) for p in checkpoint_dir(run_dir).glob("step_*.pt") if (m := STEP_FILE.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest step checkpoint of a run directory, or ``None`` when it has none."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints, and temporaries that dead writers left."""
    for path in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)
    for tmp in stale_temporaries(checkpoint_dir(run_dir)):
        tmp.unlink(missing_ok=True)


def resolve(path: str | Path) -> Path:
    """A checkpoint file: ``path`` itself, or the newest step checkpoint of a run directory."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no checkpoints/step_*.pt under {path}")
        return found
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", verify_checksum: bool = True) -> dict[str, Any]:
    """The state dict saved by :func:`save_checkpoint` (``path`` may be a run directory), checksum checked.

    Anything else (another program's pickle, a truncated copy, random bytes) raises a one-line
    :class:`CheckpointError` saying that the file is not a bsi checkpoint, and so does a checkpoint
    whose contents no longer match its checksum.  The returned dict has no ``sha256`` entry.
    """
    path = resolve(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            # Only tensors and plain data inside, so the safe unpickler suffices.
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"checkpoint {path} is unreadable: it is not a bsi checkpoint, or a damaged one "
                              f"({unreadable_reason(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is unreadable: it is not a bsi checkpoint (it holds a "
                              f"{type(state).__name__}, not a dictionary)")
    return verify(state, path) if verify_checksum else contents(state)


@dataclass
class Intact:
    """What :func:`newest_intact` found: the checkpoint to resume (``None``: none usable) and its
    state, and one line per newer checkpoint it skipped."""

    path: Path | None
    state: dict[str, Any] | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, the one-line reason)

    def note(self) -> str | None:
        """One line for the log when unusable checkpoints were skipped, else ``None``."""
        if not self.skipped:
            return None
        names = ", ".join(path.name for path, _ in self.skipped)
        newest, message = self.skipped[0]
        why = message.removeprefix(f"checkpoint {newest} ").split("; ")[0]  # the reason, without the advice
        target = f"resuming from {self.path.name}" if self.path else "no usable checkpoint is left"
        return f"resume=auto skipped {names} ({newest.name} {why}); {target}"


def newest_intact(run_dir: str | Path, device: str | torch.device = "cpu", keys: tuple[str, ...] = ()) -> Intact:
    """The newest step checkpoint of ``run_dir`` that loads, matches its checksum and has ``keys``.

    Newer ones that fail are skipped, each named with its reason in :attr:`Intact.skipped`; they
    stay on disk (a person may want to look at them, and pruning removes them in time).
    """
    skipped = []
    for path in reversed(checkpoints(run_dir)):
        try:
            state = load_checkpoint(path, device)
            require(state, path, keys)
        except CheckpointError as err:
            skipped.append((path, str(err)))
            continue
        return Intact(path, state, skipped)
    return Intact(None, None, skipped)


def unreadable_reason(err: BaseException) -> str:
    """What torch.load said, shortened to its first sentence; never its advice to unpickle anyway."""
    text = " ".join(str(err).split())
    if text.startswith("Weights only load failed"):
        # torch suggests weights_only=False here, which would run whatever code the file carries.
        return "it holds Python objects other than tensors and plain data; they were not loaded"
    first = text.split(". ")[0].rstrip(".")
    return f"{type(err).__name__}: {first[:120]}" if first else type(err).__name__


def require(state: dict[str, Any], path: str | Path, keys: tuple[str, ...]) -> None:
    """Raise :class:`CheckpointError` unless ``state`` (loaded from ``path``) has every one of ``keys``."""
    if missing := [key for key in keys if key not in state]:
        raise CheckpointError(f"checkpoint {path} is not a bsi training checkpoint: it lacks {', '.join(missing)}")


def ema_weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's weights inside a ``torch.optim.swa_utils.AveragedModel`` state dict."""
    return {k.removeprefix("module."): v for k, v in ema_state.items() if k.startswith("module.")}


@dataclass
class TrainedModel:
    """A checkpoint made usable.

    cfg: the run's full resolved configuration; process: its belief process (with the learned
    proposal state); backbone: the network in eval mode (EMA weights by default); denoiser:
    ``denoiser(mu, lam) -> x_hat``; data_shape: ``(C, H, W)`` (``(C, L)`` for sequences); bins: levels
    of the data; step: optimiser steps the weights have seen; path: the checkpoint file.
    """

    cfg: DictConfig
    process: Process
    backbone: nn.Module
    denoiser: Denoiser | CategoricalDenoiser
    data_shape: tuple[int, ...]  # (C, H, W) images, (C, L) sequences
    bins: int
    step: int
    path: Path
    record: dict[str, Any] | None = None  # the process record it was built from (resolve_settings)
    version: str | None = None            # the bsi version that wrote the checkpoint, when it says


def tested_checkpoint(path: str | Path) -> Path:
    """The checkpoint to evaluate: ``path`` itself if a file; for a run directory the weights its training
    tested (``best.pt`` where ``final.json`` says ``ema_best``), else its newest step checkpoint."""
    path = Path(path)
    if path.is_dir():
        final, best = path / "final.json", checkpoint_dir(path) / "best.pt"
        try:
            tested = json.loads(final.read_text()).get("weights") if final.is_file() else None
        except (OSError, ValueError):
            tested = None
        if tested == "ema_best" and best.is_file():
            return best
    return resolve(path)


def load_trained(path: str | Path, device: str | torch.device = "cpu", ema: bool = True,
                 legacy_presets: bool = False) -> TrainedModel:
    """Load a training checkpoint (or the weights a run directory's training tested) with EMA weights by default.

    The process is built from the checkpoint's record of its settings, never from today's presets (one
    log line says where those would differ).  A checkpoint of bsi < 0.2 records none: ``legacy_presets``
    rebuilds them from today's presets, else it is refused in one line that says so.
    """
    from .build import build_backbone
    from .config import record
    from .engine.presets import process_from_settings

    path = tested_checkpoint(path)
    state = load_checkpoint(path, device)
    require(state, path, ("config", "data_shape", "bins", "step", "ema" if ema else "model"))
    cfg = OmegaConf.create(state["config"])
    recorded = bool(state.get("process")) or record.is_record(cfg)
    if not recorded and not legacy_presets:
        raise CheckpointError(f"checkpoint {path} was written by bsi < 0.2, which did not record its process's "
                              f"settings; {record.LEGACY_HINT} (python: load_trained(..., legacy_presets=True))")
    try:
        shape, bins = tuple(int(n) for n in state["data_shape"]), int(state["bins"])
        settings = dict(state["process"]) if state.get("process") else record.record_of(cfg, bins)
        proc = process_from_settings(settings)
        if state.get("proposal"):
            proc.proposal.load_state_dict(state["proposal"])
        backbone = build_backbone(cfg, shape, proc)
        backbone.load_state_dict(ema_weights(state["ema"]) if ema else state["model"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit this version of bsi ({type(err).__name__}: {reason})") from None
    if recorded and (note := record.preset_note(settings, cfg.get("requested"))):
        log.info(note)
    elif not recorded:
        log.warning(f"legacy_presets=true: {path} records no process settings; rebuilt them from today's presets")
    backbone.to(device).eval()
    return TrainedModel(cfg, proc, backbone, proc.parameterize(backbone), shape, bins, int(state["step"]), path,
                        settings, state.get("version"))
