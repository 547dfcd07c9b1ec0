"""Data spaces: the coordinates the belief lives in, and how a prediction becomes an output.

A process's belief is a Gaussian about a vector.  For images and other real-valued data that
vector is the data itself (:class:`Continuous`, optionally quantised into ``bins`` levels).  For
K-class data it is the class's one-hot vector (:class:`OneHot`: BFN's discrete data; see
``docs/design.md``).  Everything that differs between the two is here, so the process, the
objectives and the samplers never ask which kind of data they hold:

* ``encode(x)``: data ``(B, *S)`` in belief coordinates (``(B, *S)`` or ``(B, *S, K)``);
* ``check(x)``: ``ValueError`` naming the problem unless ``x`` is valid data;
* ``belief_shape(shape)``, ``in_channels(C)``, ``out_channels(C, output)``: sizes for samplers and backbones;
* ``read(prediction)``: a denoiser's return value as the output object the ELBO and samplers ask;
* ``to_data(mu, lam, x_hat)``: a belief and a prediction shaped like the data, for pictures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .belief import expand_as_batch
from .categorical import CategoricalOutput
from .output import DiscretisedOutput, PointOutput, level_index, levels

_LEVEL_TOL = 1e-6


def _check_batched(x: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(f"data must be batched as (B, ...), got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class Continuous:
    """Real-valued data, the belief's own coordinates.

    bins: levels of quantised data in [-1, 1] (256 for 8-bit images; ``None`` for continuous data).
    alpha_r: precision of the reconstruction of a point prediction, ``N(x_hat, 1/alpha_r)``
        discretised into the bins (a distribution output brings its own reconstruction).
    """

    bins: int | None = None
    alpha_r: float | None = None

    def __post_init__(self):
        if self.bins is not None and self.bins < 2:
            raise ValueError(f"quantised data needs at least 2 levels, got data_bins={self.bins}")

    def encode(self, x: Tensor) -> Tensor:
        return x

    def check(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` is a ``(B, ...)`` batch, inside [-1, 1] when quantised."""
        _check_batched(x)
        if self.bins is None or not x.numel():
            return
        low, high = (float(v) for v in torch.aminmax(x))  # one reduction, one wait for an accelerator
        if low < -1 - _LEVEL_TOL or high > 1 + _LEVEL_TOL:
            raise ValueError(
                f"data must lie in [-1, 1] for a process with data_bins={self.bins}, got values in "
                f"[{low:.3g}, {high:.3g}]: scale it with bsi.data.to_float"
            )

    def belief_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)

    def in_channels(self, data_channels: int) -> int:
        return data_channels

    def out_channels(self, data_channels: int, output: str) -> int:
        """A point needs one channel per data channel; a discretised output a location and a log-scale."""
        return 2 * data_channels if output == "discretised" else data_channels

    def read(self, prediction: Tensor | PointOutput | DiscretisedOutput) -> PointOutput | DiscretisedOutput:
        """A plain ``x_hat`` tensor becomes a :class:`PointOutput` with this space's reconstruction."""
        if isinstance(prediction, Tensor):
            return PointOutput(prediction, self.alpha_r, self.bins)
        if isinstance(prediction, (PointOutput, DiscretisedOutput)):
            return prediction
        raise ValueError(f"a denoiser must return a tensor or an output object, got {type(prediction).__name__}")

    def to_data(self, mu: Tensor, lam: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        return mu, x_hat


@dataclass(frozen=True)
class OneHot:
    """``num_classes``-class data as one-hot vectors on a new last axis: ``(B, *S) -> (B, *S, K)``.

    Data enters as its levels in [-1, 1] (class ``k`` of ``K`` is ``-1 + 2k/(K-1)``, what
    :func:`bsi.data.to_float` gives) or as integer class indices.
    """

    num_classes: int

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"categorical data needs at least 2 classes, got num_classes={self.num_classes}")

    @property
    def bins(self) -> int:
        """The data's levels: one per class."""
        return self.num_classes

    def classes(self, x: Tensor) -> Tensor:
        """Class indices (long, ``x``'s shape) of levels in [-1, 1] or of integer class indices."""
        return level_index(x, self.num_classes) if x.dtype.is_floating_point else x.long()

    def encode(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``(B, *S)`` data -> ``(B, *S, K)`` one-hot vectors (``x``'s float dtype, else float32)."""
        dtype = dtype or (x.dtype if x.dtype.is_floating_point else torch.float32)
        return torch.nn.functional.one_hot(self.classes(x), self.num_classes).to(dtype)

    def check(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` holds the classes as integers in [0, K) or as their levels."""
        _check_batched(x)
        k = self.num_classes
        if not x.numel():
            return
        if x.dtype.is_floating_point:
            off = (x - levels(k, x.device, x.dtype)[level_index(x, k)]).abs().max()
            if off > 1e-4 or x.min() < -1 - _LEVEL_TOL or x.max() > 1 + _LEVEL_TOL:
                raise ValueError(
                    f"categorical data with {k} classes must lie on the levels -1 + 2k/{k - 1} (or be integer class "
                    f"indices); got values up to {off.item():.3g} away from a level: scale it with bsi.data.to_float"
                )
        elif x.min() < 0 or x.max() >= k:
            raise ValueError(f"class indices must lie in [0, {k}), got [{x.min().item()}, {x.max().item()}]")

    def belief_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape, self.num_classes)

    def in_channels(self, data_channels: int) -> int:
        return data_channels * self.num_classes

    def out_channels(self, data_channels: int, output: str) -> int:
        """Logits: one channel per class of each data channel."""
        return data_channels * self.num_classes

    def read(self, prediction: Tensor | PointOutput | CategoricalOutput) -> CategoricalOutput:
        """A categorical output; a plain tensor is read as class probabilities (the exact denoiser's)."""
        if isinstance(prediction, CategoricalOutput):
            return prediction
        if isinstance(prediction, PointOutput):
            prediction = prediction.mean
        if not isinstance(prediction, Tensor):
            raise ValueError("a categorical process needs class probabilities or a CategoricalOutput, "
                             f"got {type(prediction).__name__}")
        return CategoricalOutput.from_probs(prediction)

    def to_data(self, mu: Tensor, lam: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        """The mean level under ``theta = softmax(lam mu)`` and under the prediction, ``(B, *S)`` each."""
        return self.mean_level(self.theta(mu, lam)), self.mean_level(x_hat)

    def mean_level(self, probs: Tensor) -> Tensor:
        """``sum_k p_k c_k``: class probabilities ``(B, *S, K)`` as one level in [-1, 1] per variable."""
        return probs @ levels(self.num_classes, probs.device, probs.dtype)

    @staticmethod
    def logits(mu: Tensor, lam: Tensor) -> Tensor:
        """BFN's logits ``lam mu - lam/K`` (= ``beta (K mu - 1)``) of beliefs ``mu`` ``(B, *S, K)``."""
        lam = expand_as_batch(lam, mu).to(mu.dtype)
        return lam * mu - lam / mu.shape[-1]

    @staticmethod
    def theta(mu: Tensor, lam: Tensor) -> Tensor:
        """BFN's input distribution ``softmax(lam mu)`` over the classes, ``(B, *S, K)``."""
        return torch.softmax(expand_as_batch(lam, mu).to(mu.dtype) * mu, dim=-1)


DataSpace = Continuous | OneHot

__all__ = ["Continuous", "DataSpace", "OneHot"]
