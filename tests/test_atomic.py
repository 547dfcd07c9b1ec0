"""Files written through bsi.atomic appear whole or not at all."""

import json
from pathlib import Path

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
    with pytest.raises(KeyboardInterrupt), atomic_file(path) as tmp:
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


def test_a_full_disk_while_writing_a_sample_grid_keeps_the_previous_png(tmp_path, monkeypatch):
    from PIL import Image

    from bsi.evaluation import save_preview

    path = tmp_path / "samples.png"
    first = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
    save_preview(first, 17, path)
    before = path.read_bytes()

    def disk_full(self, fp, format=None, **params):  # the first bytes of a PNG, then the disk is full
        handle = fp if hasattr(fp, "write") else open(fp, "wb")
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError) as err:
        save_preview(torch.zeros_like(first), 17, path)
    assert err.value.errno == 28
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]  # no 0-byte PNG, no temporary


def test_a_text_preview_is_written_whole(tmp_path, monkeypatch):
    from bsi.evaluation import save_preview

    path = save_preview(torch.tensor([[[1, 2, 3]]], dtype=torch.uint8), 27, tmp_path / "samples.png")
    assert path == tmp_path / "samples.txt" and path.read_text() == "abc\n"

    def disk_full(self, data):  # one byte, then the disk is full
        with open(self, "wb") as f:
            f.write(data[:1])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError):
        save_preview(torch.tensor([[[4, 5, 6]]], dtype=torch.uint8), 27, tmp_path / "samples.png")
    assert path.read_text() == "abc\n" and list(tmp_path.iterdir()) == [path]
