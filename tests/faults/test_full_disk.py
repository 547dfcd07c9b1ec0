"""A full disk while writing an output: the error reaches the caller and the file keeps only whole records."""

from __future__ import annotations

import builtins
import csv
import errno

import pytest

import bsi.metrics_log
from bsi.metrics_log import MetricsLog


class FillsUp:
    """A text file that takes ``room`` more characters, then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, text: str) -> int:
        if len(text) > self.room:
            self.f.write(text[: self.room])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(text)
        return self.f.write(text)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_while_logging_leaves_no_half_row(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path, loggers=("csv",))
    log.log(1, loss=0.5, lr=1e-3)
    before = (tmp_path / "metrics.csv").read_text()
    monkeypatch.setattr(bsi.metrics_log, "open", lambda *a, **k: FillsUp(builtins.open(*a, **k), 10), raising=False)
    with pytest.raises(OSError) as err:
        log.log(2, loss=0.25, lr=1e-3)
    assert err.value.errno == errno.ENOSPC
    assert (tmp_path / "metrics.csv").read_text() == before  # the header and step 1's rows, whole


def test_a_full_disk_when_a_resumed_log_drops_later_rows_keeps_the_log(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path, loggers=("csv",))
    for step in (1, 2, 3):
        log.log(step, loss=1.0 / step)
    before = (tmp_path / "metrics.csv").read_text()

    def disk_full(self, rows):  # the rewrite gets part of its rows onto the disk, then the disk is full
        self.writerow(next(iter(rows)))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", disk_full)
    with pytest.raises(OSError):
        MetricsLog(tmp_path, loggers=("csv",), resume_step=2)
    assert (tmp_path / "metrics.csv").read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
