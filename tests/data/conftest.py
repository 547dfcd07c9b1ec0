"""Small datasets fabricated in the exact official formats (no downloads).

CIFAR-10: ``cifar-10-python.tar.gz`` holding ``cifar-10-batches-py/data_batch_1..5`` and
``test_batch``, Python pickles of dicts with bytes keys, ``b'data'`` (N, 3072) uint8 (red, green,
blue 32x32 planes in turn) and ``b'labels'`` (list of N ints).  ImageNet32: npz files with
``data`` (N, 3072) uint8 in the same layout, ``labels`` 1..1000 and, in train batches, ``mean``.
Image 0 of the first train batch is pure red in both, to pin the channel order.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

CIFAR_TRAIN_PER_BATCH, CIFAR_TEST = 6, 8
IMAGENET_TRAIN_PER_BATCH, IMAGENET_VAL = 9, 7


def red_row() -> np.ndarray:
    row = np.zeros(3072, np.uint8)
    row[:1024] = 255  # the red plane comes first
    return row


def rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _tar_add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``(root, batches)``: a fabricated archive at ``root/cifar10/`` whose md5 the converter expects.

    ``batches`` maps each batch name to its ``(data (n, 3072) uint8, labels (n,))``.
    """
    import bsi.data.cifar10 as cifar10

    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = CIFAR_TEST if name == "test_batch" else CIFAR_TRAIN_PER_BATCH
        data = rows(rng, n)
        if name == "data_batch_1":
            data[0] = red_row()
        batches[name] = (data, rng.integers(0, 10, n))
    archive = tmp_path / "cifar10" / cifar10.ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        _tar_add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": [b"airplane"] * 10}))
        # Not in name order: the converter must order batches by name, not by position in the archive.
        for name in ["test_batch", "data_batch_3", "data_batch_1", "data_batch_5", "data_batch_2", "data_batch_4"]:
            data, labels = batches[name]
            batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
                     b"filenames": [f"{name}_{i}.png".encode() for i in range(len(data))]}
            _tar_add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    return tmp_path, batches


def write_npz(path: Path, data: np.ndarray, labels: np.ndarray, train: bool, compressed: bool = False) -> None:
    arrays = {"data": data, "labels": labels.tolist()}
    if train:
        arrays["mean"] = data.mean(axis=0)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)


@pytest.fixture
def imagenet_batches():
    """``{file name: (data (n, 3072) uint8, labels 1..1000)}`` for the 10 train batches and val."""
    rng = np.random.default_rng(1)
    batches = {}
    for i in range(1, 11):
        data = rows(rng, IMAGENET_TRAIN_PER_BATCH + i % 3)  # uneven batch sizes, as in the real files
        if i == 1:
            data[0] = red_row()
        batches[f"train_data_batch_{i}.npz"] = (data, rng.integers(1, 1001, len(data)))
    batches["val_data.npz"] = (rows(rng, IMAGENET_VAL), rng.integers(1, 1001, IMAGENET_VAL))
    return batches


@pytest.fixture
def write_imagenet():
    """The function below (fixtures are how test modules share code under --import-mode=importlib)."""
    return _write_imagenet


def _write_imagenet(root: Path, batches: dict, zipped: bool = False) -> Path:
    """Write ``batches`` into ``root/imagenet32/``, loose or inside the two official zips."""
    directory = root / "imagenet32"
    directory.mkdir(parents=True, exist_ok=True)
    staging = root / "staging" if zipped else directory
    staging.mkdir(exist_ok=True)
    for name, (data, labels) in batches.items():
        write_npz(staging / name, data, labels, train=name.startswith("train"), compressed=name.endswith("2.npz"))
    if zipped:
        for zip_name, folder, names, method in (
            ("Imagenet32_train_npz.zip", "Imagenet32_train_npz/", [n for n in batches if n.startswith("train")],
             zipfile.ZIP_DEFLATED),
            ("Imagenet32_val_npz.zip", "", ["val_data.npz"], zipfile.ZIP_STORED),
        ):
            with zipfile.ZipFile(directory / zip_name, "w", method) as z:
                for name in names:
                    z.write(staging / name, folder + name)
    return directory
