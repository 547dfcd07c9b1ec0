"""CIFAR-10: the round trip from the official archive format, and every way the files can be wrong."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import bsi.data.cifar10 as cifar10
from bsi.data import DatasetError, build_dataset, prepare
from bsi.data.__main__ import main

CFG = {"name": "cifar10", "val_size": 0}


def cfg(root: Path, **kw) -> dict:
    return {**CFG, "root": str(root), **kw}


def expected_images(data: np.ndarray) -> np.ndarray:
    """The official layout spelled out: byte ``c * 1024 + 32 * y + x`` of a row is pixel ``(c, y, x)``."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return data[:, c * 1024 + 32 * y + x]


def test_round_trip_pixel_for_pixel(cifar_root):
    root, batches = cifar_root
    train = build_dataset(cfg(root), "train")  # converts on first use
    test = build_dataset(cfg(root), "test")
    want_train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert (train.shape, train.bins, len(train), len(test)) == ((3, 32, 32), 256, 30, 8)
    got = train.__getitems__(range(len(train)))
    assert got.dtype == torch.uint8 and got.shape == (30, 3, 32, 32)
    assert np.array_equal(got.numpy(), expected_images(want_train))
    assert np.array_equal(torch.stack([test[i] for i in range(len(test))]).numpy(),
                          expected_images(batches["test_batch"][0]))
    red = train[0]
    assert (red[0] == 255).all() and (red[1:] == 0).all()  # channel 0 is red
    with h5py.File(root / "cifar10" / "cifar10.h5") as f:
        labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
        assert np.array_equal(f["train/labels"][:], labels)


def test_val_split_is_carved_from_the_end_of_train(cifar_root):
    root, _ = cifar_root
    full = build_dataset(cfg(root), "train").__getitems__(range(30))
    train, val = (build_dataset(cfg(root, val_size=4), s) for s in ("train", "val"))
    assert (len(train), len(val)) == (26, 4)
    assert torch.equal(val.__getitems__(range(4)), full[26:])
    assert torch.equal(train.__getitems__(range(26)), full[:26])


def test_missing_archive_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        build_dataset(cfg(tmp_path), "train")
    message = str(err.value)
    assert str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in message and cifar10.URL in message
    assert "\n" not in message


def test_wrong_md5_names_the_file(cifar_root, monkeypatch):
    root, _ = cifar_root
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", "c58f30108f718f92721af3b95e74349a")
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz has md5 .* expected c58f30108f718f92721af3b95e74349a"):
        prepare("cifar10", root)
    assert not (root / "cifar10" / "cifar10.h5").exists()


def test_real_md5_is_the_default():
    assert cifar10.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"  # tests patch it only inside a test


def test_corrupt_archive_names_the_file(cifar_root, monkeypatch):
    root, _ = cifar_root
    archive = root / "cifar10" / cifar10.ARCHIVE
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # a cut-off download
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DatasetError, match=f"{archive}.* corrupt"):
        prepare("cifar10", root)


def test_wrong_array_shape_names_the_member(tmp_path, monkeypatch):
    import io
    import pickle
    import tarfile

    archive = tmp_path / "cifar10" / cifar10.ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        payload = pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DatasetError, match=r"data_batch_1: b'data' is uint8 \(2, 1024\), expected \(N, 3072\) uint8"):
        prepare("cifar10", tmp_path)


def test_interrupted_conversion_leaves_no_file(cifar_root, monkeypatch):
    root, _ = cifar_root
    from bsi.data import h5store

    calls = []

    def interrupted(self, images, labels):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C halfway through the training batches
        original(self, images, labels)

    original = h5store.SplitWriter.append
    monkeypatch.setattr(h5store.SplitWriter, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare("cifar10", root)
    assert os.listdir(root / "cifar10") == [cifar10.ARCHIVE]  # neither cifar10.h5 nor a temporary file
    monkeypatch.setattr(h5store.SplitWriter, "append", original)
    assert len(build_dataset(cfg(root), "train")) == 30


def test_truncated_file_is_caught_on_open(cifar_root):
    root, _ = cifar_root
    path = prepare("cifar10", root)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(DatasetError, match=f"{path} is not a valid converted file .*prepare cifar10"):
        build_dataset(cfg(root), "train")


def test_damaged_image_fails_its_checksum(cifar_root):
    root, batches = cifar_root
    path = prepare("cifar10", root)
    with h5py.File(path) as f:
        offset = f["train/images"].id.get_chunk_info_by_coord((5, 0, 0, 0)).byte_offset
    blob = bytearray(path.read_bytes())
    blob[offset + 100] ^= 0xFF
    path.write_bytes(bytes(blob))
    train = build_dataset(cfg(root), "train")
    assert np.array_equal(train[4].numpy(), expected_images(batches["data_batch_1"][0][4:5])[0])
    with pytest.raises(DatasetError, match=f"{path}: reading train images failed"):
        train[5]


def test_cli_prepares_and_reports_problems_in_one_line(cifar_root, capsys, tmp_path):
    root, _ = cifar_root
    assert main(["prepare", "cifar10", "--root", str(root)]) == 0
    assert "cifar10 ready" in capsys.readouterr().out
    assert main(["prepare", "cifar10", "--root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data.root={tmp_path / 'empty'} does not exist") and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "cifar10", "--root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CIFAR-10 archive not found") and err.count("\n") == 1


def test_cli_exit_status_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bsi.data", "prepare", "cifar10", "--root", str(tmp_path)],
                            capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in result.stderr
