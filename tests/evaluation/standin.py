"""A stand-in for torch-fidelity's Inception network (whose weights cannot be downloaded here): a fixed
random projection of average-pooled pixels, registered with torch-fidelity under a name of its own."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase


def pooled_pixels(name: str, pool: int, features: int) -> str:
    """Register (once) the extractor ``name``: RGB pooled to ``pool x pool``, projected to ``features``; returns ``name``."""
    if name in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
        return name
    inputs, layer = 3 * pool * pool, str(features)

    class PooledPixels(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            generator = torch.Generator().manual_seed(0)
            self.register_buffer("proj", torch.randn(inputs, features, generator=generator) / math.sqrt(inputs))

        @staticmethod
        def get_provided_features_list():
            return (layer,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return layer

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.shape[1] == 3  # torch-fidelity's input contract
            return (F.adaptive_avg_pool2d(x.float() / 255, pool).flatten(1) @ self.proj,)

    torch_fidelity.register_feature_extractor(name, PooledPixels)
    return name
