"""Bayesian Sample Inference: BSI, Bayesian Flow Networks and VDM-style diffusion as settings of one engine.

``bsi.load(SOURCE)`` returns a trained model (:class:`bsi.pretrained.Pretrained`) from an export
folder, a run directory, a checkpoint file or a Hugging Face Hub id; it is imported on first use,
so ``import bsi`` stays light.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:  # the one version: pyproject.toml's, as installed
    __version__ = version("bsi")
except PackageNotFoundError:  # pragma: no cover - a source tree on sys.path without an install
    __version__ = "0+unknown"

__all__ = ["Pretrained", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "Pretrained"):  # torch and the models load only when asked for
        from . import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'bsi' has no attribute {name!r}")
