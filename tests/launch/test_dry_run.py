"""The SLURM submission that hydra/launcher=slurm would make, checked without a cluster."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "launch"))

from dry_run import sbatch_script  # noqa: E402

# A PATH on which python3 is the test's interpreter, as for a user with an activated venv.
VENV_PATH = f"{Path(sys.executable).parent}:/usr/bin:/bin"


def launch(script: str, *args: str, cwd: Path = ROOT, root: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "launch" / script), *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": VENV_PATH, "HOME": os.environ.get("HOME", "/tmp"), **env}, timeout=120)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and not out.stdout, out.stderr[-2000:]
    return out.stderr


def test_requested_resources_reach_the_sbatch_script():
    script = sbatch_script([
        "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=8", "hydra.launcher.partition=gpu",
        "hydra.launcher.account=proj", "hydra.launcher.qos=high", "hydra.launcher.timeout_min=600",
        "hydra.launcher.constraint=a100", "hydra.launcher.mem_gb=200", "+hydra.launcher.additional_parameters.reservation=r1",
    ])
    for line in ["--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8", "--partition=gpu", "--account=proj",
                 "--qos=high", "--time=600", "--constraint=a100", "--mem=200GB", "--reservation=r1", "--signal=USR2@120"]:
        assert f"#SBATCH {line}" in script, line
    assert "srun" in script and "submitit.core._submit" in script


def test_one_task_per_gpu_by_default():
    script = sbatch_script(["hydra.launcher.gpus_per_node=4"])
    assert "#SBATCH --ntasks-per-node=4" in script


@pytest.mark.parametrize("script", ["cifar10.sh", "imagenet32.sh"])
def test_paper_grid_scripts_dry_run(script):
    out = launch(script, "--dry-run", "hydra.launcher.partition=gpu")
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --partition=gpu" in out.stdout and "#SBATCH --job-name=bsi.train" in out.stdout
    if script == "imagenet32.sh":
        assert "#SBATCH --gpus-per-node=8" in out.stdout and "#SBATCH --ntasks-per-node=8" in out.stdout


def test_bad_overrides_in_a_dry_run_end_with_one_line_and_status_2():
    assert "Could not find 'method/bsii'" in one_line_error(launch("cifar10.sh", "--dry-run", "method=bsii"))
    assert "unknown key train.stpes" in one_line_error(launch("cifar10.sh", "--dry-run", "train.stpes=3"))
    err = one_line_error(launch("eval_likelihood.sh", "--dry-run", str(ROOT / "README.md"), "likelihood.kz=3"))
    assert "unknown key likelihood.kz" in err


def test_a_dry_run_writes_nothing_and_names_the_real_folders(tmp_path):
    scratch, sweep = tmp_path / "tmp", tmp_path / "sweep"
    scratch.mkdir()
    out = launch("cifar10.sh", "--dry-run", f"hydra.sweep.dir={sweep}", TMPDIR=str(scratch))
    assert out.returncode == 0, out.stderr
    assert f"#SBATCH --output={sweep}/.submitit/%j/%j_0_log.out" in out.stdout
    assert f"-m submitit.core._submit {sweep}/.submitit/%j" in out.stdout
    assert list(scratch.iterdir()) == [] and not sweep.exists()  # no bsi-dry-run-* folder left behind


def test_likelihood_sweep_dry_run_names_bsi_evaluate_and_expands_the_pattern(tmp_path):
    for name in ("a,b/step_1.pt", "c/step_2.pt", "c/other.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    out = launch("eval_likelihood.sh", "--dry-run", "**/step_*.pt", "hydra.launcher.partition=gpu", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --job-name=bsi.evaluate" in out.stdout and "#SBATCH --partition=gpu" in out.stdout
    assert f"2 checkpoint(s) match, one job each; above: the sbatch script of the first, {tmp_path}/a,b/step_1.pt" \
           in out.stderr


def test_likelihood_sweep_without_a_match_says_so(tmp_path):
    err = one_line_error(launch("eval_likelihood.sh", "--dry-run", "runs/*/best.pt", cwd=tmp_path))
    assert err == f"error: no checkpoint matches 'runs/*/best.pt' (in {tmp_path}); quote the pattern so that this " \
                  f"script expands it\n"
    assert "give a pattern" in one_line_error(launch("eval_likelihood.sh", cwd=tmp_path))


def fake_python(folder: Path, name: str, target: str | None) -> Path:
    """An executable ``folder/name``: ``target`` under another name, or (``None``) a Python without packages."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\nexec {target} \"$@\"\n" if target else "#!/bin/sh\nexit 1\n")
    path.chmod(0o755)
    return path


def test_launch_scripts_use_the_python_given_found_or_say_what_to_do(tmp_path):
    """A user without an activated venv used to get `No module named 'submitit'` from a bare `python`."""
    bare = fake_python(tmp_path / "bare", "python3", None)
    without_venv = f"{bare.parent}:/usr/bin:/bin"
    err = one_line_error(launch("cifar10.sh", "--dry-run", PYTHON=str(bare)))
    assert f"PYTHON={bare} cannot import torch, hydra and submitit" in err
    out = launch("cifar10.sh", "--dry-run", PATH=without_venv, PYTHON=sys.executable)
    assert out.returncode == 0 and "#SBATCH --job-name=bsi.train" in out.stdout, out.stderr
    # A copy of the repository, to see the fallback to its .venv/bin/python and the message without one.
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    for name in ("cifar10.sh", "python.sh", "dry_run.py"):
        (repo / "launch" / name).write_text((ROOT / "launch" / name).read_text())
    for name in ("bsi", "hydra_plugins"):
        (repo / name).symlink_to(ROOT / name)
    err = one_line_error(launch("cifar10.sh", "--dry-run", root=repo, PATH=without_venv))
    assert "no python with bsi's dependencies" in err and "set PYTHON=" in err
    fake_python(repo / ".venv" / "bin", "python", sys.executable)
    out = launch("cifar10.sh", "--dry-run", root=repo, PATH=without_venv)
    assert out.returncode == 0 and "#SBATCH --job-name=bsi.train" in out.stdout, out.stderr
