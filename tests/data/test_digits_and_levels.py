"""The default dataset (sklearn digits, file-order split) and the one uint8 <-> float conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits

from bsi.data import DatasetError, build_dataset, to_float, to_uint8

CONFIGS = Path(__file__).parents[2] / "bsi" / "configs" / "data"


def images(dataset) -> np.ndarray:
    return dataset.__getitems__(range(len(dataset))).numpy()


def test_digits_split_follows_file_order():
    raw = load_digits().images.astype(np.uint8)[:, None]
    cfg = OmegaConf.load(CONFIGS / "digits.yaml")  # the shipped config: val_size 137
    train, val, test = (build_dataset(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1300, 137, 360)
    assert np.array_equal(images(train), raw[:1300])
    assert np.array_equal(images(val), raw[1300:1437])
    assert np.array_equal(images(test), raw[1437:])
    assert train.shape == (1, 8, 8) and train.bins == 17 and train[0].dtype == torch.uint8
    assert np.array_equal(images(build_dataset({"name": "digits", "val_size": 0}, "train")), raw[:1437])


def test_split_errors():
    with pytest.raises(DatasetError, match="no val split"):
        build_dataset({"name": "digits", "val_size": 0}, "val")
    with pytest.raises(DatasetError, match=r"val_size=1437 must be in \[0, 1437\)"):
        build_dataset({"name": "digits", "val_size": 1437}, "train")
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        build_dataset({"name": "mnist"}, "train")


def test_shipped_configs_resolve(monkeypatch):
    monkeypatch.setenv("BSI_DATA", "/somewhere")
    for name in ("digits", "cifar10", "imagenet32"):
        cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
        assert cfg.name == name and cfg.root == "/somewhere" and cfg.hflip is False and cfg.val_size >= 0


def test_hflip_mirrors_some_train_images_and_only_train():
    cfg = {"name": "digits", "val_size": 137, "hflip": True}
    train, plain = build_dataset(cfg, "train"), build_dataset({**cfg, "hflip": False}, "train")
    assert not build_dataset(cfg, "test").hflip
    idx = list(range(0, 1300, 5))
    got, stored = train.__getitems__(idx), plain.__getitems__(idx)
    flipped = (got != stored).flatten(1).any(1)
    assert 0.3 < flipped.float().mean() < 0.7
    assert torch.equal(got[flipped], stored[flipped].flip(-1)) and torch.equal(got[~flipped], stored[~flipped])
    assert torch.equal(train.__getitems__(idx), got)  # a function of the batch: same on every worker and resume
    assert torch.equal(train.__getitems__(idx[::-1]), got.flip(0))  # and of the set, not the order
    assert torch.equal(train[3], plain[3])  # single items are the stored image


@pytest.mark.parametrize("bins", [2, 17, 256])
def test_levels_round_trip(bins):
    levels = torch.arange(bins, dtype=torch.uint8)
    x = to_float(levels, bins)
    assert x.dtype == torch.float32 and x[0] == -1 and x[-1] == 1
    assert torch.allclose(x.double(), -1 + 2 * levels.double() / (bins - 1), rtol=0, atol=1e-6)
    assert torch.equal(to_uint8(x, bins), levels)
    step = 2 / (bins - 1)
    assert torch.equal(to_uint8(x + 0.49 * step, bins), levels)  # nearest level
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0]), bins), torch.tensor([0, bins - 1], dtype=torch.uint8))


def test_the_digits_load_without_importing_scikit_learn():
    """The file is read directly: ``sklearn.datasets`` costs over a second of start-up for one small file."""
    import subprocess
    import sys

    code = ("import sys; from bsi.data import digits; d = digits.load(); "
            "assert d['train'].shape == (1437, 1, 8, 8); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
