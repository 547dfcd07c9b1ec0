"""Weights you can share: ``python -m bsi.export`` and ``bsi.load`` on a tiny model trained here."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

import bsi
from bsi.checkpoint import CheckpointError, ema_weights, latest_checkpoint, load_checkpoint, load_trained, save_checkpoint
from bsi.data import build_dataset, to_float, to_uint8
from bsi.engine.presets import resolve_settings
from bsi.export import export, main
from bsi.evaluation import evaluate_likelihood

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.steps=3", "train.batch_size=32", "train.warmup=1", "train.log_every=1", "train.eval_every=3",
        "train.checkpoint_every=3", "eval.n_samples=1", "eval.val_n_samples=1", "eval.ks=[]", "eval.grid=0",
        "model.width=32", "model.embedding_dim=16"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 3-step digits run of a small MLP (a few seconds)."""
    from bsi.train import train

    run = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=str(ROOT / "bsi" / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=TINY)
    train(cfg, run_dir=run)
    return run


@pytest.fixture(scope="module")
def export_dir(run_dir) -> Path:
    return export(run_dir)


@pytest.fixture(scope="module")
def test_images() -> torch.Tensor:
    test = build_dataset({"name": "digits"}, "test")
    return test.__getitems__(list(range(24)))


def test_export_holds_the_checkpoints_ema_weights_and_the_resolved_record(run_dir, export_dir):
    assert export_dir == run_dir / "export"
    assert sorted(p.name for p in export_dir.iterdir()) == ["config.json", "model.safetensors"]
    state = load_checkpoint(latest_checkpoint(run_dir))
    saved, ema = load_file(export_dir / "model.safetensors"), ema_weights(state["ema"])
    assert saved.keys() == ema.keys() and all(torch.equal(saved[k], ema[k]) for k in ema)
    assert not all(torch.equal(ema[k], state["model"][k]) for k in ema)  # EMA, not the raw weights
    config = json.loads((export_dir / "config.json").read_text())
    assert config["process"] == resolve_settings("bsi", output="discretised", data_bins=17)
    assert config["data"] == {"shape": [1, 8, 8], "bins": 17, "name": "digits"}
    assert config["model"]["name"] == "mlp" and config["model"]["width"] == 32
    assert config["bsi_version"] == bsi.__version__ and config["step"] == 3 and config["weights"] == "ema"


def test_raw_weights_by_command_line(run_dir, tmp_path, capsys):
    assert main([str(run_dir), "--out", str(tmp_path / "raw"), "--weights", "raw"]) == 0
    assert f"exported raw weights to {tmp_path / 'raw'}" in capsys.readouterr().out
    state = load_checkpoint(latest_checkpoint(run_dir))
    saved = load_file(tmp_path / "raw" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in state["model"].items())
    assert main([str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_samples_are_on_the_levels_and_reproducible_by_seed(export_dir):
    model = bsi.load(export_dir)
    a = model.sample(4, steps=10, seed=1)
    assert a.shape == (4, 1, 8, 8) and a.dtype == torch.float32 and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, to_float(to_uint8(a, 17), 17))  # exactly on the 17 levels
    assert torch.equal(a, model.sample(4, steps=10, seed=1, batch_size=3))
    assert torch.equal(a[:2], model.sample(2, steps=10, seed=1))  # sample i depends on (seed, i) only
    assert not torch.equal(a, model.sample(4, steps=10, seed=2))


def test_bpd_is_the_likelihood_evaluators_number(run_dir, export_dir, test_images):
    trained = load_trained(run_dir)
    images = [image for image in test_images]  # a dataset of the same 24 images (the k-step pilot reads them too)
    reference = evaluate_likelihood(trained.process, trained.denoiser, images, 17, (1, 8, 8), ks=[5], n_samples=2,
                                    seed=3, batch_size=512, device=torch.device("cpu"), show_progress=False)
    for source in (export_dir, run_dir):
        model = bsi.load(source)
        inf, five = model.bpd(test_images, n_samples=2, seed=3), model.bpd(test_images, k=5, n_samples=2, seed=3)
        assert inf.mean == pytest.approx(reference.rows[0].terms["total"].mean, rel=1e-6)
        assert inf.stderr == pytest.approx(reference.rows[0].terms["total"].stderr, rel=1e-6)
        assert five.mean == pytest.approx(reference.rows[1].terms["total"].mean, rel=1e-6)
        assert inf.n == 24 and 0 < inf.mean < 10
    with pytest.raises(ValueError, match="needs level indices, uint8"):
        model.bpd(to_float(test_images, 17))


def test_a_hub_id_loads_from_the_cache_offline(export_dir, tmp_path):
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-digits"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((export_dir / name).read_bytes())
    out = tmp_path / "samples.pt"
    code = (f"import bsi, torch; m = bsi.load('someone/tiny-digits'); "
            f"torch.save(m.sample(3, steps=5, seed=0), {str(out)!r})")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None), env.pop("HUGGINGFACE_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.equal(torch.load(out), bsi.load(export_dir).sample(3, steps=5, seed=0))
    missing = subprocess.run([sys.executable, "-c", "import bsi; bsi.load('someone/absent')"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert ("CheckpointError: someone/absent is no local file or folder, and cannot be fetched from the Hugging Face "
            "Hub") in missing.stderr


def test_a_tampered_or_foreign_export_is_refused(export_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_text((export_dir / "config.json").read_text())
    (copy / "model.safetensors").write_bytes((export_dir / "model.safetensors").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="does not match config.json"):
        bsi.load(copy)
    (copy / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is not a bsi export"):
        bsi.load(copy)
    with pytest.raises(CheckpointError, match="neither a file, a folder nor a Hugging Face Hub id"):
        bsi.load(str(tmp_path / "a" / "b" / "c"))


def test_the_checkpoints_record_wins_over_todays_presets(run_dir, tmp_path, caplog):
    state = load_checkpoint(latest_checkpoint(run_dir))
    state["process"] = resolve_settings("bsi", output="discretised", data_bins=17, sigma_max=50.0)
    save_checkpoint(tmp_path / "recorded.pt", state)
    assert bsi.load(tmp_path / "recorded.pt").process.sampling.sigma_max == 50.0
    state.pop("process")
    state["config"].pop("version")  # as bsi < 0.2 wrote it: no record at all, method settings left to the presets
    state["config"]["method"] = {"name": "bsi", "lam0": None, "sigma_max": None}
    save_checkpoint(tmp_path / "old.pt", state)
    with pytest.raises(CheckpointError, match="legacy_presets=true"):
        bsi.load(tmp_path / "old.pt")
    with caplog.at_level(logging.INFO, logger="bsi.checkpoint"):
        model = bsi.load(tmp_path / "old.pt", legacy_presets=True)
    assert model.process.sampling.sigma_max == 80.0 and "rebuilt them from today's presets" in caplog.text
    exported = export(tmp_path / "recorded.pt", tmp_path / "out")
    assert json.loads((exported / "config.json").read_text())["process"]["sigma_max"] == 50.0


def test_a_learned_proposal_travels_with_the_export(tmp_path):
    from bsi.engine.presets import process_from_settings
    from bsi.export import write_export
    from bsi.models import build_model, model_settings
    from bsi.pretrained import Pretrained

    record = resolve_settings("bsi", output="discretised", data_bins=17, proposal="adaptive")
    proc = process_from_settings(record)
    lam = torch.logspace(-2, 6, 64, dtype=torch.float64)
    proc.proposal.update(lam, torch.rand(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    model = model_settings({"name": "mlp", "width": 16, "embedding_dim": 8})  # an export records every keyword
    net = build_model(**model, in_channels=proc.in_channels(1), out_channels=proc.out_channels(1), image_size=8)
    config = {"format": "bsi-export-1", "bsi_version": bsi.__version__, "model": model, "process": record,
              "data": {"shape": [1, 8, 8], "bins": 17, "name": "digits"}, "step": 0, "weights": "ema"}
    folder = write_export(Pretrained(proc, net, (1, 8, 8), 17, config), tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "proposal.safetensors"]
    loaded = bsi.load(folder).process.proposal.state_dict()
    assert loaded.keys() == proc.proposal.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in proc.proposal.state_dict().items())
    assert not all(torch.equal(v, torch.zeros_like(v)) for v in loaded.values())
