"""Precision ranges, schedules and step grids.

Everything in the engine is expressed in precision ``lam`` (inverse variance of the belief).  The
network sees a noise level ``t`` in [0, 1] instead; :meth:`PrecisionRange.t` is the one place where
``lam`` becomes ``t``: ``t = ln(lam/lam_min) / ln(lam_max/lam_min)`` (0 = no information, 1 = data).
The one exception is categorical data, whose network sees its schedule's time, as BFN's does
(see ``categorical.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .belief import BeliefFamily
from .choices import check_choice

SPACINGS = ("geometric", "time", "edm", "logsnr")


@dataclass(frozen=True)
class PrecisionRange:
    """The precisions ``[lam_min, lam_max]`` over which measurements are taken."""

    lam_min: float
    lam_max: float

    def __post_init__(self):
        if not 0 < self.lam_min < self.lam_max:
            raise ValueError(
                f"precision range needs 0 < lambda_min < lambda_max, got [{self.lam_min}, {self.lam_max}]"
            )

    @property
    def log_ratio(self) -> float:
        """``ln(lam_max/lam_min)``."""
        return math.log(self.lam_max / self.lam_min)

    def at(self, v: Tensor) -> Tensor:
        """The precision at position ``v`` in [0, 1] of ``ln lam`` on the range: ``lam_min (lam_max/lam_min)^v`` (float64)."""
        return self.lam_min * torch.exp(v.to(torch.float64) * self.log_ratio)

    def position(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`at`: ``ln(lam/lam_min) / ln(lam_max/lam_min)``, float64 (float32 on MPS)."""
        lam = lam.to(torch.float64) if lam.device.type != "mps" else lam
        return torch.log(lam / self.lam_min) / self.log_ratio

    def t(self, lam: Tensor) -> Tensor:
        """Network noise level ``t`` in [0, 1] of precision ``lam`` (float32): its log-linear position."""
        return self.position(lam).float()

    def check(self, lam: Tensor, what: str = "lam") -> None:
        """Raise ``ValueError`` if any precision lies outside the range (relative slack 1e-6)."""
        lo, hi = self.lam_min * (1 - 1e-6), self.lam_max * (1 + 1e-6)
        if lam.numel() and (bool((lam < lo).any()) or bool((lam > hi).any()) or not bool(torch.isfinite(lam).all())):
            raise ValueError(
                f"{what} must lie in the process's precision range [{self.lam_min:g}, {self.lam_max:g}], "
                f"got values in [{lam.min().item():g}, {lam.max().item():g}]"
            )


class LogLinearSchedule:
    """``lam(t) = lam_min (lam_max/lam_min)^t``: BFN's ``sigma_1^(-2t)`` and VDM's fixed linear log-SNR."""

    name = "loglinear"

    def __init__(self, precision: PrecisionRange):
        self.precision = precision

    def lam(self, t: Tensor) -> Tensor:
        return self.precision.at(t)

    def t(self, lam: Tensor) -> Tensor:
        return self.precision.position(lam)

    def dlam_dt(self, t: Tensor) -> Tensor:
        return self.lam(t) * self.precision.log_ratio


class CosineSchedule:
    """``lam(t) = tan^2(theta(t))`` with ``theta`` linear in ``t``: the cosine SNR schedule (iDDPM).

    For VDM (``lam`` = SNR) it is the usual cosine schedule restricted to ``[lam_min, lam_max]``.
    """

    name = "cosine"

    def __init__(self, precision: PrecisionRange):
        self.precision = precision
        self.theta_min = math.atan(math.sqrt(precision.lam_min))
        self.theta_max = math.atan(math.sqrt(precision.lam_max))

    def _theta(self, t: Tensor) -> Tensor:
        return self.theta_min + (self.theta_max - self.theta_min) * t.to(torch.float64)

    def lam(self, t: Tensor) -> Tensor:
        return torch.tan(self._theta(t)) ** 2

    def t(self, lam: Tensor) -> Tensor:
        theta = torch.atan(torch.sqrt(lam.to(torch.float64)))
        return (theta - self.theta_min) / (self.theta_max - self.theta_min)

    def dlam_dt(self, t: Tensor) -> Tensor:
        theta = self._theta(t)
        return 2 * torch.tan(theta) / torch.cos(theta) ** 2 * (self.theta_max - self.theta_min)


class QuadraticSchedule:
    """``lam(t) = lam_max tau^2`` with ``tau = tau_0 + (1 - tau_0) t``: BFN's discrete accuracy ``beta_1 tau^2``.

    ``tau`` is BFN's own time; ``tau_0 = sqrt(lam_min/lam_max)`` starts it where the range starts
    (BFN starts at ``tau = 0``, i.e. ``lam = 0``, which a belief mean cannot represent: a
    ``lam_min`` of ``1e-10 lam_max`` leaves out about ``1e-10 lam_max`` nats per variable).
    """

    name = "quadratic"

    def __init__(self, precision: PrecisionRange):
        self.precision = precision
        self.tau0 = math.sqrt(precision.lam_min / precision.lam_max)

    def tau(self, t: Tensor) -> Tensor:
        """BFN's time of schedule time ``t``."""
        return self.tau0 + (1 - self.tau0) * t.to(torch.float64)

    def lam(self, t: Tensor) -> Tensor:
        return self.precision.lam_max * self.tau(t) ** 2

    def t(self, lam: Tensor) -> Tensor:
        return (torch.sqrt(lam.to(torch.float64) / self.precision.lam_max) - self.tau0) / (1 - self.tau0)

    def dlam_dt(self, t: Tensor) -> Tensor:
        return 2 * self.precision.lam_max * self.tau(t) * (1 - self.tau0)


class RectifiedFlowSchedule:
    """``lam = ((1 - s)/s)^2`` with flow matching's time ``s`` linear in ``t``: rectified flow's straight path.

    Flow matching's ``x_s = (1 - s) x + s eps`` divided by ``1 - s`` is the belief ``a = 1``,
    ``s2 = (s/(1 - s))^2``, i.e. ``s = 1/(1 + sqrt(lam))``.  Its time runs from noise (``s`` at
    ``lam_min``) to data (``s`` at ``lam_max``) as ``t`` goes from 0 to 1, so uniform ``t`` is uniform ``s``.
    """

    name = "rectified_flow"

    def __init__(self, precision: PrecisionRange):
        self.precision = precision
        self.s_start = 1 / (1 + math.sqrt(precision.lam_min))
        self.s_end = 1 / (1 + math.sqrt(precision.lam_max))

    def flow_time(self, t: Tensor) -> Tensor:
        """Flow matching's time ``s`` (1 = noise, 0 = data) of schedule time ``t``."""
        return self.s_start + (self.s_end - self.s_start) * t.to(torch.float64)

    def lam(self, t: Tensor) -> Tensor:
        s = self.flow_time(t)
        return ((1 - s) / s) ** 2

    def t(self, lam: Tensor) -> Tensor:
        s = 1 / (1 + torch.sqrt(lam.to(torch.float64)))
        return (s - self.s_start) / (self.s_end - self.s_start)

    def dlam_dt(self, t: Tensor) -> Tensor:
        s = self.flow_time(t)
        return 2 * (1 - s) / s**3 * (self.s_start - self.s_end)


SCHEDULES = {"loglinear": LogLinearSchedule, "cosine": CosineSchedule, "quadratic": QuadraticSchedule,
             "rectified_flow": RectifiedFlowSchedule}
Schedule = LogLinearSchedule | CosineSchedule | QuadraticSchedule | RectifiedFlowSchedule


def step_precisions(
    start: float,
    end: float,
    steps: int,
    spacing: str,
    beliefs: BeliefFamily,
    schedule: Schedule,
    rho: float = 7.0,
) -> Tensor:
    """``steps + 1`` increasing precisions from ``start`` to ``end`` (float64, CPU).

    Spacings:
        ``geometric``: log-uniform in ``lam`` (BSI's reference).
        ``time``: uniform in the process's own time ``t`` under its schedule.
        ``edm``: EDM's ``rho`` power spacing in the noise level ``sigma = sqrt(s2)/a``.
        ``logsnr``: uniform in the effective log-SNR (DPM-Solver's default).
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    lo, hi = torch.tensor(float(start), dtype=torch.float64), torch.tensor(float(end), dtype=torch.float64)
    if spacing == "geometric":
        lams = PrecisionRange(float(start), float(end)).at(u)
    elif spacing == "time":
        t0, t1 = schedule.t(lo), schedule.t(hi)
        lams = schedule.lam(t0 + u * (t1 - t0))
    elif spacing in ("edm", "logsnr"):
        s0, s1 = beliefs.sigma(lo), beliefs.sigma(hi)
        if not torch.isfinite(s0):
            raise ValueError(f"spacing '{spacing}' needs a finite noise level at the start precision {start:g}")
        if spacing == "edm":
            sig = (s0 ** (1 / rho) + u * (s1 ** (1 / rho) - s0 ** (1 / rho))) ** rho
        else:
            sig = torch.exp(torch.log(s0) + u * (torch.log(s1) - torch.log(s0)))
        lams = beliefs.lam_at_sigma(sig)
    else:
        check_choice("step spacing", spacing, SPACINGS)
    lams[0], lams[-1] = lo, hi
    return lams
