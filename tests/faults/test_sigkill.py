"""SIGKILL at any moment loses nothing: ``resume=auto`` in the same run directory ends bit for bit as an
uninterrupted run, however often the run was killed, mid checkpoint write included."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import bsi.atomic
from bsi import cli
from bsi.runlock import LOCK_FILE
from tests.faults.tiny import FAULTS, assert_same_end, fork, temporaries, wait

KILLS = 10
MID_WRITE = 2  # kills aimed at a checkpoint write (the 4th and 8th, and later ones until two landed mid-write)
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


def wait_for_checkpoint_write(run: Path, pid: int) -> None:
    """Return once a checkpoint's temporary file exists in ``run`` (or the child has exited)."""
    folder = run / "checkpoints"
    while not any(folder.glob(".*.pt.tmp-*")):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            raise ChildProcessError("the run ended before a kill")  # reaped here: cannot be waited for again
        time.sleep(0.001)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork")
def test_sigkill_at_random_moments_then_resume_auto_ends_bit_identical(tmp_path: Path, reference: Path) -> None:
    """Ten SIGKILLs at seeded random moments (two of them mid checkpoint write), each followed by ``resume=auto``
    in the same run directory (taking over the dead run's lock): the last checkpoint and metrics.csv equal an
    uninterrupted run's; a run that finished before its kill starts the next chain of kills afresh."""
    rng = random.Random(20261207)
    whole = tmp_path / "whole"
    started = time.monotonic()
    assert wait(start(whole, tmp_path / "whole.log")) == 0, (tmp_path / "whole.log").read_text()[-3000:]
    span = time.monotonic() - started  # how long one forked run lasts on this machine
    assert_same_end(whole, reference)

    kills, mid_write, locked, chains, run = 0, 0, 0, 0, None
    log = tmp_path / "kills.log"
    while kills < KILLS:
        if run is None:
            chains += 1
            run = tmp_path / f"chain{chains}"
        pid = start(run, log)
        try:
            if kills in (3, 7) or (kills >= 8 and mid_write < MID_WRITE):
                wait_for_checkpoint_write(run, pid)
            else:
                time.sleep(rng.uniform(0, span))
        except ChildProcessError:
            status = 0  # finished (its status is checked by the comparison below)
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
