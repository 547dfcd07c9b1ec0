"""Cluster launches without a cluster: submitit's local executor, and handing preemption to submitit."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bsi.train import Preempted, Preemption

ROOT = Path(__file__).resolve().parents[2]


def test_two_job_sweep_through_submitit_local(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "bsi.train", "-m", "hydra/launcher=local", "seed=1,2", "train.steps=20",
           "train.eval_every=20", "train.checkpoint_every=20", "eval.n_samples=1", "eval.ks=[]", "eval.grid=4",
           "eval.sample.steps=5", f"hydra.sweep.dir={sweep}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = sorted(p.parent for p in sweep.glob("*/final.json"))
    assert len(runs) == 2 and ["seed=1" in runs[0].name, "seed=2" in runs[1].name] == [True, True]  # names show overrides
    for run in runs:
        assert (run / "metrics.csv").exists() and list((run / "checkpoints").glob("step_*.pt"))
    assert list(sweep.glob(".submitit/*/*_log.out"))  # submitit's per-task logs


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_preemption_hands_over_to_the_launchers_handler():
    """Under submitit the training saves first, then submitit's own handler requeues the job."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with pytest.raises(Preempted):
            with Preemption() as preemption:
                os.kill(os.getpid(), signal.SIGUSR2)
                assert preemption.requested and calls == []  # the loop saves before anyone requeues
                raise Preempted("saved")
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_without_a_launcher_preemption_only_sets_the_flag():
    with Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGUSR1)
    assert preemption.requested and preemption.signum == signal.SIGUSR1
