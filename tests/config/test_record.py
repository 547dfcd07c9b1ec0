"""A run records the process it was built with and the version; loading, evaluating and resuming use that
record, never what the presets say today."""

import logging
from dataclasses import replace

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

import bsi
from bsi.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_trained, save_checkpoint
from bsi.config import CONFIGS
from bsi.engine import presets
from bsi.exits import ConfigError
from bsi.train import train

TINY = ["train.steps=4", "train.batch_size=32", "train.warmup=1", "train.eval_every=4", "train.checkpoint_every=2",
        "eval.n_samples=1", "eval.val_n_samples=1", "eval.ks=[]", "eval.grid=0"]


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    final = train(config("method=bfn", "method.sigma_1=0.01"), run_dir=run_dir)
    return run_dir, final


def test_config_yaml_checkpoints_and_final_json_hold_the_complete_process_and_the_version(run):
    run_dir, final = run
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["version"] == bsi.__version__ and final["version"] == bsi.__version__
    method = saved["method"]
    assert None not in method.values()
    assert method == final["process"] == presets.resolve_settings("bfn", sigma_1=0.01, data_bins=17, output="discretised")
    assert method["lambda_max"] == pytest.approx(1e4)  # sigma_1^-2, resolved
    assert saved["requested"] == {"sigma_1": 0.01}
    state = load_checkpoint(latest_checkpoint(run_dir))
    assert state["process"] == method and state["version"] == bsi.__version__ and state["config"]["method"] == method


def test_evaluation_and_resume_use_the_record_after_the_presets_change(run, tmp_path, monkeypatch, caplog):
    run_dir, _ = run
    monkeypatch.setattr(presets, "BFN", replace(presets.BFN, lam0=0.5, lambda_min=0.5, proposal="log_uniform"))
    assert presets.make_process("bfn").family.lam0 == 0.5  # what a preset-reading loader would now build
    with caplog.at_level(logging.INFO):
        model = load_trained(run_dir)
    assert model.process.family.lam0 == 1.0 and model.process.proposal.name == "uniform_t"
    assert "would set lam0: 1.0 -> 0.5" in caplog.text and "keeps its recorded settings" in caplog.text
    # Resume in a copy: the continued run keeps the recorded process, and its record says so.
    copy = tmp_path / "resumed"
    (copy / "checkpoints").mkdir(parents=True)
    step2 = run_dir / "checkpoints" / "step_0000002.pt"
    (copy / "checkpoints" / step2.name).write_bytes(step2.read_bytes())
    final = train(config("method=bfn", "method.sigma_1=0.01", "resume=auto"), run_dir=copy)
    assert final["process"]["lam0"] == 1.0 and final["process"]["proposal"] == "uniform_t"
    assert load_checkpoint(latest_checkpoint(copy))["process"] == final["process"]


def test_a_resume_that_asks_for_another_method_setting_is_refused(run, tmp_path):
    run_dir, _ = run
    with pytest.raises(ConfigError, match=r"method.sigma_1=0.01 \(now 0.02\)"):
        train(config("method=bfn", "method.sigma_1=0.02", f"resume={run_dir / 'checkpoints' / 'step_0000002.pt'}"),
              run_dir=tmp_path)


def test_a_checkpoint_without_a_record_needs_legacy_presets(run, tmp_path):
    run_dir, _ = run
    state = load_checkpoint(latest_checkpoint(run_dir))
    state["config"]["method"] = {"name": "bfn", "sigma_1": 0.01, "prediction": None}  # as bsi 0.1 wrote it
    for key in ("version", "requested"):
        state["config"].pop(key)
    state.pop("process"), state.pop("version")
    old = save_checkpoint(tmp_path / "checkpoints" / "step_0000004.pt", state)
    with pytest.raises(CheckpointError, match="written by bsi < 0.2.*legacy_presets=true"):
        load_trained(old)
    model = load_trained(old, legacy_presets=True)
    assert model.process.precision.lambda_max == pytest.approx(1e4)
    x = torch.zeros(2, 1, 8, 8)
    assert model.denoiser(x, torch.full((2,), 10.0)).mean.shape == x.shape
    with pytest.raises(ConfigError, match="legacy_presets=true"):
        train(config("method=bfn", "method.sigma_1=0.01", "resume=auto", "train.steps=6"), run_dir=tmp_path)


@pytest.fixture(scope="module")
def v02_run(tmp_path_factory):
    """A run of bsi 0.2's MLP, its checkpoint rewritten as bsi 0.2 wrote it: no block_layers, norm, time_mlp."""
    run_dir = tmp_path_factory.mktemp("v02")
    train(config("model=mlp_v02", "model.width=16", "model.embedding_dim=8"), run_dir=run_dir)
    state = load_checkpoint(latest_checkpoint(run_dir))
    for key in ("block_layers", "norm", "time_mlp"):
        del state["config"]["model"][key]
    state["config"]["version"] = state["version"] = "0.2.0"
    return save_checkpoint(tmp_path_factory.mktemp("old") / "checkpoints" / "step_0000004.pt", state), state


def test_the_record_holds_every_constructor_keyword_of_the_model(run):
    saved = yaml.safe_load((run[0] / "config.yaml").read_text())
    assert saved["model"] == {"name": "mlp", "kind": "mlp", "width": 320, "num_blocks": 1, "embedding_dim": 32,
                              "dropout": 0.0, "fourier_features": None, "max_steps": 1000, "block_layers": 1,
                              "norm": False, "time_mlp": False}


def test_a_checkpoint_of_bsi_02_rebuilds_its_mlp_and_a_resume_names_the_changed_defaults(v02_run, tmp_path):
    path, state = v02_run
    model = load_trained(path)  # today's defaults would build other layers, and loading the weights would fail
    assert isinstance(model.backbone.blocks[0].net[0], torch.nn.LayerNorm) and hasattr(model.backbone.embed, "mlp")
    torch.testing.assert_close(model.backbone.state_dict(), {k[len("module."):]: v for k, v in state["ema"].items()
                                                            if k.startswith("module.")})
    from bsi.export import write_export
    from bsi.pretrained import from_checkpoint

    exported = bsi.load(write_export(from_checkpoint(path), tmp_path / "export"))  # its config.json is complete
    assert exported.config["model"]["norm"] is True
    torch.testing.assert_close(exported.backbone.state_dict(), model.backbone.state_dict())
    with pytest.raises(ConfigError, match=r"model.block_layers=2 \(now 1\).*model.norm=True \(now False\)"):
        train(config("model.width=16", "model.embedding_dim=8", "train.steps=6", f"resume={path}"), run_dir=tmp_path)
