"""The engine: Gaussian belief processes (BSI, BFN, VDM and their mixes) as pure tensor math.

No I/O, no networks, no configuration parsing: a trained model enters only as a
``denoiser(mu, lam)`` callable (see :meth:`Process.parameterize`).
"""

from .belief import BeliefFamily
from .categorical import CategoricalOutput, OneHot
from .elbo import Estimate, bits_per_dim
from .output import DiscretisedOutput, PointOutput, discretised_gaussian_log_prob, levels
from .parameterization import OUTPUTS, PREDICTIONS, CategoricalDenoiser, Denoiser
from .precision import SCHEDULES, SPACINGS, PrecisionRange, step_precisions
from .process import PRESETS, Process, TrainingLoss, make_process
from .proposal import PROPOSALS, AdaptiveProposal, LogUniformProposal, UniformTimeProposal
from .random import example_generators
from .sampling import SOLVERS

__all__ = [
    "OUTPUTS", "PREDICTIONS", "PRESETS", "PROPOSALS", "SCHEDULES", "SOLVERS", "SPACINGS",
    "AdaptiveProposal", "BeliefFamily", "CategoricalDenoiser", "CategoricalOutput", "Denoiser", "DiscretisedOutput",
    "Estimate", "LogUniformProposal",
    "OneHot", "PointOutput", "PrecisionRange", "Process", "TrainingLoss", "UniformTimeProposal", "bits_per_dim",
    "discretised_gaussian_log_prob", "example_generators", "levels", "make_process", "step_precisions",
]
