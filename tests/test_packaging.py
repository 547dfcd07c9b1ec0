"""The package is what users install: a pure-Python wheel with its configs that trains and evaluates
from outside the repository."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import bsi

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (found,) = out.glob("bsi-*.whl")
    return found


def test_the_wheel_is_pure_python_with_its_configs_and_no_other_top_level_package(wheel):
    assert wheel.name == f"bsi-{bsi.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"bsi", "hydra_plugins"}
    for config in ("train.yaml", "evaluate.yaml", "method/bsi.yaml", "model/dit.yaml", "data/digits.yaml",
                   "experiment/imagenet32_dit.yaml", "hydra/launcher/slurm.yaml"):
        assert f"bsi/configs/{config}" in names
    assert not [n for n in names if n.endswith((".c", ".so", ".pyd"))]


def test_the_version_is_the_project_metadatas():
    text = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{bsi.__version__}"' in text


@pytest.mark.slow
def test_the_installed_wheel_trains_and_evaluates_outside_the_repository(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The test environment's dependencies (torch, hydra ...), after the venv's own site-packages: nothing to download.
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["BSI_DATA"] = str(tmp_path / "data")
    where = subprocess.run([str(python), "-c", "import bsi; print(bsi.__file__, bsi.__version__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(site)) and bsi.__version__ in where  # the wheel's bsi, not the clone's
    train = subprocess.run(
        [str(env_dir / "bin" / "bsi-train"), "train.steps=4", "train.warmup=1", "train.eval_every=4",
         "train.batch_size=32", "eval.ks=[]", "eval.n_samples=1", "eval.grid=0", "hydra.run.dir=run"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    record = (work / "run" / "config.yaml").read_text()
    assert f"version: {bsi.__version__}" in record and "lam0: 0.01" in record
    evaluate = subprocess.run(
        [str(env_dir / "bin" / "bsi-evaluate"), "likelihood", "checkpoint=run", "likelihood.ks=[]",
         "likelihood.limit=16", "likelihood.n_samples=1"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    assert (work / "run" / "eval" / "likelihood.json").is_file()
