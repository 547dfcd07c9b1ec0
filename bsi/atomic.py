"""Files that appear whole or not at all: written under a temporary name beside their destination
and renamed over it once complete (checkpoints, converted datasets, sample files)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_name(path: Path) -> Path:
    """``.NAME.tmp-PID`` beside ``path``: hidden, and unique per process so that two writers never collide."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files in ``folder`` that other processes (killed writers) left behind."""
    mine = f".tmp-{os.getpid()}"
    return [tmp for tmp in folder.glob(".*.tmp-*") if not tmp.name.endswith(mine)]


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write in full; when the block completes it replaces ``path``.

    ``os.replace`` is atomic on POSIX file systems, so a crash or kill at any moment leaves either
    the old file or the new one, never half of one (at worst a stray temporary file).  The data is
    flushed to disk before the rename, which must not reach the disk first.  On any exception,
    interruption included, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically: a reader never sees half a result."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return path
