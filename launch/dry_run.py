"""Print the sbatch script that ``hydra/launcher=slurm`` would submit, without a cluster.

Usage (any overrides of ``python -m bsi.train``, including ``hydra.launcher.*``)::

    python launch/dry_run.py experiment=cifar10_unet method=bsi hydra.launcher.nodes=2 hydra.launcher.gpus_per_node=8

It composes the same configuration, hands the launcher's settings to submitit exactly as
hydra-submitit-launcher does, and prints submitit's sbatch script for one job of the sweep.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from unittest import mock

import submitit
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def sbatch_script(overrides: list[str], config_name: str = "train") -> str:
    """The sbatch text for one job with ``overrides`` under the SLURM launcher config."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name, overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_", None)
    params["name"] = "bsi.train"
    # A temporary folder stands in for the sweep's .submitit folder, so a dry run writes nothing there.
    folder = tempfile.mkdtemp(prefix="bsi-dry-run-")
    # No cluster here: let submitit believe srun exists so that it builds the script it would submit.
    with mock.patch("submitit.slurm.slurm.shutil.which", return_value="/usr/bin/srun"):
        executor = submitit.AutoExecutor(cluster="slurm", folder=folder, slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if v is not None})
    command = " ".join([sys.executable, "-u", "-m", "submitit.core._submit", folder])
    return executor._executor._make_submission_file_text(command, "DRYRUN")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    config = "train"
    if args[:1] == ["--config"]:
        config, args = args[1], args[2:]
    print(sbatch_script(args, config_name=config))


if __name__ == "__main__":
    main()
