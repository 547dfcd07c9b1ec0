"""One schema checks every configuration: unknown keys, types and ranges are one line and status 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from bsi import cli
from bsi.build import build_backbone, build_process
from bsi.config import CONFIGS
from bsi.config.validate import validate
from bsi.data import DATASETS

ROOT = Path(__file__).resolve().parents[2]


def run(program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", program, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_composes_is_valid_and_builds(experiment):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    assert validate(cfg) == []
    spec = DATASETS[cfg.data.name]
    with torch.device("meta"):  # the constructors' checks run (a U-Net that would ignore t is refused), no weights
        build_backbone(cfg, spec.shape, build_process(cfg, spec.bins))


def test_the_mnist5k_experiments_set_the_grid_steps_they_mean():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for experiment in ("mnist5k_unet", "mnist5k_dit"):
            assert compose("train", overrides=[f"experiment={experiment}"]).eval.sample.steps == 25


@pytest.mark.parametrize("program, args, says", [
    ("bsi.train", ["+train.bogus=1"], "unknown key train.bogus"),
    ("bsi.train", ["train.stpes=3"], "unknown key train.stpes"),
    ("bsi.train", ["+model.widht=3"], "unknown key model.widht"),
    ("bsi.train", ["train.steps=0"], "train.steps=0 must be a whole number >= 1"),
    ("bsi.train", ["train.compile=3"], "train.compile=3 must be true or false"),
    ("bsi.evaluate", ["likelihood", "checkpoint=x", "+likelihood.bogus=1"], "unknown key likelihood.bogus"),
    ("bsi.evaluate", ["sample", "checkpoint=x", "sample.steps=2.5"], "sample.steps=2.5 must be a whole number >= 1"),
])
def test_bad_keys_and_values_are_one_line_and_status_2(program, args, says, tmp_path):
    out = run(program, *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and says in out.stderr, out.stderr
    assert not list(tmp_path.iterdir())  # nothing was run, nothing left behind


def test_a_misspelt_key_in_a_config_file_is_one_line_and_status_2(tmp_path):
    folder = tmp_path / "mine" / "experiment"
    folder.mkdir(parents=True)
    (folder / "typo.yaml").write_text("# @package _global_\ntrain:\n  stpes: 5\n")
    out = run("bsi.train", f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "experiment=typo", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == \
        "error: unknown key train.stpes: check its spelling (--cfg job prints every key)", out.stderr


def test_the_command_line_check_validates_every_sweep_value():
    assert "train.steps=0" in cli.check_command_line(["-m", "train.steps=10,0"], "train")
    assert cli.check_command_line(["-m", "train.steps=10,20"], "train") is None


def test_evaluate_help_shows_its_own_settings_not_trainings_groups(tmp_path):
    out = run("bsi.evaluate", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "likelihood:" in out.stdout and "checkpoint:" in out.stdout
    assert "method:" not in out.stdout and "experiment" not in out.stdout
