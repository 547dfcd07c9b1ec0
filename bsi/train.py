"""``python -m bsi.train``: train a belief process (BSI, BFN, VDM) on images, from a laptop CPU to many GPUs.

    python -m bsi.train                                   # BSI, MLP, 8x8 digits, CPU: a few minutes
    python -m bsi.train method=vdm train.steps=2000       # any setting from the command line
    python -m bsi.train experiment=cifar10_unet           # the papers' CIFAR-10 setting
    torchrun --nproc_per_node=8 -m bsi.train experiment=imagenet32_dit
    python -m bsi.train hydra.run.dir=runs/a resume=auto  # continue runs/a from its newest checkpoint

Each step draws a batch, takes the importance-weighted loss of ``proc.training_loss`` (with this
rank's own noise generator), and makes an AdamW step with gradient clipping, followed by an EMA
update; the EMA weights serve validation, the test bpd and the sample grids.  A step with a
non-finite loss or gradient is skipped on every rank.  Checkpoints (``bsi.checkpoint``) hold
everything that decides the next step, so a resumed run repeats an uninterrupted one bit for bit
on CPU, checkpoints included.  The work is in :mod:`bsi.training`: a handful of phases (``train_step``,
``evaluate_step``, ``save``, ``finalize``) over one ``Run``.

A resume refuses a configuration that differs from the checkpoint's in anything but
:data:`bsi.config.resume.RESUME_MAY_CHANGE` (how long, where and how the run is carried out, reported and
evaluated) and lists the differences; ``resume_force=true`` continues with the new settings.

Exit status (:mod:`bsi.exits`): 0 done; ``EXIT_USAGE`` (2) the configuration or the data cannot make a run, and
nothing was run; ``EXIT_STOPPED`` (3) SIGTERM or SIGUSR1 arrived (during training, validation,
a sample grid or the final evaluation), a checkpoint was saved within seconds and ``resume=auto``
with the same ``hydra.run.dir`` continues; ``EXIT_DIVERGED`` (4) ``train.max_nonfinite``
non-finite losses in a row, the last checkpoint is untouched; ``EXIT_DATA`` (5) the data could not
be read mid-run (a damaged file): a checkpoint of the last good step was saved, and after the
data is repaired ``resume=auto`` continues; ``EXIT_SAVE`` (6) a checkpoint could not be written (a
full disk): the checkpoints already on disk are intact.  Each is the ``exit_status`` of the
:class:`~bsi.exits.RunError` that :func:`train` raises.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from . import cli
from .config import CONFIGS
from .exits import ConfigError, DataError, DivergedError, Preempted, RunError, SaveError
from .training import train

log = logging.getLogger(__name__)


@hydra.main(config_path=str(CONFIGS), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    try:
        return train(cfg)
    except Preempted as err:
        log.warning(str(err))
        sys.exit(err.exit_status)
    except RunError as err:  # every other way a run stops on purpose: one line, its documented status
        if not isinstance(err, ConfigError):
            log.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_status)


# The errors train() raises, each with its exit status (bsi.exits).
__all__ = ["ConfigError", "DataError", "DivergedError", "Preempted", "RunError", "SaveError", "main", "train"]

if __name__ == "__main__":
    cli.train()
