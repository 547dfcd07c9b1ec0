"""text8: levels and text, the streaming conversion, the split boundaries, and every way the file can be wrong.

The fabricated file has the official format (``text8.zip`` holding ``text8``: one line of a-z and
space, no newline) scaled down by 1000 with the module constants: 100,000 characters, the first
90,000 train, the next 5,000 validation, the last 5,000 test; sequences stay 256 characters.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import bsi.data.text8 as text8
from bsi.data import DatasetError, build_dataset, build_loader, decode, prepare
from bsi.data.__main__ import main

LENGTH, N_TRAIN, N_VAL = 100_000, 90_000, 5_000
SEQS_TRAIN, SEQS_VAL, SEQS_TEST = N_TRAIN // 256, N_VAL // 256, (LENGTH - N_TRAIN - N_VAL) // 256  # 351, 19, 19


def fabricate_text(n: int = LENGTH) -> str:
    """Random words of a-z separated by single spaces, as text8 is."""
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
    chars = letters[rng.integers(0, 26, n)]
    chars[rng.random(n) < 0.18] = ord(" ")
    return chars.tobytes().decode()


def write_text8(directory: Path, text: str | bytes, zipped: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    payload = text.encode() if isinstance(text, str) else text
    if zipped:
        with zipfile.ZipFile(directory / "text8.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("text8", payload)
        return directory / "text8.zip"
    (directory / "text8").write_bytes(payload)
    return directory / "text8"


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch):
    """The module scaled down to 100,000 characters, read 7 sequences at a time (block edges must not show)."""
    monkeypatch.setattr(text8, "LENGTH", LENGTH)
    monkeypatch.setattr(text8, "N_TRAIN_CHARS", N_TRAIN)
    monkeypatch.setattr(text8, "N_VAL_CHARS", N_VAL)
    monkeypatch.setattr(text8, "BLOCK", 7)
    return fabricate_text()


def cfg(root: Path, **kw) -> dict:
    return {"name": "text8", "root": str(root), "val_size": 0, **kw}


def texts(dataset) -> list[str]:
    return decode(dataset.__getitems__(range(len(dataset))))


def chunks(text: str, start: int, n: int) -> list[str]:
    return [text[start + 256 * i : start + 256 * (i + 1)] for i in range(n)]


# --- levels and text ---------------------------------------------------------------------------

def test_levels_are_space_then_a_to_z():
    assert text8.BINS == 27 and text8.SHAPE == (1, 256)
    assert text8.encode(" az").tolist() == [0, 1, 26] and text8.encode(" az").dtype == np.uint8
    assert text8.encode(text8.ALPHABET).tolist() == list(range(27))
    assert text8.encode("").shape == (0,)


def test_decode_gives_one_string_per_sequence():
    assert decode(np.array([0, 1, 26])) == [" az"]
    batch = torch.tensor([[[8, 9, 0, 1]], [[26, 25, 0, 0]]], dtype=torch.uint8)  # (B, 1, L), as the loader gives
    assert decode(batch) == ["hi a", "zy  "]
    text = fabricate_text(1000)
    assert decode(text8.encode(text)) == [text]
    assert decode(text8.encode(text).reshape(1, 1, -1)) == [text]


def test_encode_and_decode_refuse_what_is_not_text8():
    with pytest.raises(ValueError, match=r"character 'A' at offset 4 is not in text8's alphabet"):
        text8.encode("the Answer")
    with pytest.raises(ValueError, match=r"character 'é' at offset 2"):
        text8.encode("caé")
    with pytest.raises(ValueError, match=r"levels must be in 0..26, got 0..27"):
        decode(np.array([0, 27]))


def test_module_constants_are_the_official_split():
    assert (text8.LENGTH, text8.N_TRAIN_CHARS, text8.N_VAL_CHARS) == (100_000_000, 90_000_000, 5_000_000)
    train_part, val_part = 90_000_000 // 256, 5_000_000 // 256
    assert (train_part, val_part, train_part + val_part) == (351_562, 19_531, 371_093)
    assert text8.parts() == {"train": [(0, 90_000_000), (90_000_000, 95_000_000)],
                             "test": [(95_000_000, 100_000_000)]}


# --- conversion --------------------------------------------------------------------------------

@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "unzipped"])
def test_round_trip_and_split_boundaries(tmp_path, small, zipped):
    write_text8(tmp_path / "text8", small, zipped=zipped)
    train = build_dataset(cfg(tmp_path), "train")  # converts on first use
    test = build_dataset(cfg(tmp_path), "test")
    assert (train.shape, train.bins, len(train), len(test)) == ((1, 256), 27, SEQS_TRAIN + SEQS_VAL, SEQS_TEST)
    got = train.__getitems__(range(len(train)))
    assert got.dtype == torch.uint8 and got.shape == (370, 1, 256)
    # each part chunked on its own: its remainder (144 and 136 characters) is dropped, nothing straddles
    assert texts(train) == chunks(small, 0, SEQS_TRAIN) + chunks(small, N_TRAIN, SEQS_VAL)
    assert texts(test) == chunks(small, N_TRAIN + N_VAL, SEQS_TEST)
    assert np.array_equal(got[0, 0].numpy(), text8.encode(small[:256]))
    val = build_dataset(cfg(tmp_path, val_size=SEQS_VAL), "val")
    assert len(val) == SEQS_VAL and decode(val[0]) == [small[90_000:90_256]]  # the first validation sequence
    assert len(build_dataset(cfg(tmp_path, val_size=SEQS_VAL), "train")) == SEQS_TRAIN
    with h5py.File(tmp_path / "text8" / "text8.h5") as f:
        assert f["train/images"].chunks == (1, 1, 256) and (f["test/labels"][:] == -1).all()


def test_loader_feeds_sequences(tmp_path, small):
    write_text8(tmp_path / "text8", small)
    train = build_dataset(cfg(tmp_path, val_size=SEQS_VAL), "train")
    loader = build_loader(train, 32, seed=1)
    batches = list(loader)
    assert len(batches) == SEQS_TRAIN // 32 and all(b.shape == (32, 1, 256) and b.dtype == torch.uint8 for b in batches)
    order = loader.sampler.shard(0)[: 32 * len(batches)]
    assert torch.equal(torch.cat(batches), train.__getitems__(order))  # shuffled reads of 2-D items
    mirrored = build_dataset(cfg(tmp_path, hflip=True), "train").__getitems__(order[:64])  # flips: the last axis
    stored = train.__getitems__(order[:64])
    flipped = (mirrored != stored).flatten(1).any(1)
    assert 0 < flipped.sum() < 64 and torch.equal(mirrored[flipped], stored[flipped].flip(-1))


def test_conversion_streams_in_blocks(tmp_path, small, monkeypatch):
    write_text8(tmp_path / "text8", small)
    sizes = []
    real = text8._Reader.read

    def read(self, n):
        sizes.append(n)
        return real(self, n)

    monkeypatch.setattr(text8._Reader, "read", read)
    prepare("text8", tmp_path)
    assert max(sizes) == 7 * 256 and sum(sizes) == LENGTH  # every character read (and checked) once


def test_missing_file_says_where_to_put_it(tmp_path, small):
    with pytest.raises(DatasetError) as err:
        build_dataset(cfg(tmp_path), "train")
    message = str(err.value)
    assert f"put it (or the unzipped text8) in {tmp_path / 'text8'}" in message and text8.URL in message
    assert "prepare text8" in message and "\n" not in message


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "unzipped"])
@pytest.mark.parametrize("n", [LENGTH - 1, LENGTH + 1])
def test_wrong_length(tmp_path, small, zipped, n):
    source = write_text8(tmp_path / "text8", (small + "x")[:n], zipped=zipped)
    name = f"{source}:text8" if zipped else f"{source}"
    with pytest.raises(DatasetError, match=f"{name} has {n:,} characters, expected 100,000: it is not the official"):
        prepare("text8", tmp_path)


@pytest.mark.parametrize("offset, char, shown", [(0, b"A", "'A'"), (91_234, b"\n", r"'\\n'"),
                                                 (97_000, b"\xc3", "byte 0xc3"), (LENGTH - 1, b".", "'.'")])
def test_character_outside_the_alphabet_is_named_with_its_offset(tmp_path, small, offset, char, shown):
    text = bytearray(small.encode())
    text[offset:offset + 1] = char
    source = write_text8(tmp_path / "text8", bytes(text))
    with pytest.raises(DatasetError, match=f"{source}:text8: character {shown} at offset {offset} is not in text8's"):
        prepare("text8", tmp_path)
    assert os.listdir(tmp_path / "text8") == ["text8.zip"]  # neither text8.h5 nor a temporary file


def test_character_in_a_dropped_remainder_is_caught_too(tmp_path, small):
    text = bytearray(small.encode())
    text[89_999] = ord("0")  # in the 144 characters after the last train sequence
    write_text8(tmp_path / "text8", bytes(text), zipped=False)
    with pytest.raises(DatasetError, match="character '0' at offset 89999"):
        prepare("text8", tmp_path)


def test_corrupt_or_foreign_zip(tmp_path, small):
    directory = tmp_path / "text8"
    directory.mkdir()
    (directory / "text8.zip").write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(DatasetError, match=f"{directory / 'text8.zip'} is corrupt"):
        prepare("text8", tmp_path)
    with zipfile.ZipFile(directory / "text8.zip", "w") as z:
        z.writestr("enwik8", small)
    with pytest.raises(DatasetError, match="text8.zip holds no file named 'text8'"):
        prepare("text8", tmp_path)


def test_damaged_zip_fails_its_crc(tmp_path, small):
    directory = tmp_path / "text8"
    directory.mkdir()
    archive = directory / "text8.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:  # stored: the text lies in the zip as it is
        z.writestr("text8", small)
    blob = bytearray(archive.read_bytes())
    at = blob.index(small[:64].encode()) + 20_000
    blob[at] = ord("a") if blob[at] != ord("a") else ord("b")  # still text8's alphabet: only the CRC can tell
    archive.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match=f"{archive}:text8 is corrupt .*Bad CRC-32"):
        prepare("text8", tmp_path)
    assert os.listdir(directory) == ["text8.zip"]  # the file was written to the end, and then discarded


def test_cli_prepares_text8(tmp_path, small, capsys):
    write_text8(tmp_path / "text8", small)
    assert main(["prepare", "text8", "--root", str(tmp_path)]) == 0
    assert "text8 ready" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()  # data.root must exist
    assert main(["prepare", "text8", "--root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: text8 not found") and err.count("\n") == 1
