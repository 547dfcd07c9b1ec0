"""Training metrics as ``RUN/metrics.csv`` (one row per value) and TensorBoard events in ``RUN/tensorboard``."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from torch import Tensor

from .atomic import write_text

FIELDS = ["step", "seconds", "metric", "value"]


class MetricsLog:
    """Appends ``step, seconds, metric, value`` rows to ``metrics.csv`` and scalars (and sample grids) to TensorBoard.

    Only the main rank writes (``enabled``).  ``resume_step`` drops rows beyond the step a resumed
    run continues from (they were logged after that checkpoint by the interrupted run and will be
    logged again), so a resumed run's log reads like an uninterrupted one; TensorBoard does the
    same with ``purge_step``.  ``seconds`` is wall time of the run: since this process started the
    log, plus the largest ``seconds`` of the rows kept from before a resume (the time between the
    interrupted run's last row and its end is not counted).
    """

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0):
        self.enabled, self.path, self.writer = enabled, Path(run_dir) / "metrics.csv", None
        self.started, self.offset = time.perf_counter(), 0.0
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        else:
            rows = []
        self.offset = max((float(row["seconds"]) for row in rows), default=0.0)
        kept = io.StringIO(newline="")
        writer = csv.DictWriter(kept, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path, kept.getvalue())  # atomic: a full disk must not cost the rows already logged
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def log(self, step: int, **values: float) -> None:
        """Record ``metric=value`` pairs at ``step``: all rows or none (a full disk raises ``OSError`` ``ENOSPC``
        and leaves the file as it was)."""
        if not self.enabled:
            return
        seconds = f"{self.offset + time.perf_counter() - self.started:.3f}"
        rows = io.StringIO(newline="")
        writer = csv.writer(rows)
        for key, value in values.items():
            writer.writerow([step, seconds, key, f"{float(value):.7g}"])
        with open(self.path, "a", newline="") as f:
            end = f.tell()
            try:
                f.write(rows.getvalue())
                f.flush()
            except OSError:  # a full disk: cut what reached the file back to whole rows, then report it
                f.truncate(end)
                raise
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()  # a killed run keeps what it logged

    def image(self, step: int, tag: str, image: Tensor) -> None:
        """Show uint8 ``image`` ``(C, H, W)`` (a sample grid) in TensorBoard under ``tag`` at ``step``."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="CHW")
            self.writer.flush()

    def text(self, step: int, tag: str, lines: list[str]) -> None:
        """Show ``lines`` (text samples) in TensorBoard under ``tag`` at ``step``, as preformatted text."""
        if self.writer is not None:
            self.writer.add_text(tag, "\n".join("    " + line for line in lines), step)  # Markdown code block
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
