"""Importance proposals over precision for the infinite-step measurement term.

The measurement term is ``L_inf = integral h(lam) d lam`` over ``[lambda_min, lambda_max]`` with
``h(lam) = 1/2 E ||x - x_hat(mu_lam, lam)||^2``.  A proposal draws ``lam ~ p`` and returns the
importance weight ``1/p(lam)``, so that ``h(lam)/p(lam)`` is unbiased for ``L_inf``.

Draws are stratified: ``u`` in [0, 1) is spread over strata before it is mapped through the
proposal's inverse CDF.  With ``n`` draws per example, example ``b``'s draws take one stratum each
of its own ``n`` strata (so per-example estimates stay independent and their standard error is
honest); with one draw per example, the batch is stratified and each example gets its own
stratum, in random order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .precision import PrecisionRange, Schedule
from .random import GeneratorLike, rand
from .registry import ProposalLike, build, resolve

PROPOSALS = ("log_uniform", "uniform_t", "adaptive")


def stratified_uniform(batch: int, n: int, generator: GeneratorLike = None, stratified: bool = True) -> Tensor:
    """``(batch, n)`` float64 draws in [0, 1), stratified as described in the module docstring."""
    jitter = rand((batch, n), generator, dtype=torch.float64).cpu()
    if not stratified:
        return jitter
    if n > 1:
        return (torch.arange(n, dtype=torch.float64) + jitter) / n
    if isinstance(generator, torch.Generator):
        order = torch.randperm(batch, generator=generator, device=generator.device).cpu()
    elif generator is None:
        order = torch.randperm(batch)
    else:
        # Per-example generators: the stratum of example b must depend on b's generator only, so
        # fall back to plain uniform draws (still unbiased, no batch coupling).
        return jitter
    return (order.to(torch.float64)[:, None] + jitter) / batch


class LogUniformProposal:
    """``p(lam) ∝ 1/lam`` on the range: BSI's proposal, ``1/p(lam) = lam ln(lambda_max/lambda_min)``."""

    name = "log_uniform"
    learns = False  # update() is a no-op: training need not gather what it would learn from

    def __init__(self, precision: PrecisionRange):
        self.precision = precision

    def lam(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``u`` in [0, 1) to precisions and importance weights ``1/p(lam)`` (float64)."""
        lam = self.precision.at(u)
        return lam, lam * self.precision.log_ratio

    def update(self, lam: Tensor, integrand: Tensor) -> None:
        """Fixed proposal: nothing to learn."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class UniformTimeProposal:
    """``t ~ U(0, 1)`` mapped through a schedule: ``1/p(lam) = dlam/dt`` (BFN's and VDM's training)."""

    name = "uniform_t"
    learns = False

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def lam(self, u: Tensor) -> tuple[Tensor, Tensor]:
        return self.schedule.lam(u), self.schedule.dlam_dt(u)

    update = LogUniformProposal.update
    state_dict = LogUniformProposal.state_dict
    load_state_dict = LogUniformProposal.load_state_dict


class AdaptiveProposal:
    """A piecewise-constant density in ``v = ln lam`` that learns to minimise the estimator's variance.

    The variance of ``h/p`` is smallest for ``p ∝ |h|``; over random ``x`` and ``mu`` it is smallest
    for ``p(v) ∝ sqrt(E[g(v)^2])`` with ``g(v) = h(lam) dlam/dv`` the integrand in ``v``.  The
    proposal keeps an exponential moving average of ``g^2`` in each of ``bins`` equal bins of ``v``
    (fed by :meth:`update` with the integrands the training loss computes anyway) and mixes the
    resulting density with a uniform floor of weight ``floor`` so that every precision keeps a
    bounded weight and the estimate stays unbiased.  It starts as the log-uniform proposal.

    Its state (:meth:`state_dict`) belongs in training checkpoints.  In distributed training, call
    :meth:`update` with the integrands gathered from all ranks so that the replicas agree.
    """

    name = "adaptive"
    learns = True

    def __init__(self, precision: PrecisionRange, bins: int = 64, decay: float = 0.99, floor: float = 0.1):
        if not 0 < floor <= 1:
            raise ValueError(f"adaptive proposal floor must lie in (0, 1], got {floor}")
        self.precision, self.bins, self.decay, self.floor = precision, bins, decay, floor
        self.second_moment = torch.ones(bins, dtype=torch.float64)
        self.seen = torch.zeros(bins, dtype=torch.float64)

    def density(self) -> Tensor:
        """Probability mass of each bin in ``v``, ``(bins,)`` summing to 1."""
        q = self.second_moment.sqrt()
        return (1 - self.floor) * q / q.sum() + self.floor / self.bins

    def lam(self, u: Tensor) -> tuple[Tensor, Tensor]:
        mass = self.density().to(u.device)
        cdf = torch.cat([mass.new_zeros(1), mass.cumsum(0)])
        cdf[-1] = 1.0
        k = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, self.bins) - 1
        frac = (u - cdf[k]) / mass[k]
        v = (k + frac.clamp(0, 1)) / self.bins  # position in [0, 1] of ln-lam
        lam = self.precision.at(v)
        # density in v on [0, 1] is mass_k * bins; in lam it is that / (lam * log_ratio)
        weight = lam * self.precision.log_ratio / (mass[k] * self.bins)
        return lam, weight

    def update(self, lam: Tensor, integrand: Tensor) -> None:
        """Feed observed integrands ``h(lam)`` (nats per unit precision, ``(N,)``) at precisions ``lam``."""
        lam = lam.detach().to("cpu", torch.float64).flatten()
        g2 = (integrand.detach().to("cpu", torch.float64).flatten() * lam * self.precision.log_ratio) ** 2
        v = self.precision.position(lam)
        k = (v * self.bins).long().clamp(0, self.bins - 1)
        total = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, k, g2)
        count = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, k, torch.ones_like(g2))
        hit = count > 0
        mean = total[hit] / count[hit]
        # The first observation of a bin replaces the flat initial value instead of being averaged in.
        fresh = self.seen[hit] == 0
        old = self.second_moment[hit]
        self.second_moment[hit] = torch.where(fresh, mean, self.decay * old + (1 - self.decay) * mean)
        self.seen[hit] += count[hit]
        # Bins never seen yet borrow the average of the seen ones, so they are neither starved nor favoured.
        unseen = self.seen == 0
        if bool(unseen.any()) and bool((~unseen).any()):
            self.second_moment[unseen] = self.second_moment[~unseen].mean()

    def state_dict(self) -> dict:
        return {"second_moment": self.second_moment.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.second_moment = state["second_moment"].to(torch.float64).clone()
        self.seen = state["seen"].to(torch.float64).clone()


Proposal = LogUniformProposal | UniformTimeProposal | AdaptiveProposal


def make_proposal(name: Any, precision: PrecisionRange, schedule: Schedule, **options) -> Proposal:
    """Build a proposal by name (``log_uniform``, ``uniform_t`` or ``adaptive``; ``options`` are the adaptive one's).

    A dotted path or a class/function builds a user's proposal as ``factory(precision, schedule, **options)``;
    an object that is already a proposal is used as it is.
    """
    if not (isinstance(name, str) and name in PROPOSALS):
        found = resolve("proposal", name, dict.fromkeys(PROPOSALS))
        return build("proposal", name, found, ProposalLike, "name, lam(u), update, state_dict and load_state_dict",
                     precision, schedule, options=options)
    if options and name != "adaptive":
        raise ValueError(f"proposal_options {sorted(options)} apply to proposal=adaptive only, not proposal={name}")
    if name == "log_uniform":
        return LogUniformProposal(precision)
    if name == "uniform_t":
        return UniformTimeProposal(schedule)
    return AdaptiveProposal(precision, **options)


__all__ = [
    "PROPOSALS",
    "Proposal",
    "AdaptiveProposal",
    "LogUniformProposal",
    "UniformTimeProposal",
    "make_proposal",
    "stratified_uniform",
]
