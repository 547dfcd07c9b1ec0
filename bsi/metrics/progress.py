"""A progress bar that also states the projected total time once the first batch is done."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress(tqdm):
    """``tqdm`` plus one line, after the first update, with the total time projected from it.

    tqdm's own ETA keeps updating on the bar; the line is what a log file keeps.  The first batch
    carries one-off costs (allocation, warm-up), so the projection errs on the long side.
    """

    def update(self, n: float | None = 1) -> bool | None:
        first = self.n == 0
        shown = super().update(n)
        if first and self.n and self.total and not self.disable:
            elapsed = self.format_dict["elapsed"]
            total = self.format_interval(elapsed * self.total / self.n)
            # stderr, beside the bar: stdout stays for results
            self.write(f"{self.desc}: about {total} in total for {self.total} {self.unit}s (from the first batch)",
                       file=sys.stderr)
        return shown
