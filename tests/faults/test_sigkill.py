"""SIGKILL at any moment loses nothing: ``resume=auto`` in the same run directory ends bit for bit as an
uninterrupted run, however often the run was killed, mid checkpoint write included."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import bsi.atomic
from bsi import cli
from bsi.checkpoint import latest_checkpoint
from bsi.runlock import LOCK_FILE
from tests.faults.tiny import FAULTS, STEPS, assert_same_end, fork, temporaries, wait

KILLS = 10
MID_WRITE = 2  # kills aimed at a checkpoint write (the 4th and 8th, and later ones until two landed mid-write)
STEP_SECONDS = 0.2  # about a step and its checkpoint write in the child: a kill lands anywhere up to the next step
SLOW_FSYNC = 0.1  # seconds added to the flush of each atomic write in the child: a write lasts long enough to hit


class SlowFsync:
    """``os`` as :mod:`bsi.atomic` sees it in the child: the flush of every atomic write takes longer."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def fsync(fd: int) -> None:
        time.sleep(SLOW_FSYNC)
        os.fsync(fd)


def start(run: Path, log: Path) -> int:
    """``python -m bsi.train FAULTS resume=auto hydra.run.dir=RUN`` in a forked child (the interpreter start-up
    and imports would cost many seconds a try), its atomic writes slowed down (timing only: the bytes are the same)."""

    def main() -> None:
        bsi.atomic.os = SlowFsync()  # the child's copy of the module
        cli.train([*FAULTS, "resume=auto", f"hydra.run.dir={run}"])

    return fork(main, log)


class Ended(Exception):
    """The child ended before the moment to kill it came; ``status`` is its exit status."""

    def __init__(self, status: int):
        super().__init__(f"the run ended with status {status} before its kill")
        self.status = status


def wait_until(condition: Callable[[], bool], pid: int) -> None:
    """Return once ``condition()`` holds; :class:`Ended` if child ``pid`` exits first (it is reaped then)."""
    while not condition():
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            raise Ended(os.waitstatus_to_exitcode(status))
        time.sleep(0.001)


def newest_step(run: Path) -> int:
    newest = latest_checkpoint(run)
    return int(newest.stem.split("_")[1]) if newest is not None else 0


def kill_moment(run: Path, pid: int, rng: random.Random, mid_write: bool) -> None:
    """Return at the moment to kill child ``pid``: while a checkpoint is being written (``mid_write``), else a
    random moment soon after the checkpoint of a random step between the newest one and the last (0: start-up)."""
    if mid_write:
        wait_until(lambda: any((run / "checkpoints").glob(".*.pt.tmp-*")), pid)
        return
    target = rng.randint(newest_step(run), STEPS)
    wait_until(lambda: newest_step(run) >= target, pid)
    time.sleep(rng.uniform(0, STEP_SECONDS))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork")
def test_sigkill_at_random_moments_then_resume_auto_ends_bit_identical(tmp_path: Path, reference: Path) -> None:
    """Ten SIGKILLs at seeded random moments spread over the run (start-up, steps, checkpoint writes, validation,
    grids, the final test; two of them mid checkpoint write), each followed by ``resume=auto``
    in the same run directory (taking over the dead run's lock): the last checkpoint and metrics.csv equal an
    uninterrupted run's; a run that finished before its kill starts the next chain of kills afresh."""
    rng = random.Random(20261207)
    whole = tmp_path / "whole"  # the forked command itself, uninterrupted, ends as the in-process reference run
    assert wait(start(whole, tmp_path / "whole.log")) == 0, (tmp_path / "whole.log").read_text()[-3000:]
    assert_same_end(whole, reference)

    kills, mid_write, locked, chains, run = 0, 0, 0, 0, None
    log = tmp_path / "kills.log"
    while kills < KILLS:
        if run is None:
            chains += 1
            run = tmp_path / f"chain{chains}"
        pid = start(run, log)
        try:
            kill_moment(run, pid, rng, mid_write=kills in (3, 7) or (kills >= 8 and mid_write < MID_WRITE))
        except Ended as ended:
            status = ended.status
        else:
            os.kill(pid, signal.SIGKILL)
            status = wait(pid)
        if status == -signal.SIGKILL:
            kills += 1
            mid_write += bool(temporaries(run / "checkpoints"))
            locked += (run / LOCK_FILE).exists()  # the dead run's lock: the next resume takes it over
        else:
            assert status == 0, log.read_text()[-3000:]
            assert_same_end(run, reference)
            run = None
    if run is not None:
        assert wait(start(run, log)) == 0, log.read_text()[-3000:]
        assert_same_end(run, reference)
        assert not (run / LOCK_FILE).exists() and not temporaries(run / "checkpoints")
    assert mid_write >= MID_WRITE  # the kills aimed at checkpoint writes did land mid-write
    assert locked >= MID_WRITE  # ... and left their lock behind, which the resumes took over
