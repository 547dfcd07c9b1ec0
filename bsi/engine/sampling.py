"""Samplers: the ancestral (Bayesian update) sampler and fast ODE/SDE solvers.

Every sampler has the same signature::

    sampler(denoiser, beliefs, mu, lams, generator=None, callback=None) -> x

``mu`` is the start belief mean ``(B, ...)`` at precision ``lams[0]``; ``lams`` holds ``steps + 1``
increasing precisions (float64); the result is in data space.  Each sampler calls the denoiser
once per step, at the step's start precision, and once more at ``lams[-1]`` for the final output:

    NFE = steps + 1   for every sampler.

``callback(i, lam, mu, x_hat)`` is called after each network evaluation (trajectories, figures).
The denoiser may return output objects (``bsi.engine.output``) or plain ``x_hat`` tensors.

Where sampling starts and on which grid (:class:`SamplingSetup`) is decided here too, next to
the samplers that need it.

The ODE/SDE solvers are DPM-Solver++ in data prediction, written for a general Gaussian marginal
``mu = a x + sqrt(s2) eps``: with ``alpha_t = a``, ``sigma_t = sqrt(s2)`` and the time variable
``l = log(a / sqrt(s2))`` (half the effective log-SNR), first-order steps read
``mu_t = (sigma_t/sigma_s) mu_s - alpha_t expm1(-h) x_hat_s`` with ``h = l_t - l_s``.  At BSI's start
``a = 0`` (``l = -inf``) the step is still finite; such a step is first order and its prediction is
not used for the next step's finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .belief import BeliefFamily
from .choices import check_choice
from .output import PointOutput
from .precision import SPACINGS, PrecisionRange, step_precisions
from .random import GeneratorLike, randn

Callback = Callable[[int, Tensor, Tensor, Tensor], None] | None


def _evaluate(denoiser, mu: Tensor, lam: float, i: int, callback: Callback):
    lam_b = torch.full((mu.shape[0],), float(lam), device=mu.device, dtype=torch.float64)
    out = denoiser(mu, lam_b)
    out = PointOutput(out) if isinstance(out, Tensor) else out
    if callback is not None:
        callback(i, lam_b, mu, out.mean)
    return out


def _finish(denoiser, mu: Tensor, lams: Tensor, generator: GeneratorLike, callback: Callback) -> Tensor:
    return _evaluate(denoiser, mu, lams[-1], len(lams) - 1, callback).final_sample(generator)


def ancestral(
    denoiser, beliefs: BeliefFamily, mu: Tensor, lams: Tensor, generator: GeneratorLike = None, callback: Callback = None
) -> Tensor:
    """The generative process itself: predict, measure ``y`` from the receiver, update the belief."""
    for i in range(len(lams) - 1):
        out = _evaluate(denoiser, mu, lams[i], i, callback)
        alpha = torch.full((mu.shape[0],), float(lams[i + 1] - lams[i]), device=mu.device, dtype=torch.float64)
        lam = torch.full_like(alpha, float(lams[i]))
        y = out.sample_measurement(alpha, generator).to(mu.dtype)
        mu = beliefs.update(mu, lam, y, alpha)
    return _finish(denoiser, mu, lams, generator, callback)


def _dpm_solver(order: int, stochastic: bool):
    def solve(
        denoiser,
        beliefs: BeliefFamily,
        mu: Tensor,
        lams: Tensor,
        generator: GeneratorLike = None,
        callback: Callback = None,
    ) -> Tensor:
        a_all, s_all = beliefs.mean_coef(lams), beliefs.variance(lams).sqrt()
        l_all = (torch.log(a_all) - torch.log(s_all)).tolist()  # -inf where a == 0
        a_all, s_all = a_all.tolist(), s_all.tolist()
        history: list[tuple[Tensor, float]] = []  # (x_hat, l) of the last usable steps, newest last
        steps = len(lams) - 1
        for i in range(steps):
            x_hat = _evaluate(denoiser, mu, lams[i], i, callback).mean
            l_s, l_t = l_all[i], l_all[i + 1]
            h = l_t - l_s
            a_t, s_t, ratio = a_all[i + 1], s_all[i + 1], s_all[i + 1] / s_all[i]
            # Lower the order at the end of short runs (DPM-Solver's "lower order final").
            k = min(order, len(history) + 1, steps - i if steps < 15 else order)
            if k >= 2:
                r0 = (l_s - history[-1][1]) / h
                d1 = (x_hat - history[-1][0]) / r0
            if stochastic:
                decay = ratio * math.exp(-h)  # (sigma_t / sigma_s) e^{-h}
                gain = -math.expm1(-2 * h)
                d = x_hat + 0.5 * d1 if k >= 2 else x_hat
                mu = decay * mu + a_t * gain * d + s_t * math.sqrt(gain) * randn(mu.shape, generator, mu.device, mu.dtype)
            else:
                phi1 = math.expm1(-h)
                mu = ratio * mu - a_t * phi1 * x_hat
                if k == 2:
                    mu = mu - 0.5 * a_t * phi1 * d1
                elif k >= 3:
                    (m2, l2), (m1, l1) = history[-2], history[-1]
                    r1 = (l1 - l2) / h
                    d11 = (m1 - m2) / r1
                    d1_ = d1 + r0 / (r0 + r1) * (d1 - d11)
                    d2 = (d1 - d11) / (r0 + r1)
                    phi2 = phi1 / h + 1
                    phi3 = phi2 / h - 0.5
                    mu = mu + a_t * phi2 * d1_ - a_t * phi3 * d2
            if math.isfinite(l_s):  # a step from a = 0 has no usable finite difference
                history = (history + [(x_hat, l_s)])[-2:]
        return _finish(denoiser, mu, lams, generator, callback)

    kind = "SDE" if stochastic else "ODE"
    solve.__doc__ = f"DPM-Solver++ ({kind}), multistep of order {order}, in data prediction."
    return solve


ode1 = _dpm_solver(1, stochastic=False)
ode2 = _dpm_solver(2, stochastic=False)
ode3 = _dpm_solver(3, stochastic=False)
sde1 = _dpm_solver(1, stochastic=True)
sde2 = _dpm_solver(2, stochastic=True)

SOLVERS: dict[str, Callable] = {
    "ancestral": ancestral,
    "ode1": ode1,
    "ode2": ode2,
    "ode3": ode3,
    "sde1": sde1,
    "sde2": sde2,
}


@dataclass(frozen=True)
class SamplingSetup:
    """Where sampling starts and how its steps are spaced.

    spacing: the default step spacing (a name in :data:`bsi.engine.SPACINGS`).
    sigma_max: the noise level ``sigma = sqrt(s2)/a`` at which the ODE/SDE solvers and the
        noise-level spacings start when the range starts at ``a = 0`` (EDM's 80).
    solver: the default sampler (a name in :data:`SOLVERS`).
    """

    spacing: str = "geometric"
    sigma_max: float = 80.0
    solver: str = "ancestral"

    def __post_init__(self):
        check_choice("step spacing", self.spacing, SPACINGS)
        check_choice("solver", self.solver, SOLVERS)

    def start_precision(self, beliefs: BeliefFamily, precision: PrecisionRange, solver: str, spacing: str) -> float:
        """The precision sampling begins at.

        The ancestral sampler on a grid in ``lam`` starts at ``lambda_min`` (the exact generative
        process).  The ODE/SDE solvers and the noise-level spacings need a finite noise level: they
        start where ``sigma`` falls to ``sigma_max`` (for BFN just above ``lam = 1``, where the belief
        is still deterministic; for BSI just above ``lam0``).
        """
        sigma_min_lam = beliefs.sigma(torch.tensor(precision.lam_min, dtype=torch.float64))
        exact = solver == "ancestral" and spacing in ("geometric", "time")
        if exact or (torch.isfinite(sigma_min_lam) and sigma_min_lam <= self.sigma_max):
            return precision.lam_min
        return float(beliefs.lam_at_sigma(torch.tensor(self.sigma_max, dtype=torch.float64)))

    def grid(self, beliefs: BeliefFamily, precision: PrecisionRange, schedule, steps: int, solver: str,
             spacing: str | None = None) -> Tensor:
        """The ``steps + 1`` precisions (float64) that ``solver`` visits with ``spacing`` (default: this setup's)."""
        check_choice("solver", solver, SOLVERS)
        spacing = check_choice("step spacing", spacing or self.spacing, SPACINGS)
        start = self.start_precision(beliefs, precision, solver, spacing)
        return step_precisions(start, precision.lam_max, steps, spacing, beliefs, schedule)


def start_belief(beliefs: BeliefFamily, shape: tuple[int, ...], lam: float, generator: GeneratorLike = None,
                 device=None, dtype=None) -> Tensor:
    """Draw the start of sampling at precision ``lam``: ``N(0, a^2 + s2)`` (exact at ``lambda_min``)."""
    var = beliefs.prior_variance(torch.tensor([float(lam)], dtype=torch.float64))
    return var.sqrt().item() * randn(shape, generator, device=device, dtype=dtype)
