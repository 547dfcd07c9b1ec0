"""One-time conversion of the official dataset files into uint8 HDF5, written atomically.

Layout of a converted file: one group per split (``train``, ``test``) holding ``images``
``(N, C, H, W)`` uint8 (chunked for random reads) and ``labels`` ``(N,)`` int64, and file attributes
``format_version``, ``source`` and ``complete``.  The file is written under a temporary name and
renamed only when complete, so an interrupted conversion never leaves a file that looks valid;
:func:`verify` re-checks the shapes and the ``complete`` mark on every open.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

FORMAT_VERSION = 1
CHUNK_IMAGES = 64  # 64 images of 32x32x3 = 192 KiB per chunk: cheap random reads, good compression-free streaming

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGENET32_TRAIN = [f"train_data_batch_{i}.npz" for i in range(1, 11)]
IMAGENET32_VAL = "val_data.npz"
IMAGENET32_ZIPS = {"train": "Imagenet32_train_npz.zip", "test": "Imagenet32_val_npz.zip"}
IMAGENET32_URL = "https://image-net.org/download-images.php (Downsampled ImageNet 32x32, npz format)"

EXPECTED = {"cifar10": {"train": 50_000, "test": 10_000}, "imagenet32": {"train": 1_281_167, "test": 50_000}}


class DatasetError(Exception):
    """A dataset file is missing, corrupt or malformed; the message says which and what to do."""


def md5(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _create_split(f: h5py.File, split: str, n: int, shape: tuple[int, int, int]) -> tuple[h5py.Dataset, h5py.Dataset]:
    group = f.create_group(split)
    images = group.create_dataset("images", (n, *shape), dtype=np.uint8, chunks=(min(CHUNK_IMAGES, max(n, 1)), *shape))
    labels = group.create_dataset("labels", (n,), dtype=np.int64)
    return images, labels


def write_atomically(target: Path, splits: dict[str, tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]],
                     shape: tuple[int, int, int], source: str) -> Path:
    """Stream ``(images (n, C, H, W) uint8, labels (n,))`` blocks per split into ``target`` atomically.

    ``splits`` maps a split name to ``(total count, iterator of blocks)``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format_version=FORMAT_VERSION, source=source, complete=False)
            for split, (n, blocks) in splits.items():
                images, labels = _create_split(f, split, n, shape)
                pos = 0
                with tqdm(total=n, desc=f"{target.stem} {split}", unit="img", leave=False) as bar:
                    for block_images, block_labels in blocks:
                        if block_images.dtype != np.uint8 or block_images.shape[1:] != shape:
                            raise DatasetError(
                                f"{source}: expected uint8 images of shape (n, {', '.join(map(str, shape))}), "
                                f"got {block_images.dtype} {block_images.shape}"
                            )
                        k = len(block_images)
                        if pos + k > n:
                            raise DatasetError(f"{source}: more {split} images than the expected {n}")
                        images[pos : pos + k] = block_images
                        labels[pos : pos + k] = block_labels
                        pos += k
                        bar.update(k)
                if pos != n:
                    raise DatasetError(f"{source}: found {pos} {split} images, expected {n}")
            f.attrs["complete"] = True
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def verify(path: Path, expected: dict[str, int] | None = None) -> None:
    """Raise :class:`DatasetError` unless ``path`` is a complete conversion with the expected counts."""
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False) or f.attrs.get("format_version") != FORMAT_VERSION:
                raise DatasetError(f"{path} is incomplete or from another version: delete it and run the conversion again")
            for split, n in (expected or {}).items():
                if split not in f or f[split]["images"].shape[0] != n or f[split]["labels"].shape[0] != n:
                    raise DatasetError(f"{path}: split '{split}' does not hold {n} images: delete it and convert again")
            for split in f:
                f[split]["images"][-1]  # reading the last chunk catches a truncated file
    except OSError as err:
        raise DatasetError(f"{path} is not a readable HDF5 file ({err}): delete it and convert again") from None


# -- CIFAR-10 ------------------------------------------------------------------------------------

def _cifar_batches(archive: Path, names: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in names:
                member = tar.extractfile(f"cifar-10-batches-py/{name}")
                if member is None:
                    raise DatasetError(f"{archive} has no cifar-10-batches-py/{name}: is it the official archive?")
                batch = pickle.load(io.BytesIO(member.read()), encoding="bytes")
                data = np.asarray(batch[b"data"])
                if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                    raise DatasetError(f"{archive}:{name}: expected uint8 data of shape (n, 3072), got {data.dtype} {data.shape}")
                yield data.reshape(-1, 3, 32, 32), np.asarray(batch[b"labels"], dtype=np.int64)
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, KeyError) as err:
        raise DatasetError(f"{archive} is corrupt or not the official CIFAR-10 archive ({type(err).__name__}: {err})") from None


def convert_cifar10(root: Path, expected_md5: str | None = CIFAR10_MD5, counts: dict[str, int] | None = None) -> Path:
    """``root/cifar-10-python.tar.gz`` -> ``root/cifar10.h5``."""
    archive = root / CIFAR10_ARCHIVE
    if not archive.exists():
        raise DatasetError(f"CIFAR-10 needs {archive}: download {CIFAR10_URL} and put it there")
    if expected_md5 is not None and (digest := md5(archive)) != expected_md5:
        raise DatasetError(f"{archive} has md5 {digest}, expected {expected_md5}: the download is corrupt, fetch it again")
    counts = counts or EXPECTED["cifar10"]
    return write_atomically(
        root / "cifar10.h5",
        {
            "train": (counts["train"], _cifar_batches(archive, [f"data_batch_{i}" for i in range(1, 6)])),
            "test": (counts["test"], _cifar_batches(archive, ["test_batch"])),
        },
        (3, 32, 32),
        source=str(archive),
    )


# -- ImageNet32 ------------------------------------------------------------------------------------

def _open_npz(root: Path, name: str, split: str) -> np.lib.npyio.NpzFile:
    """Open ``name`` from ``root`` directly or from inside the official zip of its split."""
    path = root / name
    try:
        if path.exists():
            return np.load(path)
        archive = root / IMAGENET32_ZIPS[split]
        if archive.exists():
            with zipfile.ZipFile(archive) as z:
                inner = next((m for m in z.namelist() if m.rsplit("/", 1)[-1] == name), None)
                if inner is None:
                    raise DatasetError(f"{archive} does not contain {name}")
                return np.load(io.BytesIO(z.read(inner)))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise DatasetError(f"{path} (or {IMAGENET32_ZIPS[split]}) is corrupt ({type(err).__name__}: {err})") from None
    raise DatasetError(
        f"ImageNet32 needs {path} or {root / IMAGENET32_ZIPS[split]}: download the npz version from {IMAGENET32_URL}"
    )


def _npz_batches(root: Path, names: list[str], split: str, block: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for name in names:
        with _open_npz(root, name, split) as npz:
            if "data" not in npz or "labels" not in npz:
                raise DatasetError(f"{root / name}: expected keys 'data' and 'labels', found {sorted(npz.files)}")
            data = npz["data"]
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise DatasetError(f"{root / name}: expected uint8 data of shape (n, 3072), got {data.dtype} {data.shape}")
            labels = np.asarray(npz["labels"], dtype=np.int64) - 1  # official labels run from 1 to 1000
            # One batch file at a time (about 400 MB), written in blocks: no float copy, no whole dataset in memory.
            for i in range(0, len(data), block):
                yield data[i : i + block].reshape(-1, 3, 32, 32), labels[i : i + block]
            del data


def _npz_count(root: Path, names: list[str], split: str) -> int:
    total = 0
    for name in names:
        with _open_npz(root, name, split) as npz:
            total += len(npz["labels"])
    return total


def convert_imagenet32(root: Path, counts: dict[str, int] | None = None) -> Path:
    """``root/train_data_batch_{1..10}.npz`` and ``val_data.npz`` (or their zips) -> ``root/imagenet32.h5``."""
    counts = counts or {"train": _npz_count(root, IMAGENET32_TRAIN, "train"), "test": _npz_count(root, [IMAGENET32_VAL], "test")}
    return write_atomically(
        root / "imagenet32.h5",
        {
            "train": (counts["train"], _npz_batches(root, IMAGENET32_TRAIN, "train")),
            "test": (counts["test"], _npz_batches(root, [IMAGENET32_VAL], "test")),
        },
        (3, 32, 32),
        source=str(root),
    )


CONVERTERS = {"cifar10": convert_cifar10, "imagenet32": convert_imagenet32}


def prepare(name: str, root: str | Path) -> Path:
    """Convert dataset ``name`` under ``root`` unless a verified conversion is already there."""
    root = Path(root).expanduser()
    target = root / f"{name}.h5"
    if target.exists():
        verify(target)
        return target
    path = CONVERTERS[name](root)
    verify(path)
    return path
