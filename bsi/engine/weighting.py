"""Training weightings: which precisions the training loss visits and how much each example counts.

A weighting maps stratified uniforms ``u`` to precisions ``lam`` and a weight ``w`` per example; the
loss is ``w h / D`` with ``h = 1/2 ||x - x_hat||^2`` (nats) and ``D`` the data's dimensions.  Every
weighting below is a paper's loss written on ``x_hat``, in the belief's noise level
``sigma = sqrt(s2)/a`` (EDM's ``sigma`` of ``mu/a = x + sigma eps``) and effective SNR ``a^2/s2``:

* ``elbo``: ``lam`` from the process's proposal and ``w = 1/p(lam)``: the unbiased estimate of the
  infinite-step measurement term (the ELBO's), the default of bsi, bfn, vdm and bfn-discrete.
* ``edm``: EDM's ``ln sigma ~ N(p_mean, p_std^2)`` (-1.2, 1.2) and loss ``lambda(sigma) ||x_hat - x||^2``
  with ``lambda = (sigma^2 + sigma_data^2)/(sigma sigma_data)^2``, so ``w = 2 lambda``.
* ``min_snr``: ``lam`` from the process's proposal (its training density) and min-SNR-gamma's
  ``min(snr, gamma) ||x_hat - x||^2`` (``min(snr, gamma)/snr`` on the noise for eps), ``w = 2 min(snr, gamma)``.
* ``flow``: flow matching's ``||v - v_hat||^2`` on the linear path ``(1 - s) x + s eps`` with
  ``s = sigma/(1 + sigma)``, uniform (or, with ``logit_normal``, logit-normal) in ``s``; its velocity
  error is ``||x - x_hat||/s``, so ``w = 2/s^2``.

Densities are truncated to the process's precision range (sampling their inverse CDF at ``u``
keeps the stratification); EDM's log-normal leaves about 1e-5 of its mass outside ``[0.002, 80]``.
Only ``elbo`` estimates a bound: evaluation (``Process.elbo``) never reads the weighting.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .belief import BeliefFamily
from .precision import PrecisionRange
from .registry import WeightingLike, build, resolve


class LossParts(NamedTuple):
    """What a weighting reads of its process: the belief family, the range, the proposal, the data's std."""

    family: BeliefFamily
    precision: PrecisionRange
    proposal: Any
    sigma_data: float


def _noise_level(parts: LossParts, lam: Tensor) -> tuple[Tensor, Tensor]:
    """``(sigma, s)``: the noise level ``sqrt(s2)/a`` (inf where ``a = 0``) and ``s = sigma/(1 + sigma)`` (1 there)."""
    a, noise = parts.family.mean_coef(lam), parts.family.variance(lam).sqrt()
    signal = a > 0  # BFN's start (a = 0, s2 = 0) is no signal too, not 0/0
    safe = torch.where(signal, a, torch.ones_like(a))
    return (torch.where(signal, noise / safe, torch.full_like(a, torch.inf)),
            torch.where(signal, noise / (safe + noise), torch.ones_like(a)))


def _range_of_sigma(parts: LossParts) -> tuple[Tensor, Tensor]:
    ends = torch.tensor([parts.precision.lambda_max, parts.precision.lambda_min], dtype=torch.float64)
    sigma = _noise_level(parts, ends)[0]
    return sigma[0], sigma[1]


def _lam_at_sigma(parts: LossParts, sigma: Tensor) -> Tensor:
    """The precision of noise level ``sigma`` (float64), kept inside the range (infinite sigma: ``lambda_min``)."""
    lam = parts.family.lam_at_sigma(sigma.clamp(max=1e150)).nan_to_num(parts.precision.lambda_min)
    return lam.clamp(parts.precision.lambda_min, parts.precision.lambda_max)


def truncated_normal_quantile(u: Tensor, mean: float, std: float, lo: Tensor, hi: Tensor) -> Tensor:
    """The ``u``-quantile of ``N(mean, std^2)`` truncated to ``[lo, hi]`` (either end may be infinite), float64."""
    c_lo, c_hi = torch.special.ndtr((lo - mean) / std), torch.special.ndtr((hi - mean) / std)
    return mean + std * torch.special.ndtri(c_lo + u.to(torch.float64) * (c_hi - c_lo))


class ElboWeighting:
    """The unbiased ELBO estimator: the proposal's ``lam`` and weight ``1/p(lam)``."""

    name = "elbo"

    def draw(self, u: Tensor, parts: LossParts) -> tuple[Tensor, Tensor]:
        return parts.proposal.lam(u)


class EdmWeighting:
    """EDM's log-normal noise levels and ``lambda(sigma) = (sigma^2 + sigma_data^2)/(sigma sigma_data)^2``."""

    name = "edm"

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2):
        if p_std <= 0:
            raise ValueError(f"weighting edm needs p_std > 0, got {p_std}")
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def draw(self, u: Tensor, parts: LossParts) -> tuple[Tensor, Tensor]:
        low, high = _range_of_sigma(parts)
        log_sigma = truncated_normal_quantile(u, self.p_mean, self.p_std, low.log(), high.log())
        lam = _lam_at_sigma(parts, log_sigma.exp())
        sigma = _noise_level(parts, lam)[0]
        # lambda written as 1/sigma_data^2 + 1/sigma^2, finite where sigma is infinite (a = 0)
        return lam, 2 * (1 / parts.sigma_data**2 + 1 / sigma**2)


class MinSnrWeighting:
    """The proposal's ``lam`` and min-SNR-gamma's ``min(snr, gamma)`` on the squared error of ``x``."""

    name = "min_snr"

    def __init__(self, gamma: float = 5.0):
        if gamma <= 0:
            raise ValueError(f"weighting min_snr needs gamma > 0, got {gamma}")
        self.gamma = float(gamma)

    def draw(self, u: Tensor, parts: LossParts) -> tuple[Tensor, Tensor]:
        lam, _ = parts.proposal.lam(u)
        snr = parts.family.mean_coef(lam) ** 2 / parts.family.variance(lam)
        # 0/0 where the belief is still the fixed start (BFN's lam = 1): no signal, no weight
        return lam, 2 * snr.nan_to_num(0.0).clamp(max=self.gamma)


class FlowWeighting:
    """Flow matching: ``s`` uniform (or logit-normal ``(mean, std)``) on the range, ``||v - v_hat||^2 = ||x - x_hat||^2/s^2``."""

    name = "flow"

    def __init__(self, logit_normal: bool = False, mean: float = 0.0, std: float = 1.0):
        if std <= 0:
            raise ValueError(f"weighting flow needs std > 0, got {std}")
        self.logit_normal, self.mean, self.std = bool(logit_normal), float(mean), float(std)

    def draw(self, u: Tensor, parts: LossParts) -> tuple[Tensor, Tensor]:
        low, high = _range_of_sigma(parts)
        s_low, s_high = low / (1 + low), torch.where(torch.isinf(high), torch.ones_like(high), high / (1 + high))
        if self.logit_normal:
            logit = truncated_normal_quantile(u, self.mean, self.std, torch.logit(s_low), torch.logit(s_high))
            s = torch.sigmoid(logit)
        else:
            s = s_low + u.to(torch.float64) * (s_high - s_low)
        lam = _lam_at_sigma(parts, s / (1 - s))
        return lam, 2 / _noise_level(parts, lam)[1] ** 2


WEIGHTINGS = {"elbo": ElboWeighting, "edm": EdmWeighting, "min_snr": MinSnrWeighting, "flow": FlowWeighting}


def make_weighting(weighting: Any, options: dict | None = None) -> WeightingLike:
    """The weighting named (a key of :data:`WEIGHTINGS` or a dotted path) or given, built with ``options``."""
    found = resolve("weighting", weighting, WEIGHTINGS)
    return build("weighting", weighting, found, WeightingLike, "name and draw(u, parts)", options=options)


__all__ = ["WEIGHTINGS", "EdmWeighting", "ElboWeighting", "FlowWeighting", "LossParts", "MinSnrWeighting",
           "make_weighting", "truncated_normal_quantile"]
