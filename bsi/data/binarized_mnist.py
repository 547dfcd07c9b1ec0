"""Binarized MNIST (the fixed binarization of Larochelle & Murray, 2011) -> uint8 HDF5, streamed.

Sources in the dataset directory, the usual distribution files:

- ``binarized_mnist_train.amat`` (50,000 lines)
- ``binarized_mnist_valid.amat`` (10,000 lines)
- ``binarized_mnist_test.amat`` (10,000 lines)

Each line is one 28x28 image: 784 space-separated values ``0`` or ``1`` in row-major order (value
``28 * y + x`` is pixel ``(y, x)``).  The values are the levels (bins 2); there are no labels.

Splits: ``train`` is the 50,000 train images followed by the 10,000 valid ones (60,000), ``test``
the 10,000 test images; ``data.val_size: 10000`` then makes the val split exactly the official
validation set.  The conversion streams ``BLOCK`` lines at a time, never holding a float copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .h5store import write_splits

URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
SHAPE = (1, 28, 28)
BINS = 2
PIXELS = 28 * 28
SPLITS = {"train": ["binarized_mnist_train.amat", "binarized_mnist_valid.amat"],
          "test": ["binarized_mnist_test.amat"]}
# Lines per file; read at call time, so tests can monkeypatch it for small fabricated files.
LINES = {"binarized_mnist_train.amat": 50_000, "binarized_mnist_valid.amat": 10_000,
         "binarized_mnist_test.amat": 10_000}
BLOCK = 4096  # images per write: 3 MB


def locate(directory: Path, redo: str) -> dict[str, Path]:
    """Every needed ``.amat`` file by name; all must be in ``directory``."""
    names = [name for names in SPLITS.values() for name in names]
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise DatasetError(
            f"binarized MNIST files missing in {directory}: {', '.join(missing)}; put "
            f"{', '.join(names)} from {URL} there, then run: {redo}")
    return {name: directory / name for name in names}


def convert(directory: Path, out: Path, redo: str) -> None:
    """Convert the three ``.amat`` files in ``directory`` into ``out`` (see :mod:`.h5store` for the layout)."""
    sources = locate(Path(directory), redo)
    blocks = {split: ((images, None) for name in names for images in read_blocks(sources[name], LINES[name]))
              for split, names in SPLITS.items()}
    write_splits(out, SHAPE, blocks, dataset="binarized_mnist", source="binarized_mnist_{train,valid,test}.amat")


def read_blocks(path: Path, lines: int, block: int = BLOCK) -> Iterator[np.ndarray]:
    """Consecutive blocks of ``path`` as uint8 ``(n, 1, 28, 28)`` in {0, 1}; the file must have ``lines`` lines."""
    buf, n, count = np.empty((block, PIXELS), np.uint8), 0, 0
    try:
        with open(path, "rb") as fh:
            for count, line in enumerate(fh, 1):
                if count > lines:
                    raise DatasetError(f"{path} has more than {lines} lines, expected {lines} (one image per "
                                       f"line): it is not the official file, download it again from {URL}")
                buf[n] = _parse_line(line, path, count)
                n += 1
                if n == block:
                    yield buf.reshape(block, *SHAPE)
                    buf, n = np.empty((block, PIXELS), np.uint8), 0  # a new one: the yielded block stays intact
    except OSError as e:
        raise DatasetError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    if count != lines:
        raise DatasetError(f"{path} has {count} lines, expected {lines} (one image per line): it is not the "
                           f"official file, download it again from {URL}")
    if n:
        yield buf[:n].reshape(n, *SHAPE)


def _parse_line(line: bytes, path: Path, number: int) -> np.ndarray:
    """The 784 levels of one line as uint8, or a DatasetError that names the file, line and value."""
    values = line.split()
    if len(values) != PIXELS:
        raise DatasetError(f"{path}: line {number} has {len(values)} values, expected {PIXELS} "
                           "(a 28x28 image of 0/1 values)")
    joined = b"".join(values)  # 784 bytes exactly when every value is one character
    levels = np.frombuffer(joined, np.uint8) - ord("0")
    if len(joined) != PIXELS or (levels > 1).any():
        position, value = next((i, v) for i, v in enumerate(values) if v not in (b"0", b"1"))
        raise DatasetError(f"{path}: line {number} value {position + 1} is {value.decode(errors='replace')!r}, "
                           "expected 0 or 1")
    return levels
