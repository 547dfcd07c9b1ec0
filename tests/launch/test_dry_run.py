"""The SLURM submission that hydra/launcher=slurm would make, checked without a cluster."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "launch"))

from dry_run import sbatch_script  # noqa: E402


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
    out = subprocess.run(["bash", str(ROOT / "launch" / script), "--dry-run", "hydra.launcher.partition=gpu"],
                         capture_output=True, text=True, cwd=ROOT, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --partition=gpu" in out.stdout
    if script == "imagenet32.sh":
        assert "#SBATCH --gpus-per-node=8" in out.stdout and "#SBATCH --ntasks-per-node=8" in out.stdout
