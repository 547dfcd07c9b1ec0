"""The training loss and the ELBO's terms, in nats, built on one step: draw a belief, denoise, read, check.

The model's negative log-likelihood of ``x`` is bounded by ``measurement + reconstruction + prior``
(nats per example, see ``docs/design.md``):

* measurement, infinite steps: ``1/2 integral E ||x - x_hat(mu_lam, lam)||^2 d lam``, importance
  sampled from the process's proposal over ``lam``;
* measurement, ``k`` steps on precisions ``lam_0 < ... < lam_k``: ``sum_i KL(N(x, 1/alpha_i) || receiver_i)``,
  estimated with a stratified step ``i`` as ``k`` times that step's term, whose KL is the process's
  ``kstep_estimator`` (``low_variance``: quadrature over the measurement).  With ``n_samples = k``
  the stratified draws hit every step exactly once, so the estimate is the sum over all k steps;
* reconstruction: ``-log p(x | mu at lam_max)`` of the output at the top precision;
* prior: ``KL`` of the start belief from its prior (VDM only), in closed form.

Monte Carlo draws of one example are laid out example-major in one batch (``repeat_interleave``),
so ``n`` draws of ``B`` examples are one network call of ``B n`` rows and, with per-example
generators, each example draws its noise in one block that depends on its generator alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from .proposal import stratified_uniform
from .random import GeneratorLike

if TYPE_CHECKING:
    from .process import Process


class TrainingLoss(NamedTuple):
    """Per-example training loss and what an adaptive proposal learns from.

    loss: ``(B,)`` importance-weighted measurement term per dimension (nats/dim).
    lam: ``(B,)`` the drawn precisions.  integrand: ``(B,)`` ``h(lam) = 1/2 ||x - x_hat||^2`` (nats).
    """

    loss: Tensor
    lam: Tensor
    integrand: Tensor


def sum_dims(v: Tensor) -> Tensor:
    """Sum over every axis but the first: ``(B, ...) -> (B,)``."""
    return v.flatten(1).sum(1)


def check_output(out, e: Tensor, finite: bool = True) -> None:
    """``ValueError`` unless the output is shaped like the belief ``e`` (and finite, if asked).

    Asks the output's own parameters, not its mean: a discretised mean is work the ancestral
    sampler does not otherwise need.
    """
    if out.shape != e.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input of shape {tuple(e.shape)}")
    if finite and not out.finite():
        raise ValueError("denoiser returned non-finite values (NaN or inf): check the model and its inputs")


def denoise(proc: Process, e: Tensor, lam: Tensor, denoiser, generator: GeneratorLike, finite: bool = True):
    """Draw ``mu ~ q(mu | x, lam)`` for beliefs ``e`` ``(B, ...)``, call the denoiser, return its checked output."""
    out = proc.space.read(denoiser(proc.beliefs.sample(e, lam, generator), lam))
    check_output(out, e, finite)
    return out


def training_loss(proc: Process, x: Tensor, denoiser, generator: GeneratorLike = None,
                  u: Tensor | None = None) -> TrainingLoss:
    """Importance-weighted infinite-step measurement term, averaged over the data's dims, one ``lam`` per example.

    With ``proc.calibration = w > 0`` the loss adds ``w`` times the output's negative log-likelihood
    of ``x`` at the drawn precision (nats/dim), with the location held fixed: a proper scoring rule
    that trains the output's spread to be the posterior's, which the k-step bounds and the ancestral
    sampler use, while the mean (all that the infinite-step bound reads) keeps its own objective.
    """
    proc.space.check(x)
    if u is None:
        u = stratified_uniform(x.shape[0], 1, generator, proc.stratified)[:, 0]
    lam, weight = (v.to(x.device) for v in proc.proposal.lam(u.to("cpu", torch.float64)))
    e = proc.space.encode(x)
    out = denoise(proc, e, lam, denoiser, generator, finite=False)
    h = 0.5 * sum_dims((e - out.mean).float() ** 2)
    loss = h * weight.float()
    if proc.calibration:
        loss = loss - proc.calibration * sum_dims(out.spread_log_prob(e).float())
    return TrainingLoss(loss / x[0].numel(), lam, h.detach())


def measurement(proc: Process, e: Tensor, denoiser, u: Tensor, steps: int | None,
                generator: GeneratorLike = None) -> Tensor:
    """The measurement term (nats, float64) of each row of beliefs ``e`` ``(R, ...)`` at uniforms ``u`` ``(R,)``.

    ``steps=None``: infinite steps, ``lam`` from the proposal; ``steps=k``: the ``k``-step term, step
    ``i = floor(u k)`` of the ``elbo_spacing`` grid, weighted by ``k``.
    """
    if steps is None:
        lam, weight = (v.to(e.device) for v in proc.proposal.lam(u.cpu()))
        out = denoise(proc, e, lam, denoiser, generator)
        return 0.5 * sum_dims((e - out.mean).double() ** 2) * weight
    grid = proc.step_precisions(steps).to(e.device)
    i = (u.to(e.device) * steps).long().clamp(max=steps - 1)
    lam, alpha = grid[i], grid[i + 1] - grid[i]
    out = denoise(proc, e, lam, denoiser, generator)
    return steps * sum_dims(out.measurement_kl(e, alpha, generator, proc.kstep_estimator).double())


def reconstruction(proc: Process, e: Tensor, denoiser, generator: GeneratorLike = None) -> Tensor:
    """``-log p(x | mu at lam_max)`` (nats, float64) of each row of beliefs ``e`` ``(R, ...)``."""
    lam = torch.full((e.shape[0],), proc.lambda_max, device=e.device, dtype=torch.float64)
    return -sum_dims(denoise(proc, e, lam, denoiser, generator).log_prob(e).double())


def elbo(proc: Process, x: Tensor, denoiser, steps: int | None = None, n_samples: int = 1,
         generator: GeneratorLike = None, reconstruction_samples: int | None = None) -> dict[str, Tensor]:
    """Per-example ELBO terms ``measurement``, ``reconstruction``, ``prior``, ``total``, ``(B,)`` float64 nats.

    ``n_samples`` draws of the measurement term and ``reconstruction_samples`` (default ``n_samples``)
    of the reconstruction term per example are averaged; each term's draws are one network call.
    """
    proc.space.check(x)
    if n_samples < 1 or (reconstruction_samples is not None and reconstruction_samples < 1):
        raise ValueError(f"n_samples and reconstruction_samples must be >= 1, got {n_samples}, {reconstruction_samples}")
    n_rec = n_samples if reconstruction_samples is None else reconstruction_samples
    batch, e = x.shape[0], proc.space.encode(x)
    u = stratified_uniform(batch, n_samples, generator, proc.stratified).flatten()
    draws = measurement(proc, e.repeat_interleave(n_samples, 0), denoiser, u, steps, generator)
    recon = reconstruction(proc, e.repeat_interleave(n_rec, 0), denoiser, generator)
    terms = {
        "measurement": draws.view(batch, n_samples).mean(1),
        "reconstruction": recon.view(batch, n_rec).mean(1),
        "prior": proc.beliefs.prior_kl(e.double(), proc.lambda_min).double(),
    }
    terms["total"] = terms["measurement"] + terms["reconstruction"] + terms["prior"]
    return terms


__all__ = ["TrainingLoss", "check_output", "denoise", "elbo", "measurement", "reconstruction", "sum_dims",
           "training_loss"]
