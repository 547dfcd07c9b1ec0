"""ELBO estimates as reported numbers: nats per example to bits per dimension, with a standard error.

The terms themselves (nats per example) are computed in ``objectives.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


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
