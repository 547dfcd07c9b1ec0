"""ELBO terms in nats per example, and the conversion to bits per dimension.

The model's negative log-likelihood of ``x`` is bounded by
``measurement + reconstruction + prior`` (all nats, per example):

* measurement, infinite steps: ``1/2 integral E ||x - x_hat(mu_lam, lam)||^2 d lam``, estimated by
  importance sampling ``lam`` from a proposal;
* measurement, ``k`` steps on precisions ``lam_0 < ... < lam_k``: ``sum_i KL(N(x, 1/alpha_i) || receiver_i)``
  (``alpha_i/2 ||x - x_hat||^2`` for a point prediction), estimated with a stratified step ``i`` as
  ``k`` times that step's term;
* reconstruction: ``-log p(x | mu at lam_max)`` of the output at the top precision;
* prior: ``KL`` of the start belief from its prior (VDM only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


def sum_dims(v: Tensor) -> Tensor:
    """Sum over every axis but the first: ``(B, ...) -> (B,)``."""
    return v.flatten(1).sum(1)


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean with its standard error (same units)."""

    mean: float
    stderr: float
    n: int

    @property
    def ci95(self) -> tuple[float, float]:
        """Normal-approximation 95% interval."""
        return self.mean - 1.96 * self.stderr, self.mean + 1.96 * self.stderr

    def __format__(self, spec: str) -> str:
        spec = spec or ".4f"
        return f"{self.mean:{spec}} ± {self.stderr:{spec}}"


def bits_per_dim(nats: Tensor, dims: int) -> Estimate:
    """Mean bits per dimension of per-example NLL bounds ``nats`` ``(N,)`` over ``dims`` dimensions.

    The standard error is the spread of the per-example estimates over ``sqrt(N)``: it covers both
    the data's variation and the Monte Carlo noise of the estimator.
    """
    bpd = nats.detach().double().flatten() / (dims * math.log(2))
    n = bpd.numel()
    stderr = bpd.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return Estimate(bpd.mean().item(), stderr, n)
