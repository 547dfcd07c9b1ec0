"""``bsi.load(SOURCE)``: a trained model, ready to sample and score, without hydra or a training run.

``SOURCE`` is any of

- an export folder (``model.safetensors`` + ``config.json``, written by ``python -m bsi.export``),
- a run directory (the weights its training tested: ``best.pt``, else the newest ``step_*.pt``) or a checkpoint file,
- a Hugging Face Hub repository id ``ORG/NAME`` (optionally ``ORG/NAME@REVISION``) holding an export,
  fetched with ``huggingface_hub.snapshot_download`` into the usual Hub cache (``HF_HOME``); with
  ``HF_HUB_OFFLINE=1`` the cached copy is used without a network.

A local path wins over a Hub id of the same spelling.  Every failure is one
:class:`~bsi.checkpoint.CheckpointError` line that names the source.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .atomic import file_digest
from .checkpoint import CheckpointError, load_trained
from .engine import Estimate, Process

EXPORT_FORMAT = "bsi-export-1"
WEIGHTS, CONFIG, PROPOSAL = "model.safetensors", "config.json", "proposal.safetensors"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class _Images(Dataset[Tensor]):
    """A uint8 tensor ``(N, C, H, W)`` as the likelihood evaluator reads datasets (whole batches)."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]

    def __getitems__(self, indices: Sequence[int]) -> Tensor:
        return self.images[list(indices)]


@dataclass
class Pretrained:
    """A trained model: its process, network and data format, with sampling and scoring.

    process: the belief process (:class:`bsi.engine.Process`); backbone: the network in eval mode;
    denoiser: ``denoiser(mu, lam) -> x_hat`` for the engine; data_shape: ``(C, H, W)`` (``(C, L)`` for
    sequences); bins: levels of the data; config: what it was built from (``model``, ``process``,
    ``data``, ``bsi_version``, ``step``, ``weights``), the contents of an export's ``config.json``.
    """

    process: Process
    backbone: nn.Module
    data_shape: tuple[int, ...]
    bins: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def denoiser(self):
        return self.process.parameterize(self.backbone)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def to(self, device: str | torch.device) -> Pretrained:
        self.backbone.to(device)
        return self

    @torch.no_grad()
    def sample(self, n: int, steps: int = 100, solver: str = "ancestral", seed: int = 0, spacing: str | None = None,
               batch_size: int = 256) -> Tensor:
        """``n`` samples in data space: float ``(n, C, H, W)`` on the data's levels in [-1, 1].

        ``steps + 1`` network evaluations per sample; ``solver``: ``ancestral``, ``ode1``..``ode3``,
        ``sde1``, ``sde2``; ``spacing``: the step grid (default the process's).  Sample ``i`` depends
        only on ``(seed, i)``: the same seed gives the same samples for any ``batch_size``.
        :func:`bsi.data.to_uint8` turns them into level indices (pixels for 256 levels).
        """
        from .data import to_float
        from .evaluation import draw_samples

        levels, _ = draw_samples(self.process, self.denoiser, self.data_shape, range(n), self.bins, steps=steps,
                                 solver=solver, spacing=spacing, seed=seed, batch_size=batch_size, device=self.device)
        return to_float(levels, self.bins)

    def bpd(self, x: Tensor | Dataset, k: int | None = None, n_samples: int = 1, seed: int = 0,
            batch_size: int = 512) -> Estimate:
        """Bits per dimension of ``x`` under the model's ELBO: the mean over examples and its standard error.

        ``x``: level indices, uint8 ``(N, C, H, W)`` (pixels 0..255 for 256 levels), or a dataset of
        such images (:func:`bsi.data.build_dataset`).  ``k=None`` is the infinite-step ELBO, ``k`` the
        ``k``-step one (with a step proposal from the first examples); ``n_samples`` Monte Carlo draws
        per example.  The number is the likelihood evaluator's
        (:func:`bsi.evaluation.evaluate_likelihood`, ``python -m bsi.evaluate likelihood``) on the same
        ``seed``; total nats per example are ``bpd * D * ln 2`` with ``D = C * H * W``.
        """
        from .evaluation import evaluate_likelihood

        data = x if isinstance(x, Dataset) else _Images(self._levels(x))
        result = evaluate_likelihood(self.process, self.denoiser, data, self.bins, self.data_shape,
                                     ks=[] if k is None else [k], n_samples=n_samples, seed=seed,
                                     batch_size=batch_size, device=self.device, show_progress=False)
        return result.rows[-1].terms["total"]

    def _levels(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != tuple(self.data_shape):
            raise ValueError(f"bpd needs level indices, uint8 (N, {', '.join(map(str, self.data_shape))}), got "
                             f"{x.dtype} {tuple(x.shape)}: bsi.data.to_uint8(x, bins) converts [-1, 1] floats")
        return x.cpu()


def load_export(folder: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """The model in an export folder (``config.json``, ``model.safetensors``, maybe ``proposal.safetensors``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .build import backbone_from
    from .engine.presets import process_from_settings

    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG} is unreadable ({type(err).__name__}): export the run again") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{folder / CONFIG} is not a bsi export (format {config.get('format')!r}, expected "
                              f"{EXPORT_FORMAT!r}): write one with python -m bsi.export RUN")
    expected = config.get("files", {}).get(WEIGHTS)
    if not (folder / WEIGHTS).is_file() or file_digest(folder / WEIGHTS) != expected:
        raise CheckpointError(f"{folder / WEIGHTS} is missing or does not match {CONFIG} (sha256): copy or export the "
                              f"folder again")
    try:
        proc = process_from_settings(config["process"])
        if (folder / PROPOSAL).is_file():
            proc.proposal.load_state_dict(load_file(folder / PROPOSAL))
        shape = tuple(int(n) for n in config["data"]["shape"])
        backbone = backbone_from(config["model"], shape, proc)
        backbone.load_state_dict(load_file(folder / WEIGHTS))
    except (KeyError, RuntimeError, TypeError, ValueError, SafetensorError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"export {folder} does not fit this version of bsi ({type(err).__name__}: {reason})") from None
    backbone.to(device).eval().requires_grad_(False)
    return Pretrained(proc, backbone, shape, int(config["data"]["bins"]), config)


def from_checkpoint(path: str | Path, device: str | torch.device = "cpu", ema: bool = True,
                    legacy_presets: bool = False) -> Pretrained:
    """The model of a training checkpoint (or the weights a run directory's training tested), EMA weights by
    default; ``legacy_presets``: see :func:`bsi.checkpoint.load_trained`."""
    from omegaconf import OmegaConf

    from . import __version__
    from .models import recorded_model

    trained = load_trained(path, device, ema=ema, legacy_presets=legacy_presets)
    trained.backbone.requires_grad_(False)
    config = {
        "format": EXPORT_FORMAT, "bsi_version": trained.version or __version__,
        "model": recorded_model(OmegaConf.to_container(trained.cfg.model, resolve=True)), "process": trained.record,
        "data": {"shape": list(trained.data_shape), "bins": trained.bins,
                 "name": OmegaConf.select(trained.cfg, "data.name", default=None)},
        "step": trained.step, "weights": "ema" if ema else "raw", "checkpoint": str(trained.path),
    }
    return Pretrained(trained.process, trained.backbone, trained.data_shape, trained.bins, config)


def hub_snapshot(repo: str) -> Path:
    """The local folder of Hub repository ``ORG/NAME[@REVISION]`` (downloaded, or from the cache when offline)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise CheckpointError(f"loading {repo} from the Hugging Face Hub needs huggingface_hub: "
                              f"pip install huggingface_hub") from None
    repo_id, _, revision = repo.partition("@")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise CheckpointError(f"{repo} is no local file or folder, and cannot be fetched from the Hugging Face Hub "
                              f"({type(err).__name__}: {reason}); with HF_HUB_OFFLINE=1 it must be in the cache "
                              f"already") from None


def load(source: str | Path, device: str | torch.device = "cpu", weights: str = "ema",
         legacy_presets: bool = False) -> Pretrained:
    """A :class:`Pretrained` model from an export folder, a run directory, a checkpoint file or a Hub id.

    ``weights`` (``ema`` or ``raw``) picks the weights of a checkpoint or run directory; an export
    holds the weights it was exported with.  ``legacy_presets`` loads a checkpoint of bsi < 0.2, which
    records no process settings, with today's presets.  See the module docstring for the sources.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be ema or raw, got {weights!r}")
    path = Path(source).expanduser()
    if path.is_dir() and (path / CONFIG).is_file():
        return load_export(path, device)
    if path.exists():
        return from_checkpoint(path, device, ema=weights == "ema", legacy_presets=legacy_presets)
    if isinstance(source, str) and HUB_ID.match(source):
        return load_export(hub_snapshot(source), device)
    raise CheckpointError(f"{source} is neither a file, a folder nor a Hugging Face Hub id (ORG/NAME): give an export "
                          f"folder, a run directory, a checkpoint file or a Hub id")
