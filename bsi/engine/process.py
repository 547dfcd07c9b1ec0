"""``make_process``: BSI, BFN and VDM as bundles of the engine's orthogonal choices.

| choice               | bsi                         | bfn                     | vdm                          |
|----------------------|-----------------------------|-------------------------|------------------------------|
| precision range      | [1e-2, 1e-2 + 1e6]          | [1, sigma_1^-2]         | [snr_min, snr_max]           |
| start belief         | mu0 ~ N(0, 1/lam0), drawn   | mu0 = 0, lam0 = 1       | lam0 = 0, prior at snr_min   |
| prediction           | edm                         | eps (clipped, mu input) | eps (scaled input z)         |
| proposal             | log_uniform                 | uniform_t (loglinear)   | uniform_t (loglinear)        |
| reconstruction alpha | 2e6                         | sigma_1^-2              | snr_max                      |
| prior term           | 0                           | 0                       | KL at snr_min                |

Every row is its own keyword of :func:`make_process`, so mixes are one override away
(``make_process("bfn", prediction="edm")``, ``make_process("vdm", proposal="log_uniform")``).

``bfn-discrete`` is BFN on K-class data: the same process on the data's one-hot vectors
(``categorical.py``), with ``lam = K beta``, BFN's accuracy schedule ``beta_1 tau^2`` (``quadratic``),
``tau ~ U(0, 1)`` for training and steps uniform in ``tau``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .belief import BeliefFamily
from .categorical import OneHot, as_categorical
from .elbo import sum_dims
from .output import as_output
from .parameterization import OUTPUTS, PREDICTIONS, CategoricalDenoiser, Denoiser
from .precision import SCHEDULES, SPACINGS, PrecisionRange, step_precisions
from .proposal import make_proposal, stratified_uniform
from .random import GeneratorLike, randn
from .sampling import SOLVERS

PRESETS: dict[str, dict[str, Any]] = {
    "bsi": dict(
        lam0=1e-2, drawn_start=True, lambda_min=1e-2, lambda_max=1e-2 + 1e6, prediction="edm",
        scale_input=True, clip=False, proposal="log_uniform", alpha_r=2e6,
    ),
    "bfn": dict(
        lam0=1.0, drawn_start=False, lambda_min=1.0, lambda_max=1e6, prediction="eps",
        scale_input=False, clip=True, proposal="uniform_t", alpha_r=1e6,
    ),
    "vdm": dict(
        lam0=0.0, drawn_start=True, lambda_min=6.7379e-3, lambda_max=5.9720e5, prediction="eps",
        scale_input=True, clip=False, proposal="uniform_t", alpha_r=5.9720e5,
    ),
    # lambda_max = K beta_1 and lambda_min = 1e-10 lambda_max are set by make_process from num_classes and beta_1.
    "bfn-discrete": dict(
        lam0=0.0, drawn_start=True, prediction="x", scale_input=False, clip=False, proposal="uniform_t",
        schedule="quadratic", output="discretised", elbo_spacing="time", sample_spacing="time",
    ),
}
CATEGORICAL_LAMBDA_MIN = 1e-10  # relative to lambda_max: what a belief mean can start from instead of BFN's lam = 0


class TrainingLoss(NamedTuple):
    """Per-example training loss and what an adaptive proposal learns from.

    loss: ``(B,)`` importance-weighted measurement term per dimension (nats/dim).
    lam: ``(B,)`` the drawn precisions.  integrand: ``(B,)`` ``h(lam) = 1/2 ||x - x_hat||^2`` (nats).
    """

    loss: Tensor
    lam: Tensor
    integrand: Tensor


@dataclass
class Process:
    """A Gaussian belief process: one setting of every choice in DESIGN.md's table.

    Build it with :func:`make_process`.  Precisions are floats; ``data_bins`` is the number of levels
    of quantised data (``None`` for continuous data).  With ``encoding`` set (a :class:`OneHot`),
    the data are classes and the belief is about their one-hot vectors, ``(B, *S) -> (B, *S, K)``.
    """

    name: str
    beliefs: BeliefFamily
    precision: PrecisionRange
    schedule: Any
    proposal: Any
    prediction: str
    output: str
    scale_input: bool
    clip: bool
    alpha_r: float
    data_bins: int | None
    sigma_data: float = 1.0
    min_scale: float = 1e-3
    stratified: bool = True
    elbo_spacing: str = "geometric"
    sample_spacing: str = "geometric"
    sigma_max: float = 80.0
    encoding: OneHot | None = None

    # -- the precision range -------------------------------------------------------------------
    @property
    def lambda_min(self) -> float:
        return self.precision.lam_min

    @property
    def lambda_max(self) -> float:
        return self.precision.lam_max

    @property
    def categorical(self) -> bool:
        return self.encoding is not None

    # -- data and belief coordinates -------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Data ``(B, *S)`` in the belief's coordinates: itself, or its one-hot vectors ``(B, *S, K)``."""
        return x if self.encoding is None else self.encoding.encode(x)

    def belief_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the belief about data of ``shape`` (``(B, *S)``)."""
        return tuple(shape) if self.encoding is None else self.encoding.belief_shape(tuple(shape))

    def in_data_space(self, mu: Tensor, lam: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        """A sampler callback's belief mean and prediction shaped like the data, for pictures.

        Categorical beliefs become the mean level under ``theta = softmax(lam mu)`` and predictions
        the mean level under the output; other processes' pass through unchanged.
        """
        if self.encoding is None:
            return mu, x_hat
        return self.encoding.mean_level(self.encoding.theta(mu, lam)), self.encoding.mean_level(x_hat)

    def read_output(self, prediction):
        """A denoiser's return value as the output object this process reads."""
        return as_output(prediction) if self.encoding is None else as_categorical(prediction)

    # -- input checks ----------------------------------------------------------------------------
    def check_data(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` is a finite ``(B, ...)`` batch inside [-1, 1] (when quantised)."""
        if x.dim() < 2:
            raise ValueError(f"data must be batched as (B, ...), got shape {tuple(x.shape)}")
        if self.encoding is not None:
            self.encoding.check(x)
        elif self.data_bins is not None and x.numel() and (x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6):
            raise ValueError(
                f"data must lie in [-1, 1] for a process with data_bins={self.data_bins}, got values in "
                f"[{x.min().item():.3g}, {x.max().item():.3g}]: scale it with bsi.data.to_float"
            )

    def _check_lam(self, x: Tensor, lam: Tensor) -> None:
        if lam.shape != (x.shape[0],):
            raise ValueError(f"lam must have shape (B,) = ({x.shape[0]},), got {tuple(lam.shape)}")
        self.precision.check(lam)

    @staticmethod
    def _check_output(out, x: Tensor, finite: bool = True) -> None:
        mean = out.mean
        if mean.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(mean.shape)} for input of shape {tuple(x.shape)}")
        if finite and not bool(torch.isfinite(mean).all()):
            raise ValueError("denoiser returned non-finite values (NaN or inf): check the model and its inputs")

    # -- the belief --------------------------------------------------------------------------------
    def belief(self, x: Tensor, lam: Tensor, generator: GeneratorLike = None) -> Tensor:
        """Draw ``mu ~ q(mu | x, lam)``; ``x`` ``(B, ...)``, ``lam`` ``(B,)`` precisions."""
        self.check_data(x)
        self._check_lam(x, lam)
        return self.beliefs.sample(self.encode(x), lam, generator)

    def start(self, shape: tuple[int, ...], lam: float, generator: GeneratorLike = None, device=None, dtype=None) -> Tensor:
        """Draw the start of sampling at precision ``lam``: ``N(0, a^2 + s2)`` (exact at ``lambda_min``)."""
        var = self.beliefs.prior_variance(torch.tensor([float(lam)], dtype=torch.float64))
        return var.sqrt().item() * randn(shape, generator, device=device, dtype=dtype)

    # -- the network -------------------------------------------------------------------------------
    def in_channels(self, data_channels: int) -> int:
        """Channels a backbone receives for data with ``data_channels`` channels (the belief mean)."""
        return data_channels if self.encoding is None else data_channels * self.encoding.num_classes

    def out_channels(self, data_channels: int) -> int:
        """Channels a backbone must return for data with ``data_channels`` channels."""
        if self.encoding is not None:
            return data_channels * self.encoding.num_classes
        return 2 * data_channels if self.output == "discretised" else data_channels

    def parameterize(self, backbone: Callable[[Tensor, Tensor], Tensor]) -> Denoiser | CategoricalDenoiser:
        """Wrap ``backbone(x_in, t)`` into this process's ``denoiser(mu, lam)``."""
        if self.encoding is not None:
            return CategoricalDenoiser(backbone, self.encoding, lambda lam: self.schedule.t(lam).float())
        return Denoiser(
            backbone, self.beliefs, self.precision, prediction=self.prediction, output=self.output,
            bins=self.data_bins, sigma_data=self.sigma_data, scale_input=self.scale_input, clip=self.clip,
            min_scale=self.min_scale,
        )

    # -- training ----------------------------------------------------------------------------------
    def training_loss(
        self, x: Tensor, denoiser, generator: GeneratorLike = None, u: Tensor | None = None
    ) -> TrainingLoss:
        """Importance-weighted infinite-step measurement term, averaged over dims, one ``lam`` per example.

        Dims are the data's (for categorical data: variables, not classes).  ``u`` ``(B,)`` in [0, 1)
        fixes the proposal's uniforms (reproducible comparisons); by default they are drawn stratified
        from ``generator``.
        """
        self.check_data(x)
        if u is None:
            u = stratified_uniform(x.shape[0], 1, generator, self.stratified)[:, 0]
        u = u.to("cpu", torch.float64)
        lam, weight = self.proposal.lam(u)
        lam, weight = lam.to(x.device), weight.to(x.device)
        e = self.encode(x)
        out = self.read_output(denoiser(self.beliefs.sample(e, lam, generator), lam))
        self._check_output(out, e, finite=False)
        h = 0.5 * sum_dims((e - out.mean).float() ** 2)
        dims = x[0].numel()
        return TrainingLoss(h * weight.float() / dims, lam, h.detach())

    # -- the ELBO ----------------------------------------------------------------------------------
    def step_precisions(self, steps: int, spacing: str | None = None, start: float | None = None) -> Tensor:
        """``steps + 1`` precisions from ``start`` (default ``lambda_min``) to ``lambda_max`` (float64)."""
        return step_precisions(
            self.lambda_min if start is None else start, self.lambda_max, steps, spacing or self.elbo_spacing,
            self.beliefs, self.schedule,
        )

    @torch.no_grad()
    def elbo(
        self,
        x: Tensor,
        denoiser,
        steps: int | None = None,
        n_samples: int = 1,
        generator: GeneratorLike = None,
    ) -> dict[str, Tensor]:
        """Per-example ELBO terms in nats: ``measurement``, ``reconstruction``, ``prior``, ``total`` ``(B,)``.

        ``steps=None`` gives the infinite-step measurement term, ``steps=k`` the ``k``-step one on
        this process's ``elbo_spacing`` grid; ``n_samples`` Monte Carlo draws per example are averaged.
        Runs in ``x``'s dtype (pass float64 data and a float64 model for a float64 evaluation).
        """
        self.check_data(x)
        batch, e = x.shape[0], self.encode(x)
        u = stratified_uniform(batch, n_samples, generator, self.stratified).to(x.device)
        grid = None if steps is None else self.step_precisions(steps).to(x.device)
        measurement = torch.zeros(batch, device=x.device, dtype=torch.float64)
        reconstruction = torch.zeros_like(measurement)
        lam_top = torch.full((batch,), self.lambda_max, device=x.device, dtype=torch.float64)
        for j in range(n_samples):
            if grid is None:
                lam, weight = self.proposal.lam(u[:, j])
                lam, weight = lam.to(x.device), weight.to(x.device)
                out = self.read_output(denoiser(self.beliefs.sample(e, lam, generator), lam))
                self._check_output(out, e)
                measurement += 0.5 * sum_dims((e - out.mean).double() ** 2) * weight
            else:
                i = (u[:, j] * steps).long().clamp(max=steps - 1)
                lam, alpha = grid[i], grid[i + 1] - grid[i]
                out = self.read_output(denoiser(self.beliefs.sample(e, lam, generator), lam))
                self._check_output(out, e)
                measurement += steps * sum_dims(out.measurement_kl(e, alpha, generator).double())
            top = self.read_output(denoiser(self.beliefs.sample(e, lam_top, generator), lam_top))
            self._check_output(top, e)
            reconstruction -= sum_dims(top.log_prob(e, self.alpha_r, self.data_bins).double())
        measurement, reconstruction = measurement / n_samples, reconstruction / n_samples
        prior = self.beliefs.prior_kl(e.double(), self.lambda_min)
        terms = {"measurement": measurement, "reconstruction": reconstruction, "prior": prior}
        terms["total"] = measurement + reconstruction + prior
        return terms

    # -- sampling ----------------------------------------------------------------------------------
    def sampling_start(self, solver: str, spacing: str) -> float:
        """Where sampling begins.

        The ancestral sampler on a grid in ``lam`` starts at ``lambda_min`` (the exact generative
        process).  The ODE/SDE solvers and the noise-level spacings need a finite noise level
        ``sigma = sqrt(s2)/a``: they start where ``sigma`` falls to ``sigma_max`` (for BFN just above
        ``lam = 1``, where the belief is still deterministic; for BSI just above ``lam0``).
        """
        sigma_min_lam = self.beliefs.sigma(torch.tensor(self.lambda_min, dtype=torch.float64))
        exact = solver == "ancestral" and spacing in ("geometric", "time")
        if exact or (torch.isfinite(sigma_min_lam) and sigma_min_lam <= self.sigma_max):
            return self.lambda_min
        return float(self.beliefs.lam_at_sigma(torch.tensor(self.sigma_max, dtype=torch.float64)))

    @torch.no_grad()
    def sample(
        self,
        denoiser,
        shape: tuple[int, ...],
        steps: int = 50,
        solver: str = "ancestral",
        generator: GeneratorLike = None,
        spacing: str | None = None,
        device=None,
        dtype=torch.float32,
        callback=None,
    ) -> Tensor:
        """Generate ``shape`` samples in data space with ``steps`` steps (``steps + 1`` network calls).

        Categorical processes return each variable's drawn class as its level in [-1, 1].

        ``solver`` is a name in :data:`bsi.engine.SOLVERS`; ``spacing`` one of
        :data:`bsi.engine.SPACINGS` (default ``sample_spacing``).  ``generator`` may be one
        generator per example for batch-size-invariant samples.
        """
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver '{solver}': choose one of {', '.join(SOLVERS)}")
        spacing = spacing or self.sample_spacing
        if spacing not in SPACINGS:
            raise ValueError(f"unknown step spacing '{spacing}': choose one of {', '.join(SPACINGS)}")
        start = self.sampling_start(solver, spacing)
        lams = step_precisions(start, self.lambda_max, steps, spacing, self.beliefs, self.schedule)
        mu = self.start(self.belief_shape(shape), start, generator, device=device, dtype=dtype)

        def checked(mu_, lam_):
            out = self.read_output(denoiser(mu_, lam_))
            self._check_output(out, mu_)
            return out

        return SOLVERS[solver](checked, self.beliefs, mu, lams, generator, callback)


def make_process(name: str = "bsi", **overrides: Any) -> Process:
    """The process ``name`` (``bsi``, ``bfn``, ``vdm``, ``bfn-discrete``) with its paper's defaults, any field overridden.

    Keywords: ``lam0``, ``drawn_start``, ``lambda_min``, ``lambda_max``, ``sigma_1`` (bfn: sets
    ``lambda_max = sigma_1^-2`` and ``alpha_r``), ``snr_min``/``snr_max`` (vdm), ``prediction``
    (edm|eps|x), ``output`` (point|discretised), ``scale_input``, ``clip``, ``proposal``
    (log_uniform|uniform_t|adaptive), ``proposal_options`` (dict for the adaptive proposal),
    ``schedule`` (loglinear|cosine), ``alpha_r``, ``data_bins``, ``sigma_data``, ``min_scale``,
    ``stratified``, ``elbo_spacing``, ``sample_spacing``, ``sigma_max``.

    ``bfn-discrete`` takes ``num_classes`` (K; or ``data_bins``, the data's levels) and ``beta_1``
    (BFN's final accuracy ``beta(1)``, default 3.0; BFN's reference code sets its square root,
    ``max_sqrt_beta``: 3 for binarized MNIST and 0.75 for text8, i.e. ``beta_1`` 9 and 0.5625), which set
    ``lambda_max = K beta_1`` and ``lambda_min = 1e-10 lambda_max``; its output is always the
    categorical distribution over the classes (``output=discretised``).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown process '{name}': choose one of {', '.join(PRESETS)}")
    cfg: dict[str, Any] = dict(output="point", data_bins=None, schedule="loglinear", proposal_options={})
    cfg.update(PRESETS[name])
    encoding = None
    if name == "bfn-discrete":
        classes = overrides.pop("num_classes", None) or overrides.get("data_bins")
        if not classes:
            raise ValueError("bfn-discrete needs the number of classes: pass num_classes (or data_bins)")
        if overrides.get("data_bins") not in (None, classes):
            raise ValueError(f"num_classes={classes} and data_bins={overrides['data_bins']} disagree: pass one of them")
        if overrides.get("output", "discretised") != "discretised":
            raise ValueError("bfn-discrete predicts a distribution over the classes: use output=discretised")
        encoding = OneHot(int(classes))
        lam_max = encoding.num_classes * float(overrides.pop("beta_1", 3.0))
        cfg.update(data_bins=encoding.num_classes, lambda_max=lam_max, lambda_min=CATEGORICAL_LAMBDA_MIN * lam_max,
                   alpha_r=lam_max)
    if "sigma_1" in overrides:
        sigma_1 = float(overrides.pop("sigma_1"))
        cfg.update(lambda_max=sigma_1**-2, alpha_r=sigma_1**-2)
    if "snr_min" in overrides:
        cfg["lambda_min"] = float(overrides.pop("snr_min"))
    if "snr_max" in overrides:
        cfg["lambda_max"] = cfg["alpha_r"] = float(overrides.pop("snr_max"))
    unknown = set(overrides) - set(cfg) - {"sigma_data", "min_scale", "stratified", "elbo_spacing", "sample_spacing", "sigma_max"}
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for make_process; see its docstring for the keywords")
    cfg.update(overrides)
    if cfg["prediction"] not in PREDICTIONS:
        raise ValueError(f"unknown prediction '{cfg['prediction']}': choose one of {', '.join(PREDICTIONS)}")
    if cfg["output"] not in OUTPUTS:
        raise ValueError(f"unknown output '{cfg['output']}': choose one of {', '.join(OUTPUTS)}")
    if cfg["output"] == "discretised" and not cfg["data_bins"]:
        raise ValueError("output=discretised needs the data's number of levels: pass data_bins")
    if cfg["schedule"] not in SCHEDULES:
        raise ValueError(f"unknown schedule '{cfg['schedule']}': choose one of {', '.join(SCHEDULES)}")
    if cfg["lam0"] > cfg["lambda_min"]:
        raise ValueError(f"lam0={cfg['lam0']} must not exceed lambda_min={cfg['lambda_min']}")
    precision = PrecisionRange(float(cfg["lambda_min"]), float(cfg["lambda_max"]))
    schedule = SCHEDULES[cfg["schedule"]](precision)
    extra = {k: cfg[k] for k in ("sigma_data", "min_scale", "stratified", "elbo_spacing", "sample_spacing", "sigma_max") if k in cfg}
    return Process(
        name=name,
        beliefs=BeliefFamily(float(cfg["lam0"]), bool(cfg["drawn_start"])),
        precision=precision,
        schedule=schedule,
        proposal=make_proposal(cfg["proposal"], precision, schedule, **dict(cfg["proposal_options"] or {})),
        prediction=cfg["prediction"],
        output=cfg["output"],
        scale_input=bool(cfg["scale_input"]),
        clip=bool(cfg["clip"]),
        alpha_r=float(cfg["alpha_r"]),
        data_bins=None if cfg["data_bins"] is None else int(cfg["data_bins"]),
        encoding=encoding,
        **extra,
    )


__all__ = ["CATEGORICAL_LAMBDA_MIN", "PRESETS", "Process", "TrainingLoss", "make_process"]
