"""The 8x8 handwritten digits that ship inside scikit-learn: 1797 images on 17 levels (0..16)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SHAPE = (1, 8, 8)
BINS = 17
N_TRAIN = 1437  # file order of load_digits: first 1437 train, last 360 test (the split other code uses)


@lru_cache(maxsize=1)
def load() -> dict[str, np.ndarray]:
    """``{"train": (1437, 1, 8, 8), "test": (360, 1, 8, 8)}`` uint8 levels, in file order (read-only)."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.uint8)[:, None]  # float64 holding integers 0..16
    images.setflags(write=False)  # shared through the cache
    return {"train": images[:N_TRAIN], "test": images[N_TRAIN:]}
