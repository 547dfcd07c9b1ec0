"""What a denoiser predicts: a point ``x_hat``, or a discretised distribution over the data's levels.

A denoiser returns either a tensor ``x_hat`` (wrapped here as :class:`PointOutput`) or a
:class:`DiscretisedOutput`.  Both answer the questions the ELBO and the samplers ask:

* ``mean``: the point estimate ``x_hat`` that enters the infinite-step measurement term;
* ``measurement_kl(x, alpha, generator, estimator)``: one step's ``KL(N(x, 1/alpha) || receiver)``
  per element (nats): exact for a point; for a distribution ``one_draw`` (one drawn measurement)
  or ``low_variance`` (the expectation over the measurement by quadrature, ``quadrature.py``);
* ``sample_measurement(alpha)``: a measurement ``y`` drawn from the receiver;
* ``log_prob(x)``: the reconstruction log-likelihood per element (an output knows its bins and,
  for a point, the reconstruction precision from when it was built);
* ``final_sample()``: the generated value at the end of sampling.

Data with ``bins`` levels lies on ``c_k = -1 + 2k/(bins-1)``; bin ``k`` spans ``c_k ± 1/(bins-1)``
and the two edge bins are open to ±infinity.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch
from torch import Tensor

from .belief import expand_as_batch, sender_sample
from .choices import check_choice
from .discretised import discretised_level_draw, discretised_mean
from .quadrature import mixture_kl_quadrature
from .random import GeneratorLike, rand, randn

_LOG_2PI = math.log(2 * math.pi)
_SQRT1_2 = math.sqrt(0.5)
KSTEP_ESTIMATORS = ("low_variance", "one_draw")


def levels(bins: int, device=None, dtype=torch.float32) -> Tensor:
    """The ``bins`` data levels in [-1, 1], ``(bins,)``."""
    return torch.linspace(-1, 1, bins, device=device, dtype=dtype)


def level_index(x: Tensor, bins: int) -> Tensor:
    """Index of the level nearest to ``x`` (long, same shape)."""
    return torch.round((x + 1) * (bins - 1) / 2).clamp(0, bins - 1).long()


def log1mexp(d: Tensor) -> Tensor:
    """``log(1 - exp(d))`` for ``d <= 0``, accurate at both ends (split at ``-ln 2``)."""
    return torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def log_ndtr(z: Tensor) -> Tensor:
    """``log Phi(z)`` with finite gradients everywhere.

    Below ``z = -20`` it uses the asymptotic series ``-z^2/2 - log(-z sqrt(2 pi)) + log(1 - 1/z^2 + 3/z^4 - ...)``
    to the ``z^-12`` term (relative error below 1e-16 there), because torch's own backward loses
    accuracy far in the tail and returns NaN at ``-inf``.
    Each branch only sees arguments from its own region, so neither side produces NaN.
    """
    # where, not clamp: clamp passes no gradient at the bound itself, z = -20 exactly
    far = z < -20
    tail = torch.where(far, z, -20.0)
    inv2 = 1 / tail**2
    series = inv2 * (-1 + inv2 * (3 + inv2 * (-15 + inv2 * (105 + inv2 * (-945 + inv2 * 10395)))))
    asymptotic = -0.5 * tail**2 - torch.log(-tail) - 0.5 * _LOG_2PI + torch.log1p(series)
    return torch.where(far, asymptotic, torch.special.log_ndtr(torch.where(far, -20.0, z)))


# Standardised bounds past which a bin's mass leaves the dtype's normal numbers: ``tail``, below which
# the upper bound's log-mass comes from log Phi (Phi(-11) = 2e-28 in float32, Phi(-36) = 2e-284 in
# float64), and ``floor``, where a lower bound stops mattering to a bin whose upper bound is above
# -tail (Phi(floor) / Phi(-tail) below the dtype's epsilon) while Phi(floor) is still a normal number:
# subnormal numbers make erfc and log several times slower on a CPU.
_TAILS = {torch.float32: (11.0, 12.6), torch.float64: (36.0, 37.0)}


def _log_ndtr_interval(lo: Tensor, hi: Tensor) -> Tensor:
    """``log(Phi(hi) - Phi(lo))`` from differences of ``log Phi``, for ``lo < hi < 0`` far in the tail."""
    # Phi(1.5 hi - 40) underflows against Phi(hi) (hi < -11), and unlike hi - 40 it stays apart from hi in
    # float32 however far the tail; it keeps -inf out of the gradients
    lo = torch.maximum(lo, hi * 1.5 - 40.0)
    log_hi = log_ndtr(hi)
    return log_hi + log1mexp(log_ndtr(lo) - log_hi)


def _select(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``where(mask, a, b)`` for finite ``a``, ``b``: ``lerp`` with weights 0 and 1 is exact (also in its
    gradient), and on a CPU several times faster than ``where``, whose boolean mask is not vectorised."""
    return torch.lerp(b, a, mask.to(a.dtype))


def _mirrored_log_mass(lo: Tensor, hi: Tensor, gather: bool | None) -> Tensor:
    """``log(Phi(hi) - Phi(lo))`` for ``lo < hi``, ``lo + hi <= 0`` (so ``lo < 0``, ``|lo| >= |hi|``); see
    :func:`log_interval_mass`.  ``lo`` may be ``-inf`` or any number below ``-floor``."""
    tail, floor = _TAILS.get(lo.dtype, _TAILS[torch.float32])
    inside = hi >= 0
    sign = inside.to(hi.dtype).mul_(2).sub_(1)  # |hi| = hi * sign, with a gradient at hi = 0 (abs has none)
    upper = torch.erfc((hi * sign).clamp_(max=tail).mul_(_SQRT1_2))  # 2 Phi(-|hi|)
    lower = torch.erfc(lo.clamp(min=-floor).mul_(-_SQRT1_2))  # 2 Phi(lo)
    # Both forms on every element, each finite everywhere (a zero difference is floored), so that
    # the one not taken passes a zero gradient, not NaN.
    holds_zero = torch.log1p((upper + lower).mul_(-0.5))
    below_zero = torch.log((upper - lower).mul_(0.5).clamp_(min=torch.finfo(lo.dtype).tiny))
    out = _select(inside, holds_zero, below_zero)
    far = hi < -tail
    if gather is None:
        gather = hi.device.type == "cpu"
    if not gather:
        hi_far = hi.clamp(max=-tail)
        return torch.where(far, _log_ndtr_interval(torch.where(far, lo, hi_far - 1.0), hi_far), out)
    idx = far.reshape(-1).nonzero().squeeze(1)
    if not idx.numel():
        return out
    far_mass = _log_ndtr_interval(lo.reshape(-1).index_select(0, idx), hi.reshape(-1).index_select(0, idx))
    return out.reshape(-1).index_put((idx,), far_mass).view(out.shape)


def log_interval_mass(lo: Tensor, hi: Tensor, gather: bool | None = None) -> Tensor:
    """``log(Phi(hi) - Phi(lo))`` for standardised bounds ``lo < hi`` (either may be infinite), elementwise.

    Mirrors the interval into the lower half (mass is symmetric), where both tails ``Phi(lo)`` and
    ``Phi(-|hi|)`` are ``erfc`` of positive numbers, accurate to the dtype's epsilon relative to
    themselves: an interval holding 0 has ``log1p`` of minus their sum, one below 0 the log of their
    difference.  Neither subtracts numbers much larger than the result, except for an interval far
    narrower than one standard deviation, where the relative error is about epsilon over the mass.
    Where the mass would leave the dtype's range (``hi`` below ``-tail``, see ``_TAILS``) it is taken
    from differences of ``log Phi``, which stay accurate however far the tail.  ``gather``: compute
    that tail form on its own elements only (the default on a CPU) or on all of them, merged
    elementwise (elsewhere: no data-dependent shapes).  Gradients are finite everywhere.
    """
    dtype = torch.promote_types(lo.dtype, hi.dtype)
    # mirror by -1 where lo + hi > 0; multiplying by +-1 keeps infinities infinite (no 0 * inf)
    mirror = ((lo + hi) > 0).to(dtype).mul_(-2).add_(1)
    a, b = lo * mirror, hi * mirror
    return _mirrored_log_mass(torch.minimum(a, b), torch.maximum(a, b), gather)


# Added to an edge bin's open bound: far below -floor in any dtype, and finite, so that it enters
# sums and products without NaN.
_OPEN = 1e30


def discretised_gaussian_log_prob(x: Tensor, mean: Tensor, scale: Tensor | float, bins: int,
                                  gather: bool | None = None) -> Tensor:
    """Log-mass of ``x``'s bin under ``N(mean, scale^2)`` integrated over bins, elementwise (nats).

    ``scale`` (a standard deviation) is a tensor broadcasting against ``mean`` or one number.
    Computed in at least float32 whatever the input dtype; ``gather`` as in :func:`log_interval_mass`.
    """
    dtype = torch.promote_types(mean.dtype, torch.float32)
    mean = mean.to(dtype)
    inv_scale = 1.0 / scale if isinstance(scale, (int, float)) else scale.to(dtype).reciprocal()
    top = bins - 1
    k = level_index(x, bins).to(dtype)
    centre = (2 * k).sub_(top).div_(top)  # (2k - top)/top: one rounding, where -1 + 2k/top cancels near 0
    # The bin's centre from the mean and its half width, in scales; the mirror image of the bin about
    # the mean (the mass is symmetric) puts it at -|d| +- half.  An edge bin is open on its outer side,
    # which may not be the one the mirror moves down: it is mirrored by its centre's sign (+-1).
    d = (centre - mean) * inv_scale
    half = inv_scale / top
    edge = (k == 0) | (k == top)
    q = _select(edge, centre * d, d.abs())
    lo = (-half - q).sub_(edge.to(dtype), alpha=_OPEN)
    return _mirrored_log_mass(lo, half - q, gather)


def gaussian_log_prob(x: Tensor, mean: Tensor, precision: Tensor) -> Tensor:
    """Log-density of ``N(mean, 1/precision)`` at ``x``, elementwise (nats)."""
    return 0.5 * (torch.log(precision) - _LOG_2PI) - 0.5 * precision * (x - mean) ** 2


class PointOutput:
    """A point prediction ``x_hat``: the receiver of a step is ``N(x_hat, 1/alpha)``.

    ``alpha_r`` (precision) and ``bins`` define its reconstruction ``N(x_hat, 1/alpha_r)``,
    integrated over the data's bins when the data are quantised.
    """

    def __init__(self, mean: Tensor, alpha_r: float | None = None, bins: int | None = None):
        self.mean, self.alpha_r, self.bins = mean, alpha_r, bins

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    def finite(self) -> bool:
        return bool(torch.isfinite(self.mean).all())

    def measurement_kl(self, x: Tensor, alpha: Tensor, generator: GeneratorLike = None,
                       estimator: str = "one_draw") -> Tensor:
        """``alpha/2 (x - x_hat)^2`` elementwise (exact whatever the ``estimator``; no draw needed)."""
        return 0.5 * expand_as_batch(alpha, x).to(x.dtype) * (x - self.mean) ** 2

    def log_ratio(self, x: Tensor, alpha: Tensor, y: Tensor) -> Tensor:
        """``ln N(y; x, 1/alpha) - ln N(y; x_hat, 1/alpha)`` elementwise (nats): the step's term at ``y``."""
        a = expand_as_batch(alpha, x).to(x.dtype)
        return 0.5 * a * ((y - self.mean) ** 2 - (y - x) ** 2)

    def sample_measurement(self, alpha: Tensor, generator: GeneratorLike = None) -> Tensor:
        std = expand_as_batch(alpha.rsqrt(), self.mean).to(self.mean.dtype)
        return self.mean + std * randn(self.mean.shape, generator, self.mean.device, self.mean.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Reconstruction ``log p(x | x_hat)`` under ``N(x_hat, 1/alpha_r)``, discretised if ``bins``."""
        if self.alpha_r is None:
            raise ValueError("this point prediction has no reconstruction precision: build it with alpha_r")
        if self.bins is None:
            return gaussian_log_prob(x, self.mean, torch.as_tensor(self.alpha_r, dtype=x.dtype))
        return discretised_gaussian_log_prob(x, self.mean, self.alpha_r**-0.5, self.bins)

    def final_sample(self, generator: GeneratorLike = None) -> Tensor:
        return self.mean

    def spread_log_prob(self, x: Tensor) -> Tensor:
        raise ValueError("a point prediction has no spread to calibrate: use output=discretised")


class DiscretisedOutput:
    """A distribution over the data's ``bins`` levels, independent across elements.

    Build it from level log-probabilities ``(B, ..., bins)`` (as the exact posterior of a point set
    does) or, as models do, with :meth:`from_gaussian`.  ``mean = sum_k p_k c_k`` is ``(B, ...)``;
    for a Gaussian it is computed from the ``bins - 1`` inner CDF values alone, so the training
    loss (which needs only the mean) never builds the ``(B, ..., bins)`` log-probabilities.
    """

    def __init__(self, log_probs: Tensor | None = None, *, gaussian: tuple[Tensor, Tensor, int] | None = None):
        if (log_probs is None) == (gaussian is None):
            raise ValueError("DiscretisedOutput needs exactly one of log_probs or gaussian=(m, scale, bins)")
        self._log_probs, self._gaussian = log_probs, gaussian
        self.bins = log_probs.shape[-1] if log_probs is not None else gaussian[2]

    @classmethod
    def from_gaussian(cls, m: Tensor, scale: Tensor, bins: int) -> "DiscretisedOutput":
        """``N(m, scale^2)`` integrated over each bin (edge bins open); ``m``, ``scale`` ``(B, ...)``.

        Computed in at least float32 whatever the input dtype.
        """
        dtype = torch.promote_types(m.dtype, torch.float32)
        return cls(gaussian=(m.to(dtype), scale.to(dtype), bins))

    def _inner_z(self) -> Tensor:
        m, scale, _ = self._gaussian
        inner = (self.levels[1:] + self.levels[:-1]) / 2
        return (inner - m[..., None]) / scale[..., None]

    @cached_property
    def levels(self) -> Tensor:
        """``(bins,)`` the data levels, built on first use: the training loss never needs them."""
        ref = self._log_probs if self._log_probs is not None else self._gaussian[0]
        return levels(self.bins, device=ref.device, dtype=ref.dtype)

    @cached_property
    def log_probs(self) -> Tensor:
        """``(B, ..., bins)`` log-probabilities of the levels."""
        if self._log_probs is not None:
            return self._log_probs
        z = self._inner_z()
        # The open edges enter as constants: (inf - m)/scale would send inf * 0 = NaN into the gradient.
        inf = z.new_full((*z.shape[:-1], 1), float("inf"))
        return log_interval_mass(torch.cat([-inf, z], -1), torch.cat([z, inf], -1))

    @cached_property
    def probs(self) -> Tensor:
        return self.log_probs.exp()

    @property
    def shape(self) -> torch.Size:
        """The shape of the data it describes, ``(B, ...)``, known without computing the mean."""
        return self._gaussian[0].shape if self._gaussian is not None else self._log_probs.shape[:-1]

    def finite(self) -> bool:
        """Whether its parameters are free of NaN and infinity (a level may have probability 0)."""
        if self._gaussian is not None:
            return bool(torch.isfinite(self._gaussian[0]).all() and torch.isfinite(self._gaussian[1]).all())
        return not bool(torch.isnan(self._log_probs).any())

    @cached_property
    def mean(self) -> Tensor:
        """``sum_k p_k c_k``; for a Gaussian in O(1) work per element (:func:`.discretised.discretised_mean`)."""
        if self._log_probs is not None:
            return (self.probs * self.levels).sum(-1)
        m, scale, bins = self._gaussian
        return discretised_mean(m, scale, bins)

    def measurement_kl(self, x: Tensor, alpha: Tensor, generator: GeneratorLike = None,
                       estimator: str = "one_draw") -> Tensor:
        """``KL(N(x, 1/alpha) || sum_k p_k N(c_k, 1/alpha))`` elementwise (nats).

        ``one_draw``: the log-ratio at one drawn ``y ~ N(x, 1/alpha)``; ``low_variance``: its expectation
        over ``y`` by Gauss-Hermite quadrature (no draw; float64).
        """
        if check_choice("k-step estimator", estimator, KSTEP_ESTIMATORS) == "low_variance":
            return mixture_kl_quadrature(x, self.log_probs, self.levels, alpha)
        return self.log_ratio(x, alpha, sender_sample(x, alpha, generator, self.log_probs.dtype))

    def log_ratio(self, x: Tensor, alpha: Tensor, y: Tensor) -> Tensor:
        """``ln N(y; x, 1/alpha) - ln sum_k p_k N(y; c_k, 1/alpha)`` elementwise (nats): the step's term at ``y``."""
        dtype = self.log_probs.dtype
        a, y = expand_as_batch(alpha, x).to(dtype), y.to(dtype)
        log_sender = -0.5 * a * (y - x) ** 2
        log_receiver = torch.logsumexp(self.log_probs - 0.5 * a[..., None] * (y[..., None] - self.levels) ** 2, -1)
        return log_sender - log_receiver

    def _draw_level(self, generator: GeneratorLike) -> Tensor:
        if self._gaussian is not None:
            m, scale, bins = self._gaussian
            return discretised_level_draw(m, scale, bins, generator)
        u = rand(self.mean.shape, generator, self.mean.device, self.mean.dtype)
        k = (self.probs.cumsum(-1) < u[..., None]).sum(-1).clamp(max=self.bins - 1)
        return self.levels[k]

    def sample_measurement(self, alpha: Tensor, generator: GeneratorLike = None) -> Tensor:
        """``y`` from the mixture receiver: a level ``c_k ~ p``, then ``y ~ N(c_k, 1/alpha)``."""
        c = self._draw_level(generator)
        std = expand_as_batch(alpha.rsqrt(), c).to(c.dtype)
        return c + std * randn(c.shape, generator, c.device, c.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p_k(x)`` of the level ``x`` lies on, elementwise (nats); O(1) per element for a Gaussian."""
        if self._gaussian is not None:
            m, scale, bins = self._gaussian
            return discretised_gaussian_log_prob(x, m, scale, bins)
        k = level_index(x, self.bins)
        return self.log_probs.gather(-1, k[..., None]).squeeze(-1)

    def spread_log_prob(self, x: Tensor) -> Tensor:
        """:meth:`log_prob` with the location held fixed: its gradient trains the spread alone."""
        if self._gaussian is None:
            return self.log_prob(x)
        m, scale, bins = self._gaussian
        return discretised_gaussian_log_prob(x, m.detach(), scale, bins)

    def final_sample(self, generator: GeneratorLike = None) -> Tensor:
        """A level drawn from the output distribution."""
        return self._draw_level(generator)
