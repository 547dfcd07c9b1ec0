"""Progress of long loops: a bar that states the projected total time, and the stop signal they honour."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

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


class Progress(tqdm):
    """``tqdm`` plus one line, after the first update, with the total time projected from it.

    tqdm's own ETA keeps updating on the bar; the line is what a log file keeps.  The first batch
    carries one-off costs (allocation, warm-up), so the projection errs on the long side.
    ``announce=False`` leaves the line out (for bars that recur, such as periodic validation).
    """

    def __init__(self, *args: Any, announce: bool = True, **kwargs: Any):
        self.announce = announce
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        first = self.n == 0
        shown = super().update(n)
        if first and self.n and self.total and not self.disable and self.announce:
            elapsed = self.format_dict["elapsed"]
            total = self.format_interval(elapsed * self.total / self.n)
            # stderr, beside the bar: stdout stays for results
            self.write(f"{self.desc}: about {total} in total for {self.total} {self.unit}s (from the first batch)",
                       file=sys.stderr)
        return shown
