"""SIGTERM and SIGINT in every loop that calls the network, in training and in ``bsi.evaluate``: the run
stops within about one network call with status 3, training saves the current step, and no output file
is left half-written (nor written at all, for the one being computed)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import pytest

import bsi.evaluation.likelihood
import bsi.evaluation.tasks
import bsi.training.evaluation
from bsi.checkpoint import latest_checkpoint, load_checkpoint
from bsi.evaluate import main as evaluate
from bsi.exits import EXIT_STOPPED, Preempted
from bsi.train import train
from tests.faults.tiny import STEPS, temporaries, tiny
from tests.test_train import hook_backbone

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
SIGNALS = [signal.SIGTERM, signal.SIGINT]


class Sender:
    """A forward pre-hook that sends ``signum`` to this process at the first network call made in ``phase``,
    and counts the calls made after it."""

    def __init__(self, phase: str, signum: int):
        self.phase, self.signum = phase, signum
        self.now: str | None = None  # the phase the program is in
        self.sent, self.calls_after = False, 0
        self.steps = 0  # training forward passes before the signal

    def during(self, phase: str | Callable[..., str], function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` with the program in ``phase`` (or ``phase(*args)``) while it runs."""

        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            outer, self.now = self.now, phase(*args) if callable(phase) else phase
            try:
                return function(*args, **kwargs)
            finally:
                self.now = outer

        return wrapper

    def __call__(self, module: Any, args: Any) -> None:
        if self.sent:
            self.calls_after += 1
        elif self.now == self.phase or (self.phase == "training" and module.training and self.steps == 2):
            self.sent = True
            os.kill(os.getpid(), self.signum)  # handled before the next line: the flag is up during this call
        self.steps += module.training


# phase -> the newest checkpoint's step after the stop, and the output that must not exist
TRAINING_PHASES = {
    "training": (3, "checkpoints/step_0000004.pt"),  # the signal arrives during step 3
    "validation": (4, "samples/step_0000004.png"),
    "grid": (4, "samples/step_0000004.png"),
    "pilot": (STEPS, "final.json"),  # the final test's k-step pilot (eval.ks=[2], eval.kstep=proposal)
    "test": (STEPS, "final.json"),   # the final test's infinite-step pass
}


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("phase", TRAINING_PHASES)
def test_a_stop_signal_in_each_training_loop_saves_the_step_and_stops_within_a_call(
        phase: str, signum: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``signum`` at the first network call of ``phase``: Preempted (status 3) after at most one more call, a
    checkpoint of the current step, the phase's output not written, no temporary file."""
    sender = Sender(phase, signum)
    # A function, not the Sender: the EMA copy of the backbone (a deepcopy) must call this very Sender.
    hook_backbone(monkeypatch, lambda module: module.register_forward_pre_hook(lambda mod, args: sender(mod, args)))

    def split_phase(run: Any, split: str, *rest: Any) -> str:
        return "validation" if split == "val" else "test"

    monkeypatch.setattr(bsi.training.evaluation, "bpd", sender.during(split_phase, bsi.training.evaluation.bpd))
    monkeypatch.setattr(bsi.training.evaluation, "draw_grid", sender.during("grid", bsi.training.evaluation.draw_grid))
    monkeypatch.setattr(bsi.evaluation.likelihood, "pilot_step_proposal",
                        sender.during("pilot", bsi.evaluation.likelihood.pilot_step_proposal))
    with pytest.raises(Preempted) as err:
        train(tiny("eval.kstep=proposal"), run_dir=tmp_path)
    assert sender.sent and sender.calls_after <= 1, f"{sender.calls_after} network calls after the signal"
    assert err.value.exit_status == EXIT_STOPPED == 3 and "\n" not in str(err.value)
    step, unwritten = TRAINING_PHASES[phase]
    newest = latest_checkpoint(tmp_path)
    assert newest.name == f"step_{step:07d}.pt" and load_checkpoint(newest)["step"] == step
    assert not (tmp_path / unwritten).exists() and temporaries(tmp_path) == []
    if step == STEPS:
        assert not (tmp_path / "samples" / "final.png").exists()


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("task, settings", [
    ("likelihood", ["likelihood.ks=[2]", "likelihood.n_samples=1", "likelihood.pilot=8", "batch_size=64"]),
    ("sample", ["n=8", "sample.steps=5", "batch_size=4"]),
], ids=["likelihood", "sample"])
def test_a_stop_signal_in_evaluate_exits_3_within_a_call_and_writes_nothing(
        task: str, settings: list[str], signum: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, reference: Path) -> None:
    """``bsi.evaluate TASK`` with ``signum`` at its first network call: status 3 after at most one more call,
    one line on stderr, and no file in the output folder."""
    sender = Sender(task, signum)
    sender.now = task  # every network call of the task
    load_model = bsi.evaluation.tasks.load_model

    def loaded(*args: Any, **kwargs: Any) -> Any:
        model = load_model(*args, **kwargs)
        model.backbone.register_forward_pre_hook(sender)
        return model

    monkeypatch.setattr(bsi.evaluation.tasks, "load_model", loaded)
    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as exit_:
        evaluate([task, f"checkpoint={reference}", f"out_dir={out}", *settings])
    assert exit_.value.code == EXIT_STOPPED == 3
    assert sender.sent and sender.calls_after <= 1, f"{sender.calls_after} network calls after the signal"
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: stopped by {signal.Signals(signum).name} before the {task} finished: no result "
                           f"was written") and err.count("error: ") == 1
    assert not out.exists() or list(out.rglob("*")) == []
