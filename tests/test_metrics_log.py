"""metrics.csv across a resume: rows after the resumed step are dropped, wall time continues."""

from __future__ import annotations

import csv

import bsi.metrics_log
from bsi.metrics_log import MetricsLog


def rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_resumed_log_drops_later_rows_and_its_seconds_continue(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(bsi.metrics_log.time, "perf_counter", lambda: clock[0])
    first = MetricsLog(tmp_path, tensorboard=False)
    for step, now in ((1, 102.0), (2, 105.0), (3, 109.0)):
        clock[0] = now
        first.log(step, loss=float(step))
    first.close()
    # The interrupted run's last checkpoint was step 2; the new process starts its clock anywhere.
    clock[0] = 5000.0
    resumed = MetricsLog(tmp_path, tensorboard=False, resume_step=2)
    clock[0] = 5001.5
    resumed.log(3, loss=30.0)
    got = [(r["step"], r["seconds"], r["value"]) for r in rows(tmp_path)]
    assert got == [("1", "2.000", "1"), ("2", "5.000", "2"), ("3", "6.500", "30")]  # 5 s before the resume + 1.5 s


def test_only_the_main_rank_writes(tmp_path):
    log = MetricsLog(tmp_path, enabled=False)
    log.log(1, loss=1.0)
    assert not (tmp_path / "metrics.csv").exists()
