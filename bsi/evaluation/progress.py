"""Progress of long loops: a bar with an honest projection of the total time, and the stop they honour.

What a pass costs is its network calls, not its examples: the k-step bound's pilot makes ``k``
calls before its first example, a trajectory ``k + 1`` per batch, and a pass may hold a single
large call.  :class:`Cost` counts the calls (and their rows, examples times draws) before a pass
starts; :class:`Metered` moves the bar after every call; the projection times one representative
call, the second (the first carries one-off costs: allocation, autotuning, compilation), and
scales it to the calls still to come, larger ones in proportion to their rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from ..signals import StopRequested

StopCheck = Callable[[], bool]  # polled between batches (and sampler steps); True: stop now

# A long loop found its ``should_stop()`` true and stopped between two batches or network calls.
# Nothing partial is returned: the caller (the training loop on SIGTERM) decides what to save.  The
# one stop exception of bsi.signals, also raised by its polling denoiser, under the name loops know.
Stopped = StopRequested


def check(should_stop: StopCheck | None) -> None:
    """Raise :class:`Stopped` if ``should_stop`` is given and says so."""
    if should_stop is not None and should_stop():
        raise Stopped(message="stop requested")


@dataclass
class Cost:
    """Network calls a pass will make and their rows (examples times draws), counted before it runs."""

    sizes: dict[int, int] = field(default_factory=dict)  # rows of a call -> how many such calls

    def add(self, calls: int, rows_each: int) -> None:
        """``calls`` more calls of ``rows_each`` rows each."""
        if calls > 0 and rows_each > 0:
            self.sizes[rows_each] = self.sizes.get(rows_each, 0) + calls

    @property
    def calls(self) -> int:
        return sum(self.sizes.values())

    @property
    def rows(self) -> int:
        return sum(rows * calls for rows, calls in self.sizes.items())

    @property
    def largest(self) -> int:
        return max(self.sizes, default=0)

    def in_calls_of(self, rows: int) -> float:
        """The pass's time in units of one call of ``rows`` rows: a larger call takes longer in proportion,
        a smaller one as long (a GPU call of few rows costs its fixed overhead: the estimate errs long)."""
        return sum(calls * max(1.0, size / rows) for size, calls in self.sizes.items())

    def __str__(self) -> str:
        return f"{self.calls} network calls of up to {self.largest} rows ({self.rows} rows in all)"


class Progress(tqdm):
    """``tqdm`` plus one line with the projected total time, once it can be projected honestly.

    With ``cost`` the bar counts network calls (``total = cost.calls``), moved by :class:`Metered`
    (or :meth:`called`); the line comes after the representative call and scales its time to all
    the pass's calls (:meth:`Cost.in_calls_of`).  Without, the bar counts whatever it is given and the line comes
    at the second update, from the rate between the first and the second.  tqdm's own ETA keeps
    updating on the bar; the line is what a log file keeps.  ``announce=False`` leaves it out (for
    bars that recur, such as periodic validation).
    """

    def __init__(self, *args: Any, announce: bool = True, cost: Cost | None = None, **kwargs: Any):
        self.announce, self.cost = announce, cost
        if cost is not None:
            kwargs.update(total=cost.calls, unit=kwargs.get("unit", "call"))
        self.rows_done, self.calls_done = 0, 0
        self._done_sizes: list[int] = []  # rows of the calls up to the timed one
        self._first: tuple[float, float] | None = None  # (elapsed, n) at the first update
        self._said = False
        super().__init__(*args, **kwargs)

    # -- the cost-based projection ---------------------------------------------------------------------
    def wants_timing(self) -> bool:
        """Whether the next call is the representative one: the second, or the first of a one-call pass."""
        if self.cost is None or self._said or self.disable or not self.announce:
            return False
        return self.calls_done == 1 or self.cost.calls == 1

    def called(self, rows: int, seconds: float | None = None) -> None:
        """A network call of ``rows`` rows is done (``seconds``: its time, if it was the timed one)."""
        self.calls_done += 1
        self.rows_done += rows
        if not self._said:
            self._done_sizes.append(rows)
        if seconds is not None and self.cost is not None and not self._said:
            self._said = True
            done = sum(max(1.0, size / rows) for size in self._done_sizes)
            left = max(0.0, self.cost.in_calls_of(rows) - done) * seconds
            total = self.format_interval(self.format_dict["elapsed"] + left)
            self._say(f"{self.desc}: about {total} in total for {self.cost} (timed on call {self.calls_done}: "
                      f"{seconds:.3g} s for {rows} rows)")
        self.update(1)

    # -- the rate-based projection ---------------------------------------------------------------------
    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        if self.cost is None and not self._said and self.n and self.total and not self.disable and self.announce:
            elapsed = self.format_dict["elapsed"]
            if self._first is None:
                self._first = (elapsed, self.n)
            elif self.n > self._first[1] and self.n < self.total:
                rate = (elapsed - self._first[0]) / (self.n - self._first[1])  # seconds per unit, after the first
                total = self.format_interval(elapsed + (self.total - self.n) * rate)
                self._said = True
                self._say(f"{self.desc}: about {total} in total for {self.total} {self.unit}s "
                          f"(projected after the first, which carries one-off costs)")
        return shown

    def _say(self, line: str) -> None:
        self.write(line, file=sys.stderr)  # stderr, beside the bar: stdout stays for results


class Metered:
    """``denoiser`` that reports every call to ``bar`` (:meth:`Progress.called`), timing the representative one.

    The timed call is synchronised with the GPU before and after, so that its time is the
    network's and not the launch's.  Every other attribute is the wrapped denoiser's.
    """

    def __init__(self, denoiser: Callable[..., Any], bar: Progress):
        self.denoiser, self.bar = denoiser, bar

    def __call__(self, mu: torch.Tensor, lam: torch.Tensor) -> Any:
        timed = self.bar.wants_timing()
        if timed:
            _synchronize(mu)
        started = time.perf_counter()
        out = self.denoiser(mu, lam)
        if timed:
            _synchronize(mu)
        self.bar.called(int(mu.shape[0]), time.perf_counter() - started if timed else None)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.denoiser, name)


def _synchronize(t: torch.Tensor) -> None:
    if t.is_cuda:
        torch.cuda.synchronize(t.device)
