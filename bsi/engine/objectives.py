"""The training loss and the ELBO's terms, in nats, built on one step: draw a belief, denoise, read, check.

The model's negative log-likelihood of ``x`` is bounded by ``measurement + reconstruction + prior``
(nats per example, see ``docs/design.md``):

* measurement, infinite steps: ``1/2 integral E ||x - x_hat(mu_lam, lam)||^2 d lam``, importance
  sampled from the process's proposal over ``lam``;
* measurement, ``k`` steps on precisions ``lam_0 < ... < lam_k``: ``sum_i KL(N(x, 1/alpha_i) || receiver_i)``,
  estimated with a stratified step ``i`` as ``k`` times that step's term, whose KL is the process's
  ``kstep_estimator`` (``low_variance``: quadrature over the measurement).  With ``n_samples = k``
  the stratified draws hit every step exactly once, so the estimate is the sum over all k steps.
  Two lower-variance alternatives: a ``step_proposal`` ``q`` over the steps (step ``i`` drawn from
  ``q`` and weighted ``1/q_i``; :func:`step_proposal` builds ``q_i`` proportional to the RMS of step
  ``i``'s term over a pilot batch, which minimises the variance over examples), and ``trajectory``
  sums, which walk the sender's trajectory through all ``k`` steps: each step's term is the log-ratio
  at the very measurement that moves the belief, and these telescope (for the exact posterior the
  sum of the steps and the reconstruction is ``-ln p(x | mu_0)`` for every draw);
* reconstruction: ``-log p(x | mu at lambda_max)`` of the output at the top precision;
* prior: ``KL`` of the start belief from its prior (VDM only), in closed form.

Monte Carlo draws of one example are laid out example-major in one batch (``repeat_interleave``),
so ``n`` draws of ``B`` examples are one network call of ``B n`` rows and, with per-example
generators, each example draws its noise in one block that depends on its generator alone.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from .belief import BeliefFamily, sender_sample
from .proposal import stratified_uniform
from .random import GeneratorLike
from .space import DataSpace
from .weighting import LossParts


class Composition(Protocol):
    """The parts of a process the objectives read (:class:`bsi.engine.Process` is one)."""

    space: DataSpace
    family: BeliefFamily
    proposal: Any
    weighting: Any
    stratified: bool
    calibration: float
    kstep_estimator: str

    @property
    def lambda_max(self) -> float: ...

    def loss_parts(self) -> LossParts: ...

    def step_precisions(self, steps: int) -> Tensor: ...


class TrainingLoss(NamedTuple):
    """Per-example training loss and what an adaptive proposal learns from.

    loss: ``(B,)`` the weighting's loss per dimension (nats/dim for ``elbo``, the importance-weighted
    measurement term).  lam: ``(B,)`` the drawn precisions.  integrand: ``(B,)``
    ``h(lam) = 1/2 ||x - x_hat||^2`` (nats).  name: the weighting's name (``elbo``, ``edm``, ...),
    under which a trainer logs ``loss``: only ``elbo``'s is a bound.
    """

    loss: Tensor
    lam: Tensor
    integrand: Tensor
    name: str = "elbo"


def sum_dims(v: Tensor) -> Tensor:
    """Sum over every axis but the first: ``(B, ...) -> (B,)``."""
    return v.sum(tuple(range(1, v.dim()))) if v.dim() > 1 else v


def check_output(out, e: Tensor, finite: bool = True) -> None:
    """``ValueError`` unless the output is shaped like the belief ``e`` (and finite, if asked).

    Asks the output's own parameters, not its mean: a discretised mean is work the ancestral
    sampler does not otherwise need.
    """
    if out.shape != e.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input of shape {tuple(e.shape)}")
    if finite and not out.finite():
        raise ValueError("denoiser returned non-finite values (NaN or inf): check the model and its inputs")


def predict(proc: Composition, mu: Tensor, lam: Tensor, denoiser, finite: bool = True):
    """The denoiser's output at beliefs ``mu`` ``(B, ...)`` and precisions ``lam`` ``(B,)``, read and checked."""
    out = proc.space.read(denoiser(mu, lam))
    check_output(out, mu, finite)
    return out


def denoise(proc: Composition, e: Tensor, lam: Tensor, denoiser, generator: GeneratorLike, finite: bool = True):
    """Draw ``mu ~ q(mu | x, lam)`` for beliefs ``e`` ``(B, ...)``, call the denoiser, return its checked output."""
    return predict(proc, proc.family.sample(e, lam, generator), lam, denoiser, finite)


def training_loss(proc: Composition, x: Tensor, denoiser, generator: GeneratorLike = None,
                  u: Tensor | None = None, check: bool = True) -> TrainingLoss:
    """The weighting's loss ``w(lam) h(lam)``, averaged over the data's dims, one ``lam`` per example.

    ``lam`` and ``w`` come from ``proc.weighting`` (``weighting.py``) at stratified uniforms ``u``; with
    ``elbo`` this is the importance-weighted infinite-step measurement term.

    With ``proc.calibration = w > 0`` the loss adds ``w`` times the output's negative log-likelihood
    of ``x`` at the drawn precision (nats/dim), with the location held fixed: a proper scoring rule
    that trains the output's spread to be the posterior's, which the k-step bounds and the ancestral
    sampler use, while the mean (all that the infinite-step bound reads) keeps its own objective.
    """
    if check:
        proc.space.check(x)
    if u is None:
        u = stratified_uniform(x.shape[0], 1, generator, proc.stratified)[:, 0]
    lam, weight = (v.to(x.device) for v in proc.weighting.draw(u.to("cpu", torch.float64), proc.loss_parts()))
    e = proc.space.encode(x)
    out = denoise(proc, e, lam, denoiser, generator, finite=False)
    dims = math.prod(x.shape[1:])
    squares = sum_dims((e - out.mean).float().square())
    # the constants ride on the per-example weight: fewer operations on the graph, forward and backward
    loss = squares * weight.float().mul_(0.5 / dims)
    if proc.calibration:
        loss = loss - (proc.calibration / dims) * sum_dims(out.spread_log_prob(e).float())
    return TrainingLoss(loss, lam, 0.5 * squares.detach(), proc.weighting.name)


def measurement(proc: Composition, e: Tensor, denoiser, u: Tensor, steps: int | None,
                generator: GeneratorLike = None, step_proposal: Tensor | None = None) -> Tensor:
    """The measurement term (nats, float64) of each row of beliefs ``e`` ``(R, ...)`` at uniforms ``u`` ``(R,)``.

    ``steps=None``: infinite steps, ``lam`` from the proposal; ``steps=k``: the ``k``-step term, step
    ``i = floor(u k)`` of the ``elbo_spacing`` grid, weighted by ``k``, or with ``step_proposal``
    (``(k,)`` probabilities) the step at quantile ``u`` of ``q``, weighted by ``1/q_i``.
    """
    if steps is None:
        lam, weight = (v.to(e.device) for v in proc.proposal.lam(u.cpu()))
        out = denoise(proc, e, lam, denoiser, generator)
        return 0.5 * sum_dims((e - out.mean).double() ** 2) * weight
    grid = proc.step_precisions(steps).to(e.device)
    u = u.to(e.device, torch.float64)
    if step_proposal is None:
        i = (u * steps).long().clamp(max=steps - 1)
        weight = torch.full_like(u, float(steps))
    else:
        q = step_proposal.to(e.device, torch.float64)
        i = torch.searchsorted(q.cumsum(0), u * q.sum(), right=True).clamp(max=steps - 1)
        weight = 1 / q[i]
    lam, alpha = grid[i], grid[i + 1] - grid[i]
    out = denoise(proc, e, lam, denoiser, generator)
    return weight * sum_dims(out.measurement_kl(e, alpha, generator, proc.kstep_estimator).double())


@torch.no_grad()
def step_proposal(proc: Composition, x: Tensor, denoiser, steps: int, generator: GeneratorLike = None,
                  uniform_share: float = 0.1) -> Tensor:
    """``(steps,)`` float64 probabilities of drawing each step of the ``k``-step term, from a pilot batch ``x``.

    ``q_i`` is proportional to ``sqrt(mean over x of KL_i^2)``, step ``i``'s term (nats, the process's
    ``kstep_estimator``, one belief per example) given ``x`` ``(P, ...)``, which is the proposal that
    minimises the variance of ``KL_i / q_i`` over examples; ``uniform_share`` of the uniform is mixed
    in so that no step is left out, whatever the pilot saw.  Costs ``steps`` network calls of ``P``
    rows.  Any fixed ``q`` keeps the bound unbiased, so ``x`` may be examples that are evaluated too,
    as long as the pilot's noise is not the evaluation's.
    """
    if not 0 < uniform_share <= 1:
        raise ValueError(f"uniform_share must be in (0, 1], got {uniform_share}")
    proc.space.check(x)
    e = proc.space.encode(x)
    grid = proc.step_precisions(steps).to(e.device)
    rms = torch.empty(steps, dtype=torch.float64, device=e.device)  # on the device: no sync per step
    for i in range(steps):
        lam = grid[i].expand(e.shape[0])
        out = denoise(proc, e, lam, denoiser, generator)
        kl = sum_dims(out.measurement_kl(e, grid[i + 1].expand(e.shape[0]) - lam, generator, proc.kstep_estimator))
        rms[i] = kl.double().pow(2).mean().sqrt()
    rms = rms.cpu()
    shape = rms / rms.sum() if rms.sum() > 0 else torch.full_like(rms, 1 / steps)
    return (1 - uniform_share) * shape + uniform_share / steps


def check_step_proposal(q: Tensor, steps: int | None) -> None:
    """``ValueError`` unless ``q`` is a ``(steps,)`` vector of positive, finite probabilities summing to 1 (within 1e-4)."""
    if steps is None:
        raise ValueError("a step proposal needs a k-step bound: set steps=k")
    if not isinstance(q, Tensor):
        problem = f"it is a {type(q).__name__}, not a tensor"
    elif q.shape != (steps,):
        problem = f"its shape is {tuple(q.shape)}"
    elif not bool(torch.isfinite(q).all()) or not bool((q > 0).all()):
        problem = "it holds zero, negative or non-finite values"
    elif abs(float(q.double().sum()) - 1) > 1e-4:  # drawing would renormalise it, the 1/q weights would not
        problem = f"it sums to {float(q.double().sum()):.6g}"
    else:
        return
    raise ValueError(f"step_proposal must hold {steps} positive, finite probabilities summing to 1, but {problem}: "
                     "build it with step_proposal(proc, x, denoiser, steps)")


def trajectory_terms(proc: Composition, e: Tensor, denoiser, steps: int, generator: GeneratorLike = None,
                     mu: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The ``k``-step measurement term summed along one sender trajectory per row, and its end's reconstruction.

    Row ``r`` of beliefs ``e`` ``(R, ...)`` starts at ``mu ~ q(mu | x, lam_0)`` (or the given ``mu``),
    and at each step draws the sender's measurement ``y ~ N(e, 1/alpha_i)``, adds the log-ratio of
    sender to receiver at that ``y`` and moves the belief with it; the belief after the last step is
    at ``lambda_max``, where the reconstruction is read.  Returns ``(measurement, reconstruction)``,
    ``(R,)`` float64 nats each; ``steps + 1`` network calls.
    """
    grid = proc.step_precisions(steps).to(e.device)
    rows = e.shape[0]
    if mu is None:
        mu = proc.family.sample(e, grid[0].expand(rows), generator)
    total = torch.zeros(rows, dtype=torch.float64, device=e.device)
    for i in range(steps):
        lam, alpha = grid[i].expand(rows), (grid[i + 1] - grid[i]).expand(rows)
        out = predict(proc, mu, lam, denoiser)
        y = sender_sample(e, alpha, generator)
        total += sum_dims(out.log_ratio(e, alpha, y).double())
        mu = proc.family.update(mu, lam, y.to(mu.dtype), alpha)
    top = predict(proc, mu, grid[-1].expand(rows), denoiser)
    return total, -sum_dims(top.log_prob(e).double())


def reconstruction(proc: Composition, e: Tensor, denoiser, generator: GeneratorLike = None) -> Tensor:
    """``-log p(x | mu at lambda_max)`` (nats, float64) of each row of beliefs ``e`` ``(R, ...)``."""
    lam = torch.full((e.shape[0],), proc.lambda_max, device=e.device, dtype=torch.float64)
    return -sum_dims(denoise(proc, e, lam, denoiser, generator).log_prob(e).double())


def elbo(proc: Composition, x: Tensor, denoiser, steps: int | None = None, n_samples: int = 1,
         generator: GeneratorLike = None, reconstruction_samples: int | None = None,
         step_proposal: Tensor | None = None, trajectory: bool = False) -> dict[str, Tensor]:
    """Per-example ELBO terms ``measurement``, ``reconstruction``, ``prior``, ``total``, ``(B,)`` float64 nats.

    ``n_samples`` draws of the measurement term and ``reconstruction_samples`` (default ``n_samples``)
    of the reconstruction term per example are averaged; each term's draws are one network call.
    For ``k``-step bounds, ``step_proposal`` ``(k,)`` draws the step from it (see :func:`step_proposal`),
    and ``trajectory=True`` makes each draw one trajectory through all ``k`` steps, whose end gives its
    reconstruction (``k + 1`` calls of ``B n_samples`` rows; ``reconstruction_samples`` must be unset).
    """
    proc.space.check(x)
    if n_samples < 1 or (reconstruction_samples is not None and reconstruction_samples < 1):
        raise ValueError(f"n_samples and reconstruction_samples must be >= 1, got {n_samples}, {reconstruction_samples}")
    if step_proposal is not None:
        check_step_proposal(step_proposal, steps)
    if trajectory and (steps is None or step_proposal is not None or reconstruction_samples not in (None, n_samples)):
        raise ValueError("trajectory sums need a k-step bound (steps=k) and take neither a step proposal nor "
                         "separate reconstruction_samples (each trajectory's end is its reconstruction)")
    n_rec = n_samples if reconstruction_samples is None else reconstruction_samples
    batch, e = x.shape[0], proc.space.encode(x)
    if trajectory:
        draws, recon = trajectory_terms(proc, e.repeat_interleave(n_samples, 0), denoiser, steps, generator)
    else:
        u = stratified_uniform(batch, n_samples, generator, proc.stratified).flatten()
        draws = measurement(proc, e.repeat_interleave(n_samples, 0), denoiser, u, steps, generator, step_proposal)
        recon = reconstruction(proc, e.repeat_interleave(n_rec, 0), denoiser, generator)
    terms = {
        "measurement": draws.view(batch, n_samples).mean(1),
        "reconstruction": recon.view(batch, n_rec).mean(1),
        "prior": proc.family.prior_kl(e.double(), proc.lambda_min).double(),
    }
    terms["total"] = terms["measurement"] + terms["reconstruction"] + terms["prior"]
    return terms


__all__ = ["Composition", "TrainingLoss", "check_output", "check_step_proposal", "denoise", "elbo", "measurement", "predict",
           "reconstruction", "step_proposal", "sum_dims", "training_loss", "trajectory_terms"]
