"""Samplers: the ancestral (Bayesian update) sampler and fast ODE/SDE solvers.

Every sampler has the same signature::

    sampler(denoiser, beliefs, mu, lams, generator=None, callback=None) -> x

``mu`` is the start belief mean ``(B, ...)`` at precision ``lams[0]``; ``lams`` holds ``steps + 1``
increasing precisions (float64); the result is in data space.  Each sampler calls the denoiser
once per step, at the step's start precision, and once more at ``lams[-1]`` for the final output:

    NFE = steps + 1   for every sampler.

``callback(i, lam, mu, x_hat)`` is called after each network evaluation (trajectories, figures).

The ODE/SDE solvers are DPM-Solver++ in data prediction, written for a general Gaussian marginal
``mu = a x + sqrt(s2) eps``: with ``alpha_t = a``, ``sigma_t = sqrt(s2)`` and the time variable
``l = log(a / sqrt(s2))`` (half the effective log-SNR), first-order steps read
``mu_t = (sigma_t/sigma_s) mu_s - alpha_t expm1(-h) x_hat_s`` with ``h = l_t - l_s``.  At BSI's start
``a = 0`` (``l = -inf``) the step is still finite; such a step is first order and its prediction is
not used for the next step's finite differences.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .belief import BeliefFamily, expand_as_batch
from .output import as_output
from .random import GeneratorLike, randn

Callback = Callable[[int, Tensor, Tensor, Tensor], None] | None


def _evaluate(denoiser, mu: Tensor, lam: float, i: int, callback: Callback):
    lam_b = torch.full((mu.shape[0],), float(lam), device=mu.device, dtype=torch.float64)
    out = as_output(denoiser(mu, lam_b))
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
        l_all = torch.log(a_all) - torch.log(s_all)  # -inf where a == 0
        history: list[tuple[Tensor, float]] = []  # (x_hat, l) of previous usable steps
        steps = len(lams) - 1
        for i in range(steps):
            x_hat = _evaluate(denoiser, mu, lams[i], i, callback).mean
            l_s, l_t = float(l_all[i]), float(l_all[i + 1])
            h = l_t - l_s
            a_t, ratio = float(a_all[i + 1]), float(s_all[i + 1] / s_all[i])
            # Lower the order near the end when few steps are taken (DPM-Solver's "lower order final").
            usable = [p for p in history if torch.isfinite(torch.tensor(p[1]))]
            k = min(order, len(usable) + 1, steps - i if steps < 15 else order)
            if stochastic:
                e = torch.exp(torch.tensor(-h, dtype=torch.float64))
                decay = ratio * float(e)  # (sigma_t/sigma_s) e^{-h}
                gain = a_t * float(-torch.expm1(torch.tensor(-2 * h, dtype=torch.float64)))
                noise = float(s_all[i + 1]) * float((-torch.expm1(torch.tensor(-2 * h, dtype=torch.float64))).sqrt())
                d = x_hat
                if k >= 2:
                    r = (l_s - usable[-1][1]) / h
                    d = x_hat + (x_hat - usable[-1][0]) / (2 * r)
                mu = decay * mu + gain * d + noise * randn(mu.shape, generator, mu.device, mu.dtype)
            else:
                phi1 = float(torch.expm1(torch.tensor(-h, dtype=torch.float64)))
                d = x_hat
                if k == 2:
                    r = (l_s - usable[-1][1]) / h
                    d = x_hat + (x_hat - usable[-1][0]) / (2 * r)
                    mu = ratio * mu - a_t * phi1 * d
                elif k >= 3:
                    (m2, l2), (m1, l1) = usable[-2], usable[-1]
                    r0, r1 = (l_s - l1) / h, (l1 - l2) / h
                    d10, d11 = (x_hat - m1) / r0, (m1 - m2) / r1
                    d1 = d10 + r0 / (r0 + r1) * (d10 - d11)
                    d2 = (d10 - d11) / (r0 + r1)
                    phi2 = phi1 / h + 1
                    phi3 = phi2 / h - 0.5
                    mu = ratio * mu - a_t * phi1 * x_hat + a_t * phi2 * d1 - a_t * phi3 * d2
                else:
                    mu = ratio * mu - a_t * phi1 * x_hat
            history.append((x_hat, l_s))
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
