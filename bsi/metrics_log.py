"""Training metrics to any of ``RUN/metrics.csv``, TensorBoard (``RUN/tensorboard``) and Weights & Biases.

``logger`` (the config key) lists the destinations, several allowed: ``csv``, ``tensorboard``,
``wandb``; the default is ``[csv, tensorboard]``.  wandb is optional (``pip install 'bsi[wandb]'``);
asking for it without the package is a one-line error from :func:`check_loggers` before anything runs.

A wandb run's id is kept in ``RUN/wandb_id.txt`` (written atomically when the run first starts), so a
resumed or requeued job continues the same wandb run (``resume="allow"``).  Its values are plotted
against the metric ``step`` (the optimiser step), not wandb's own counter, so the rows that a
resumed run logs again for steps after its checkpoint are accepted.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from .atomic import atomic_file

FIELDS = ["step", "seconds", "metric", "value"]
LOGGERS = ("csv", "tensorboard", "wandb")
DEFAULT_LOGGERS = ("csv", "tensorboard")
WANDB_ID = "wandb_id.txt"

log = logging.getLogger(__name__)


def check_loggers(names: Sequence[str]) -> tuple[str, ...]:
    """The ``logger`` list, checked: known names, and wandb importable when asked for.

    Raises ``ValueError`` with one line that says what to do.
    """
    names = tuple([names] if isinstance(names, str) else names)
    if unknown := [name for name in names if name not in LOGGERS]:
        raise ValueError(f"logger: unknown {', '.join(map(repr, unknown))}; choose any of {', '.join(LOGGERS)}, "
                         f"e.g. logger=[csv,tensorboard,wandb]")
    if "wandb" in names:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ValueError("logger=wandb needs the wandb package: pip install 'bsi[wandb]' (or pip install wandb), "
                             "or leave wandb out of logger") from None
    return names


def wandb_run_id(run_dir: Path) -> str:
    """The wandb run id of ``run_dir``: read from ``wandb_id.txt``, or made and written there once."""
    path = Path(run_dir) / WANDB_ID
    if path.is_file() and (kept := path.read_text().strip()):
        return kept
    run_id = secrets.token_hex(8)  # wandb accepts any id of letters and digits
    with atomic_file(path) as tmp:
        tmp.write_text(run_id + "\n")
    return run_id


class CSVFile:
    """``metrics.csv``: one ``step, seconds, metric, value`` row per value, each call's rows whole or not at all."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.unwritten: list[tuple[int, dict[str, float]]] = []  # (step, values) that met a full disk
        rows = []
        if path.exists():
            with open(path, newline="") as f:
                rows = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        self.offset = max((float(row["seconds"]) for row in rows), default=0.0)
        with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, step: int, seconds: str, values: Mapping[str, float]) -> None:
        text = io.StringIO()
        writer = csv.writer(text)
        for key, value in values.items():
            writer.writerow([step, seconds, key, f"{float(value):.7g}"])
        data = text.getvalue().encode()
        with open(self.path, "ab") as f:
            start = f.tell()
            try:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                # A full disk may take part of a row: cut the file back to its last whole row, then let
                # the run stop (bsi.exits.SaveError) after an emergency checkpoint, which keeps the rows.
                self.unwritten.append((step, {key: float(value) for key, value in values.items()}))
                try:
                    f.truncate(start)
                except OSError:
                    pass
                raise


class MetricsLog:
    """Scalars (and sample grids, text samples) of a training run, to the destinations in ``loggers``.

    Only the main rank writes (``enabled``).  ``resume_step`` drops CSV rows beyond the step a
    resumed run continues from (they were logged after that checkpoint by the interrupted run and
    will be logged again), so a resumed run's log reads like an uninterrupted one; TensorBoard does
    the same with ``purge_step``.  ``seconds`` is wall time of the run: since this process started
    the log, plus the largest ``seconds`` of the rows kept from before a resume.  ``wandb``:
    keywords for ``wandb.init`` (``project``, ``entity``, ``name``, ``group``, ``tags``, ``mode``);
    ``config``: the run's configuration, shown in wandb.
    """

    def __init__(self, run_dir: Path, enabled: bool = True, loggers: Sequence[str] = DEFAULT_LOGGERS,
                 resume_step: int = 0, wandb: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None):
        self.enabled, self.run_dir = enabled, Path(run_dir)
        self.csv, self.writer, self.wandb = None, None, None
        self.started, self.offset = time.perf_counter(), 0.0
        if not enabled:
            return
        loggers = check_loggers(loggers)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if "csv" in loggers:
            self.csv = CSVFile(self.run_dir / "metrics.csv", resume_step)
            self.offset = self.csv.offset
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"),
                                        purge_step=resume_step + 1 if resume_step else None)
        if "wandb" in loggers:
            self.wandb = self._start_wandb(dict(wandb or {}), config)

    def _start_wandb(self, options: dict[str, Any], config: Mapping[str, Any] | None) -> Any:
        import wandb

        options = {k: v for k, v in options.items() if v not in (None, [], "")}
        options.setdefault("name", self.run_dir.name)
        run = wandb.init(id=wandb_run_id(self.run_dir), resume="allow", dir=str(self.run_dir),
                         config=dict(config or {}), **options)
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        return run

    def log(self, step: int, **values: float) -> None:
        """Record ``metric=value`` pairs at ``step``: all rows or none (a full disk raises ``OSError`` ``ENOSPC``
        and leaves the file as it was)."""
        if not self.enabled:
            return
        if self.csv is not None:
            self.csv.write(step, f"{self.offset + time.perf_counter() - self.started:.3f}", values)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()  # a killed run keeps what it logged
        if self.wandb is not None:
            self.wandb.log({**{key: float(value) for key, value in values.items()}, "step": step})

    @property
    def unwritten(self) -> list[tuple[int, dict[str, float]]]:
        """``(step, values)`` of the ``metrics.csv`` rows a full disk kept out (a checkpoint carries them)."""
        return list(self.csv.unwritten) if self.csv is not None else []

    def write_unwritten(self, rows: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Write the rows an interrupted run could not (from its checkpoint), before any new one."""
        for step, values in rows:
            if self.csv is not None:
                self.csv.write(int(step), f"{self.offset:.3f}", values)

    def image(self, step: int, tag: str, image: Tensor) -> None:
        """Show uint8 ``image`` ``(C, H, W)`` (a sample grid) under ``tag`` at ``step``."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="CHW")
            self.writer.flush()
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(image.permute(1, 2, 0).cpu().numpy()), "step": step})

    def text(self, step: int, tag: str, lines: list[str]) -> None:
        """Show ``lines`` (text samples) under ``tag`` at ``step``, as preformatted text."""
        if self.writer is not None:
            self.writer.add_text(tag, "\n".join("    " + line for line in lines), step)  # Markdown code block
            self.writer.flush()
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Html("<pre>" + html.escape("\n".join(lines)) + "</pre>"), "step": step})

    def close(self, quiet: bool = False) -> None:
        """Close the destinations.  ``quiet``: the run is already ending with an error, which a failure here (a
        TensorBoard writer re-raises the full disk its thread met) must not replace: it is logged instead."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except OSError as err:
                if not quiet:
                    raise
                log.warning(f"could not close the TensorBoard log in {self.run_dir / 'tensorboard'}: {err}")
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def open_metrics_log(cfg: Any, run_dir: Path, enabled: bool = True, resume_step: int = 0) -> MetricsLog:
    """The :class:`MetricsLog` a run's config asks for: ``logger`` (default csv and tensorboard) and
    ``wandb`` (``wandb.init`` keywords); wandb also gets the whole resolved config to show."""
    from omegaconf import OmegaConf

    loggers = check_loggers(list(OmegaConf.select(cfg, "logger", default=None) or DEFAULT_LOGGERS))
    wandb = OmegaConf.select(cfg, "wandb", default=None)
    options = OmegaConf.to_container(wandb, resolve=True) if wandb is not None else None
    config = OmegaConf.to_container(cfg, resolve=True) if "wandb" in loggers else None
    return MetricsLog(run_dir, enabled, loggers, resume_step, wandb=options, config=config)
