"""``python -m bsi.evaluate likelihood|sample|fid checkpoint=PATH [key=value ...]``.

* ``likelihood``: bpd of the ``split`` (default test) from the infinite-step ELBO and the k-step ELBOs
  for ``likelihood.ks``, each term with its standard error and 95% interval -> ``likelihood.json``
  (``likelihood_<split>.json`` for other splits) and a table.
* ``sample``: ``n`` samples (default 64) with any solver and step count -> ``samples.png`` (the first
  ``sample.grid``), ``samples.npz`` and, with ``sample.trajectory=true``, ``trajectory.npz``.
* ``fid``: FID (and KID) of ``n`` new samples (default 50000), or of ``fid.samples=FILE.npz``, against the
  training split -> ``fid.json``.  Needs torch-fidelity's Inception weights as a local file.

Outputs go to ``out_dir`` (default ``RUN/eval``).  Under torchrun or SLURM every rank takes its
share of the examples; example ``i``'s noise comes from ``(seed, i)`` alone, so the numbers are the
same for any number of ranks and batch size.  On a CPU the evaluation runs ``cpu_threads`` torch
threads (1 by default, as training does).  Settings: ``bsi/configs/evaluate.yaml``, checked against
:class:`bsi.config.schema.EvaluateConfig`.  ``checkpoint=RUN`` (a run directory) evaluates the weights
that training tested (``best.pt`` where ``final.json`` says so), else the newest checkpoint.

Exit status (:mod:`bsi.exits`): 0 done; ``EXIT_USAGE`` (2) a setting or input cannot work (missing checkpoint or
weights, unknown task, key or solver, a value of the wrong type or range), one line on stderr and
nothing was run; ``EXIT_STOPPED`` (3) SIGTERM or SIGUSR1 arrived, the evaluation stopped within
a network call and wrote no partial results (there is nothing to resume: rerun the command).
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from . import cli, distributed
from .checkpoint import CheckpointError
from .config import CONFIGS
from .config.validate import validate
from .cpu import use_cpu_settings
from .data import DatasetError
from .evaluation.fid import FIDError
from .evaluation.stop import Interrupted, StopOnSignal, interrupted_message
from .signals import StopRequested
from .evaluation.tasks import MIN_EXAMPLES, RUNNERS
from .exits import ConfigError, EXIT_STOPPED, SaveError, full_disk, full_disk_message


def check_settings(cfg: DictConfig) -> None:
    """Fail before any loading on settings that cannot work, naming every one of them: the schema's checks
    (unknown keys, types, ranges) and those that depend on the task."""
    problems = validate(cfg, "evaluate")
    two = f" (a standard error, FID and KID need at least {MIN_EXAMPLES} examples)"
    if cfg.task == "fid" and cfg.n is not None and cfg.n < MIN_EXAMPLES:
        problems.append(f"n={cfg.n} must be a whole number >= {MIN_EXAMPLES} or null{two}")
    if (cfg.task != "fid" or not cfg.fid.samples) and not cfg.checkpoint:
        problems.append(f"{cfg.task} needs checkpoint=PATH (a step_*.pt file or a run directory)")
    if problems:
        raise ConfigError("; ".join(problems))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.task``; returns what it wrote to JSON (an empty dict on non-main ranks).

    Raises :class:`~bsi.exits.ConfigError` (and the data and checkpoint errors) on bad input,
    :class:`~bsi.evaluation.stop.Interrupted` on SIGTERM, SIGINT or SIGUSR1.
    """
    check_settings(cfg)
    try:
        layout, device = distributed.setup(cfg.device)
    except ValueError as err:  # an unusable device name
        raise ConfigError(str(err)) from None
    if device.type == "cpu":
        use_cpu_settings(cfg.cpu_threads, cfg.cpu_retain_memory)
    try:
        with StopOnSignal() as stop:
            try:
                return RUNNERS[cfg.task](cfg, layout, device, stop)
            except StopRequested:
                raise Interrupted(interrupted_message(cfg.task, stop)) from None
    except OSError as err:
        if not full_disk(err):
            raise
        raise SaveError(f"{full_disk_message(err)}; no result of the {cfg.task} was written whole: free some "
                        f"space and rerun the command") from None
    finally:
        distributed.teardown()


ERRORS = (CheckpointError, DatasetError, ConfigError, FIDError)


@hydra.main(config_path=str(CONFIGS), config_name="evaluate", version_base="1.3")
def hydra_main(cfg: DictConfig) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "task"):
        cli.fail(f"no task given: choose one of {', '.join(cli.EVALUATE_TASKS)} ({cli.EVALUATE_USAGE})")
    try:
        return run(cfg)
    except ERRORS as err:
        cli.fail(str(err))
    except Interrupted as err:
        cli.fail(str(err), EXIT_STOPPED)
    except SaveError as err:
        cli.fail(str(err), err.exit_status)


def main(argv: list[str] | None = None) -> None:
    """``python -m bsi.evaluate TASK [key=value ...]`` (``argv``: the arguments after the program name)."""
    cli.evaluate(argv)


if __name__ == "__main__":
    main()
