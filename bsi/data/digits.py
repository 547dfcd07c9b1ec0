"""The 8x8 handwritten digits that ship inside scikit-learn: 1797 images on 17 levels (0..16)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import DatasetError

SHAPE = (1, 8, 8)
BINS = 17
N_TRAIN = 1437  # file order of load_digits: first 1437 train, last 360 test (the split other code uses)


def data_file() -> Path:
    """scikit-learn's ``digits.csv.gz`` (64 pixel levels and the label per row), found without importing
    scikit-learn: ``sklearn.datasets`` pulls in scipy and more, over a second of start-up for one small file."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("data=digits needs scikit-learn, which ships the digits: pip install scikit-learn")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


@lru_cache(maxsize=1)
def load() -> dict[str, np.ndarray]:
    """``{"train": (1437, 1, 8, 8), "test": (360, 1, 8, 8)}`` uint8 levels, in file order (read-only):
    the rows of ``sklearn.datasets.load_digits``."""
    rows = np.loadtxt(data_file(), delimiter=",", dtype=np.uint8)  # 64 levels 0..16, then the label
    images = np.ascontiguousarray(rows[:, :64].reshape(-1, *SHAPE))
    images.setflags(write=False)  # shared through the cache
    return {"train": images[:N_TRAIN], "test": images[N_TRAIN:]}
