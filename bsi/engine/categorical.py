"""K-class data as a Gaussian belief about its one-hot vector: BFN's discrete data in this engine.

BFN's discrete sender measures class ``x`` of ``K`` with ``y ~ N(alpha (K e_x - 1), alpha K I)``.
The affine map ``y' = y / (alpha K) + 1/K`` turns that into ``y' ~ N(e_x, 1/(alpha K) I)``: a
Gaussian measurement of the one-hot vector ``e_x`` with precision ``alpha K``.  So with precision
``lam = K beta`` (``beta`` is BFN's accuracy) and no start information (``lam0 = 0``: VDM's family,
``a = 1``, ``s2 = 1/lam``), the belief mean ``mu`` of this engine carries exactly BFN's state:

    BFN's logits  = lam * mu - beta = beta (K mu - 1)  ~  N(beta (K e_x - 1), beta K I),
    theta         = softmax(lam * mu)   (the class posterior under a uniform prior),

and every piece of the engine carries over unchanged: the infinite-step term
``1/2 int ||e_x - e_hat||^2 d lam`` is BFN's ``K beta'(t)/2 ||e_x - e_hat||^2`` integrated over
``t``; the k-step term is ``KL(N(e_x, 1/alpha) || sum_k p_k N(e_k, 1/alpha))`` (the receiver is a
mixture over the K vertices, just as the discretised output's is over the levels); the
reconstruction is ``-ln p(x)`` of the output at the top precision; and the samplers move ``mu``.

Data enters as its levels in [-1, 1] (class ``k`` of ``K`` is ``-1 + 2k/(K-1)``, the same floats
every other process gets from :func:`bsi.data.to_float`) or as integer class indices; the belief
has one more axis than the data, the class axis, last: data ``(B, *S)`` -> belief ``(B, *S, K)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .belief import expand_as_batch
from .output import PointOutput, level_index, levels
from .random import GeneratorLike, rand, randn


@dataclass(frozen=True)
class OneHot:
    """The belief space of ``num_classes``-class data: one-hot vectors on a new last axis."""

    num_classes: int

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"categorical data needs at least 2 classes, got num_classes={self.num_classes}")

    def classes(self, x: Tensor) -> Tensor:
        """Class indices (long, ``x``'s shape) of levels in [-1, 1] or of integer class indices."""
        if x.dtype.is_floating_point:
            return level_index(x, self.num_classes)
        return x.long()

    def encode(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``(B, *S)`` data -> ``(B, *S, K)`` one-hot vectors (``x``'s float dtype, else float32)."""
        dtype = dtype or (x.dtype if x.dtype.is_floating_point else torch.float32)
        return torch.nn.functional.one_hot(self.classes(x), self.num_classes).to(dtype)

    def belief_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape, self.num_classes)

    def check(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` holds the classes as integers in [0, K) or as their levels."""
        k = self.num_classes
        if not x.numel():
            return
        if x.dtype.is_floating_point:
            off = (x - levels(k, x.device, x.dtype)[level_index(x, k)]).abs().max()
            if off > 1e-4 or x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
                raise ValueError(
                    f"categorical data with {k} classes must lie on the levels -1 + 2k/{k - 1} (or be integer class "
                    f"indices); got values up to {off.item():.3g} away from a level: scale it with bsi.data.to_float"
                )
        elif x.min() < 0 or x.max() >= k:
            raise ValueError(f"class indices must lie in [0, {k}), got [{x.min().item()}, {x.max().item()}]")

    def mean_level(self, probs: Tensor) -> Tensor:
        """``sum_k p_k c_k``: class probabilities ``(B, *S, K)`` as one level in [-1, 1] per variable (for pictures)."""
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


class CategoricalOutput:
    """A distribution over K classes per variable, independent across variables (BFN's output).

    ``log_probs`` is ``(B, *S, K)``.  Asked in belief coordinates (one-hot vectors ``(B, *S, K)``)
    by the ELBO and the samplers; :meth:`final_sample` answers in data coordinates (levels).
    """

    def __init__(self, log_probs: Tensor):
        self.log_probs = log_probs.to(torch.promote_types(log_probs.dtype, torch.float32))
        self.num_classes = log_probs.shape[-1]

    @classmethod
    def from_logits(cls, logits: Tensor) -> CategoricalOutput:
        return cls(torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1))

    @classmethod
    def from_probs(cls, probs: Tensor) -> CategoricalOutput:
        """From class probabilities, such as a posterior mean of one-hot vectors (the exact denoiser's)."""
        p = probs.to(torch.promote_types(probs.dtype, torch.float32))
        return cls(p.clamp_min(torch.finfo(p.dtype).tiny).log())

    @cached_property
    def probs(self) -> Tensor:
        return self.log_probs.exp()

    @property
    def mean(self) -> Tensor:
        """``e_hat = E[e_k]``: the class probabilities, ``(B, *S, K)``."""
        return self.probs

    def measurement_kl(self, e: Tensor, alpha: Tensor, generator: GeneratorLike = None) -> Tensor:
        """One-draw estimate of ``KL(N(e_x, 1/alpha) || sum_k p_k N(e_k, 1/alpha))`` per variable ``(B, *S)``.

        With ``y = e_x + eps/sqrt(alpha)``, ``log N(y; e_k) - log N(y; e_x) = alpha (y_k - y_x)``, so the
        estimate is ``-logsumexp_k(log p_k + alpha (y_k - y_x))``; it is BFN's discrete-time
        ``ln p_S(y | x) - ln p_R(y | theta)`` for the same draw, in other coordinates.
        """
        dtype = self.log_probs.dtype
        a = expand_as_batch(alpha, e).to(dtype)
        y = e.to(dtype) + a.rsqrt() * randn(e.shape, generator, e.device, dtype)
        y_x = (y * e).sum(-1, keepdim=True)
        return -torch.logsumexp(self.log_probs + a * (y - y_x), dim=-1)

    def _draw_class(self, generator: GeneratorLike) -> Tensor:
        u = rand(self.probs.shape[:-1], generator, self.probs.device, self.probs.dtype)
        return (self.probs.cumsum(-1) < u[..., None]).sum(-1).clamp(max=self.num_classes - 1)

    def sample_measurement(self, alpha: Tensor, generator: GeneratorLike = None) -> Tensor:
        """``y`` from the mixture receiver: a class ``k ~ p``, then ``y ~ N(e_k, 1/alpha I)``."""
        e = torch.nn.functional.one_hot(self._draw_class(generator), self.num_classes).to(self.probs.dtype)
        std = expand_as_batch(alpha.rsqrt(), e).to(e.dtype)
        return e + std * randn(e.shape, generator, e.device, e.dtype)

    def log_prob(self, e: Tensor, alpha_r: float | None = None, bins: int | None = None) -> Tensor:
        """``ln p(x)`` of the class ``e`` (one-hot) encodes, per variable ``(B, *S)`` (nats)."""
        return (self.log_probs * e).sum(-1)

    def final_sample(self, generator: GeneratorLike = None) -> Tensor:
        """A class drawn from the output, as its level in [-1, 1], ``(B, *S)``."""
        return levels(self.num_classes, self.probs.device, self.probs.dtype)[self._draw_class(generator)]

    def mode(self) -> Tensor:
        """The most probable class as its level, ``(B, *S)``."""
        return levels(self.num_classes, self.probs.device, self.probs.dtype)[self.probs.argmax(-1)]


def as_categorical(prediction: Tensor | PointOutput | CategoricalOutput) -> CategoricalOutput:
    """A categorical output, reading a plain tensor (or point output) as class probabilities."""
    if isinstance(prediction, CategoricalOutput):
        return prediction
    if isinstance(prediction, PointOutput):
        prediction = prediction.mean
    if not isinstance(prediction, Tensor):
        raise ValueError("a categorical process needs class probabilities or a CategoricalOutput, "
                         f"got {type(prediction).__name__}")
    return CategoricalOutput.from_probs(prediction)


__all__ = ["CategoricalOutput", "OneHot", "as_categorical"]
