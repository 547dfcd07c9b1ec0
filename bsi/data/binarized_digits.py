"""scikit-learn's 8x8 digits binarized at a fixed threshold: 1797 images on 2 levels, no files.

The images and the split are those of :mod:`.digits` (file order of ``load_digits``: the first
1437 are the training part, the last 360 test); each pixel's level ``0..16`` becomes ``1`` if it is
greater than :data:`THRESHOLD` (8, half of the range) and ``0`` otherwise.  The binarization is
deterministic (no sampling), so every run sees the same binary images.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import digits

SHAPE = digits.SHAPE  # (1, 8, 8)
BINS = 2
THRESHOLD = 8  # level > 8 (of 0..16) -> 1, else 0


@lru_cache(maxsize=1)
def load() -> dict[str, np.ndarray]:
    """``{"train": (1437, 1, 8, 8), "test": (360, 1, 8, 8)}`` uint8 in {0, 1}, in file order (read-only)."""
    out = {}
    for split, images in digits.load().items():
        binary = (images > THRESHOLD).astype(np.uint8)
        binary.setflags(write=False)  # shared through the cache
        out[split] = binary
    return out
