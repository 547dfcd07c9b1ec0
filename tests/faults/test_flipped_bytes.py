"""64 flipped bytes inside a weight tensor of the newest checkpoint: refused by every reader in one line, and
``resume=auto`` falls back to the newest intact checkpoint, says so and ends bit for bit as an uninterrupted run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from bsi.checkpoint import CheckpointError, load_checkpoint
from bsi.evaluate import main as evaluate
from bsi.exits import EXIT_USAGE
from bsi.train import train
from tests.faults.tiny import STEPS, assert_same_end, final_checkpoint, tiny


def flip_inside_a_weight(path: Path) -> None:
    """Invert 64 bytes in the middle of the stored bytes of the checkpoint's largest model weight."""
    weight = max(load_checkpoint(path)["model"].values(), key=lambda t: t.numel())
    data, raw = weight.numpy().tobytes(), bytearray(path.read_bytes())
    at = raw.find(data)
    assert at >= 0 and raw.find(data, at + 1) < 0 and len(data) >= 128, "the weight's bytes, found once"
    for i in range(at + len(data) // 2 - 32, at + len(data) // 2 + 32):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_weight_bytes_are_refused_and_resume_auto_falls_back_bit_identical(
        tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    """``load_checkpoint`` and ``bsi.evaluate likelihood`` (status 2) refuse the damaged checkpoint in one line;
    ``resume=auto`` names it, resumes from the step before and ends exactly as the uninterrupted run."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    newest = final_checkpoint(run)
    flip_inside_a_weight(newest)
    damaged = (f"checkpoint {newest} is damaged: its contents do not match the SHA-256 stored in it (changed on disk "
               f"after it was written); resume from an earlier one (resume=auto skips damaged checkpoints)")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(newest)
    assert str(err.value) == damaged

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        evaluate(["likelihood", f"checkpoint={newest}", f"out_dir={tmp_path / 'eval'}"])
    assert exit_.value.code == EXIT_USAGE == 2
    assert capsys.readouterr().err == f"error: {damaged}\n"
    assert not (tmp_path / "eval").exists()

    with caplog.at_level(logging.WARNING):
        train(tiny("resume=auto"), run_dir=run)
    notes = [m for m in caplog.messages if m.startswith("resume=auto skipped")]
    previous = f"step_{STEPS - 1:07d}.pt"
    assert notes == [(f"resume=auto skipped {newest.name} ({newest.name} is damaged: its contents do not match the "
                      f"SHA-256 stored in it (changed on disk after it was written)); resuming from {previous}")]
    assert_same_end(run, reference)
