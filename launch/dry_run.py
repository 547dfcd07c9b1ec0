"""Print the sbatch script that ``hydra/launcher=slurm`` would submit, without a cluster.

Usage (any overrides of ``python -m bsi.train``, including ``hydra.launcher.*``; ``--config evaluate``
for those of ``python -m bsi.evaluate``)::

    python launch/dry_run.py experiment=cifar10_unet method=bsi hydra.launcher.nodes=2 hydra.launcher.gpus_per_node=8

It composes the same configuration, hands the launcher's settings to submitit through the
launchers' own code (``hydra_plugins/bsi_launcher``), and prints submitit's sbatch script for one job of the sweep.  It
writes nothing: the script names the sweep's ``.submitit`` folder, which a real launch creates.
A bad override ends with one line on stderr and status 2, as ``python -m bsi.train`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bsi from this checkout, also where it is not installed

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra_plugins.bsi_launcher.launcher import make_executor  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bsi import cli  # noqa: E402
from bsi.config import CONFIGS  # noqa: E402

USAGE = "usage: python launch/dry_run.py [--config train|evaluate] [override ...]"


def sbatch_script(overrides: list[str], config_name: str = "train") -> str:
    """The sbatch text for one job with ``overrides`` under the SLURM launcher config."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3", job_name=config_name):
        cfg = compose(config_name, overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    # No cluster here: let submitit believe srun exists so that it builds the script it would submit.
    # Building it creates no folder; only a submission would.
    with mock.patch("submitit.slurm.slurm.shutil.which", return_value="/usr/bin/srun"):
        slurm = make_executor(params, "slurm")._executor
    return slurm._make_submission_file_text(slurm._submitit_command_str, "DRYRUN")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    config = "train"
    if args[:1] == ["--config"]:
        if len(args) < 2 or args[1] not in ("train", "evaluate"):
            cli.fail(f"--config takes train or evaluate ({USAGE})")
        config, args = args[1], args[2:]
    if any(arg.startswith("-") for arg in args):
        cli.fail(f"only overrides (key=value) here, not {next(a for a in args if a.startswith('-'))} ({USAGE})")
    reason = cli.check_command_line(["hydra/launcher=slurm", *args], config)
    if reason is not None:
        cli.fail(reason)
    print(sbatch_script(args, config_name=config))


if __name__ == "__main__":
    main()
