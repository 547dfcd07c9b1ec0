"""One run per run directory: a live run's lock refuses a second one; a dead run's lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bsi.atomic import stale_temporaries, temporary_name, this_host
from bsi.runlock import LOCK_FILE, Holder, RunLock, RunLockError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

HOLDER = """
import sys, time
from bsi.runlock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_holder(tmp_path):
    """A process that holds ``tmp_path``'s lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait(10)


def write_lock(run_dir: Path, **fields) -> Path:
    holder = {"pid": 12345, "host": this_host(), "started": time.time(), "mark": None, "job": None, "restart": 0}
    path = run_dir / LOCK_FILE
    path.write_text(json.dumps({**holder, **fields}))
    return path


def test_a_second_run_into_a_live_runs_directory_is_refused_in_one_line(tmp_path, live_holder):
    with pytest.raises(RunLockError) as err, RunLock(tmp_path):
        pass
    message = str(err.value)
    assert "\n" not in message
    assert f"in use by process {live_holder.pid} on host {this_host()}" in message
    assert "hydra.run.dir=" in message and f"kill {live_holder.pid}" in message
    assert Holder.from_bytes((tmp_path / LOCK_FILE).read_bytes()).pid == live_holder.pid  # left alone


def test_a_killed_runs_lock_is_taken_over_with_one_line(tmp_path, live_holder, caplog):
    live_holder.kill()  # SIGKILL: no clean-up, the lock file stays
    live_holder.wait(10)
    assert (tmp_path / LOCK_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="bsi.runlock"), RunLock(tmp_path) as lock:
        assert Holder.from_bytes((tmp_path / LOCK_FILE).read_bytes()).pid == os.getpid()
    assert lock.took_over == f"took over the lock of {tmp_path} from " + lock.took_over.split(" from ", 1)[1]
    assert f"process {live_holder.pid} on host {this_host()}" in lock.took_over
    assert lock.took_over.endswith("that process is gone") and caplog.messages == [lock.took_over]
    assert not (tmp_path / LOCK_FILE).exists()  # released


def test_a_reused_process_id_does_not_keep_a_dead_runs_lock(tmp_path):
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("process start marks need /proc")
    write_lock(tmp_path, pid=os.getppid(), mark="1")  # alive, but started at another time than the holder
    with RunLock(tmp_path) as lock:
        assert "its process id now belongs to another process" in lock.took_over


def test_of_many_simultaneous_starters_exactly_one_wins(tmp_path):
    starter = ("import sys, time\nfrom pathlib import Path\nfrom bsi.runlock import RunLock, RunLockError\n"
               "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
               "try:\n    with RunLock(sys.argv[1]):\n        print('won', flush=True)\n"
               "        while not Path(sys.argv[3]).exists(): time.sleep(0.05)\n"
               "except RunLockError:\n    print('refused', flush=True)\n")
    done = tmp_path / "done"
    go = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", starter, str(tmp_path / "run"), str(go), str(done)],
                              stdout=subprocess.PIPE, text=True, env=ENV) for _ in range(5)]
    try:
        outcomes = sorted(p.stdout.readline().strip() for p in procs)  # the winner holds on until all have answered
    finally:
        done.touch()
        for p in procs:
            p.wait(60)
    assert outcomes == ["refused"] * 4 + ["won"]


def test_another_hosts_lock_counts_until_its_heartbeat_stops(tmp_path):
    path = write_lock(tmp_path, host="gpu-node-7", pid=4242)
    with pytest.raises(RunLockError) as err:
        RunLock(tmp_path, how_to_force="force_lock=true").acquire()
    assert "process 4242 on host gpu-node-7" in str(err.value) and "force_lock=true" in str(err.value)
    old = time.time() - 11 * 60
    os.utime(path, (old, old))
    with RunLock(tmp_path) as lock:
        assert lock.took_over.endswith("its heartbeat stopped 11 minutes ago")


def test_force_takes_over_a_live_lock(tmp_path):
    write_lock(tmp_path, host="gpu-node-7", pid=4242)
    with RunLock(tmp_path, force=True) as lock:
        assert "force" in lock.took_over and "gpu-node-7" in lock.took_over


def test_a_requeued_slurm_job_takes_over_its_earlier_incarnations_lock(tmp_path, monkeypatch):
    write_lock(tmp_path, host="gpu-node-7", job="777", restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with RunLock(tmp_path) as lock:
        assert lock.took_over.endswith("SLURM job 777 was requeued, so its earlier run has ended")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same incarnation on another node: a live run
    write_lock(tmp_path, host="gpu-node-7", job="777", restart=0)
    with pytest.raises(RunLockError):
        RunLock(tmp_path).acquire()


def test_the_lock_is_released_on_an_exception_and_beats_while_held(tmp_path):
    with pytest.raises(ZeroDivisionError), RunLock(tmp_path, heartbeat=0.05):
        path = tmp_path / LOCK_FILE
        old = time.time() - 100
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 50  # touched again
        1 / 0
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_run_whose_lock_was_forced_away_learns_it_and_leaves_the_new_lock(tmp_path):
    with RunLock(tmp_path, heartbeat=0.05) as lock:
        write_lock(tmp_path, host="gpu-node-7", pid=4242)
        time.sleep(0.3)
        with pytest.raises(RunLockError, match=r"process 4242 on host gpu-node-7 \(started .*\) removed or took over"):
            lock.check()
    assert Holder.from_bytes((tmp_path / LOCK_FILE).read_bytes()).pid == 4242


# -- temporaries of writers ---------------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from bsi.atomic import atomic_file
with atomic_file(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a checkpoint")
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_clean_up_never_removes_a_live_writers_temporary(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "step_0000002.pt")],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        tmp = Path(writer.stdout.readline().strip())
        assert tmp.exists() and stale_temporaries(tmp_path) == []
        writer.kill()
        writer.wait(10)
        assert stale_temporaries(tmp_path) == [tmp]  # its writer is gone now
    finally:
        writer.kill()
        writer.wait(10)


def test_temporaries_of_other_hosts_and_old_names_go_only_when_abandoned(tmp_path):
    mine = temporary_name(tmp_path / "a.pt")
    dead = tmp_path / f".b.pt.tmp-{this_host()}-{dead_pid()}"
    foreign, legacy = tmp_path / ".c.pt.tmp-gpu-node-7-4242", tmp_path / ".d.pt.tmp-4242"
    old_foreign, old_legacy = tmp_path / ".e.pt.tmp-gpu-node-7-4242", tmp_path / ".f.pt.tmp-4242"
    for path in (mine, dead, foreign, legacy, old_foreign, old_legacy):
        path.write_bytes(b"x")
    old = time.time() - 31 * 60
    for path in (old_foreign, old_legacy):
        os.utime(path, (old, old))
    assert sorted(stale_temporaries(tmp_path)) == sorted([dead, old_foreign, old_legacy])
