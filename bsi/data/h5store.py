"""The converted image file: uint8 HDF5, written atomically, checked on open, read lazily per process.

Layout of one file per dataset (e.g. ``cifar10/cifar10.h5``)::

    /                 attrs: format = FORMAT, dataset, source
    /<split>/images   (N, *item) uint8, one item per chunk, fletcher32 checksum per chunk
    /<split>/labels   (N,) int16; NO_LABEL (-1) where the source has no labels
    /<split>          attrs: count = N (written after the last image)

An item is an image ``(C, H, W)`` or a sequence ``(C, L)`` (text8): nothing here depends on the
number of item dimensions.  One item per chunk makes a random read touch exactly the bytes it
needs; the per-chunk checksum makes a damaged file fail loudly on read instead of yielding wrong
pixels.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_file
from .errors import DatasetError

if TYPE_CHECKING:  # h5py is imported where a file is opened: the built-in digits never need it
    import h5py

FORMAT = "bsi-images-1"
Shape = tuple[int, ...]  # of one item: (C, H, W) for images, (C, L) for sequences
NO_LABEL = -1  # the label stored for every item of a source without labels (binarized MNIST, text8)


@contextmanager
def atomic_h5(path: Path, **attrs: str) -> Iterator[h5py.File]:
    """A new HDF5 file that appears at ``path`` only when the ``with`` block completes
    (:func:`bsi.atomic.atomic_file`): on any exception, interruption included, nothing appears."""
    import h5py

    with atomic_file(path) as tmp, h5py.File(tmp, "w", libver="latest") as f:
        f.attrs.update({"format": FORMAT, **attrs})
        yield f


class SplitWriter:
    """Appends uint8 items ``(n, *shape)`` and integer labels ``(n,)`` to ``/<split>`` of ``file``."""

    def __init__(self, file: h5py.File, split: str, shape: Shape):
        self.group = file.create_group(split)
        self.shape = tuple(shape)
        self.images = self.group.create_dataset(
            "images", shape=(0, *shape), maxshape=(None, *shape), dtype=np.uint8,
            chunks=(1, *shape), fletcher32=True,
        )
        self.labels = self.group.create_dataset(
            "labels", shape=(0,), maxshape=(None,), dtype=np.int16, chunks=(1 << 16,)
        )

    def append(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.shape[1:] != self.shape or len(labels) != len(images):
            raise ValueError(f"expected uint8 (n, {self.shape}) images and n labels, got "
                             f"{images.dtype} {images.shape} and {len(labels)} labels")
        start, stop = len(self.images), len(self.images) + len(images)
        self.images.resize(stop, axis=0)
        self.images[start:stop] = images
        self.labels.resize(stop, axis=0)
        self.labels[start:stop] = labels

    def close(self) -> int:
        """Mark the split complete; returns its number of images."""
        self.group.attrs["count"] = len(self.images)
        return len(self.images)


def write_splits(
    out: Path, shape: Shape, splits: Mapping[str, Iterable[tuple[np.ndarray, np.ndarray | None]]], **attrs: str
) -> None:
    """Write ``{split: blocks}`` into a new file at ``out``, atomically, with a progress bar.

    Each block is uint8 items ``(n, *shape)`` and their labels ``(n,)`` (``None``: the source has
    none, stored as :data:`NO_LABEL`).  Blocks are consumed one at a time, so a lazy iterable keeps
    the conversion's memory at one block.  ``attrs`` (``dataset``, ``source``) go to the file.
    """
    with atomic_h5(out, **attrs) as f, \
            tqdm(unit="img", unit_scale=True, desc=f"{attrs.get('dataset', out.stem)} -> hdf5", disable=None) as bar:
        for split, blocks in splits.items():
            writer = SplitWriter(f, split, shape)
            for images, labels in blocks:
                writer.append(images, np.full(len(images), NO_LABEL, np.int16) if labels is None else labels)
                bar.update(len(images))
            writer.close()


def check_file(path: Path, shape: Shape, splits: tuple[str, ...], redo: str) -> dict[str, int]:
    """Open ``path`` and check format, dtypes and shapes; returns ``{split: number of images}``.

    A truncated or damaged file fails here (HDF5 checks the end of file against its superblock);
    damage inside an image chunk fails when it is read (fletcher32).  ``redo`` is the command that
    rebuilds the file, quoted in the error.
    """
    def bad(why: str) -> DatasetError:
        return DatasetError(f"{path} is not a valid converted file ({why}); delete it and run: {redo}")

    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise bad(f"format {f.attrs.get('format')!r}, expected {FORMAT!r}")
            counts = {}
            for split in splits:
                if split not in f or "count" not in f[split].attrs:
                    raise bad(f"split {split!r} missing or incomplete")
                images, labels, count = f[split]["images"], f[split]["labels"], int(f[split].attrs["count"])
                if images.dtype != np.uint8 or images.shape != (count, *shape) or labels.shape != (count,):
                    raise bad(f"{split}: images {images.dtype} {images.shape}, labels {labels.shape}, "
                              f"expected uint8 {(count, *shape)} and ({count},)")
                counts[split] = count
            return counts
    except (OSError, KeyError) as e:  # h5py reports truncation and damaged metadata as OSError
        raise bad(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


class H5Images:
    """Items ``[start, stop)`` of ``/<split>/images`` in ``path``, read as uint8 ``(n, *shape)``.

    The file is opened on first read in each process (DataLoader workers open their own handle;
    a handle inherited through fork is never used), so instances pickle cheaply.
    """

    def __init__(self, path: Path, split: str, start: int, stop: int, shape: Shape):
        self.path, self.split, self.start, self.stop, self.shape = Path(path), split, start, stop, tuple(shape)
        self._handle: tuple[int, h5py.File, h5py.Dataset] | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def subset(self, start: int, stop: int) -> H5Images:
        return H5Images(self.path, self.split, self.start + start, self.start + stop, self.shape)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def _dataset(self) -> h5py.Dataset:
        if self._handle is None or self._handle[0] != os.getpid():
            import h5py

            f = h5py.File(self.path, "r")
            self._handle = (os.getpid(), f, f[self.split]["images"])
        return self._handle[2]

    def read(self, idx: np.ndarray) -> np.ndarray:
        """uint8 ``(len(idx), *shape)`` for ascending ``idx`` in ``[0, len(self))``.

        One low-level HDF5 read per run of consecutive indices: a sequential pass costs one call per
        batch and a shuffled batch one call per image, without h5py's slow fancy indexing.
        """
        out = np.empty((len(idx), *self.shape), np.uint8)
        if len(idx) == 0:
            return out
        rows = np.asarray(idx, dtype=np.int64) + self.start
        cuts = (np.flatnonzero(np.diff(rows) != 1) + 1).tolist()
        origin = (0,) * len(self.shape)  # the whole item, whatever its number of dimensions
        from h5py import h5s

        try:
            ds = self._dataset()
            space = ds.id.get_space()
            for a, b in zip([0, *cuts], [*cuts, len(rows)]):
                space.select_hyperslab((int(rows[a]), *origin), (b - a, *self.shape))
                ds.id.read(h5s.create_simple((b - a, *self.shape)), space, out[a:b])
        except OSError as e:
            raise DatasetError(f"{self.path}: reading {self.split} images failed ({str(e).splitlines()[0]}); "
                               "the file is damaged: delete it and prepare it again") from None
        return out
