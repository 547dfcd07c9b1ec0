"""The training entry point: end to end, bit-exact resume, preemption, non-finite losses, errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bsi.config import CONFIGS
import bsi.train
import bsi.training.evaluation
import bsi.training.setup
from bsi.checkpoint import latest_checkpoint, load_checkpoint
from bsi.engine import OneHot
from bsi.build import build_backbone, build_process
import bsi.cpu
from bsi import cli
from bsi.exits import ConfigError, DivergedError, Preempted
from bsi.train import train
from bsi.training.state import lr_factor

ROOT = Path(__file__).resolve().parents[1]
# A tiny but complete run: every periodic action happens within a few steps.
TINY = [
    "train.steps=8", "train.batch_size=32", "train.warmup=2", "train.log_every=1", "train.eval_every=4",
    "train.checkpoint_every=2", "train.keep_checkpoints=2", "eval.n_samples=1", "eval.val_n_samples=1", "eval.ks=[2]",
    "eval.grid=4", "eval.sample.steps=3", "eval.batch_size=512",
]


def config(*overrides: str, tiny: bool = True) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[*(TINY if tiny else []), *overrides])


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bsi.train", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def hook_backbone(monkeypatch, hook) -> None:
    """Make ``train`` build its backbone as usual and then call ``hook(module)`` on it."""
    build = bsi.training.setup.build_backbone

    def built(*args, **kwargs):
        module = build(*args, **kwargs)
        hook(module)
        return module

    monkeypatch.setattr(bsi.training.setup, "build_backbone", built)


def test_default_config_trains_end_to_end(tmp_path, monkeypatch):
    retained = []
    monkeypatch.setattr(bsi.cpu, "retain_freed_memory", lambda: retained.append(True))
    final = train(config("resume=auto"), run_dir=tmp_path)  # nothing to resume yet: starts from scratch
    assert retained == [True]  # cpu_retain_memory=true, the default, on a CPU
    assert math.isfinite(final["test_bpd"]) and final["test_bpd"] > 0
    assert final["steps"] == 8 and final["nonfinite_skips"] == 0 and "test_bpd_2_steps" in final
    assert json.loads((tmp_path / "final.json").read_text())["test_bpd"] == final["test_bpd"]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "step_0000006.pt", "step_0000008.pt"]  # keep_checkpoints=2, plus best.pt
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["final.png", "step_0000004.png", "step_0000008.png"]
    metrics = (tmp_path / "metrics.csv").read_text().splitlines()
    assert metrics[0] == "step,seconds,metric,value" and any(",val_bpd," in row for row in metrics)
    state = load_checkpoint(tmp_path / "checkpoints" / "step_0000008.pt")
    for key in ("config", "step", "model", "ema", "optimizer", "scheduler", "proposal", "sampler", "rng", "nonfinite_skips"):
        assert key in state
    assert state["config"]["train"]["steps"] == 8 and len(state["rng"]) == 1


def test_cli_runs_and_says_where_the_outputs_are(tmp_path):
    out = run_cli(*TINY, "train.steps=2", "eval.ks=[]", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"outputs in {tmp_path}" in out.stdout
    assert (tmp_path / "final.json").exists() and (tmp_path / "samples" / "final.png").exists()


def tensors_equal(a, b) -> bool:
    """Nested dicts/lists of tensors and plain values, compared exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_preempted_and_resumed_run_is_bit_identical(tmp_path, monkeypatch):
    # Dropout and the adaptive proposal make the global RNG and the proposal state matter too.
    overrides = ["model.dropout=0.2", "method.proposal=adaptive"]
    train(config(*overrides), run_dir=tmp_path / "whole")

    calls = []

    def signal_at_step_4(module):
        def pre_hook(mod, args):
            if mod.training:
                calls.append(1)
                if len(calls) == 4:  # SIGUSR1 arrives during step 4 (as a cluster would send it)
                    os.kill(os.getpid(), signal.SIGUSR1)
        module.register_forward_pre_hook(pre_hook)

    with monkeypatch.context() as patch:
        hook_backbone(patch, signal_at_step_4)
        with pytest.raises(Preempted, match="resume=auto"):
            train(config(*overrides), run_dir=tmp_path / "split")
    assert latest_checkpoint(tmp_path / "split").name == "step_0000004.pt"
    train(config(*overrides, "resume=auto"), run_dir=tmp_path / "split")

    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "step_0000008.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoints" / "step_0000008.pt")
    for key in ("model", "ema", "optimizer", "scheduler", "proposal", "sampler", "rng", "step", "best_val"):
        assert tensors_equal(whole[key], split[key]), key
    final_whole = json.loads((tmp_path / "whole" / "final.json").read_text())
    final_split = json.loads((tmp_path / "split" / "final.json").read_text())
    assert final_whole["test_bpd"] == final_split["test_bpd"]
    rows = (tmp_path / "split" / "metrics.csv").read_text().splitlines()
    assert sum(row.startswith("4,") and ",loss," in row for row in rows) == 1  # no duplicate rows after the resume


def nan_backbone(monkeypatch, bad_calls) -> None:
    """The backbone returns NaN on the training forward passes numbered in ``bad_calls`` (1-based)."""
    count = [0]

    def add_hook(module):
        def hook(mod, args, output):
            if mod.training:
                count[0] += 1
                if count[0] in bad_calls:
                    return output * math.nan  # still part of the graph: the gradients turn NaN too
            return output
        module.register_forward_hook(hook)

    hook_backbone(monkeypatch, add_hook)


def test_nonfinite_losses_are_skipped_and_counted(tmp_path, monkeypatch):
    nan_backbone(monkeypatch, {2, 5, 6})
    final = train(config(), run_dir=tmp_path)
    assert final["nonfinite_skips"] == 3 and math.isfinite(final["test_bpd"])
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_many_nonfinite_losses_in_a_row_stop_the_run(tmp_path, monkeypatch):
    nan_backbone(monkeypatch, set(range(3, 100)))  # steps 3, 4, 5, ... fail
    with pytest.raises(DivergedError, match="3 non-finite losses in a row") as err:
        train(config("train.max_nonfinite=3"), run_dir=tmp_path)
    assert "step_0000004.pt" in str(err.value)
    # Skipped steps leave the weights alone: the checkpoint of step 4 holds those of step 2.
    good = load_checkpoint(tmp_path / "checkpoints" / "step_0000002.pt")
    last = load_checkpoint(latest_checkpoint(tmp_path))
    assert last["step"] == 4 and last["nonfinite_skips"] == 2
    assert tensors_equal(good["model"], last["model"]) and tensors_equal(good["ema"], last["ema"])


def check_command_line(args):
    return cli.check_command_line(args, "train")


def test_config_errors_are_one_line_and_exit_2(tmp_path):
    assert "train.stpes" in check_command_line(["train.stpes=3"])
    assert "method/bsx" in check_command_line(["method=bsx"])
    assert "method/bfx" in check_command_line(["-m", "method=bsi,bfx"])  # every sweep value is checked
    assert check_command_line(["-m", "method=bsi,bfn", "train.steps=3"]) is None
    assert check_command_line(["--help"]) is None
    for bad in (["train.schedule=cosin"], ["device=tpu"], ["+model.widht=3"], ["train.batch_size=100", "train.accumulate=3"]):
        with pytest.raises(ConfigError):
            train(config(*bad), run_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        train(config("resume=/nonexistent/step_0000001.pt"), run_dir=tmp_path)
    assert not (tmp_path / "checkpoints").exists()

    typo = run_cli("train.stpes=3", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    missing = run_cli("data=cifar10", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    for out in (typo, missing):
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr
    assert "cifar10" in missing.stderr


@pytest.mark.parametrize("experiment, model, params, batch, lr", [
    ("cifar10_unet", "unet_paper", 30.6e6, 128, 2e-4), ("imagenet32_dit", "DiT-L/2", 456.9e6, 512, 5e-4),
])
def test_paper_experiments_compose(experiment, model, params, batch, lr):
    cfg = config(f"experiment={experiment}", "method=vdm", tiny=False)
    assert (cfg.model.name, cfg.train.batch_size, cfg.train.lr, cfg.method.name) == (model, batch, lr, "vdm")
    assert cfg.train.ema_decay == 0.9999 and cfg.data.name == experiment.split("_")[0]
    proc = build_process(cfg, 256)
    with torch.device("meta"):
        backbone = build_backbone(cfg, (3, 32, 32), proc)
    assert sum(p.numel() for p in backbone.parameters()) == pytest.approx(params, rel=1e-3)


def test_lr_schedule():
    t = config("train.steps=100", "train.warmup=10", "train.lr=1e-3", "train.min_lr=1e-4").train
    assert lr_factor(0, t) == pytest.approx(0.1) and lr_factor(9, t) == pytest.approx(1.0)
    assert lr_factor(10, t) == pytest.approx(1.0) and lr_factor(100, t) == pytest.approx(0.1)
    assert lr_factor(55, t) == pytest.approx(0.55)  # halfway down the cosine: (1 + 0.1) / 2
    constant = config("train.schedule=constant", "train.warmup=0").train
    assert lr_factor(0, constant) == lr_factor(10**6, constant) == 1.0


def test_bfn_discrete_on_binarized_digits_beats_the_baselines(tmp_path):
    """BFN on binary 8x8 digits: far below the uniform 64 ln 2 = 44.4 nats/image, below independent Bernoullis."""
    final = train(config("method=bfn-discrete", "data=binarized_digits", "train.steps=1500", "train.eval_every=500",
                         "train.checkpoint_every=1500", "train.ema_decay=0.99", "eval.ks=[10]", "eval.grid=16",
                         tiny=False), run_dir=tmp_path)
    from benchmarks.discrete import bernoulli_nats

    bernoulli, _ = bernoulli_nats()  # per-pixel Bernoullis fitted on the same training part
    assert 20 < bernoulli < 30  # about 24 nats/image
    assert final["test_nats_per_example"] < bernoulli - 2, final
    assert abs(final["test_nats_per_example"] - final["test_bpd"] * 64 * math.log(2)) < 1e-9
    assert final["test_bpd_10_steps"] < 1.0  # a uniform guess is 1 bit per pixel
    assert (tmp_path / "samples" / "final.png").exists()


@pytest.mark.parametrize("experiment, data, shape, classes, beta_1, batch, params", [
    ("binarized_mnist_bfn", "binarized_mnist", (1, 28, 28), 2, 9.0, 512, None),
    ("text8_transformer", "text8", (1, 256), 27, 0.5625, 416, 257_091_867),
])
def test_discrete_experiments_compose(experiment, data, shape, classes, beta_1, batch, params):
    """BFN's reference settings: max_sqrt_beta 3 and 0.75 there are beta_1 = 9 and 0.5625 here."""
    cfg = config(f"experiment={experiment}", tiny=False)
    assert (cfg.data.name, cfg.train.batch_size, cfg.train.lr, cfg.method.name) == (data, batch, 1e-4, "bfn-discrete")
    proc = build_process(cfg, classes)
    assert isinstance(proc.space, OneHot) and proc.lambda_max == pytest.approx(classes * beta_1)
    with torch.device("meta"):
        backbone = build_backbone(cfg, shape, proc)
    out = backbone(torch.zeros(2, classes * shape[0], *shape[1:], device="meta"), torch.zeros(2, device="meta"))
    assert out.shape == (2, classes * shape[0], *shape[1:])
    if params is not None:
        assert sum(p.numel() for p in backbone.parameters()) == params


def test_bfn_discrete_trains_on_text8_sequences_and_writes_text_samples(tmp_path, monkeypatch):
    """text8's official format scaled down 1000x (100k characters), a tiny transformer, a few steps."""
    import zipfile

    import numpy as np

    import bsi.data.text8 as text8

    for name, value in (("LENGTH", 100_000), ("N_TRAIN_CHARS", 90_000), ("N_VAL_CHARS", 5_000)):
        monkeypatch.setattr(text8, name, value)
    rng = np.random.default_rng(0)
    chars = np.frombuffer(text8.ALPHABET.encode(), np.uint8)[rng.integers(0, 27, 100_000)]
    (tmp_path / "data" / "text8").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "data" / "text8" / "text8.zip", "w") as z:
        z.writestr("text8", chars.tobytes())
    final = train(config("method=bfn-discrete", "data=text8", f"data.root={tmp_path / 'data'}", "data.val_size=19",
                         "model=transformer", "model.dim=32", "model.depth=1", "model.num_heads=2"),
                  run_dir=tmp_path / "run")
    assert math.isfinite(final["test_bpd"]) and final["steps"] == 8
    assert final["test_nats_per_example"] == pytest.approx(final["test_bpd"] * 256 * math.log(2))
    lines = (tmp_path / "run" / "samples" / "final.txt").read_text().splitlines()
    assert len(lines) == 4 and all(len(line) == 256 and set(line) <= set(text8.ALPHABET) for line in lines)
    assert final["samples"].endswith("final.txt")


# -- stop signals inside long phases, bit-exact resumes, failures that keep the run recoverable ----------------


def metric_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    """metrics.csv without its wall-time column: (step, metric, value)."""
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    return [(step, metric, value) for step, _, metric, value in (row.split(",") for row in rows)]


def test_signal_during_validation_stops_at_once_and_the_resume_repeats_every_checkpoint_entry(tmp_path, monkeypatch):
    """A SIGUSR1 inside the validation of step 4 stops it there; the resumed run validates step 4 again and from
    then on writes the very checkpoints of an uninterrupted run, RNG states included, and the same metrics."""
    # Dropout reads the global RNG, which the repeated validation must not move; the adaptive proposal has state.
    overrides = ["model.dropout=0.2", "method.proposal=adaptive", "eval.batch_size=32", "resume=auto"]
    train(config(*overrides), run_dir=tmp_path / "whole")

    evaluations = []

    def signal_in_first_validation(module):
        def pre_hook(mod, args):
            if not mod.training:  # the EMA copy (which inherits this hook) in validation
                evaluations.append(1)
                if len(evaluations) == 1:
                    os.kill(os.getpid(), signal.SIGUSR1)
        module.register_forward_pre_hook(pre_hook)

    with monkeypatch.context() as patch:
        hook_backbone(patch, signal_in_first_validation)
        with pytest.raises(Preempted):
            train(config(*overrides), run_dir=tmp_path / "split")
    assert len(evaluations) == 2  # one batch of 32 of the 137 validation images (two calls), then the stop
    stopped = load_checkpoint(tmp_path / "split" / "checkpoints" / "step_0000004.pt")
    assert stopped["step"] == 4 and stopped["evaluated"] is False and stopped["best_step"] is None
    assert not (tmp_path / "split" / "samples").exists()
    train(config(*overrides), run_dir=tmp_path / "split")

    for name in ("step_0000006.pt", "step_0000008.pt", "best.pt"):
        whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / name)
        split = load_checkpoint(tmp_path / "split" / "checkpoints" / name)
        assert tensors_equal(whole, split), name
    assert metric_rows(tmp_path / "whole") == metric_rows(tmp_path / "split")
    final_whole = json.loads((tmp_path / "whole" / "final.json").read_text())
    final_split = json.loads((tmp_path / "split" / "final.json").read_text())
    assert final_whole["test_bpd"] == final_split["test_bpd"]
    for name in ("step_0000004.png", "step_0000008.png", "final.png"):
        assert (tmp_path / "whole" / "samples" / name).read_bytes() == (tmp_path / "split" / "samples" / name).read_bytes()


def test_sigterm_during_the_final_evaluation_exits_3_at_once_and_a_resume_finishes(tmp_path):
    """The final test bpd takes minutes here (200 draws per image); SIGTERM during it ends the run within a
    batch of 8 images, with the last step's checkpoint on disk."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    args = [*TINY, "train.steps=2", "eval.ks=[]", "eval.n_samples=200", "eval.batch_size=8", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "bsi.train", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "final evaluation: test bpd of 360 examples x 200 draws" in line:
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    output = "".join(seen) + rest
    assert proc.returncode == 3, output
    assert "signal received during the final evaluation" in output and "Traceback" not in output
    assert not (tmp_path / "final.json").exists()
    state = load_checkpoint(tmp_path / "checkpoints" / "step_0000002.pt")
    assert state["step"] == 2 and state["evaluated"] is True
    final = train(config("train.steps=2", "eval.ks=[]", "resume=auto"), run_dir=tmp_path)  # eval.* may change
    assert final["steps"] == 2 and (tmp_path / "final.json").exists()


def test_wrongly_typed_values_are_one_line_errors_and_leave_no_run_directory(tmp_path):
    out = run_cli("train.lr=abc", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == ["error: train.lr='abc' must be a number > 0"]
    assert not (tmp_path / "run").exists()  # hydra had made it (.hydra/, train.log); a failed start removes it
    bad = ["train.betas=abc", "train.precision=3", "eval.ks=abc", "eval.sample.spacing=even", "cpu_threads=0"]
    with pytest.raises(ConfigError) as err:
        train(config(*bad), run_dir=tmp_path)
    for key in ("train.betas", "train.precision", "eval.ks", "eval.sample.spacing", "cpu_threads"):
        assert key in str(err.value)


def tiny_h5_dataset(monkeypatch, root: Path) -> Path:
    """Register dataset ``tiny``: 64 train and 16 test random 8x8 images on 17 levels, stored like the real ones."""
    import numpy as np

    import bsi.data.datasets as datasets
    from bsi.data.h5store import write_splits

    def convert(directory, out, redo):
        rng = np.random.default_rng(0)
        write_splits(out, (1, 8, 8), {split: [(rng.integers(0, 17, (n, 1, 8, 8), dtype=np.uint8), None)]
                                      for split, n in (("train", 64), ("test", 16))}, dataset="tiny")

    monkeypatch.setitem(datasets.DATASETS, "tiny", datasets.DatasetSpec("tiny", (1, 8, 8), 17, convert))
    root.mkdir(parents=True, exist_ok=True)  # data.root must exist; only root/tiny/ is made
    return datasets.prepare("tiny", root)


def damage_image(path: Path, index: int) -> None:
    """Flip a byte of the stored chunk that holds training-split image ``index``, so that reading it fails."""
    import h5py

    with h5py.File(path) as f:
        offset = f["train/images"].id.get_chunk_info_by_coord((index, 0, 0, 0)).byte_offset
    blob = bytearray(path.read_bytes())
    blob[offset + 10] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_a_damaged_chunk_mid_training_saves_the_last_good_step_and_exits_5(tmp_path, monkeypatch):
    from bsi.data import ResumableSampler
    from bsi.exits import EXIT_DATA, DataError

    path = tiny_h5_dataset(monkeypatch, tmp_path / "data")
    overrides = ["data.name=tiny", f"data.root={tmp_path / 'data'}", "data.val_size=0", "train.batch_size=8",
                 "train.checkpoint_every=1", "train.keep_checkpoints=10"]
    train(config(*overrides), run_dir=tmp_path / "clean")
    # Damage the first image that step 4 reads (steps 1-3 read positions 0-23 of epoch 0's order).
    damage_image(path, int(ResumableSampler(64, seed=0).shard(0)[24]))
    with pytest.raises(DataError) as err:
        train(config(*overrides), run_dir=tmp_path / "damaged")
    message = str(err.value)
    assert err.value.exit_status == EXIT_DATA == 5 and "\n" not in message
    assert f"{path}: reading train images failed" in message and "saved the last good step 3" in message
    assert latest_checkpoint(tmp_path / "damaged").name == "step_0000003.pt"
    clean = load_checkpoint(tmp_path / "clean" / "checkpoints" / "step_0000003.pt")
    emergency = load_checkpoint(tmp_path / "damaged" / "checkpoints" / "step_0000003.pt")
    assert tensors_equal(clean, emergency)  # weights, sampler position and RNG states of the end of step 3


def test_a_damaged_validation_chunk_saves_the_step_unevaluated_and_exits_5(tmp_path, monkeypatch):
    from bsi.exits import EXIT_DATA, DataError

    path = tiny_h5_dataset(monkeypatch, tmp_path / "data")
    overrides = ["data.name=tiny", f"data.root={tmp_path / 'data'}", "data.val_size=16", "train.batch_size=8",
                 "train.steps=4", "train.eval_every=2", "eval.grid=0", "eval.ks=[]"]
    train(config(*overrides, "train.checkpoint_every=2"), run_dir=tmp_path / "clean")
    damage_image(path, 60)  # the val split is the stored training split's last 16 images
    with pytest.raises(DataError) as err:  # no checkpoint is due before step 4: step 2 is saved for the failure
        train(config(*overrides, "train.checkpoint_every=4"), run_dir=tmp_path / "damaged")
    message = str(err.value)
    assert err.value.exit_status == EXIT_DATA == 5 and "\n" not in message
    assert f"{path}: reading train images failed" in message and "saved the last good step 2" in message
    assert latest_checkpoint(tmp_path / "damaged").name == "step_0000002.pt"
    clean = load_checkpoint(tmp_path / "clean" / "checkpoints" / "step_0000002.pt")
    emergency = load_checkpoint(tmp_path / "damaged" / "checkpoints" / "step_0000002.pt")
    assert emergency["evaluated"] is False  # a resumed run evaluates step 2 first
    assert tensors_equal(clean["model"], emergency["model"]) and tensors_equal(clean["ema"], emergency["ema"])


def test_a_full_disk_says_so_and_keeps_the_checkpoints_on_disk(tmp_path, monkeypatch):
    import bsi.checkpoint
    from bsi.exits import EXIT_SAVE, SaveError

    real_save, saves = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # the second checkpoint (step 4) meets a full disk, as torch reports it
            f.write(b"PK\x03\x04" + b"x" * 100)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4608 vs 4514")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(bsi.checkpoint.torch, "save", save_until_the_disk_fills)
    with pytest.raises(SaveError) as err:
        train(config("data.val_size=0"), run_dir=tmp_path)
    folder = tmp_path / "checkpoints"
    message = str(err.value)
    assert err.value.exit_status == EXIT_SAVE == 6 and "\n" not in message
    assert f"the disk holding {folder} is full" in message and "nothing was lost" in message
    assert f"continue from {folder / 'step_0000002.pt'}" in message and "inline_container" not in message
    assert sorted(p.name for p in folder.iterdir()) == ["step_0000002.pt"]  # no partial file left
    assert load_checkpoint(folder / "step_0000002.pt")["step"] == 2


def test_a_resume_refuses_other_settings_and_names_them(tmp_path):
    first = ["train.steps=2", "output=point", "data.val_size=0", "eval.ks=[]"]
    train(config(*first), run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        train(config(*first, "method=vdm", "resume=auto"), run_dir=tmp_path)
    assert "method.name=bsi (now vdm)" in str(err.value) and "resume_force=true" in str(err.value)
    with pytest.raises(ConfigError, match=r"output=point \(now discretised\)") as err:
        train(config(*first, "output=discretised", "resume=auto"), run_dir=tmp_path)
    assert "\n" not in str(err.value)
    # Forced, the weights still cannot fit: the message names the setting, not just torch's state-dict error.
    with pytest.raises(ConfigError, match=r"does not fit this model: it was trained with output=point \(now "
                                          r"discretised\) \(size mismatch") as err:
        train(config(*first, "output=discretised", "resume=auto", "resume_force=true"), run_dir=tmp_path)
    # How long, how often and how it is evaluated may change; lr may with resume_force.
    final = train(config(*first, "train.steps=3", "train.log_every=2", "eval.n_samples=2", "resume=auto"),
                  run_dir=tmp_path)
    assert final["steps"] == 3
    with pytest.raises(ConfigError, match="train.lr=0.001 \\(now 0.002\\)"):
        train(config(*first, "train.steps=4", "train.lr=2e-3", "resume=auto"), run_dir=tmp_path)
    assert train(config(*first, "train.steps=4", "train.lr=2e-3", "resume=auto", "resume_force=true"),
                 run_dir=tmp_path)["steps"] == 4


def test_a_garbage_checkpoint_is_named_as_such(tmp_path):
    garbage = tmp_path / "step_0000001.pt"
    garbage.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(ConfigError) as err:
        train(config(f"resume={garbage}"), run_dir=tmp_path / "run")
    assert "not a bsi checkpoint" in str(err.value) and "weights_only" not in str(err.value)


def test_a_short_run_draws_each_picture_once_and_shows_it_in_tensorboard(tmp_path, monkeypatch, caplog):
    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    draws = []
    real = bsi.training.evaluation.draw_samples
    monkeypatch.setattr(bsi.training.evaluation, "draw_samples", lambda *a, **kw: draws.append(1) or real(*a, **kw))
    with caplog.at_level("INFO", logger="bsi.train"):
        final = train(config("eval.select=last"), run_dir=tmp_path)
    assert len(draws) == 2  # steps 4 and 8; final.png is the grid of step 8, the weights it tests
    samples = tmp_path / "samples"
    assert (samples / "final.png").read_bytes() == (samples / "step_0000008.png").read_bytes()
    assert final["samples"] == str(samples / "final.png")
    # 360 test images in one batch of 512, 1 draw, the infinite and the 2-step ELBO, 2 calls per draw, and the
    # 2-step bound's step proposal: 2 calls on the pilot batch
    assert "final evaluation: test bpd of 360 examples x 1 draws for the ELBOs with inf, 2 steps, 6 network calls" \
        in caplog.text and "final sample grid: the grid of this step, already drawn" in caplog.text
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"samples", "final_samples"} <= set(events.Tags()["images"])
    shown = {e.step: e for e in events.Images("samples")}
    assert sorted(shown) == [4, 8]
    png = np.array(Image.open(__import__("io").BytesIO(shown[4].encoded_image_string)))
    assert np.array_equal(png, np.array(Image.open(samples / "step_0000004.png")))


def test_compile_on_a_cpu_says_that_the_first_step_waits(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda model: model)  # the message, not a minute of compiling
    with caplog.at_level("INFO", logger="bsi.train"):
        train(config("train.compile=true", "train.steps=1", "eval.ks=[]", "eval.grid=0"), run_dir=tmp_path)
    assert "torch.compile compiles the model (about a minute on a CPU)" in caplog.text


@pytest.mark.parametrize("name, status", [("ConfigError", 2), ("Preempted", 3), ("DivergedError", 4), ("DataError", 5),
                                          ("SaveError", 6)])
def test_the_command_line_exits_with_each_errors_documented_status(name, status, monkeypatch, capsys):
    import bsi.train as module

    def fail(cfg):
        raise getattr(module, name)("what happened and what to do")

    monkeypatch.setattr(module, "train", fail)
    with pytest.raises(SystemExit) as stop:
        module.main.__wrapped__(None)
    assert stop.value.code == status
    if name != "Preempted":
        assert capsys.readouterr().err.strip() == "error: what happened and what to do"
