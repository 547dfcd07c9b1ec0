"""The datasets: uint8 ``(C, H, W)`` images with a known number of levels.

``digits`` (default) is scikit-learn's bundled 8x8 digits: 1797 images with 17 levels, no files
needed.  The split follows the file order of ``sklearn.datasets.load_digits``: the first 1437
images are the training part and the last 360 the test split; ``val_size`` images from the end of
the training part form the validation split (used to pick checkpoints), the rest is ``train``.
``cifar10`` and ``imagenet32`` are read from their converted HDF5 files (see ``convert.py``), with
``val_size`` likewise carved from the end of the training split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from .convert import EXPECTED, DatasetError, prepare, verify

DIGITS_TRAIN = 1437  # first 1437 images in file order; the last 360 are the test split


class ImageDataset(torch.utils.data.Dataset):
    """uint8 images ``(C, H, W)`` from an in-memory array or an HDF5 file, optionally flipped.

    Items are single images; ``__getitems__`` serves a whole batch with one read (the DataLoader
    uses it), which is what makes HDF5 loading fast.  The HDF5 file is opened lazily in each worker.
    """

    def __init__(self, shape: tuple[int, int, int], bins: int, index: np.ndarray, *, array: np.ndarray | None = None,
                 path: Path | None = None, group: str | None = None, hflip: bool = False, seed: int = 0):
        self.shape, self.bins, self.index, self.hflip, self.seed = tuple(shape), bins, index, hflip, seed
        self.array, self.path, self.group = array, path, group
        self._file: h5py.File | None = None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.index)

    def _images(self):
        if self.array is not None:
            return self.array
        if self._file is None:  # opened per worker process, after the dataset was pickled to it
            self._file = h5py.File(self.path, "r")
        return self._file[self.group]["images"]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        source = self._images()
        if self.array is not None:
            return source[rows]
        order = np.argsort(rows, kind="stable")
        unique, inverse = np.unique(rows[order], return_inverse=True)
        block = source[unique]  # h5py reads sorted, unique indices in one call
        out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        out[order] = block[inverse]
        return out

    def _flip(self, images: Tensor, items: Sequence[int]) -> Tensor:
        if not self.hflip:
            return images
        # Flips are a function of (seed, epoch, item), so a resumed run sees the same augmentation.
        flip = torch.tensor([hash((self.seed, self.epoch, int(i))) & 1 for i in items], dtype=torch.bool)
        images[flip] = images[flip].flip(-1)
        return images

    def __getitems__(self, items: Sequence[int]) -> Tensor:
        rows = self.index[np.asarray(items, dtype=np.int64)]
        return self._flip(torch.from_numpy(self._read(rows)), items)

    def __getitem__(self, item: int) -> Tensor:
        return self.__getitems__([item])[0]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not pickle; each worker opens its own
        return state


def _split_index(n_train: int, n_test: int, split: str, val_size: int) -> np.ndarray:
    if not 0 <= val_size < n_train:
        raise DatasetError(f"val_size={val_size} must lie in [0, {n_train}) for this dataset")
    if split == "train":
        return np.arange(n_train - val_size)
    if split == "val":
        if val_size == 0:
            raise DatasetError("split 'val' is empty: set data.val_size > 0")
        return np.arange(n_train - val_size, n_train)
    if split == "test":
        return np.arange(n_test)
    raise DatasetError(f"unknown split '{split}': choose train, val or test")


def load_digits_uint8() -> np.ndarray:
    """All 1797 digits as uint8 ``(N, 1, 8, 8)`` with levels 0..16, in file order."""
    from sklearn.datasets import load_digits

    return load_digits().images.astype(np.uint8)[:, None]


def _digits(cfg: Mapping[str, Any], split: str) -> ImageDataset:
    images = load_digits_uint8()
    val_size = int(cfg.get("val_size", 0))
    index = _split_index(DIGITS_TRAIN, len(images) - DIGITS_TRAIN, split, val_size)
    array = images[DIGITS_TRAIN:] if split == "test" else images[:DIGITS_TRAIN]
    return ImageDataset((1, 8, 8), 17, index, array=array, hflip=bool(cfg.get("hflip", False)), seed=int(cfg.get("seed", 0)))


def _h5(name: str):
    def build(cfg: Mapping[str, Any], split: str) -> ImageDataset:
        root = cfg.get("root")
        if not root:
            raise DatasetError(f"data={name} needs data.root: the directory holding (or receiving) {name}.h5")
        path = prepare(name, root)  # converts on first use, verifies otherwise
        verify(path)
        group = "test" if split == "test" else "train"
        with h5py.File(path, "r") as f:
            n_train, n_test = f["train"]["images"].shape[0], f["test"]["images"].shape[0]
            shape = f["train"]["images"].shape[1:]
        index = _split_index(n_train, n_test, split, int(cfg.get("val_size", 0)))
        return ImageDataset(shape, 256, index, path=path, group=group, hflip=bool(cfg.get("hflip", False)),
                            seed=int(cfg.get("seed", 0)))

    return build


DATASETS = {"digits": _digits, "cifar10": _h5("cifar10"), "imagenet32": _h5("imagenet32")}


def build_dataset(cfg: Mapping[str, Any], split: str) -> ImageDataset:
    """The dataset named ``cfg['name']`` (``digits``, ``cifar10``, ``imagenet32``) for ``split``."""
    name = cfg.get("name")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    return DATASETS[name](cfg, split)


__all__ = ["DATASETS", "EXPECTED", "ImageDataset", "build_dataset", "load_digits_uint8"]
