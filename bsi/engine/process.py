"""A Gaussian belief process: the composition of the engine's orthogonal choices.

Each field is one choice of the table in ``docs/design.md`` (data space, belief family, precision
range, schedule, proposal, parameterization, sampling setup, training weighting); the paper presets that fill them
are in ``presets.py`` and :func:`make_process`.  The methods only compose: the loss and the ELBO
are in ``objectives.py``, the samplers in ``sampling.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import objectives
from .belief import BeliefFamily
from .choices import check_choice
from .objectives import TrainingLoss
from .output import KSTEP_ESTIMATORS
from .parameterization import Backbone, CategoricalDenoiser, Denoiser, Parameterization
from .precision import SPACINGS, PrecisionRange, Schedule, step_precisions
from .proposal import Proposal
from .random import GeneratorLike
from .sampling import SOLVERS, SamplingSetup, start_belief
from .space import DataSpace
from .weighting import ElboWeighting, LossParts


@dataclass
class Process:
    """One setting of every choice; build it with :func:`bsi.engine.make_process`.

    ``stratified``: stratified uniforms for the proposal's draws.  ``elbo_spacing``: the step grid
    of the k-step ELBO (a name in :data:`bsi.engine.SPACINGS`).  ``calibration``: weight of the
    output's log-likelihood in the training loss (0: off; see :func:`objectives.training_loss`).
    ``kstep_estimator``: ``low_variance`` (quadrature over each step's measurement) or ``one_draw``.
    ``weighting``: the training loss's density of ``lam`` and per-example weight (``weighting.py``;
    ``elbo``: the unbiased ELBO estimate).  Evaluation never reads it.
    """

    name: str
    space: DataSpace
    family: BeliefFamily
    precision: PrecisionRange
    schedule: Schedule
    proposal: Proposal
    parameterization: Parameterization
    sampling: SamplingSetup = field(default_factory=SamplingSetup)
    elbo_spacing: str = "geometric"
    stratified: bool = True
    calibration: float = 0.0
    kstep_estimator: str = "low_variance"
    weighting: Any = field(default_factory=ElboWeighting)

    def __post_init__(self):
        check_choice("step spacing", self.elbo_spacing, SPACINGS)
        check_choice("k-step estimator", self.kstep_estimator, KSTEP_ESTIMATORS)
        if self.calibration < 0 or (self.calibration and self.output == "point"):
            raise ValueError(f"calibration={self.calibration} needs output=discretised and a weight >= 0")

    @property
    def lambda_min(self) -> float:
        return self.precision.lambda_min

    @property
    def lambda_max(self) -> float:
        return self.precision.lambda_max

    @property
    def output(self) -> str:
        """``point`` or ``discretised`` (a distribution over the data's levels or classes)."""
        return self.parameterization.output

    @property
    def sample_spacing(self) -> str:
        return self.sampling.spacing

    # -- the network ------------------------------------------------------------------------------
    def in_channels(self, data_channels: int) -> int:
        """Channels a backbone receives for data with ``data_channels`` channels."""
        return self.space.in_channels(data_channels)

    def out_channels(self, data_channels: int) -> int:
        """Channels a backbone must return for data with ``data_channels`` channels."""
        return self.space.out_channels(data_channels, self.output)

    def parameterize(self, backbone: Backbone) -> Denoiser | CategoricalDenoiser:
        """Wrap ``backbone(x_in, t)`` into this process's ``denoiser(mu, lam)``."""
        return self.parameterization.wrap(backbone, self.family, self.precision, self.space, self.schedule)

    # -- beliefs and objectives ------------------------------------------------------------------------
    def belief(self, x: Tensor, lam: Tensor, generator: GeneratorLike = None) -> Tensor:
        """Draw ``mu ~ q(mu | x, lam)``; ``x`` ``(B, ...)`` data, ``lam`` ``(B,)`` precisions."""
        self.space.check(x)
        if lam.shape != (x.shape[0],):
            raise ValueError(f"lam must have shape (B,) = ({x.shape[0]},), got {tuple(lam.shape)}")
        self.precision.check(lam)
        return self.family.sample(self.space.encode(x), lam, generator)

    def in_data_space(self, mu: Tensor, lam: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        """A belief mean and a prediction shaped like the data (for pictures of trajectories)."""
        return self.space.to_data(mu, lam, x_hat)

    def loss_parts(self) -> LossParts:
        """What the weighting reads: beliefs, range, proposal and the data's std of the preconditioning."""
        return LossParts(self.family, self.precision, self.proposal, float(getattr(self.parameterization, "sigma_data", 1.0)))

    def training_loss(self, x: Tensor, denoiser, generator: GeneratorLike = None, u: Tensor | None = None,
                      check: bool = True) -> TrainingLoss:
        """The weighting's loss per dim, one ``lam`` per example, named by the weighting; see ``objectives``.

        ``check=False`` skips checking that ``x`` lies on the data's range, which on an accelerator waits
        for the device: for batches that are in range by construction (``bsi.data``'s levels).
        """
        return objectives.training_loss(self, x, denoiser, generator, u, check)

    def step_precisions(self, steps: int, spacing: str | None = None, start: float | None = None) -> Tensor:
        """``steps + 1`` precisions from ``start`` (default ``lambda_min``) to ``lambda_max`` (float64)."""
        return step_precisions(self.lambda_min if start is None else start, self.lambda_max, steps,
                               spacing or self.elbo_spacing, self.family, self.schedule)

    @torch.no_grad()
    def elbo(self, x: Tensor, denoiser, steps: int | None = None, n_samples: int = 1, generator: GeneratorLike = None,
             reconstruction_samples: int | None = None, step_proposal: Tensor | None = None,
             trajectory: bool = False) -> dict[str, Tensor]:
        """Per-example ELBO terms in nats: ``measurement``, ``reconstruction``, ``prior``, ``total`` ``(B,)``.

        ``steps=None`` gives the infinite-step measurement term, ``steps=k`` the ``k``-step one on the
        ``elbo_spacing`` grid; ``n_samples`` Monte Carlo draws per example are averaged (and
        ``reconstruction_samples`` of the reconstruction term, default ``n_samples``).  For ``k`` steps,
        ``step_proposal`` (from :meth:`step_proposal`) draws the step from it, ``trajectory=True`` sums
        all ``k`` steps of one sender trajectory per draw (see ``objectives``).  Runs in ``x``'s dtype
        (float64 data and a float64 model give a float64 evaluation).
        """
        return objectives.elbo(self, x, denoiser, steps, n_samples, generator, reconstruction_samples,
                               step_proposal, trajectory)

    def step_proposal(self, x: Tensor, denoiser, steps: int, generator: GeneratorLike = None,
                      uniform_share: float = 0.1) -> Tensor:
        """``(steps,)`` step probabilities for the ``k``-step bound from a pilot batch ``x`` (``steps`` network calls)."""
        return objectives.step_proposal(self, x, denoiser, steps, generator, uniform_share)

    # -- sampling ---------------------------------------------------------------------------------------
    @property
    def sample_solver(self) -> str:
        """The sampler :meth:`sample` uses unless told otherwise."""
        return self.sampling.solver

    def sampling_grid(self, steps: int, solver: str | None = None, spacing: str | None = None) -> Tensor:
        """The ``steps + 1`` precisions ``solver`` (default ``sample_solver``) visits (see :class:`SamplingSetup`)."""
        return self.sampling.grid(self.family, self.precision, self.schedule, steps, solver or self.sample_solver, spacing)

    @torch.no_grad()
    def sample(self, denoiser, shape: tuple[int, ...], steps: int = 50, solver: str | None = None,
               generator: GeneratorLike = None, spacing: str | None = None, device=None, dtype=torch.float32,
               callback=None, lams: Tensor | None = None) -> Tensor:
        """Generate ``shape`` samples in data space with ``steps`` steps (``steps + 1`` network calls).

        ``solver`` is a name in :data:`bsi.engine.SOLVERS` (default ``sample_solver``), ``spacing`` one of
        :data:`bsi.engine.SPACINGS` (default ``sample_spacing``); ``lams``, a user's grid of precisions
        (increasing, inside the range, ``steps + 1`` of them), replaces both ``steps`` and ``spacing``.
        ``generator`` may be one generator per example for batch-size-invariant samples.  Categorical
        processes return each variable's class as its level.
        """
        solver = check_choice("solver", solver or self.sample_solver, SOLVERS)
        if lams is None:
            lams = self.sampling_grid(steps, solver, spacing)
        else:
            lams = self.checked_grid(lams)
        mu = start_belief(self.family, self.space.belief_shape(shape), lams[0], generator, device, dtype)

        def read(mu_: Tensor, lam_: Tensor):
            return objectives.predict(self, mu_, lam_, denoiser)

        return SOLVERS[solver](read, self.family, mu, lams, generator, callback)

    def checked_grid(self, lams: Tensor) -> Tensor:
        """A user's grid of precisions as float64 on the CPU; ``ValueError`` unless it is increasing and in range."""
        lams = torch.as_tensor(lams).to("cpu", torch.float64).flatten()
        if lams.numel() < 2 or not bool((lams[1:] > lams[:-1]).all()):
            raise ValueError(f"lams must be at least 2 increasing precisions, got {lams.tolist()[:6]}")
        self.precision.check(lams, "lams")
        return lams


__all__ = ["Process", "TrainingLoss"]
