"""Parameterizations: turn any backbone ``F(input, t)`` into a ``denoiser(mu, lam)``.

A backbone is any callable ``F(x_in, t) -> out`` with ``x_in`` shaped like the data ``(B, C, ...)``,
``t`` the noise level ``(B,)`` in [0, 1] and ``out`` with ``C`` channels (point output) or ``2C``
channels (discretised output: a location and a log-scale per element).  With ``a = a(lam)``,
``s2 = s2(lam)`` and ``v = a^2 sigma_data^2 + s2`` (the variance of ``mu`` for data of std
``sigma_data``), the predictions are:

* ``edm``: ``x_hat = c_skip mu + c_out F(c_in mu, t)``, ``c_skip = a sigma_data^2 / v``,
  ``c_out = sigma_data sqrt(s2 / v)``, ``c_in = 1/sqrt(v)``.  For BSI this is its preconditioning
  (``c_skip = alpha/kappa``, ``c_out = kappa^-1/2``, ``c_in = sqrt(lam/kappa)``), and it works for
  every belief family.
* ``eps``: ``x_hat = (mu - sqrt(s2) F) / a``: BFN's ``mu/gamma - sqrt((1-gamma)/gamma) eps`` and
  VDM's ``mu - eps/sqrt(SNR)``.  Where ``a = 0`` there is no signal and ``x_hat = 0``.
* ``x``: ``x_hat = F``.

``scale_input`` feeds ``c_in mu`` rather than ``mu`` (always on for ``edm``; VDM feeds ``z``, which is
``c_in mu``; BFN feeds ``mu``).  For the discretised output the location ``m`` comes from the first
``C`` channels through the same formula, and the scale is ``base(lam) * exp(l)`` with the last ``C``
channels ``l``, where ``base`` is the spread of the predicted quantity in data units: ``sqrt(s2)/a``
for ``eps`` and ``x`` (BFN's ``sqrt((1-gamma)/gamma)``) and ``c_out`` for ``edm``.

Each parameterization is a frozen spec (:class:`GaussianParameterization`,
:class:`CategoricalParameterization`) that a process holds and that wraps a backbone with
:meth:`wrap`.

Categorical data (:class:`CategoricalDenoiser`) is BFN's discrete network: the backbone sees the
class probabilities ``theta = softmax(lam mu)`` as ``2 theta - 1`` and the schedule's time, and
returns logits of the output distribution; the ``K`` classes of each data channel become ``K``
backbone channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .belief import BeliefFamily, expand_as_batch
from .categorical import CategoricalOutput
from .choices import check_choice
from .output import DiscretisedOutput
from .precision import PrecisionRange
from .space import OneHot

if TYPE_CHECKING:
    from .process import Process

PREDICTIONS = ("edm", "eps", "x")
OUTPUTS = ("point", "discretised")
Backbone = Callable[[Tensor, Tensor], Tensor]

# Where a = 0 (no signal yet) eps and x predictions have no finite scale: this stands in for infinity.
_NO_SIGNAL_SCALE = 1e6


def _over_a(v: Tensor, a: Tensor, where_zero: float) -> Tensor:
    """``v / a``, and ``where_zero`` where ``a == 0`` (without dividing by zero, so gradients stay finite)."""
    safe = torch.where(a > 0, a, torch.ones_like(a))
    return torch.where(a > 0, v / safe, torch.full_like(a, where_zero))


@dataclass(frozen=True)
class GaussianParameterization:
    """How a backbone predicts real-valued data: ``prediction`` (edm|eps|x), ``output`` (point|discretised).

    scale_input: feed ``c_in mu`` rather than ``mu`` (always on for edm).  clip: clamp a point
    prediction to [-1, 1].  sigma_data: the data's standard deviation assumed by the
    preconditioning.  min_scale: smallest standard deviation of a discretised output (data units).
    """

    prediction: str = "edm"
    output: str = "point"
    scale_input: bool = True
    clip: bool = False
    sigma_data: float = 1.0
    min_scale: float = 1e-3

    def __post_init__(self):
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("output", self.output, OUTPUTS)

    def coefficients(self, beliefs: BeliefFamily, lam: Tensor) -> dict[str, Tensor]:
        """The preconditioning coefficients at ``lam`` (float64 ``(B,)`` each)."""
        a, s2 = beliefs.mean_coef(lam), beliefs.variance(lam)
        v = a**2 * self.sigma_data**2 + s2
        c_in = v.rsqrt() if (self.scale_input or self.prediction == "edm") else torch.ones_like(v)
        if self.prediction == "edm":
            c_skip, c_out = a * self.sigma_data**2 / v, self.sigma_data * (s2 / v).sqrt()
            base = c_out
        else:
            base = _over_a(s2.sqrt(), a, _NO_SIGNAL_SCALE)
            if self.prediction == "eps":
                c_skip, c_out = _over_a(torch.ones_like(a), a, 0.0), -_over_a(s2.sqrt(), a, 0.0)
            else:
                c_skip, c_out = torch.zeros_like(a), torch.ones_like(a)
        return {"c_in": c_in, "c_skip": c_skip, "c_out": c_out, "base_scale": base}

    def wrap(self, backbone: Backbone, process: Process) -> Denoiser:
        """``backbone(x_in, t)`` as ``denoiser(mu, lam)`` for ``process``'s beliefs, range and data levels."""
        if self.output == "discretised" and not process.space.bins:
            raise ValueError("output=discretised needs the data's number of levels: set data_bins")
        return Denoiser(backbone, self, process.beliefs, process.precision, process.space.bins)


class Denoiser:
    """``denoiser(mu, lam) -> x_hat`` (a tensor) or a :class:`DiscretisedOutput`.

    A thin wrapper: it holds a reference to the backbone and owns no parameters, so optimisers,
    EMA and DDP act on the backbone itself.
    """

    def __init__(self, backbone: Backbone, spec: GaussianParameterization, beliefs: BeliefFamily,
                 precision: PrecisionRange, bins: int | None):
        self.backbone, self.spec, self.beliefs, self.precision, self.bins = backbone, spec, beliefs, precision, bins

    def coefficients(self, lam: Tensor) -> dict[str, Tensor]:
        """The preconditioning coefficients at ``lam`` (float64 ``(B,)`` each)."""
        return self.spec.coefficients(self.beliefs, lam)

    def __call__(self, mu: Tensor, lam: Tensor) -> Tensor | DiscretisedOutput:
        spec = self.spec
        coef = {k: expand_as_batch(v, mu).to(mu.dtype) for k, v in self.coefficients(lam).items()}
        raw = self.backbone(coef["c_in"] * mu, self.precision.t(lam).to(mu.dtype))
        channels = mu.shape[1]
        expected = 2 * channels if spec.output == "discretised" else channels
        if raw.shape[0] != mu.shape[0] or raw.shape[1] != expected or raw.shape[2:] != mu.shape[2:]:
            raise ValueError(
                f"backbone returned shape {tuple(raw.shape)}, expected {(mu.shape[0], expected, *mu.shape[2:])} "
                f"for output={spec.output}: build the model with out_channels={expected}"
            )
        raw = raw.to(mu.dtype)
        if spec.output == "discretised":
            # chunk, not two slices: its backward is one concatenation rather than two zero-filled copies and a sum
            raw, log_scale = raw.chunk(2, dim=1)
        location = coef["c_skip"] * mu + coef["c_out"] * raw
        if spec.output == "point":
            # A distribution's location may sit outside the range (its mass lands in the edge bins): clip points only.
            return location.clamp(-1, 1) if spec.clip else location
        scale = (coef["base_scale"] * log_scale.exp()).clamp(spec.min_scale, _NO_SIGNAL_SCALE)
        return DiscretisedOutput.from_gaussian(location, scale, self.bins)


@dataclass(frozen=True)
class CategoricalParameterization:
    """BFN's discrete network: the backbone sees ``2 theta - 1`` and the schedule's time, and returns logits."""

    output: str = "discretised"

    def __post_init__(self):
        if self.output != "discretised":
            raise ValueError("categorical data needs a distribution over the classes: use output=discretised")

    def wrap(self, backbone: Backbone, process: Process) -> CategoricalDenoiser:
        """``backbone(x_in, t)`` as ``denoiser(mu, lam)``; the network's time is the schedule's (BFN's ``tau``)."""
        return CategoricalDenoiser(backbone, process.space, lambda lam: process.schedule.t(lam).float())


class CategoricalDenoiser:
    """``denoiser(mu, lam) -> CategoricalOutput`` for beliefs ``mu`` ``(B, C, *spatial, K)`` over K classes.

    The backbone maps ``(B, C K, *spatial)`` inputs ``2 theta - 1`` and the time ``t = time(lam)`` to
    ``(B, C K, *spatial)`` logits; a zero-initialised backbone predicts the uniform distribution.
    """

    def __init__(self, backbone: Backbone, space: OneHot, time: Callable[[Tensor], Tensor]):
        self.backbone, self.space, self.time = backbone, space, time

    def __call__(self, mu: Tensor, lam: Tensor) -> CategoricalOutput:
        k = self.space.num_classes
        if mu.dim() < 3 or mu.shape[-1] != k:
            raise ValueError(f"categorical beliefs must be (B, C, ..., {k}), got shape {tuple(mu.shape)}")
        theta = self.space.theta(mu, lam)
        x_in = (2 * theta - 1).movedim(-1, 2).flatten(1, 2)  # (B, C K, *spatial), the K classes of channel c together
        raw = self.backbone(x_in, self.time(lam).to(mu.dtype))
        if raw.shape != x_in.shape:
            raise ValueError(
                f"backbone returned shape {tuple(raw.shape)}, expected {tuple(x_in.shape)} for {k} classes: "
                f"build the model with out_channels={x_in.shape[1]}"
            )
        logits = raw.unflatten(1, (mu.shape[1], k)).movedim(2, -1)
        return CategoricalOutput.from_logits(logits)


Parameterization = GaussianParameterization | CategoricalParameterization

__all__ = [
    "OUTPUTS", "PREDICTIONS", "CategoricalDenoiser", "CategoricalParameterization", "Denoiser",
    "GaussianParameterization", "Parameterization",
]
