"""ImageNet32: the streaming round trip from loose npz files and from the official zips, and bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest

import bsi.data.imagenet32 as imagenet32
from bsi.data import DatasetError, build_dataset, prepare


def cfg(root, **kw) -> dict:
    return {"name": "imagenet32", "root": str(root), "val_size": 0, **kw}


def expected_images(data: np.ndarray) -> np.ndarray:
    """The official layout spelled out: byte ``c * 1024 + 32 * y + x`` of a row is pixel ``(c, y, x)``."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return data[:, c * 1024 + 32 * y + x]


@pytest.mark.parametrize("zipped", [False, True], ids=["npz", "zip"])
def test_round_trip_pixel_for_pixel(tmp_path, imagenet_batches, write_imagenet, monkeypatch, zipped):
    import h5py

    monkeypatch.setattr(imagenet32, "BLOCK", 4)  # many blocks per file: block edges must not show
    write_imagenet(tmp_path, imagenet_batches, zipped=zipped)
    train, test = build_dataset(cfg(tmp_path), "train"), build_dataset(cfg(tmp_path), "test")
    names = [f"train_data_batch_{i}.npz" for i in range(1, 11)]
    want = np.concatenate([imagenet_batches[n][0] for n in names])
    assert (train.shape, train.bins, len(train), len(test)) == ((3, 32, 32), 256, len(want), 7)
    assert np.array_equal(train.__getitems__(range(len(train))).numpy(), expected_images(want))
    assert np.array_equal(test.__getitems__(range(7)).numpy(), expected_images(imagenet_batches["val_data.npz"][0]))
    assert (train[0][0] == 255).all() and (train[0][1:] == 0).all()  # channel 0 is red
    with h5py.File(tmp_path / "imagenet32" / "imagenet32.h5") as f:
        labels = np.concatenate([imagenet_batches[n][1] for n in names])
        assert np.array_equal(f["train/labels"][:], labels - 1)  # official 1..1000 stored 0-based


def test_rows_are_streamed_in_blocks(tmp_path, imagenet_batches, write_imagenet):
    directory = write_imagenet(tmp_path, imagenet_batches)
    sources = imagenet32.locate(directory, "redo")
    blocks = list(imagenet32.read_blocks(sources["train_data_batch_1.npz"], block=4))
    assert [len(images) for images, _ in blocks] == [4, 4, 2]
    assert not any(images.flags.owndata for images, _ in blocks)  # views of the bytes read, no copies


def test_missing_files_are_listed(tmp_path, imagenet_batches, write_imagenet):
    del imagenet_batches["train_data_batch_7.npz"], imagenet_batches["val_data.npz"]
    write_imagenet(tmp_path, imagenet_batches)
    with pytest.raises(DatasetError) as err:
        build_dataset(cfg(tmp_path), "train")
    message = str(err.value)
    assert f"missing in {tmp_path / 'imagenet32'}: train_data_batch_7.npz, val_data.npz;" in message
    assert "Imagenet32_train_npz.zip" in message and "\n" not in message
    assert os.listdir(tmp_path / "imagenet32") and not (tmp_path / "imagenet32" / "imagenet32.h5").exists()


def test_wrong_shape_or_dtype_names_the_file(tmp_path, imagenet_batches, write_imagenet):
    data, labels = imagenet_batches["train_data_batch_3.npz"]
    imagenet_batches["train_data_batch_3.npz"] = (data.reshape(-1, 1024), np.repeat(labels, 3))
    directory = write_imagenet(tmp_path, imagenet_batches)
    with pytest.raises(DatasetError, match=r"train_data_batch_3.npz: data is uint8 \(\d+, 1024\), expected"):
        prepare("imagenet32", tmp_path)
    np.savez(directory / "train_data_batch_3.npz", data=data.astype(np.float32), labels=labels)
    with pytest.raises(DatasetError, match=r"train_data_batch_3.npz: data is float32"):
        prepare("imagenet32", tmp_path)
    assert sorted(p.name for p in directory.iterdir() if "h5" in p.name) == []


def test_corrupt_npz_and_zip_name_the_file(tmp_path, imagenet_batches, write_imagenet):
    directory = write_imagenet(tmp_path, imagenet_batches)
    (directory / "val_data.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match=f"{directory / 'val_data.npz'} is corrupt"):
        prepare("imagenet32", tmp_path)
    (directory / "val_data.npz").unlink()
    (directory / "Imagenet32_val_npz.zip").write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(DatasetError, match="Imagenet32_val_npz.zip is corrupt"):
        prepare("imagenet32", tmp_path)


def test_interrupted_conversion_leaves_no_file(tmp_path, imagenet_batches, write_imagenet, monkeypatch):
    directory = write_imagenet(tmp_path, imagenet_batches)
    real = imagenet32.read_blocks

    def dies_on_batch_5(source, block=imagenet32.BLOCK):
        if source.path.name == "train_data_batch_5.npz":
            raise MemoryError("killed")
        return real(source, block)

    monkeypatch.setattr(imagenet32, "read_blocks", dies_on_batch_5)
    before = sorted(os.listdir(directory))
    with pytest.raises(MemoryError):
        prepare("imagenet32", tmp_path)
    assert sorted(os.listdir(directory)) == before
