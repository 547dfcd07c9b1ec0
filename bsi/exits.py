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


__all__ = [
    "EXIT_DATA", "EXIT_DIVERGED", "EXIT_SAVE", "EXIT_STOPPED", "EXIT_USAGE", "ConfigError", "DataError",
    "DivergedError", "Preempted", "RunError", "SaveError",
]
