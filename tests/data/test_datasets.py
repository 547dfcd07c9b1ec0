"""Where a dataset's files may live: ``data.root/NAME/`` (looked at first) or ``data.root`` itself."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import bsi.data.cifar10 as cifar10
from bsi.data import DatasetError, build_dataset
from bsi.data.datasets import DATASETS


def test_files_directly_in_the_root_are_found_and_converted_there(cifar_root):
    root, batches = cifar_root
    shutil.move(root / "cifar10" / cifar10.ARCHIVE, root / cifar10.ARCHIVE)
    (root / "cifar10").rmdir()
    test = build_dataset({"name": "cifar10", "root": str(root)}, "test")
    assert (root / "cifar10.h5").is_file() and not (root / "cifar10").exists()
    assert len(test) == 8 and np.array_equal(test[0].numpy().reshape(-1), batches["test_batch"][0][0])


def test_the_dataset_folder_wins_over_the_root(cifar_root):
    root, _ = cifar_root
    (root / cifar10.ARCHIVE).write_bytes(b"a stray copy in the root, never read")
    assert DATASETS["cifar10"].directory(root) == root / "cifar10"
    assert len(build_dataset({"name": "cifar10", "root": str(root)}, "test")) == 8
    assert (root / "cifar10" / "cifar10.h5").is_file()


def test_with_nothing_anywhere_the_message_names_the_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "cifar10" / cifar10.ARCHIVE)):
        build_dataset({"name": "cifar10", "root": str(tmp_path)}, "train")
