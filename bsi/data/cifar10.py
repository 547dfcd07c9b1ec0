"""CIFAR-10: the official ``cifar-10-python.tar.gz`` -> uint8 HDF5 (50,000 train, 10,000 test).

The archive holds ``cifar-10-batches-py/data_batch_1..5`` and ``test_batch``: Python pickles of
dicts with ``b'data'`` (10000, 3072) uint8, each row the red, green and blue 32x32 planes in turn
(so a row reshapes to (3, 32, 32) with channel 0 red), and ``b'labels'`` (10000 ints in 0..9).
"""

from __future__ import annotations

import logging
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..atomic import file_digest
from .errors import DatasetError
from .h5store import write_splits

log = logging.getLogger(__name__)

ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# Read at call time, so tests can monkeypatch it for fabricated archives.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
SHAPE = (3, 32, 32)
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
FOLDER = "cifar-10-batches-py"


def convert(directory: Path, out: Path, redo: str, md5: str | None = None, verify_md5: bool = True) -> None:
    """Convert ``directory/cifar-10-python.tar.gz`` into ``out`` (see :mod:`.h5store` for the layout).

    The archive's md5 must equal ``md5`` (default :data:`CIFAR10_MD5`) before anything is unpickled:
    unpickling runs code, so only the official archive is trusted.  ``verify_md5=False``
    (``data.verify_md5=false``) skips the check for a local copy you trust, with a warning: a
    repacked archive of the same batches has another checksum.
    """
    archive = Path(directory) / ARCHIVE
    if not archive.is_file():
        raise DatasetError(f"CIFAR-10 archive not found: download {URL} and put it at {archive}, then run: {redo}")
    expected = md5 or CIFAR10_MD5
    if not verify_md5:
        log.warning(f"data.verify_md5=false: not checking the md5 of {archive}; it is unpickled as it is, so use "
                    f"only a copy you trust")
    elif (actual := file_digest(archive, "md5")) != expected:
        raise DatasetError(f"{archive} has md5 {actual}, expected {expected}: download it again from {URL}, or set "
                           f"data.verify_md5=false for a local copy you trust")
    batches = _read_batches(archive)
    write_splits(out, SHAPE, {split: [batches[name] for name in names] for split, names in SPLITS.items()},
                 dataset="cifar10", source=ARCHIVE)


def _read_batches(archive: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All six batches as ``{name: (uint8 (n, 3, 32, 32), int (n,))}`` in one pass over the archive.

    The whole set is 184 MB of pixels, so holding it is fine; a single pass avoids rewinding gzip.
    """
    wanted = {f"{FOLDER}/{name}" for names in SPLITS.values() for name in names}
    batches = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    where = f"{archive}:{member.name}"
                    try:
                        batch = pickle.load(tar.extractfile(member), encoding="bytes")
                    except Exception as e:  # a damaged pickle can fail in many ways; all mean the same
                        raise DatasetError(f"{where} is corrupt ({type(e).__name__}: {e})") from None
                    batches[member.name.rsplit("/", 1)[1]] = _parse_batch(batch, where)
    except DatasetError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{archive} is corrupt ({type(e).__name__}: {e}): download it again from {URL}") from None
    if missing := sorted(wanted - {f"{FOLDER}/{name}" for name in batches}):
        raise DatasetError(f"{archive} lacks {', '.join(missing)}: it is not the official archive ({URL})")
    return batches


def _parse_batch(batch: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{where}: b'data' is {got}, expected (N, 3072) uint8")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise DatasetError(f"{where}: b'labels' has shape {labels.shape}, expected {len(data)} labels in 0..9")
    return data.reshape(-1, *SHAPE), labels
