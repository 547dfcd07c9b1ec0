"""The Gaussian belief about the unknown sample, and its closed-form marginal.

The belief about ``x`` is ``N(mu, 1/lam)`` per dimension. After measurements of total precision
``lam - lam0`` starting from a belief of precision ``lam0``, the belief mean given the true ``x`` is

    q(mu | x, lam) = N(a(lam) x, s2(lam)),   a = (lam - lam0) / lam,
                                             s2 = (lam - lam0 + lam0 * [start is drawn]) / lam^2.

BSI draws the start ``mu0 ~ N(0, 1/lam0)`` (so ``s2 = 1/lam``), BFN fixes ``mu0 = 0`` with
``lam0 = 1`` (so ``s2 = gamma (1 - gamma)``) and VDM is ``lam0 = 0`` (``a = 1``, ``s2 = 1/SNR``).
All coefficients are computed in float64 (cheap: they are per-example vectors) and cast to the
data's dtype, so that ``lam`` near ``lam0`` and up to 1e6 stays accurate in float32 and bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .random import GeneratorLike, randn


def coefficient_dtype(device: torch.device | str) -> torch.dtype:
    """float64 wherever the device supports it (not on Apple's MPS)."""
    kind = device.type if isinstance(device, torch.device) else torch.device(device).type
    return torch.float32 if kind == "mps" else torch.float64


def expand_as_batch(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-example vector ``(B,)`` to broadcast against ``x`` of shape ``(B, ...)``."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def per_example(values: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
    """Per-example vectors ``(B,)`` (float64) in ``x``'s dtype, shaped to broadcast against ``x`` ``(B, ...)``.

    One stack and one cast for all of them: on a CPU every tensor operation costs microseconds, and a
    training step does this for every coefficient.
    """
    stacked = torch.stack(list(values.values())).to(x.dtype)
    return dict(zip(values, stacked.view(len(values), -1, *([1] * (x.dim() - 1))).unbind(0)))


def sender_sample(e: Tensor, alpha: Tensor, generator: GeneratorLike = None, dtype: torch.dtype | None = None) -> Tensor:
    """A measurement of the sender ``y ~ N(e, 1/alpha)``: ``e`` ``(B, ...)``, precisions ``alpha`` ``(B,)``."""
    dtype = dtype or e.dtype
    std = expand_as_batch(alpha.rsqrt(), e).to(dtype)
    return e.to(dtype) + std * randn(e.shape, generator, e.device, dtype)


@dataclass(frozen=True)
class BeliefFamily:
    """The family of belief marginals ``q(mu | x, lam)`` of one process.

    Attributes:
        lam0: precision of the start belief (before any measurement).
        drawn_start: whether the start mean is drawn from ``N(0, 1/lam0)`` (BSI) rather than fixed
            at 0 (BFN). Irrelevant when ``lam0 == 0`` (VDM).
    """

    lam0: float
    drawn_start: bool

    def _lam(self, lam: Tensor) -> Tensor:
        if lam.dtype == torch.float64:  # as coefficient_dtype asks wherever float64 exists (not on MPS)
            return lam
        return lam.to(coefficient_dtype(lam.device))

    def mean_coef(self, lam: Tensor) -> Tensor:
        """``a(lam) = (lam - lam0)/lam``, float64 ``(B,)``."""
        lam = self._lam(lam)
        return (lam - self.lam0) / lam

    def variance(self, lam: Tensor) -> Tensor:
        """``s2(lam)``: variance of ``mu`` given ``x``, float64 ``(B,)``."""
        lam = self._lam(lam)
        # a drawn start adds back the lam0 that the measurements lack: s2 = 1/lam
        return (lam if self.drawn_start else lam - self.lam0) / (lam * lam)

    def moments(self, lam: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, s2)`` at ``lam``: :meth:`mean_coef` and :meth:`variance` from one conversion of ``lam``."""
        lam = self._lam(lam)
        return self.mean_coef(lam), self.variance(lam)

    def prior_variance(self, lam: Tensor) -> Tensor:
        """Variance of ``mu`` at ``lam`` if ``x`` had unit variance: ``a^2 + s2``.

        It is the exact start distribution of all three presets at their lowest precision
        (BSI: ``1/lam0``; BFN: 0; VDM: ``(1 + snr)/snr``) and the input scale of the preconditioning.
        """
        return self.mean_coef(lam) ** 2 + self.variance(lam)

    def sigma(self, lam: Tensor) -> Tensor:
        """EDM noise level ``sqrt(s2)/a`` of ``mu/a`` (infinite where ``a == 0``), float64."""
        return self.variance(lam).sqrt() / self.mean_coef(lam)

    def lam_at_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma`: solves ``sigma^2 u^2 = u + lam0 [drawn]`` for ``u = lam - lam0``."""
        s2 = sigma.to(torch.float64) ** 2
        start = self.lam0 if self.drawn_start else 0.0
        u = (1 + torch.sqrt(1 + 4 * s2 * start)) / (2 * s2)
        return u + self.lam0

    def sample(self, x: Tensor, lam: Tensor, generator: GeneratorLike = None) -> Tensor:
        """Draw ``mu ~ q(mu | x, lam)``; ``x`` is ``(B, ...)``, ``lam`` is ``(B,)``."""
        a, s2 = self.moments(lam)
        coef = per_example({"a": a, "s": s2.sqrt()}, x)
        return torch.addcmul(coef["a"] * x, coef["s"], randn(x.shape, generator, device=x.device, dtype=x.dtype))

    def update(self, mu: Tensor, lam: Tensor, y: Tensor, alpha: Tensor) -> Tensor:
        """Posterior mean after measuring ``y ~ N(x, 1/alpha)``: ``mu + alpha/(lam + alpha) (y - mu)``.

        Written as a correction to ``mu`` because ``(lam mu + alpha y)/(lam + alpha)`` loses digits
        when ``lam`` is large.  ``lam`` and ``alpha`` are ``(B,)``; the new precision is ``lam + alpha``.
        """
        gain = self._lam(alpha) / (self._lam(lam) + self._lam(alpha))
        return mu + expand_as_batch(gain, mu).to(mu.dtype) * (y - mu)

    def prior_kl(self, x: Tensor, lambda_min: float) -> Tensor:
        """``KL(q(mu | x, lambda_min) || N(0, a^2 + s2))`` summed over dims, in nats, ``(B,)``.

        Zero when the start belief does not depend on ``x`` (``a(lambda_min) == 0``: BSI and BFN); for
        VDM this is its prior term ``KL(q(z_1 | x) || N(0, 1))`` written in belief coordinates.
        """
        lam = torch.full((x.shape[0],), lambda_min, device=x.device, dtype=coefficient_dtype(x.device))
        a = self.mean_coef(lam)
        if bool((a == 0).all()):
            return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        s2, v = self.variance(lam), self.prior_variance(lam)
        xx = x.to(a.dtype).flatten(1)
        a, s2, v = a[:, None], s2[:, None], v[:, None]
        kl = 0.5 * ((s2 + a**2 * xx**2) / v - 1 - torch.log(s2 / v))
        return kl.sum(1).to(x.dtype)

