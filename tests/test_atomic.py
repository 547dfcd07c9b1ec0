"""Files written through bsi.atomic appear whole or not at all."""

import json

import numpy as np
import pytest
import torch

from bsi.atomic import atomic_file, temporary_name, write_json
from bsi.evaluation import load_npz, save_npz


def test_a_completed_block_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_file(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_text("new")
        assert not path.exists()  # nothing visible until the block completes
    assert path.read_text() == "new"
    assert list(path.parent.iterdir()) == [path]


def test_an_interrupted_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert not temporary_name(path).exists()
    assert list(tmp_path.iterdir()) == [path]


def test_write_json_round_trips(tmp_path):
    path = write_json(tmp_path / "r.json", {"bpd": 1.25, "n": 3})
    assert json.loads(path.read_text()) == {"bpd": 1.25, "n": 3}


def test_a_failed_sample_write_keeps_the_previous_samples(tmp_path, monkeypatch):
    path = tmp_path / "samples.npz"
    first = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    save_npz(path, first, range(4), 17)

    def disk_full(file, **arrays):  # writes part of the archive, then the disk is full
        handle = file if hasattr(file, "write") else open(file, "wb")
        handle.write(b"PK\x03\x04" + b"x" * 100)
        handle.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError):
        save_npz(path, torch.zeros_like(first), range(4), 17)
    pixels, meta = load_npz(path)
    assert torch.equal(pixels, first) and meta["bins"] == 17
    assert list(tmp_path.iterdir()) == [path]
