"""Exit statuses and the errors that carry them, shared by ``bsi.train`` and ``bsi.evaluate``.

| status | meaning |
|---|---|
| 0 | done |
| 2 | the command line, a configuration or the data cannot make a run: nothing was run |
| 3 | a stop signal (SIGTERM, SIGINT, SIGUSR1) arrived: training saved a checkpoint, evaluation wrote nothing partial |
| 4 | training stopped after ``train.max_nonfinite`` non-finite losses in a row |
| 5 | the data could not be read mid-run (a checkpoint of the last good step was saved) |
| 6 | a file could not be written (a full disk): the files already on disk are intact |

Each error's message is one line that says what to do; ``exit_status`` is what the program exits with.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

EXIT_USAGE, EXIT_STOPPED, EXIT_DIVERGED, EXIT_DATA, EXIT_SAVE = 2, 3, 4, 5, 6


class RunError(Exception):
    """A run cannot go on; the message is one line, ``exit_status`` what the program exits with."""

    exit_status = 1


class ConfigError(RunError):
    """The configuration, the command line or the data cannot make a run; raised before any work."""

    exit_status = EXIT_USAGE


class Preempted(RunError):
    """A stop signal arrived: training saved a checkpoint, evaluation wrote no partial result."""

    exit_status = EXIT_STOPPED


class DivergedError(RunError):
    """Too many non-finite losses in a row; the message says what to try."""

    exit_status = EXIT_DIVERGED


class DataError(RunError):
    """The data could not be read mid-run (a damaged file); a checkpoint of the last good step was saved."""

    exit_status = EXIT_DATA


class SaveError(RunError):
    """A file could not be written (a full disk, say); the files already on disk are intact."""

    exit_status = EXIT_SAVE


def full_disk(err: BaseException) -> bool:
    """Whether ``err`` is a write that failed for lack of space (a full disk or an exhausted quota)."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def full_disk_message(err: OSError) -> str:
    """What failed to be written and how much space is left, in one line."""
    where = Path(err.filename).parent if err.filename else Path(".")
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return f"could not write {err.filename or 'a file'}: the disk is full ({free})"


__all__ = [
    "EXIT_DATA", "EXIT_DIVERGED", "EXIT_SAVE", "EXIT_STOPPED", "EXIT_USAGE", "ConfigError", "DataError",
    "DivergedError", "Preempted", "RunError", "SaveError", "full_disk", "full_disk_message",
]
