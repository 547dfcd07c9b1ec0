"""Nothing lost, nothing mixed: one run per run directory, Ctrl-C saves, resume skips damaged checkpoints."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bsi.atomic import this_host
from bsi.checkpoint import latest_checkpoint, load_checkpoint
from bsi.config import CONFIGS
from bsi.exits import ConfigError
from bsi.runlock import LOCK_FILE
from bsi.train import train

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["train.batch_size=32", "train.warmup=2", "train.eval_every=1000000", "train.checkpoint_every=2",
         "train.keep_checkpoints=10", "eval.n_samples=1", "eval.ks=[]", "eval.grid=0", "cpu_threads=1"]


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_run_into_a_live_runs_directory_is_refused_and_ctrl_c_saves_with_status_3(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "bsi.train", *SMALL, "train.steps=1000000", f"hydra.run.dir={run}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(run) is None:
            assert first.poll() is None and time.monotonic() < deadline, "the first run never saved a checkpoint"
            time.sleep(0.2)
        second = subprocess.run([*args[:-2], "train.steps=4", "resume=auto", f"hydra.run.dir={run}"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: run directory {run} is in use by process {first.pid} "
                                                       f"on host {this_host()}")
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 3, err[-2000:]
    newest = latest_checkpoint(run)
    assert load_checkpoint(newest)["step"] == int(newest.stem.split("_")[1]) > 0  # the stop's own checkpoint
    assert not (run / LOCK_FILE).exists()
    assert "SIGINT received: saved step" in (run / "train.log").read_text()


def test_resume_auto_skips_a_damaged_checkpoint_and_says_so(tmp_path, caplog):
    train(config("train.steps=4"), run_dir=tmp_path)
    newest = tmp_path / "checkpoints" / "step_0000004.pt"
    raw = bytearray(newest.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):  # 64 bytes in the middle: inside a weight tensor
        raw[i] ^= 0xFF
    newest.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        final = train(config("train.steps=6", "resume=auto"), run_dir=tmp_path)
    assert final["steps"] == 6
    notes = [m for m in caplog.messages if m.startswith("resume=auto skipped")]
    assert notes == ["resume=auto skipped step_0000004.pt (step_0000004.pt is damaged: its contents do not match the "
                     "SHA-256 stored in it (changed on disk after it was written)); resuming from step_0000002.pt"]


def test_resume_auto_with_only_damaged_checkpoints_refuses_in_one_line(tmp_path):
    train(config("train.steps=2"), run_dir=tmp_path)
    only = tmp_path / "checkpoints" / "step_0000002.pt"
    only.write_bytes(only.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="resume=auto: no usable checkpoint in"):
        train(config("train.steps=4", "resume=auto"), run_dir=tmp_path)
    assert only.exists()


def test_a_dead_runs_lock_is_taken_over_with_one_line(tmp_path, caplog):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": this_host(), "started": time.time()}))
    with caplog.at_level(logging.WARNING, logger="bsi.runlock"):
        train(config("train.steps=2"), run_dir=tmp_path)
    assert len(caplog.messages) == 1 and caplog.messages[0].endswith("that process is gone")
    assert not (tmp_path / LOCK_FILE).exists()
