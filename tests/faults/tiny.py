"""The fault tests' tiny training run, its uninterrupted result, and what they check in a run directory."""

from __future__ import annotations

import csv
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bsi.checkpoint import load_checkpoint
from tests.test_train import TINY, config, tensors_equal

# Every periodic action within 8 steps (validation and a grid at steps 4 and 8, the final test with a
# 2-step ELBO and its step-proposal pilot, a final grid), a checkpoint at every step: any step is resumable.
STEPS = 8
FAULTS = [*TINY, "model.width=16", "model.embedding_dim=16", "train.checkpoint_every=1", "cpu_threads=1"]
# What decides the rest of a run: equal in a resumed run and an uninterrupted one, bit for bit.
COMPARED = ("model", "ema", "optimizer", "scheduler", "proposal", "sampler", "rng", "step", "best_val")


def tiny(*overrides: str) -> DictConfig:
    """The fault tests' run configuration, with ``overrides``."""
    return config(*FAULTS, *overrides)


def final_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / f"step_{STEPS:07d}.pt"


def assert_same_end(run_dir: Path, reference: Path, rows: bool = True) -> None:
    """``run_dir`` ended exactly as the uninterrupted ``reference`` did: its last checkpoint (model, EMA,
    optimiser, ...) bit for bit, and (``rows``) one metrics row per logged value with the same value."""
    got, want = load_checkpoint(final_checkpoint(run_dir)), load_checkpoint(final_checkpoint(reference))
    for key in COMPARED:
        assert tensors_equal(got[key], want[key]), f"{key} differs from the uninterrupted run's"
    if rows:
        assert metric_rows(run_dir) == metric_rows(reference)


def metric_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    """``metrics.csv`` as (step, metric, value) rows: everything but the wall-clock seconds."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(row["step"], row["metric"], row["value"]) for row in csv.DictReader(f)]


def temporaries(folder: Path) -> list[Path]:
    """Temporary files (``.NAME.tmp-HOST-PID``) anywhere under ``folder``: half-written outputs."""
    return sorted(folder.rglob(".*.tmp-*"))


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file under ``run_dir`` (but the lock and TensorBoard's event files) by relative path, with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "run.lock" and "tensorboard" not in p.parts}


def fork(target: Callable[[], Any], log: Path) -> int:
    """Run ``target()`` in a forked child process (torch and bsi already imported: no interpreter start-up)
    with its output in ``log``; the child exits 0 when it returns, with a ``SystemExit``'s status, else 1."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (not pytest's capture of the parent's)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        target()
        status = 0
    except SystemExit as err:
        status = err.code if isinstance(err.code, int) else 1
    except BaseException:  # noqa: BLE001 (whatever ends the child is reported in its log)
        os.write(2, traceback.format_exc().encode())
    finally:
        os._exit(status)


def wait(pid: int, timeout: float = 120.0) -> int:
    """The exit status of child ``pid`` (minus the signal number if a signal ended it), waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} still ran after {timeout} s")
        time.sleep(0.005)
