"""Bayesian Sample Inference: BSI, Bayesian Flow Networks and VDM-style diffusion as settings of one engine."""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version: pyproject.toml's, as installed
    __version__ = version("bsi")
except PackageNotFoundError:  # pragma: no cover - a source tree on sys.path without an install
    __version__ = "0+unknown"

__all__ = ["__version__"]
