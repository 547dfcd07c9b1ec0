"""Shared fixtures: real data that needs no download, and the exact denoiser's point sets."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def digits() -> torch.Tensor:
    """The 1797 sklearn digits as (N, 1, 8, 8) float32 in [-1, 1] on 17 levels, in file order."""
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images, dtype=torch.float32)
    return (images / 16 * 2 - 1)[:, None]
