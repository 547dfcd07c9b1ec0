"""Parameterizations: turn any backbone ``F(input, t)`` into a ``denoiser(mu, lam)``.

A backbone is any callable ``F(x_in, t) -> out`` with ``x_in`` shaped like the data ``(B, C, ...)``,
``t`` the noise level ``(B,)`` in [0, 1] and ``out`` with ``C`` channels (point output) or ``2C``
channels (discretised output: a location and a log-scale per element).  What ``F`` predicts
(``edm``, ``eps``, ``x``, ``v`` or a user's own) is a preconditioning
``x_hat = c_skip mu + c_out F(c_in mu, t)`` whose coefficients ``prediction.py`` gives.  For the
discretised output the location ``m`` comes from the first ``C`` channels through the same formula,
and the scale is ``base_scale(lam) * exp(l)`` with the last ``C`` channels ``l``: the spread of the
predicted quantity in data units (``sqrt(s2)/a`` for ``eps`` and ``x``, BFN's
``sqrt((1-gamma)/gamma)``; ``c_out`` for ``edm``; ``|c_out|`` for ``v``).

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
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from .belief import BeliefFamily, per_example
from .categorical import CategoricalOutput
from .choices import check_choice
from .output import DiscretisedOutput
from .precision import PrecisionRange, Schedule
from .prediction import NO_SIGNAL_SCALE, PREDICTIONS
from .registry import PredictionLike, build, resolve
from .space import Continuous, OneHot

OUTPUTS = ("point", "discretised")
Backbone = Callable[[Tensor, Tensor], Tensor]


def prediction_object(prediction: Any) -> PredictionLike:
    """The prediction named (``edm``, ``eps``, ``x``, ``v``, a dotted path) or given (a class or an instance)."""
    found = resolve("prediction", prediction, PREDICTIONS)
    return build("prediction", prediction, found, PredictionLike, "name and coefficients(a, s2, sigma_data, scale_input)")


@dataclass(frozen=True)
class GaussianParameterization:
    """How a backbone predicts real-valued data: ``prediction`` (edm|eps|x|v or a user's), ``output`` (point|discretised).

    scale_input: feed ``c_in mu`` rather than ``mu`` (always on for edm; for v: the variance-preserving
    rather than the linear path).  clip: clamp a point prediction to [-1, 1].  sigma_data: the data's
    standard deviation assumed by the preconditioning.  min_scale: smallest standard deviation of a
    discretised output (data units).
    """

    prediction: Any = "edm"
    output: str = "point"
    scale_input: bool = True
    clip: bool = False
    sigma_data: float = 1.0
    min_scale: float = 1e-3

    def __post_init__(self):
        prediction_object(self.prediction)
        check_choice("output", self.output, OUTPUTS)

    def coefficients(self, family: BeliefFamily, lam: Tensor) -> dict[str, Tensor]:
        """The preconditioning coefficients at ``lam`` (float64 ``(B,)`` each)."""
        a, s2 = family.moments(lam)
        return self.predictor.coefficients(a, s2, self.sigma_data, self.scale_input)

    @cached_property
    def predictor(self) -> PredictionLike:
        """The prediction object, built once (building checks it against its Protocol, which is slow)."""
        return prediction_object(self.prediction)

    def wrap(self, backbone: Backbone, family: BeliefFamily, precision: PrecisionRange, space: Continuous,
             schedule: Schedule | None = None) -> Denoiser:
        """``backbone(x_in, t)`` as ``denoiser(mu, lam)`` for a process's beliefs, range and data levels."""
        if self.output == "discretised" and not space.bins:
            raise ValueError("output=discretised needs the data's number of levels: set data_bins")
        return Denoiser(backbone, self, family, precision, space.bins)


class Denoiser:
    """``denoiser(mu, lam) -> x_hat`` (a tensor) or a :class:`DiscretisedOutput`.

    A thin wrapper: it holds a reference to the backbone and owns no parameters, so optimisers,
    EMA and DDP act on the backbone itself.
    """

    def __init__(self, backbone: Backbone, spec: GaussianParameterization, family: BeliefFamily,
                 precision: PrecisionRange, bins: int | None):
        self.backbone, self.spec, self.family, self.precision, self.bins = backbone, spec, family, precision, bins

    def coefficients(self, lam: Tensor) -> dict[str, Tensor]:
        """The preconditioning coefficients at ``lam`` (float64 ``(B,)`` each)."""
        return self.spec.coefficients(self.family, lam)

    def __call__(self, mu: Tensor, lam: Tensor) -> Tensor | DiscretisedOutput:
        spec = self.spec
        coef = per_example(self.coefficients(lam), mu)
        raw = self.backbone(coef["c_in"] * mu, self.precision.t(lam).to(mu.dtype))
        channels = mu.shape[1]
        expected = 2 * channels if spec.output == "discretised" else channels
        if raw.shape[0] != mu.shape[0] or raw.shape[1] != expected or raw.shape[2:] != mu.shape[2:]:
            raise ValueError(
                f"backbone returned shape {tuple(raw.shape)}, expected {(mu.shape[0], expected, *mu.shape[2:])} "
                f"for output={spec.output}: build the model with out_channels={expected}"
            )
        if raw.dtype != mu.dtype:
            raw = raw.to(mu.dtype)
        if spec.output == "discretised":
            # chunk, not two slices: its backward is one concatenation rather than two zero-filled copies and a sum
            raw, log_scale = raw.chunk(2, dim=1)
        location = torch.addcmul(coef["c_skip"] * mu, coef["c_out"], raw)  # one autograd node, not two
        if spec.output == "point":
            # A distribution's location may sit outside the range (its mass lands in the edge bins): clip points only.
            return location.clamp(-1, 1) if spec.clip else location
        scale = (coef["base_scale"] * log_scale.exp()).clamp(spec.min_scale, NO_SIGNAL_SCALE)
        return DiscretisedOutput.from_gaussian(location, scale, self.bins)


@dataclass(frozen=True)
class CategoricalParameterization:
    """BFN's discrete network: the backbone sees ``2 theta - 1`` and the schedule's time, and returns logits."""

    output: str = "discretised"

    def __post_init__(self):
        if self.output != "discretised":
            raise ValueError("categorical data needs a distribution over the classes: use output=discretised")

    def wrap(self, backbone: Backbone, family: BeliefFamily, precision: PrecisionRange, space: OneHot,
             schedule: Schedule) -> CategoricalDenoiser:
        """``backbone(x_in, t)`` as ``denoiser(mu, lam)``; the network's time is the schedule's (BFN's ``tau``)."""
        return CategoricalDenoiser(backbone, space, lambda lam: schedule.t(lam).float())


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
    "OUTPUTS", "PREDICTIONS", "prediction_object", "CategoricalDenoiser", "CategoricalParameterization", "Denoiser",
    "GaussianParameterization", "Parameterization",
]
