"""Backbones ``F(x, t)`` for the engine's parameterizations: MLP, U-Net, DiT and a sequence transformer.

Every backbone maps ``x (B, C, *spatial)`` (the scaled belief mean; for discrete data ``2 theta - 1``
of the class probabilities) and ``t (B,)`` in [0, 1] (0 = no information, 1 = data) to
``(B, out_channels, *spatial)``, and returns exactly 0 until trained, so an untrained denoiser is
its preconditioning's baseline.  The MLP, U-Net and DiT take images, ``spatial = (H, W)``; the
transformer takes sequences (text8), ``spatial = (L,)``.  Constructors take ``in_channels``,
``out_channels`` and ``image_size`` (the side ``H = W``, or the length ``L``) plus their own options.

``build_model`` takes a ``model`` config node's keys as they are::

    build_model(**cfg.model, in_channels=3, out_channels=6, image_size=32)

``name`` is ``mlp``, ``unet``, ``dit``, ``transformer`` or a DiT size, ``DiT-{S,B,L,XL}/{2,4,8}``,
which sets the width, depth, heads and patch (explicit keys override it).  An optional ``kind``
(``mlp``, ``unet``, ``dit``, ``transformer``) names the backbone outright; ``name`` is then a label,
and a DiT size for a DiT.  Every other key is a constructor argument.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from .embeddings import FourierFeatures, NoiseEmbedding, SinusoidalEmbedding
from .mlp import MLP

# kind -> (module, class).  Only the module of the backbone asked for is imported: the DiT and the
# transformer stand on timm (which pulls in torchvision), and importing it costs about 2 s of CPU and
# 200 MB before a run that trains the MLP has done anything.
BACKBONES: dict[str, tuple[str, str]] = {
    "mlp": ("mlp", "MLP"), "unet": ("unet", "UNet"), "dit": ("dit", "DiT"),
    "transformer": ("transformer", "SequenceTransformer"),
}
_LAZY = {cls: module for module, cls in BACKBONES.values()} | {"dit_size": "dit"}


class _Backbones(Mapping[str, type[nn.Module]]):
    """``kind -> backbone class``; looking a class up imports its module (and its dependencies) then."""

    def __getitem__(self, kind: str) -> type[nn.Module]:
        if kind not in BACKBONES:
            raise KeyError(kind)
        module, cls = BACKBONES[kind]
        return getattr(importlib.import_module(f".{module}", __name__), cls)

    def __contains__(self, kind: object) -> bool:  # without importing anything
        return kind in BACKBONES

    def __iter__(self) -> Iterator[str]:
        return iter(BACKBONES)

    def __len__(self) -> int:
        return len(BACKBONES)


MODELS: Mapping[str, type[nn.Module]] = _Backbones()


def backbone_class(kind: str) -> type[nn.Module]:
    """The class of backbone ``kind`` (a key of :data:`MODELS`), importing its module now."""
    if kind not in MODELS:
        raise ValueError(f"unknown model '{kind}': choose one of {', '.join(MODELS)} (or a DiT name like DiT-L/2)")
    return MODELS[kind]


def __getattr__(name: str) -> Any:
    # ``from bsi.models import DiT`` still works; it imports the DiT's module (and timm) at that point.
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Keys a backbone gained after bsi 0.2, with the value that builds what a config without them built.  A
# run records every constructor keyword (:func:`model_settings`), so a recorded config that lacks one was
# written before it existed and gets this value, not today's default: its checkpoint still loads.
ADDED_KEYS: dict[str, dict[str, Any]] = {"mlp": {"block_layers": 2, "norm": True, "time_mlp": True}}
# constructor parameters that the data sets, not the model config
DATA_SIZES = ("self", "in_channels", "out_channels", "image_size")


def model_kind(name: str, kind: str | None = None) -> str:
    """The backbone kind of a config's ``name`` and optional ``kind`` (see the module docstring)."""
    return kind if kind is not None else "dit" if name.startswith("DiT-") else name


def _sized(kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    if kind == "dit" and name != "dit":
        from .dit import dit_size

        return {**dit_size(name), **options}
    return options


def build_model(
    name: str,
    in_channels: int,
    out_channels: int,
    image_size: int,
    *,
    kind: str | None = None,
    **options: Any,
) -> nn.Module:
    """The backbone named by ``kind`` and/or ``name`` (see the module docstring) with ``options``."""
    kind = model_kind(name, kind)
    cls = backbone_class(kind)
    if "size" in options:
        raise ValueError("there is no 'size' option: pick a preset config (model=unet_paper, model.name=DiT-L/2)")
    return cls(in_channels=in_channels, out_channels=out_channels, image_size=image_size,
               **_sized(kind, name, options))


def model_settings(model: Mapping[str, Any]) -> dict[str, Any]:
    """A model config with every constructor keyword of its backbone: its own values (a DiT size's for a
    DiT name), the constructor's defaults for the rest.  What a run records."""
    kind = model_kind(model["name"], model.get("kind"))
    signature = inspect.signature(backbone_class(kind).__init__)
    options = _sized(kind, model["name"], {k: v for k, v in model.items() if k not in ("name", "kind")})
    defaults = {key: p.default for key, p in signature.parameters.items()
                if key not in DATA_SIZES and p.default is not p.empty}
    return {"name": model["name"], "kind": kind, **defaults, **options}


def recorded_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """The complete settings (:func:`model_settings`) of a model config read from a checkpoint or export, the
    :data:`ADDED_KEYS` it lacks at their earlier values."""
    return model_settings({**ADDED_KEYS.get(model_kind(model["name"], model.get("kind")), {}), **model})


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; works on the ``meta`` device too."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "ADDED_KEYS", "BACKBONES", "DATA_SIZES", "DiT", "MLP", "MODELS", "FourierFeatures", "NoiseEmbedding", "SequenceTransformer", "SinusoidalEmbedding", "UNet", "backbone_class",
    "build_model", "count_parameters", "model_kind", "model_settings", "recorded_model",
]
