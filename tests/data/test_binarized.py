"""Binary datasets: the binarized sklearn digits, and binarized MNIST from its official ``.amat`` files.

The fabricated ``.amat`` files have the official format (one image per line, 784 values ``0`` or
``1`` separated by single spaces, row-major, newline-terminated) with fewer lines: the expected
line counts are the module constant ``LINES``, shrunk here.  Image 0 of the train file is a known
asymmetric pattern, so a transposed or flipped layout cannot pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits

import bsi.data.binarized_digits as binarized_digits
import bsi.data.binarized_mnist as binarized_mnist
from bsi.data import DatasetError, build_dataset, prepare
from bsi.data.__main__ import main

CONFIGS = Path(__file__).parents[2] / "bsi" / "configs" / "data"
TRAIN, VALID, TEST = "binarized_mnist_train.amat", "binarized_mnist_valid.amat", "binarized_mnist_test.amat"
SMALL = {TRAIN: 7, VALID: 3, TEST: 2}


def everything(dataset) -> np.ndarray:
    return dataset.__getitems__(range(len(dataset))).numpy()


# --- binarized digits --------------------------------------------------------------------------

def test_binarized_digits_are_digits_above_8_in_file_order():
    raw = load_digits().images.astype(np.uint8)[:, None]
    want = (raw > 8).astype(np.uint8)
    cfg = OmegaConf.load(CONFIGS / "binarized_digits.yaml")  # the shipped config: val_size 137
    train, val, test = (build_dataset(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1300, 137, 360)
    assert (train.shape, train.bins, train[0].dtype) == ((1, 8, 8), 2, torch.uint8)
    assert np.array_equal(everything(train), want[:1300])
    assert np.array_equal(everything(val), want[1300:1437])
    assert np.array_equal(everything(test), want[1437:])
    full = everything(build_dataset({"name": "binarized_digits", "val_size": 0}, "train"))
    assert full.shape == (1437, 1, 8, 8) and np.array_equal(full, want[:1437])
    # the threshold itself: level 8 -> 0, level 9 -> 1
    stored = np.concatenate([full, everything(test)])
    assert binarized_digits.THRESHOLD == 8
    assert (stored[raw == 8] == 0).all() and (stored[raw == 9] == 1).all() and (raw == 8).any()
    assert set(np.unique(stored).tolist()) == {0, 1}


def test_binarized_digits_need_no_files():
    with pytest.raises(DatasetError, match="needs no preparation"):
        prepare("binarized_digits", "/nonexistent")


def test_shipped_configs_resolve(monkeypatch):
    monkeypatch.setenv("BSI_DATA", "/somewhere")
    sizes = {"binarized_digits": 137, "binarized_mnist": 10_000, "text8": 19_531}
    for name, val_size in sizes.items():
        cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
        assert (cfg.name, cfg.root, cfg.hflip, cfg.val_size) == (name, "/somewhere", False, val_size)
    # val_size is exactly the official validation set
    assert binarized_mnist.LINES[VALID] == 10_000 and binarized_mnist.LINES[TRAIN] == 50_000
    assert binarized_mnist.LINES[TEST] == 10_000


# --- binarized MNIST ---------------------------------------------------------------------------

def pattern() -> np.ndarray:
    """A 28x28 image whose layout errors show: ones in rows 0..4 of columns 20..27, and pixel (27, 1)."""
    image = np.zeros((28, 28), np.uint8)
    image[:5, 20:] = 1
    image[27, 1] = 1
    return image


def write_amat(path: Path, images: np.ndarray) -> None:
    """The official format: one line per image, its 784 values row-major, separated by single spaces."""
    with open(path, "w") as f:
        for image in images:
            f.write(" ".join(str(v) for v in image.reshape(-1)) + "\n")


@pytest.fixture
def mnist_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``(root, {file name: images (n, 28, 28) uint8})`` with the files in ``root/binarized_mnist/``."""
    monkeypatch.setattr(binarized_mnist, "LINES", SMALL)
    monkeypatch.setattr(binarized_mnist, "BLOCK", 4)  # several blocks per file: block edges must not show
    rng = np.random.default_rng(0)
    files = {name: rng.integers(0, 2, (n, 28, 28), dtype=np.uint8) for name, n in SMALL.items()}
    files[TRAIN][0] = pattern()
    directory = tmp_path / "binarized_mnist"
    directory.mkdir()
    for name, images in files.items():
        write_amat(directory / name, images)
    return tmp_path, files


def cfg(root: Path, **kw) -> dict:
    return {"name": "binarized_mnist", "root": str(root), "val_size": 0, **kw}


def test_mnist_round_trip_pixel_for_pixel(mnist_root):
    root, files = mnist_root
    train, test = build_dataset(cfg(root), "train"), build_dataset(cfg(root), "test")  # converts on first use
    assert (train.shape, train.bins, len(train), len(test)) == ((1, 28, 28), 2, 10, 2)
    assert np.array_equal(everything(train)[:, 0], np.concatenate([files[TRAIN], files[VALID]]))
    assert np.array_equal(everything(test)[:, 0], files[TEST])
    assert np.array_equal(train[0][0].numpy(), pattern())  # row-major: line value 28 * y + x is pixel (y, x)
    assert train[0][0, 0, 27] == 1 and train[0][0, 27, 1] == 1 and train[0][0, 1, 27] == 1 and train[0][0, 27, 0] == 0
    with h5py.File(root / "binarized_mnist" / "binarized_mnist.h5") as f:
        assert (f["train/labels"][:] == -1).all()  # no labels in the source


def test_mnist_val_split_is_the_official_validation_file(mnist_root):
    root, files = mnist_root
    train, val = (build_dataset(cfg(root, val_size=SMALL[VALID]), s) for s in ("train", "val"))
    assert np.array_equal(everything(val)[:, 0], files[VALID])
    assert np.array_equal(everything(train)[:, 0], files[TRAIN])


def test_mnist_is_read_in_blocks(mnist_root):
    root, files = mnist_root
    blocks = list(binarized_mnist.read_blocks(root / "binarized_mnist" / TRAIN, SMALL[TRAIN], block=4))
    assert [b.shape for b in blocks] == [(4, 1, 28, 28), (3, 1, 28, 28)] and blocks[0].dtype == np.uint8
    assert np.array_equal(np.concatenate(blocks)[:, 0], files[TRAIN])  # a later block does not overwrite an earlier


def test_mnist_missing_file_says_which_file_goes_where(mnist_root):
    root, _ = mnist_root
    directory = root / "binarized_mnist"
    (directory / VALID).unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset(cfg(root), "train")
    message = str(err.value)
    assert f"missing in {directory}: {VALID};" in message and binarized_mnist.URL in message
    assert TRAIN in message and TEST in message and "prepare binarized_mnist" in message and "\n" not in message
    assert sorted(os.listdir(directory)) == [TEST, TRAIN]


def edit_line(path: Path, number: int, edit) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("".join(lines))


def test_mnist_line_with_wrong_number_of_values(mnist_root):
    root, _ = mnist_root
    path = root / "binarized_mnist" / TRAIN
    edit_line(path, 5, lambda line: line.rsplit(" ", 1)[0] + "\n")  # the last value missing
    with pytest.raises(DatasetError, match=f"{path}: line 5 has 783 values, expected 784"):
        prepare("binarized_mnist", root)
    assert sorted(os.listdir(path.parent)) == [TEST, TRAIN, VALID]  # neither the h5 nor a temporary file


@pytest.mark.parametrize("value", ["2", "1.0", "-1"])
def test_mnist_values_other_than_0_or_1(mnist_root, value):
    root, _ = mnist_root
    path = root / "binarized_mnist" / TEST
    edit_line(path, 2, lambda line: " ".join([*line.split()[:100], value, *line.split()[101:]]) + "\n")
    with pytest.raises(DatasetError, match=f"{path}: line 2 value 101 is '{value}', expected 0 or 1"):
        prepare("binarized_mnist", root)
    assert not (root / "binarized_mnist" / "binarized_mnist.h5").exists()


@pytest.mark.parametrize("change", ["fewer", "more"])
def test_mnist_wrong_number_of_lines(mnist_root, change):
    root, files = mnist_root
    path = root / "binarized_mnist" / VALID
    write_amat(path, files[VALID][:2] if change == "fewer" else np.concatenate([files[VALID], files[TEST]]))
    want = "has 2 lines, expected 3" if change == "fewer" else "has more than 3 lines, expected 3"
    with pytest.raises(DatasetError, match=f"{path} {want}"):
        prepare("binarized_mnist", root)
    assert not (root / "binarized_mnist" / "binarized_mnist.h5").exists()


def test_mnist_cli_prepares(mnist_root, capsys):
    root, _ = mnist_root
    assert main(["prepare", "binarized_mnist", "--root", str(root)]) == 0
    assert "binarized_mnist ready" in capsys.readouterr().out
    assert len(build_dataset(cfg(root), "train")) == 10  # the prepared file is used as it is
