"""ImageNet32: the official downsampled-ImageNet npz batches -> uint8 HDF5, streamed.

Sources in the dataset directory, each file either loose or inside the official zips (any folder):

- ``train_data_batch_1.npz`` .. ``train_data_batch_10.npz`` (or ``Imagenet32_train_npz.zip``)
- ``val_data.npz`` (or ``Imagenet32_val_npz.zip``)

Each npz holds ``data`` (N, 3072) uint8, each row the red, green and blue 32x32 planes in turn,
``labels`` (N,) in 1..1000 and, in train batches, ``mean`` (ignored).  The official validation set
is stored as the ``test`` split (the one papers report bits/dim on); labels are stored 0-based.

The conversion streams: rows are read straight out of the ``.npy`` inside the npz (inside the zip)
``BLOCK`` images at a time, so peak memory is one block whatever the size of the dataset.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from .errors import DatasetError
from .h5store import write_splits

URL = "https://image-net.org/download-images.php (Downsampled ImageNet 32x32)"
SHAPE = (3, 32, 32)
ROW = 3 * 32 * 32
SPLITS = {"train": [f"train_data_batch_{i}.npz" for i in range(1, 11)], "test": ["val_data.npz"]}
ZIPS = ("Imagenet32_train_npz.zip", "Imagenet32_val_npz.zip")
BLOCK = 4096  # images per read and write: 12 MB


@dataclass(frozen=True)
class NpzSource:
    """Where one npz lives: a loose file (``member`` None) or a member of a zip at ``path``."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.member is None else f"{self.path}:{self.member}"

    @contextmanager
    def open(self) -> Iterator[zipfile.ZipFile]:
        """The npz as a ZipFile; a zipped npz is read through the outer zip without extracting it."""
        with ExitStack() as stack:
            outer = stack.enter_context(zipfile.ZipFile(self.path))
            yield outer if self.member is None else stack.enter_context(
                zipfile.ZipFile(stack.enter_context(outer.open(self.member))))


def locate(directory: Path, redo: str) -> dict[str, NpzSource]:
    """Every needed npz by file name; a loose file wins over a zip member."""
    in_zips: dict[str, NpzSource] = {}
    for name in ZIPS:
        if (path := directory / name).is_file():
            try:
                with zipfile.ZipFile(path) as z:
                    in_zips.update({Path(m).name: NpzSource(path, m) for m in z.namelist() if m.endswith(".npz")})
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(f"{path} is corrupt ({e}): download it again from {URL}") from None
    sources, missing = {}, []
    for name in (n for names in SPLITS.values() for n in names):
        if (directory / name).is_file():
            sources[name] = NpzSource(directory / name)
        elif name in in_zips:
            sources[name] = in_zips[name]
        else:
            missing.append(name)
    if missing:
        listed = ", ".join(missing) if sources else "all of them"
        raise DatasetError(
            f"ImageNet32 files missing in {directory}: {listed}; put train_data_batch_1..10.npz "
            f"and val_data.npz (or {' and '.join(ZIPS)}) from {URL} there, then run: {redo}")
    return sources


def convert(directory: Path, out: Path, redo: str) -> None:
    """Convert the npz batches in ``directory`` into ``out`` (see :mod:`.h5store` for the layout)."""
    sources = locate(Path(directory), redo)
    blocks = {split: (block for name in names for block in read_blocks(sources[name]))
              for split, names in SPLITS.items()}
    write_splits(out, SHAPE, blocks, dataset="imagenet32", source="Imagenet32 npz")


def read_blocks(source: NpzSource, block: int = BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive blocks of one npz: uint8 ``(n, 3, 32, 32)`` images and int16 ``(n,)`` 0-based labels."""
    try:
        with source.open() as npz:
            if missing := {"data.npy", "labels.npy"} - set(npz.namelist()):
                raise DatasetError(f"{source} lacks {', '.join(sorted(missing))}: not an ImageNet32 npz batch")
            with npz.open("labels.npy") as fp:
                labels = npy.read_array(fp, allow_pickle=False)
            with npz.open("data.npy") as fp:
                shape, fortran, dtype = _read_header(fp)
                if dtype != np.uint8 or fortran or len(shape) != 2 or shape[1] != ROW:
                    raise DatasetError(f"{source}: data is {dtype} {shape}, expected C-order (N, {ROW}) uint8")
                if labels.shape != (shape[0],) or labels.dtype.kind not in "iu" or (
                        len(labels) and (labels.min() < 1 or labels.max() > 1000)):
                    raise DatasetError(f"{source}: labels are {labels.dtype} {labels.shape}, "
                                       f"expected {shape[0]} integers in 1..1000")
                for start in range(0, shape[0], block):
                    n = min(block, shape[0] - start)
                    buf = fp.read(n * ROW)
                    if len(buf) != n * ROW:
                        raise DatasetError(f"{source} is truncated: data ends after {start * ROW + len(buf)} bytes")
                    yield (np.frombuffer(buf, np.uint8).reshape(n, *SHAPE),
                           (labels[start:start + n] - 1).astype(np.int16))
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as e:
        raise DatasetError(f"{source} is corrupt ({type(e).__name__}: {e})") from None


def _read_header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = npy.read_magic(fp)
    if major == 1:
        return npy.read_array_header_1_0(fp)
    if major == 2:
        return npy.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {major}")
