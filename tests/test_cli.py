"""The console scripts ``bsi-train`` and ``bsi-evaluate``: the same programs as ``python -m``, with tab completion.

The scripts are made here the way pip makes them from ``[project.scripts]`` (import the entry
point, call it, exit with what it returns), so the test needs no installation.
"""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bsi.cli import check_command_line

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
MODULES = {"bsi-train": "bsi.train", "bsi-evaluate": "bsi.evaluate"}


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bin")
    for name, target in SCRIPTS.items():
        module, function = target.split(":")
        script = folder / name
        script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
                          f"if __name__ == '__main__':\n    sys.exit({function}())\n")
        script.chmod(0o755)
    return folder


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}  # as an editable install of this checkout
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=environment)


def test_the_scripts_are_the_module_entry_points():
    assert SCRIPTS == {"bsi-train": "bsi.cli:train", "bsi-evaluate": "bsi.cli:evaluate", "bsi-export": "bsi.export:main"}


@pytest.mark.parametrize("name, args, says", [
    ("bsi-train", ["train.stpes=3"], "error: unknown key train.stpes: check its spelling"),
    ("bsi-evaluate", ["sample", "checkpoint=none", "n=abc"], "error: n='abc' must be a whole number >= 1 or null"),
])
def test_scripts_check_the_command_line_like_python_m(bin_dir, tmp_path, name, args, says):
    script = run([str(bin_dir / name), *args], cwd=tmp_path)  # anywhere: the configs are found from the package
    module = run([sys.executable, "-m", MODULES[name], *args], cwd=ROOT)
    assert script.returncode == module.returncode == 2
    assert script.stderr == module.stderr and script.stderr.startswith(says) and script.stderr.count("\n") == 1


def complete(bin_dir: Path, tmp_path: Path, line: str) -> list[str]:
    """What hydra's bash completion script asks the program when <TAB> is pressed after ``line``."""
    name = line.split()[0]
    out = run([str(bin_dir / name), "-sc", "query=bash"], cwd=tmp_path, COMP_LINE=line, COMP_POINT=str(len(line)))
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_tab_completion_offers_config_groups_and_keys(bin_dir, tmp_path):
    assert complete(bin_dir, tmp_path, "bsi-train method=") == ["method=bfn", "method=bfn-discrete", "method=bsi",
                                                                "method=edm", "method=flow", "method=vdm"]
    assert "train.steps=" in complete(bin_dir, tmp_path, "bsi-train data=digits train.st")
    assert complete(bin_dir, tmp_path, "bsi-evaluate ") == ["likelihood", "sample", "fid"]
    assert complete(bin_dir, tmp_path, "bsi-evaluate li") == ["likelihood"]
    assert complete(bin_dir, tmp_path, "bsi-evaluate likelihood likelihood.n_") == ["likelihood.n_samples="]


def test_completion_install_and_hydra_help(bin_dir, tmp_path):
    out = run([str(bin_dir / "bsi-train"), "--shell-completion", "install=bash"], cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.rstrip().endswith("-F hydra_bash_completion bsi-train"), out.stdout
    out = run([str(bin_dir / "bsi-evaluate"), "--hydra-help"], cwd=tmp_path)
    assert out.returncode == 0 and "--shell-completion" in out.stdout and "bsi-evaluate" in out.stdout, out.stderr


def test_every_value_of_an_evaluation_sweep_is_checked():
    args = ["-m", "task=likelihood", "checkpoint=a,b", "likelihood.ks=[1],[2]"]
    assert check_command_line(args, "evaluate") is None
    assert "likelihood.kz" in check_command_line([*args, "likelihood.kz=1,2"], "evaluate")
    assert "method/bfx" in check_command_line(["-m", "method=bsi,bfx"], "train")
