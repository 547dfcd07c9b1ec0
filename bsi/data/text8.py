"""text8: the official ``text8.zip`` -> sequences of 256 characters as uint8 levels in HDF5, streamed.

Source in the dataset directory: ``text8.zip`` (holding one file ``text8``) or the unzipped
``text8`` itself (the loose file wins).  It is exactly 100,000,000 characters of lowercase ``a-z``
and space, one line without a newline.  Levels: space = 0, ``a`` .. ``z`` = 1 .. 26 (bins 27).

The standard split of the characters: the first 90M train, the next 5M validation, the last 5M
test.  Each part is cut separately into sequences of :data:`SEQ_LEN` (256) characters, dropping the
part's remainder, so no sequence straddles a boundary:

- ``train`` split: the 351,562 sequences of the 90M train part followed by the 19,531 of the 5M
  validation part (371,093); ``data.val_size: 19531`` makes the val split exactly the official
  validation part.
- ``test`` split: the 19,531 sequences of the last 5M characters.

Items are ``(1, 256)``: one channel, length 256.  :func:`encode` and :func:`decode` turn text into
levels and back (e.g. to print samples).  The conversion reads ``BLOCK`` sequences at a time, so
the text is never held whole, let alone as int64 or float.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from .errors import DatasetError
from .h5store import NO_LABEL, SplitWriter, atomic_h5

URL = "http://mattmahoney.net/dc/text8.zip"
ARCHIVE, MEMBER = "text8.zip", "text8"
ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # level k is ALPHABET[k]
BINS = len(ALPHABET)  # 27
SEQ_LEN = 256
SHAPE = (1, SEQ_LEN)
# Characters of the file and of its parts; read at call time, so tests can shrink them.
LENGTH = 100_000_000
N_TRAIN_CHARS = 90_000_000
N_VAL_CHARS = 5_000_000  # the test part is the rest: LENGTH - N_TRAIN_CHARS - N_VAL_CHARS
BLOCK = 4096  # sequences per read and write: 1 MB

_INVALID = 255
_LEVELS = np.full(256, _INVALID, np.uint8)  # byte -> level, _INVALID outside the alphabet
_LEVELS[np.frombuffer(ALPHABET.encode(), np.uint8)] = np.arange(BINS, dtype=np.uint8)


def _to_levels(raw: bytes) -> tuple[np.ndarray, int | None]:
    """uint8 levels of ``raw`` bytes, and the offset of the first byte outside the alphabet (None if none)."""
    levels = _LEVELS[np.frombuffer(raw, np.uint8)]
    bad = np.flatnonzero(levels == _INVALID)
    return levels, (int(bad[0]) if len(bad) else None)


def encode(text: str) -> np.ndarray:
    """uint8 ``(len(text),)`` levels of ``text`` (space = 0, ``a`` .. ``z`` = 1 .. 26)."""
    try:
        levels, bad = _to_levels(text.encode("ascii"))
    except UnicodeEncodeError as e:
        bad = e.start
    if bad is not None:
        raise ValueError(f"character {text[bad]!r} at offset {bad} is not in text8's alphabet (a-z and space)")
    return levels


def decode(levels) -> list[str]:
    """The text of each sequence in ``levels`` (array or tensor ``(..., L)`` of levels 0..26), one string each.

    A batch ``(B, 1, 256)`` gives B strings; a single sequence ``(L,)`` or ``(1, L)`` gives one.
    """
    levels = np.asarray(levels.cpu() if hasattr(levels, "cpu") else levels)
    if levels.ndim == 0 or levels.dtype.kind not in "iu":
        raise ValueError(f"expected integer levels (..., L), got {levels.dtype} {levels.shape}")
    if levels.size and (levels.min() < 0 or levels.max() >= BINS):
        raise ValueError(f"levels must be in 0..{BINS - 1}, got {levels.min()}..{levels.max()}")
    table = np.frombuffer(ALPHABET.encode(), np.uint8)
    rows = table[levels.reshape(int(np.prod(levels.shape[:-1])), levels.shape[-1])]
    return [row.tobytes().decode("ascii") for row in rows]


def parts() -> dict[str, list[tuple[int, int]]]:
    """``{split: [(start, stop) character ranges]}``, consecutive and covering ``[0, LENGTH)``."""
    val = N_TRAIN_CHARS + N_VAL_CHARS
    return {"train": [(0, N_TRAIN_CHARS), (N_TRAIN_CHARS, val)], "test": [(val, LENGTH)]}


@dataclass(frozen=True)
class TextSource:
    """Where the text lives: the loose file ``path`` (``member`` None) or a member of the zip at ``path``."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.member is None else f"{self.path}:{self.member}"

    def size(self) -> int:
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as z:
            return z.getinfo(self.member).file_size

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """The text as a binary stream; a zipped one is decompressed on the fly, not extracted."""
        with ExitStack() as stack:
            if self.member is None:
                yield stack.enter_context(open(self.path, "rb"))
            else:
                yield stack.enter_context(stack.enter_context(zipfile.ZipFile(self.path)).open(self.member))


def locate(directory: Path, redo: str) -> TextSource:
    """The loose ``text8`` if present, else the ``text8`` member of ``text8.zip``."""
    if (directory / MEMBER).is_file():
        return TextSource(directory / MEMBER)
    archive = directory / ARCHIVE
    if not archive.is_file():
        raise DatasetError(f"text8 not found: download {URL} and put it (or the unzipped {MEMBER}) in {directory}, "
                           f"then run: {redo}")
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if Path(m).name == MEMBER]
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{archive} is corrupt ({e}): download it again from {URL}") from None
    if not members:
        raise DatasetError(f"{archive} holds no file named {MEMBER!r}: it is not the official archive ({URL})")
    return TextSource(archive, members[0])


def convert(directory: Path, out: Path, redo: str) -> None:
    """Convert ``directory``'s text8 into ``out`` (see :mod:`.h5store` for the layout)."""
    source = locate(Path(directory), redo)
    if (size := source.size()) != LENGTH:
        raise DatasetError(f"{source} has {size:,} characters, expected {LENGTH:,}: it is not the official text8, "
                           f"download it again from {URL}")
    with source.open() as fp, atomic_h5(out, dataset="text8", source=f"{MEMBER} ({ARCHIVE})") as f, \
            tqdm(total=LENGTH, unit="char", unit_scale=True, desc="text8 -> hdf5", disable=None) as bar:
        reader = _Reader(fp, source)
        for split, ranges in parts().items():
            writer = SplitWriter(f, split, SHAPE)
            for start, stop in ranges:
                n = (stop - start) // SEQ_LEN
                for done in range(0, n, BLOCK):
                    seqs = reader.read(min(BLOCK, n - done) * SEQ_LEN).reshape(-1, *SHAPE)
                    writer.append(seqs, np.full(len(seqs), NO_LABEL, np.int16))
                reader.read(stop - start - n * SEQ_LEN)  # the part's remainder: checked, then dropped
                bar.update(stop - start)
            writer.close()
        reader.end()


class _Reader:
    """Consecutive characters of the stream as levels, checked against the alphabet, with their offset."""

    def __init__(self, fp: IO[bytes], source: TextSource):
        self.fp, self.source, self.offset = fp, source, 0

    def _bytes(self, n: int) -> bytes:
        try:
            return self.fp.read(n)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # a damaged zip fails its CRC here
            raise DatasetError(f"{self.source} is corrupt ({type(e).__name__}: {e}): download it again from {URL}"
                               ) from None

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` characters as uint8 levels ``(n,)``."""
        buf = self._bytes(n)
        if len(buf) != n:
            raise DatasetError(f"{self.source} ends after {self.offset + len(buf):,} characters, expected "
                               f"{LENGTH:,}: download it again from {URL}")
        levels, bad = _to_levels(buf)
        if bad is not None:
            byte = buf[bad]
            char = repr(chr(byte)) if byte < 128 else f"byte 0x{byte:02x}"
            raise DatasetError(f"{self.source}: character {char} at offset {self.offset + bad} is not in "
                               "text8's alphabet (a-z and space): it is not the official text8")
        self.offset += n
        return levels

    def end(self) -> None:
        """Check that the stream ends here."""
        if self._bytes(1):
            raise DatasetError(f"{self.source} has more than {LENGTH:,} characters: it is not the official text8, "
                               f"download it again from {URL}")
