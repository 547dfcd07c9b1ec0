"""docs/api.md's code blocks run as written, on a tiny export made here, and give what the text says."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from bsi.data import to_float, to_uint8
from bsi.export import export

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.steps=2", "train.batch_size=32", "train.warmup=1", "train.eval_every=2", "train.checkpoint_every=2",
        "eval.n_samples=1", "eval.val_n_samples=1", "eval.ks=[]", "eval.grid=0", "model.width=32",
        "model.embedding_dim=16"]


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)


@pytest.fixture
def in_a_folder_with_an_export(tmp_path, monkeypatch) -> Path:
    """``tmp_path`` as the working directory, holding ``runs/digits/export`` of a 2-step digits run."""
    from bsi.train import train

    with initialize_config_dir(config_dir=str(ROOT / "bsi" / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=TINY)
    train(cfg, run_dir=tmp_path / "runs" / "digits")
    export(tmp_path / "runs" / "digits")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_page_has_the_two_examples():
    assert len(blocks()) == 2


def test_load_sample_and_score_as_documented(in_a_folder_with_an_export, capsys):
    scope: dict = {}
    exec(compile(blocks()[0], "docs/api.md", "exec"), scope)
    x, levels, score = scope["x"], scope["levels"], scope["score"]
    assert x.shape == (16, 1, 8, 8) and torch.equal(x, to_float(levels, 17))  # on the 17 levels, as the comment says
    assert levels.dtype == torch.uint8 and int(levels.max()) <= 16
    assert score.n == 64 and 0 < score.mean < 20 and score.stderr > 0
    assert capsys.readouterr().out.strip() == f"{score.mean:.3f} ± {score.stderr:.3f} bpd"


def test_train_on_your_own_tensors_as_documented(capsys):
    scope: dict = {}
    exec(compile(blocks()[1], "docs/api.md", "exec"), scope)
    samples, mine = scope["samples"], scope["mine"]
    assert samples.shape == (8, 1, 8, 8) and torch.equal(samples, to_float(to_uint8(samples, 256), 256))
    assert torch.equal(samples, mine.sample(8, steps=20, seed=1))
    assert int(scope["ema"].n_averaged) == 30
    score = scope["score"]
    assert capsys.readouterr().out.strip() == f"{score.mean:.2f} ± {score.stderr:.2f} bpd"
    # uniform random pixels carry 8 bits per dimension, and an ELBO lies above -log p: at least 8 up to its noise
    assert math.isfinite(score.mean) and score.mean + 3 * score.stderr > 8.0 and score.stderr < 0.2


def readme_block() -> str:
    """The Python block of README.md's "Python API" section."""
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return block


def test_the_readmes_python_api_runs_as_written(in_a_folder_with_an_export, capsys):
    scope: dict = {}
    exec(compile(readme_block(), "README.md", "exec"), scope)
    x, score = scope["x"], scope["score"]
    assert x.shape == (16, 1, 8, 8) and torch.equal(x, to_float(to_uint8(x, 17), 17))  # on the data's levels
    assert score.n == 360 and 0 < score.mean < math.log2(17) + 1 and score.stderr > 0
    assert capsys.readouterr().out.strip() == f"test: {score.mean:.3f} ± {score.stderr:.3f} bpd"
