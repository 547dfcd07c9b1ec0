"""The engine: Gaussian belief processes (BSI, BFN, VDM and their mixes) as pure tensor math.

No I/O, no networks, no configuration parsing: a trained model enters only as a
``denoiser(mu, lam)`` callable (see :meth:`Process.parameterize`).  ``docs/design.md`` explains the
design and the module map.
"""

from .belief import BeliefFamily
from .categorical import CategoricalOutput
from .elbo import Estimate, bits_per_dim
from .objectives import TrainingLoss
from .output import (
    DiscretisedOutput,
    PointOutput,
    discretised_gaussian_log_prob,
    levels,
)
from .parameterization import (
    OUTPUTS,
    PREDICTIONS,
    CategoricalDenoiser,
    CategoricalParameterization,
    Denoiser,
    GaussianParameterization,
)
from .precision import SCHEDULES, SPACINGS, PrecisionRange, step_precisions
from .presets import PRESETS, CategoricalSettings, GaussianSettings, make_process
from .process import Process
from .proposal import (
    PROPOSALS,
    AdaptiveProposal,
    LogUniformProposal,
    UniformTimeProposal,
)
from .random import example_generators
from .sampling import SOLVERS, SamplingSetup
from .space import Continuous, DataSpace, OneHot
from .weighting import WEIGHTINGS, LossParts, make_weighting

__all__ = [
    "OUTPUTS", "PREDICTIONS", "PRESETS", "PROPOSALS", "SCHEDULES", "SOLVERS", "SPACINGS", "WEIGHTINGS",
    "AdaptiveProposal", "BeliefFamily", "CategoricalDenoiser", "CategoricalOutput", "CategoricalParameterization",
    "CategoricalSettings", "Continuous", "DataSpace", "Denoiser", "DiscretisedOutput", "Estimate",
    "GaussianParameterization", "GaussianSettings", "LogUniformProposal", "LossParts", "OneHot", "PointOutput", "PrecisionRange",
    "Process", "SamplingSetup", "TrainingLoss", "UniformTimeProposal", "bits_per_dim", "discretised_gaussian_log_prob",
    "example_generators", "levels", "make_process", "make_weighting", "step_precisions",
]
