"""Evaluation metrics behind ``python -m bsi.evaluate``: likelihood (bpd), samples, FID/KID.

Nothing here parses a config: the entry point (:mod:`bsi.evaluate`) loads the checkpoint and the
data and hands tensors, datasets and settings to these functions.
"""

from .fid import (
    INCEPTION, FIDError, ReferenceStatsError, RGBImages, WeightsMissing, fid_kid, frechet_distance, inception_weights,
    load_reference_stats,
)
from .likelihood import KSTEP_DRAWS, TERMS, LikelihoodResult, evaluate_likelihood, likelihood_cost
from .progress import Cost, Metered, Progress, StopCheck, Stopped
from .samples import (
    Trajectory,
    draw_samples,
    grid_image,
    load_npz,
    save_grid,
    save_npz,
    save_preview,
    save_trajectory,
    to_pixels,
    viewing_scale,
)
from .shards import gather_examples, shard

__all__ = [
    "INCEPTION", "KSTEP_DRAWS", "TERMS", "Cost", "FIDError", "LikelihoodResult", "Metered", "Progress", "RGBImages",
    "ReferenceStatsError", "StopCheck", "Stopped", "Trajectory", "WeightsMissing", "draw_samples", "evaluate_likelihood",
    "fid_kid", "frechet_distance", "gather_examples", "grid_image", "inception_weights", "likelihood_cost", "load_npz",
    "load_reference_stats", "save_grid", "save_npz", "save_preview", "save_trajectory", "shard", "to_pixels",
    "viewing_scale",
]
