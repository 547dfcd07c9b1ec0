"""Two runs into one run directory: the second is refused at once (status 2, one line naming the first's
process and host), and the first finishes as if it had been alone."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bsi import cli
from bsi.atomic import this_host
from bsi.checkpoint import checkpoints, latest_checkpoint, load_checkpoint
from bsi.runlock import LOCK_FILE
from tests.faults.tiny import FAULTS, STEPS, assert_same_end, fork, metric_rows, wait
from tests.test_train import hook_backbone


def hold_at_step_2(go: Path) -> Callable[[Any], None]:
    """A backbone hook that holds the training forward passes from step 2 on until file ``go`` exists (at most 60 s)."""
    calls = []

    def hold(module: Any, args: Any) -> None:
        calls.append(module.training)
        deadline = time.monotonic() + 60
        while sum(calls) >= 2 and not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    return lambda module: module.register_forward_pre_hook(hold)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_second_run_is_refused_in_one_line_and_the_first_finishes_unharmed(tmp_path: Path, reference: Path) -> None:
    """While the first ``bsi.train`` holds RUN, a second exits 2 with one line naming the first's pid and host;
    the first then ends with status 0, one metrics row per logged value, and checkpoints that load and
    equal an uninterrupted run's."""
    run, go = tmp_path / "run", tmp_path / "go"

    def first() -> None:
        hook_backbone(pytest.MonkeyPatch(), hold_at_step_2(go))  # the child's own copy: gone when it exits
        cli.train([*FAULTS, f"hydra.run.dir={run}"])

    pid = fork(first, tmp_path / "first.log")
    deadline = time.monotonic() + 120
    while not (run / LOCK_FILE).exists() or latest_checkpoint(run) is None:  # it is training (held at step 2)
        assert time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0), "the first run never trained"
        time.sleep(0.01)

    second = fork(lambda: cli.train([*FAULTS, "resume=auto", f"hydra.run.dir={run}"]), tmp_path / "second.log")
    assert wait(second) == 2
    assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the first run was still running when the second was refused"
    errors = [line for line in (tmp_path / "second.log").read_text().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: run directory {run} is in use by process {pid} on host "
                                                     f"{this_host()}")
    assert "Traceback" not in (tmp_path / "second.log").read_text()
    go.touch()

    assert wait(pid) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert [step for step, metric, _ in metric_rows(run) if metric == "loss"] == [str(s) for s in range(1, STEPS + 1)]
    for path in checkpoints(run):
        assert load_checkpoint(path)["step"] == int(path.stem.split("_")[1])
    assert_same_end(run, reference)
    assert not (run / LOCK_FILE).exists()


def test_a_refused_command_line_run_touches_nothing_in_the_live_runs_directory(tmp_path: Path) -> None:
    """Refused before hydra starts: no ``.hydra/`` written, no line appended to the live run's ``train.log``."""
    import os
    import subprocess
    import sys

    from bsi.runlock import RunLock

    run_dir = tmp_path / "live"
    with RunLock(run_dir):  # this test process is the live run
        (run_dir / "train.log").write_text("the live run's log\n")
        out = subprocess.run([sys.executable, "-m", "bsi.train", f"hydra.run.dir={run_dir}", "train.steps=1"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert f"run directory {run_dir} is in use by" in out.stderr and f"process {os.getpid()} on host" in out.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock", "train.log"]
        assert (run_dir / "train.log").read_text() == "the live run's log\n"
