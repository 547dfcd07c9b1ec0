"""The metrics log: metrics.csv across a resume and a failed write, the logger choice, wandb offline."""

from __future__ import annotations

import csv
import errno
import re
import sys

import pytest

import bsi.metrics_log
from bsi.metrics_log import MetricsLog, check_loggers, open_metrics_log


def rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_resumed_log_drops_later_rows_and_its_seconds_continue(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(bsi.metrics_log.time, "perf_counter", lambda: clock[0])
    first = MetricsLog(tmp_path, loggers=("csv",))
    for step, now in ((1, 102.0), (2, 105.0), (3, 109.0)):
        clock[0] = now
        first.log(step, loss=float(step))
    first.close()
    # The interrupted run's last checkpoint was step 2; the new process starts its clock anywhere.
    clock[0] = 5000.0
    resumed = MetricsLog(tmp_path, loggers=("csv",), resume_step=2)
    clock[0] = 5001.5
    resumed.log(3, loss=30.0)
    got = [(r["step"], r["seconds"], r["value"]) for r in rows(tmp_path)]
    assert got == [("1", "2.000", "1"), ("2", "5.000", "2"), ("3", "6.500", "30")]  # 5 s before the resume + 1.5 s


def test_only_the_main_rank_writes(tmp_path):
    log = MetricsLog(tmp_path, enabled=False)
    log.log(1, loss=1.0)
    assert not (tmp_path / "metrics.csv").exists()


def test_a_failed_append_leaves_only_whole_rows(tmp_path, monkeypatch, caplog):
    log = MetricsLog(tmp_path, loggers=("csv",))
    log.log(1, loss=1.0, lr=0.1)
    before = (tmp_path / "metrics.csv").read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bsi.metrics_log.os, "fsync", full_disk)  # the bytes are written, then the flush fails
    with pytest.raises(OSError, match="No space left"):  # the run then stops with status 6 (bsi.exits.SaveError)
        log.log(2, loss=2.0, lr=0.2)
    assert (tmp_path / "metrics.csv").read_bytes() == before
    monkeypatch.undo()
    log.log(3, loss=3.0)
    assert [(r["step"], r["metric"]) for r in rows(tmp_path)] == [("1", "loss"), ("1", "lr"), ("3", "loss")]


def test_logger_names_are_checked_and_wandb_is_optional(monkeypatch):
    assert check_loggers(["csv", "wandb"]) == ("csv", "wandb")
    with pytest.raises(ValueError, match="logger: unknown 'mlflow'; choose any of csv, tensorboard, wandb"):
        check_loggers(["csv", "mlflow"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ValueError, match=r"logger=wandb needs the wandb package: pip install 'bsi\[wandb\]'"):
        check_loggers(["wandb"])
    assert check_loggers(["tensorboard"]) == ("tensorboard",)


def test_wandb_offline_keeps_one_run_id_across_a_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = MetricsLog(tmp_path, loggers=("csv", "wandb"), wandb={"project": "bsi-test"}, config={"seed": 0})
    first.log(1, loss=1.0)
    first.close()
    run_id = (tmp_path / "wandb_id.txt").read_text().strip()
    assert len(run_id) >= 8
    resumed = MetricsLog(tmp_path, loggers=("wandb",), wandb={"project": "bsi-test"}, resume_step=1)
    resumed.log(2, loss=0.5)
    resumed.close()
    assert (tmp_path / "wandb_id.txt").read_text().strip() == run_id
    runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    # wandb names a run's folder offline-run-<time>-<id>, adding -1, -2, ... when two start in the same second
    ids = [re.fullmatch(r"offline-run-\d{8}_\d{6}-([0-9a-z]+)(?:-\d+)?", name) for name in runs]
    assert len(runs) == 2 and all(m is not None and m[1] == run_id for m in ids), runs
    assert [r["step"] for r in rows(tmp_path)] == ["1"]  # csv was not asked for the second time


def test_the_config_picks_the_loggers(tmp_path):
    from omegaconf import OmegaConf

    default = open_metrics_log(OmegaConf.create({"seed": 0}), tmp_path / "a")
    default.log(1, loss=1.0)
    default.close()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["metrics.csv", "tensorboard"]
    only_tb = open_metrics_log(OmegaConf.create({"logger": ["tensorboard"], "wandb": {"project": "x"}}), tmp_path / "b")
    only_tb.log(1, loss=1.0)
    only_tb.close()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["tensorboard"]
    with pytest.raises(ValueError, match="logger: unknown 'csvv'"):
        open_metrics_log(OmegaConf.create({"logger": ["csvv"]}), tmp_path / "c")
