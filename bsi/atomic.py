"""Files that appear whole or not at all: written under a temporary name beside their destination
and renamed over it once complete (checkpoints, converted datasets, sample files, results).

A temporary file is named after its writer, ``.NAME.tmp-HOST-PID``, so that clean-up
(:func:`stale_temporaries`) can tell a killed writer's leftovers from a file that a live process
on this or another machine (a shared file system) is still writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# A temporary file of a writer on another machine (or of one written before names carried the
# host) counts as abandoned once it has not changed for this long: a live writer keeps writing,
# and no checkpoint or sample file takes anywhere near this long between two writes.
FOREIGN_TEMPORARY_AGE = 30 * 60  # seconds

TEMPORARY = re.compile(r"^\..+\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)$")


def this_host() -> str:
    """This machine's name as it appears in temporary and lock file names (no path separators)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (``True`` when that cannot be told: the safe side)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: the existence check, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``md5`` for archives whose publishers give one), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_name(path: Path) -> Path:
    """``.NAME.tmp-HOST-PID`` beside ``path``: hidden, and unique per writer so that two never collide."""
    return path.with_name(f".{path.name}.tmp-{this_host()}-{os.getpid()}")


def abandoned(tmp: Path, now: float | None = None) -> bool:
    """Whether temporary file ``tmp`` was left by a writer that is gone.

    This machine's writers are asked directly (is the process alive?); for another machine's, or
    a name without a host, only the age tells: unchanged for :data:`FOREIGN_TEMPORARY_AGE`.
    Our own process's temporaries are never abandoned.
    """
    match = TEMPORARY.match(tmp.name)
    if match is None:
        return False
    host, pid = match["host"], int(match["pid"])
    if host == this_host():
        return pid != os.getpid() and not process_alive(pid)
    try:
        age = (time.time() if now is None else now) - tmp.stat().st_mtime
    except FileNotFoundError:  # renamed into place or removed meanwhile
        return False
    return age > FOREIGN_TEMPORARY_AGE


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files in ``folder`` that killed writers left behind; never a live writer's (see :func:`abandoned`)."""
    return [tmp for tmp in Path(folder).glob(".*.tmp-*") if abandoned(tmp)]


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write in full; when the block completes it replaces ``path``.

    ``os.replace`` is atomic on POSIX file systems, so a crash or kill at any moment leaves either
    the old file or the new one, never half of one (at worst a stray temporary file).  The data is
    flushed to disk before the rename, which must not reach the disk first.  On any exception,
    interruption and a full disk included, the temporary file is removed, ``path`` is untouched and
    the exception (an ``OSError`` with ``errno.ENOSPC`` for a full disk) goes on to the caller.
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


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode())


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically: a reader never sees half a result."""
    return write_text(path, json.dumps(payload, indent=1) + "\n")
