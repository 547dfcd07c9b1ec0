"""The categorical output of K-class data, whose belief is about its one-hot vector (BFN's discrete data).

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
has one more axis than the data, the class axis, last: data ``(B, *S)`` -> belief ``(B, *S, K)``
(:class:`bsi.engine.space.OneHot` holds those coordinates).
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

from .belief import expand_as_batch, sender_sample
from .choices import check_choice
from .output import KSTEP_ESTIMATORS, levels
from .quadrature import categorical_kl_antithetic
from .random import GeneratorLike, rand, randn


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
    def shape(self) -> torch.Size:
        return self.log_probs.shape

    def finite(self) -> bool:
        return not bool(torch.isnan(self.log_probs).any())

    @property
    def mean(self) -> Tensor:
        """``e_hat = E[e_k]``: the class probabilities, ``(B, *S, K)``."""
        return self.probs

    def measurement_kl(self, e: Tensor, alpha: Tensor, generator: GeneratorLike = None,
                       estimator: str = "one_draw") -> Tensor:
        """Estimate of ``KL(N(e_x, 1/alpha) || sum_k p_k N(e_k, 1/alpha))`` per variable ``(B, *S)`` (nats).

        With ``y = e_x + eps/sqrt(alpha)``, ``log N(y; e_k) - log N(y; e_x) = alpha (y_k - y_x)``, so the
        ``one_draw`` estimate is ``-logsumexp_k(log p_k + alpha (y_k - y_x))``: BFN's discrete-time
        ``ln p_S(y | x) - ln p_R(y | theta)`` for the same draw, in other coordinates.  ``y`` has K
        dimensions, too many for quadrature, so ``low_variance`` averages the estimate at ``eps``
        and ``-eps`` (antithetic; still unbiased).
        """
        if check_choice("k-step estimator", estimator, KSTEP_ESTIMATORS) == "low_variance":
            return categorical_kl_antithetic(e, self.log_probs, alpha, generator)
        return self.log_ratio(e, alpha, sender_sample(e, alpha, generator, self.log_probs.dtype))

    def log_ratio(self, e: Tensor, alpha: Tensor, y: Tensor) -> Tensor:
        """``ln N(y; e_x, 1/alpha) - ln sum_k p_k N(y; e_k, 1/alpha)`` per variable ``(B, *S)`` (nats), ``y`` ``(B, *S, K)``."""
        dtype = self.log_probs.dtype
        a, y = expand_as_batch(alpha, e).to(dtype), y.to(dtype)
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

    def log_prob(self, e: Tensor) -> Tensor:
        """``ln p(x)`` of the class ``e`` (one-hot) encodes, per variable ``(B, *S)`` (nats)."""
        return (self.log_probs * e).sum(-1)

    # The class probabilities are both the mean and the spread: calibrating them is the log-likelihood itself.
    spread_log_prob = log_prob

    def final_sample(self, generator: GeneratorLike = None) -> Tensor:
        """A class drawn from the output, as its level in [-1, 1], ``(B, *S)``."""
        return levels(self.num_classes, self.probs.device, self.probs.dtype)[self._draw_class(generator)]


__all__ = ["CategoricalOutput"]
