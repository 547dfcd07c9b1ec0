"""Cluster launches without a cluster: submitit's local executor, and handing preemption to submitit."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bsi.exits import Preempted
from bsi.training.state import Preemption

ROOT = Path(__file__).resolve().parents[2]


def test_two_job_sweep_through_submitit_local_reports_each_job_and_a_summary(tmp_path):
    """One run trains, one has a bad setting: both are reported, the sweep ends with status 1."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "bsi.train", "-m", "hydra/launcher=local", "train.batch_size=32,5000", "train.steps=20", "train.eval_every=20",
           "train.checkpoint_every=20", "eval.n_samples=1", "eval.ks=[]", "eval.grid=4", "eval.sample.steps=5",
           f"hydra.sweep.dir={sweep}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-2000:]
    runs = sorted(p.parent for p in sweep.glob("*/final.json"))
    assert len(runs) == 1 and "train.batch_size=32" in runs[0].name  # names show overrides
    assert (runs[0] / "metrics.csv").exists() and list((runs[0] / "checkpoints").glob("step_*.pt"))
    logs = sorted(sweep.glob(".submitit/*/*_log.err"))
    assert len(logs) == 2 and not (sweep / ".submitit" / "%j").exists()  # submitit's per-task logs, no literal %j
    err = out.stderr
    assert "[sweep] launched 2 job(s) on this machine, all at once" in err
    assert "[sweep]   all with: train.steps=20" in err
    assert "[sweep]   #0 train.batch_size=32: job " in err and "[sweep]   #1 train.batch_size=5000: job " in err
    assert "[sweep] #1 train.batch_size=5000: failed: error: train.batch_size=5000 needs 5000 images per rank" in err
    assert err.strip().splitlines()[-1] == "error: 1 of 2 job(s) failed (see the summary above and their logs)"
    final = json.loads((runs[0] / "final.json").read_text())
    summary = out.stdout.splitlines()
    assert summary[0] == f"sweep in {sweep}: 1 of 2 job(s) done, 1 failed"
    assert summary[1].split()[:4] == ["#0", "train.batch_size=32", "done", "test"] and f"{final['test_bpd']:.4f}" in summary[1]
    assert summary[2].split()[:3] == ["#1", "train.batch_size=5000", "failed"] and "rank(s) (log: " in summary[2]


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
