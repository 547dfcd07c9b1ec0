"""One stop-signal handler for every long-running entry point, and the poll that loops call.

SIGTERM (a cluster's kill, ``scancel``), SIGINT (Ctrl-C) and SIGUSR1 (SLURM's ``--signal`` warning
before a time limit; POSIX only) set a flag: nothing is interrupted mid-write.  Loops call
:meth:`StopSignal.poll` or :meth:`StopSignal.raise_if_stopped` between network calls; the engine's
own loops (the step-proposal pilot, samplers, trajectory sums) get the same poll without knowing
about it through :func:`polling`, which checks before each call of the denoiser.  So a stop takes
effect within one network call, and the caller saves what it must (a checkpoint) and exits.

A second Ctrl-C raises ``KeyboardInterrupt`` at once: the way out when saving itself hangs.

Under submitit (``hydra/launcher=slurm``) the launcher's own signal (SIGUSR2 unless
``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) has a Python handler that requeues the job; with
``include_launcher`` it sets the flag too, and when the ``with`` block ends with one of
``hand_over``'s exceptions (the run stopped after saving), that handler runs, so the job is
requeued only once the checkpoint is on disk.

Handlers are installed by the context manager, never at import, and only from the main thread
(Python allows no other); elsewhere the flag simply never rises.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

STOP_SIGNALS: tuple[int, ...] = tuple(
    sig for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if sig is not None)
LAUNCHER_SIGNAL = getattr(signal, "SIGUSR2", None)  # submitit's default; only when a handler of its is installed


class StopRequested(BaseException):
    """A stop signal arrived and a loop polled it.

    A ``BaseException`` like ``KeyboardInterrupt``: code that catches ``Exception`` (libraries
    included) must not swallow a stop.  ``signum`` is the signal.
    """

    def __init__(self, signum: int | None = None, message: str | None = None):
        self.signum = signum
        super().__init__(message or f"stopped by {signal_name(signum)}")


def signal_name(signum: int | None) -> str:
    """``SIGTERM`` for ``signal.SIGTERM``; ``a stop request`` when there was no signal."""
    if signum is None:
        return "a stop request"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignal:
    """``with StopSignal() as stop:`` turns the stop signals into ``stop.requested``.

    ``hand_over``: exception types which, ending the block after the launcher's signal, make the
    launcher's handler run (see the module doc).  ``include_launcher=False`` leaves the launcher's
    signal alone (an evaluation has nothing to requeue).
    """

    def __init__(self, hand_over: tuple[type[BaseException], ...] = (), include_launcher: bool = True):
        self.hand_over, self.include_launcher = hand_over, include_launcher
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signum is not None

    def poll(self) -> bool:
        """Whether a stop signal has arrived (a :data:`bsi.evaluation.StopCheck`)."""
        return self.signum is not None

    def raise_if_stopped(self) -> None:
        """Raise :class:`StopRequested` if a stop signal has arrived."""
        if self.signum is not None:
            raise StopRequested(self.signum)

    def request(self, signum: int | None = None) -> None:
        """Ask for a stop as a signal would (for a caller that learnt of one some other way)."""
        self.signum = signum if signum is not None else signal.SIGTERM

    def signals(self) -> list[int]:
        """The signals this handler takes: the stop signals, and the launcher's if a handler of its is installed."""
        extra = []
        if self.include_launcher and LAUNCHER_SIGNAL is not None and callable(signal.getsignal(LAUNCHER_SIGNAL)):
            extra.append(LAUNCHER_SIGNAL)
        return [*STOP_SIGNALS, *extra]

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without saving
        self.signum = signum

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals():
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        launcher = self._previous.get(self.signum) if self.signum is not None else None
        # Python's own SIGINT handler would only raise KeyboardInterrupt: never hand over to it.
        if (exc_type is not None and self.hand_over and issubclass(exc_type, self.hand_over) and callable(launcher)
                and launcher is not signal.default_int_handler):
            launcher(self.signum, None)  # submitit: requeue this job, then exit


class Polling:
    """``denoiser`` that first calls ``check()`` (which raises :class:`StopRequested` to stop).

    Every other attribute is the wrapped denoiser's.  Build it with :func:`polling`.
    """

    def __init__(self, denoiser: Callable[..., Any], check: Callable[[], None]):
        self.denoiser, self.check = denoiser, check

    def __call__(self, mu: Any, lam: Any) -> Any:
        self.check()
        return self.denoiser(mu, lam)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.denoiser, name)


def polling(denoiser: Callable[..., Any], should_stop: Callable[[], bool] | StopSignal | None) -> Any:
    """``denoiser`` that raises :class:`StopRequested` before a network call once ``should_stop`` says so.

    ``should_stop`` is a :class:`StopSignal` or any ``() -> bool``; ``None`` returns ``denoiser``
    itself.  With several ranks, a collective ``should_stop`` suits only loops in which every rank
    makes the same number of calls (the step-proposal pilot); a loop that runs on one rank (a
    sample grid) wants a local check, or the ranks fall out of step.
    """
    if should_stop is None:
        return denoiser
    if isinstance(should_stop, StopSignal):
        return Polling(denoiser, should_stop.raise_if_stopped)

    def check() -> None:
        if should_stop():
            raise StopRequested(message="stop requested")

    return Polling(denoiser, check)
