"""What a backbone predicts: each prediction is the preconditioning ``x_hat = c_skip mu + c_out F(c_in mu, t)``.

With the belief ``mu = a x + sqrt(s2) eps`` (``a``, ``s2`` float64 ``(B,)``) and the data's standard
deviation ``sigma_data``, each prediction gives ``c_in``, ``c_skip``, ``c_out`` and ``base_scale``
(the spread in data units of one unit of ``F``, which scales a discretised output):

* ``edm``: EDM's preconditioning, with ``q2 = a^2 sigma_data^2 + s2`` (the variance of ``mu``):
  ``c_in = 1/sqrt(q2)``, ``c_skip = a sigma_data^2/q2``, ``c_out = sigma_data sqrt(s2/q2)``.
* ``eps``: ``x_hat = (mu - sqrt(s2) F)/a`` (BFN's and VDM's); no signal (``a = 0``) gives ``x_hat = 0``.
* ``x``: ``x_hat = F``.
* ``v``: the velocity of the path the network sees.  The input ``z = c_in mu = alpha x/sigma_data + sigma eps``
  lies on the variance-preserving path (``alpha^2 + sigma^2 = 1``) with ``scale_input`` and on
  flow matching's linear path (``alpha + sigma = 1``) without it; ``F`` predicts ``v = alpha eps - sigma x/sigma_data``
  (Salimans & Ho's ``v``, the derivative of ``z`` in the angle ``atan(sigma/alpha)``) on the first and
  ``v = eps - x/sigma_data`` (the derivative of ``z`` in ``t = sigma``) on the second.

A user's prediction is any object with ``name`` and ``coefficients`` (see
:class:`bsi.engine.registry.PredictionLike`), named in a process by its dotted path.
:func:`target` inverts the preconditioning: the ``F`` that makes ``x_hat`` equal a given ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Where a = 0 (no signal yet) eps and x predictions have no finite scale: this stands in for infinity.
NO_SIGNAL_SCALE = 1e6


def over_a(v: Tensor, a: Tensor, where_zero: float) -> Tensor:
    """``v / a``, and ``where_zero`` where ``a == 0`` (without dividing by zero, so gradients stay finite)."""
    safe = torch.where(a > 0, a, torch.ones_like(a))
    return torch.where(a > 0, v / safe, torch.full_like(a, where_zero))


def _input_scale(a: Tensor, s2: Tensor, sigma_data: float, scale_input: bool) -> Tensor:
    q2 = a**2 * sigma_data**2 + s2
    return q2.rsqrt() if scale_input else torch.ones_like(q2)


class EdmPrediction:
    """EDM's preconditioning; its input is always scaled."""

    name = "edm"

    def coefficients(self, a: Tensor, s2: Tensor, sigma_data: float, scale_input: bool) -> dict[str, Tensor]:
        q2 = a**2 * sigma_data**2 + s2
        c_out = sigma_data * (s2 / q2).sqrt()
        return {"c_in": q2.rsqrt(), "c_skip": a * sigma_data**2 / q2, "c_out": c_out, "base_scale": c_out}


class EpsPrediction:
    """The noise ``eps`` of ``mu = a x + sqrt(s2) eps``."""

    name = "eps"

    def coefficients(self, a: Tensor, s2: Tensor, sigma_data: float, scale_input: bool) -> dict[str, Tensor]:
        return {"c_in": _input_scale(a, s2, sigma_data, scale_input),
                "c_skip": over_a(torch.ones_like(a), a, 0.0), "c_out": -over_a(s2.sqrt(), a, 0.0),
                "base_scale": over_a(s2.sqrt(), a, NO_SIGNAL_SCALE)}


class XPrediction:
    """The data ``x`` itself."""

    name = "x"

    def coefficients(self, a: Tensor, s2: Tensor, sigma_data: float, scale_input: bool) -> dict[str, Tensor]:
        return {"c_in": _input_scale(a, s2, sigma_data, scale_input), "c_skip": torch.zeros_like(a),
                "c_out": torch.ones_like(a), "base_scale": over_a(s2.sqrt(), a, NO_SIGNAL_SCALE)}


class VPrediction:
    """The velocity of the input's path: variance-preserving with ``scale_input`` (Salimans & Ho), else linear."""

    name = "v"

    def coefficients(self, a: Tensor, s2: Tensor, sigma_data: float, scale_input: bool) -> dict[str, Tensor]:
        noise = s2.sqrt()
        # q: what mu is divided by to put it on the path; alpha = a sigma_data/q, sigma = sqrt(s2)/q
        q = (a**2 * sigma_data**2 + s2).sqrt() if scale_input else a * sigma_data + noise
        sigma = noise / q
        if scale_input:  # x/sigma_data = alpha z - sigma v
            c_skip = a * sigma_data**2 / q**2
        else:  # x/sigma_data = z - sigma v
            c_skip = sigma_data / q
        return {"c_in": 1 / q, "c_skip": c_skip, "c_out": -sigma_data * sigma, "base_scale": sigma_data * sigma}


PREDICTIONS = {"edm": EdmPrediction, "eps": EpsPrediction, "x": XPrediction, "v": VPrediction}


def target(x: Tensor, mu: Tensor, coefficients: dict[str, Tensor]) -> Tensor:
    """The backbone output ``F`` that gives ``x_hat = x`` at beliefs ``mu``: ``(x - c_skip mu)/c_out``.

    ``x`` and ``mu`` ``(B, ...)``; ``coefficients`` as from a prediction, ``(B,)`` each.  For ``v`` this is
    the velocity, for ``eps`` the noise.
    """
    shape = (-1, *[1] * (x.dim() - 1))
    c_skip, c_out = (coefficients[k].reshape(shape).to(x.dtype) for k in ("c_skip", "c_out"))
    return (x - c_skip * mu) / c_out


def x_from(raw: Tensor, mu: Tensor, coefficients: dict[str, Tensor]) -> Tensor:
    """``x_hat = c_skip mu + c_out F`` of backbone outputs ``raw`` ``(B, ...)`` at beliefs ``mu``."""
    shape = (-1, *[1] * (raw.dim() - 1))
    c_skip, c_out = (coefficients[k].reshape(shape).to(raw.dtype) for k in ("c_skip", "c_out"))
    return torch.addcmul(c_skip * mu, c_out, raw)


__all__ = ["NO_SIGNAL_SCALE", "PREDICTIONS", "EdmPrediction", "EpsPrediction", "VPrediction", "XPrediction",
           "over_a", "target", "x_from"]
