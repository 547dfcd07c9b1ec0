"""Checkpoints: atomic writes that survive a kill, finding the newest, pruning, loading a trained model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import bsi.checkpoint
from bsi.atomic import this_host
from bsi.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    checkpoints,
    latest_checkpoint,
    load_checkpoint,
    load_trained,
    newest_intact,
    prune,
    save_checkpoint,
    state_digest,
)
from bsi.config import CONFIGS
from bsi.train import train

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_save_load_latest_and_prune(tmp_path):
    for step in (9, 10, 100, 2):
        save_checkpoint(tmp_path / "checkpoints" / f"step_{step:07d}.pt", {"step": step, "w": torch.full((3,), step)})
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", {"step": 9})
    assert [p.name for p in checkpoints(tmp_path)] == [f"step_{s:07d}.pt" for s in (2, 9, 10, 100)]
    assert latest_checkpoint(tmp_path) == latest_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints" / "step_0000100.pt"
    assert load_checkpoint(tmp_path)["step"] == 100  # a run directory means its newest checkpoint
    (tmp_path / "checkpoints" / f".step_0000200.pt.tmp-{this_host()}-{dead_pid()}").write_bytes(b"left by a killed writer")
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "step_0000010.pt", "step_0000100.pt"]
    assert latest_checkpoint(tmp_path / "empty") is None


def test_missing_and_corrupt_checkpoints_raise_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "step_0000001.pt")
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_trained(tmp_path)
    bad = tmp_path / "step_0000001.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.raises(CheckpointError, match="unreadable") as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value)


# A writer that saves one checkpoint, then starts a second one and is killed half-way through it.
WRITER = """
import sys, time
from pathlib import Path
import torch
from bsi.checkpoint import save_checkpoint

folder = Path(sys.argv[1])
save_checkpoint(folder / "step_0000001.pt", {"step": 1, "w": torch.arange(1000)})

def stalls_half_way(obj, f, *args, **kwargs):
    f.write(b"PK\\x03\\x04" + b"x" * 4096)  # the start of a zip file, as torch.save writes it
    f.flush()
    (folder / "writing").touch()
    time.sleep(60)

torch.save = stalls_half_way
save_checkpoint(folder / "step_0000002.pt", {"step": 2, "w": torch.arange(1000)})
"""


def test_kill_during_a_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (folder / "writing").exists():
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never got to its second save"
            time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(10)
    assert not (folder / "step_0000002.pt").exists()  # the half-written file never took the real name
    assert latest_checkpoint(tmp_path) == folder / "step_0000001.pt"
    assert torch.equal(load_checkpoint(tmp_path)["w"], torch.arange(1000))
    assert len(list(folder.glob(".step_0000002.pt.tmp-*"))) == 1
    prune(tmp_path, keep=3)  # the next save's pruning clears what the killed writer left
    assert sorted(p.name for p in folder.iterdir()) == ["step_0000001.pt", "writing"]


def test_load_trained_gives_the_ema_model_ready_for_evaluation(tmp_path):
    overrides = ["train.steps=3", "train.batch_size=16", "train.eval_every=3", "train.checkpoint_every=3", "eval.n_samples=1",
                 "eval.ks=[]", "eval.grid=1", "eval.sample.steps=2", "model.width=16", "model.embedding_dim=8",
                 "output=discretised", "cpu_threads=1"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        train(compose("train", overrides=overrides), run_dir=tmp_path)
    path = tmp_path / "checkpoints" / "step_0000003.pt"
    model = load_trained(tmp_path)
    state = load_checkpoint(path)
    assert isinstance(model.cfg, DictConfig) and model.cfg.output == "discretised" and model.cfg.train.steps == 3
    # a run directory gives the weights its training tested: best.pt, here those of step 3
    assert (model.step, model.data_shape, model.bins, model.path) == (3, (1, 8, 8), 17, path.with_name("best.pt"))
    assert not model.backbone.training and model.process.output == "discretised"
    for name, weight in model.backbone.state_dict().items():
        assert torch.equal(weight, state["ema"][f"module.{name}"])
    raw = load_trained(path, ema=False)
    assert all(torch.equal(w, state["model"][n]) for n, w in raw.backbone.state_dict().items())
    x = torch.zeros(2, 1, 8, 8)
    assert model.denoiser(x, torch.full((2,), 10.0)).mean.shape == (2, 1, 8, 8)


class NotPlainData:
    """An object that the safe unpickler refuses (a bsi checkpoint holds only tensors and plain data)."""


@pytest.mark.parametrize("kind", ["pickled object", "random bytes", "truncated", "a tensor"])
def test_anything_but_a_checkpoint_is_named_as_such_in_one_line(tmp_path, kind):
    path = tmp_path / "step_0000001.pt"
    if kind == "pickled object":
        torch.save({"model": NotPlainData()}, path)
    elif kind == "random bytes":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "truncated":
        torch.save({"w": torch.arange(1000)}, path)
        path.write_bytes(path.read_bytes()[:500])
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"checkpoint {path} is unreadable: it is not a bsi checkpoint")
    assert "\n" not in message and "weights_only" not in message and "arbitrary code" not in message


def test_a_foreign_state_dict_is_not_a_training_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not a bsi training checkpoint: it lacks config, data_shape, bins, step, ema"):
        load_trained(tmp_path / "weights.pt")


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4608 vs 4514"),  # torch's zip writer
    OSError(28, "No space left on device"),
])
def test_a_full_disk_removes_the_partial_file_and_says_nothing_was_lost(tmp_path, monkeypatch, failure):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "step_0000001.pt", {"step": 1})

    def fills_the_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04" + b"x" * 4096)
        raise failure

    monkeypatch.setattr(bsi.checkpoint.torch, "save", fills_the_disk)
    with pytest.raises(CheckpointWriteError) as err:
        save_checkpoint(folder / "step_0000002.pt", {"step": 2})
    message = str(err.value)
    assert message.startswith(f"could not write checkpoint {folder / 'step_0000002.pt'}: the disk holding {folder} is full (")
    assert "MiB free" in message and "nothing was lost" in message and "\n" not in message
    assert os.listdir(folder) == ["step_0000001.pt"] and load_checkpoint(folder)["step"] == 1


# -- checksums ------------------------------------------------------------------------------------------


def training_like_state(step: int) -> dict:
    """A small state shaped like a training checkpoint: weights, optimizer state with int keys, plain data."""
    weight = torch.arange(4096, dtype=torch.float32) + step
    return {"config": {"train": {"lr": 2e-4, "betas": [0.9, 0.99]}}, "step": step, "model": {"w": weight},
            "optimizer": {"state": {0: {"exp_avg": torch.ones(3, dtype=torch.bfloat16)}}, "param_groups": [{"params": [0]}]},
            "best_val": float("inf"), "best_step": None}


def flip_weight_bytes(path: Path, state: dict, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of the stored weight tensor (the file stays a loadable zip)."""
    raw = bytearray(path.read_bytes())
    start = raw.find(state["model"]["w"].numpy().tobytes()[:512])
    assert start > 0
    for i in range(start + 4096, start + 4096 + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_checkpoint_with_flipped_weight_bytes_is_refused_in_one_line(tmp_path):
    path = save_checkpoint(tmp_path / "step_0000001.pt", training_like_state(1))
    loaded = load_checkpoint(path)
    assert "sha256" not in loaded and torch.equal(loaded["model"]["w"], training_like_state(1)["model"]["w"])
    flip_weight_bytes(path, training_like_state(1))
    assert torch.load(path, weights_only=True)["step"] == 1  # torch alone loads it without complaint
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"checkpoint {path} is damaged: its contents do not match the SHA-256") and "\n" not in message


def test_the_digest_covers_every_value_and_survives_a_round_trip(tmp_path):
    state = training_like_state(3)
    digest = state_digest(state)
    assert digest == state_digest(torch.load(save_checkpoint(tmp_path / "a.pt", state), weights_only=True))
    assert len(digest) == 64 and digest == state_digest({**state, "sha256": "anything"})
    changed = [{**state, "step": 4}, {**state, "best_step": 0}, {**state, "config": {"train": {"lr": 2e-4, "betas": [0.9, 0.999]}}},
               {**state, "model": {"w": state["model"]["w"].double()}}, {**state, "model": {"w": state["model"]["w"].view(64, 64)}}]
    assert len({digest, *(state_digest(s) for s in changed)}) == 6


def test_resume_auto_falls_back_to_the_newest_intact_checkpoint_and_names_what_it_skipped(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        save_checkpoint(folder / f"step_{step:07d}.pt", training_like_state(step))
    flip_weight_bytes(folder / "step_0000003.pt", training_like_state(3))
    (folder / "step_0000004.pt").write_bytes(b"PK\x03\x04 truncated")
    found = newest_intact(tmp_path, keys=("model", "step"))
    assert found.path == folder / "step_0000002.pt" and found.state["step"] == 2
    assert [p.name for p, _ in found.skipped] == ["step_0000004.pt", "step_0000003.pt"]
    note = found.note()
    assert note.startswith("resume=auto skipped step_0000004.pt, step_0000003.pt (step_0000004.pt is unreadable: ")
    assert note.endswith("; resuming from step_0000002.pt") and "\n" not in note
    assert (folder / "step_0000003.pt").exists()  # kept for a person to look at
    assert newest_intact(tmp_path, keys=("ema",)).path is None
    assert newest_intact(tmp_path / "none").note() is None


def test_a_checkpoint_from_before_checksums_loads_with_a_one_line_note(tmp_path, caplog):
    path = tmp_path / "step_0000001.pt"
    torch.save(training_like_state(1), path)
    with caplog.at_level("WARNING", logger="bsi.checkpoint"):
        assert load_checkpoint(path)["step"] == 1
    assert caplog.messages == [f"checkpoint {path} has no checksum (written by an earlier bsi version): loaded unchecked"]
