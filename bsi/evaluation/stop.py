"""How ``bsi.evaluate`` stops on a signal: within the current network call, with no partial result."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Interrupted(BaseException):
    """SIGTERM or SIGUSR1 arrived: the evaluation stopped.

    A ``BaseException``, like ``KeyboardInterrupt``: it is raised wherever the program happens to
    be, and library code that catches ``Exception`` must not swallow it.
    """


class StopOnSignal:
    """SIGTERM and SIGUSR1 stop the evaluation within the current network call.

    The handler raises :class:`Interrupted` wherever the program is, so that a stop takes seconds
    even inside a library's loop (torch-fidelity's); nothing is written until a task has its whole
    result, so nothing partial is left.  Inside :meth:`writing` the signal only sets
    :attr:`signum`, so that files being written are finished; :meth:`check` raises afterwards.
    ``should_stop`` suits a loop that checks a flag itself.  Submitit's SIGUSR2 (requeue before a
    time limit) is left to submitit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.written: list[Path] = []  # complete output files, named in the message of a stop
        self._writing = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if not self._writing:
            raise Interrupted(signal.Signals(signum).name)

    def should_stop(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(signal.Signals(self.signum).name)

    @contextmanager
    def writing(self) -> Iterator[None]:
        self._writing = True
        try:
            yield
        finally:
            self._writing = False


def interrupted_message(task: str, stop: StopOnSignal) -> str:
    name = signal.Signals(stop.signum).name if stop.signum is not None else "a signal"
    if stop.written:
        samples = stop.written[0]
        return (f"stopped by {name} during the {task}: no result was written, but the samples in {samples} are "
                f"complete; rerun with fid.samples={samples} to compute the FID without sampling again")
    return f"stopped by {name} before the {task} finished: no result was written (rerun the command to start over)"
