"""Submitit launchers that say what they launched, report each job as it ends, and sum up.

hydra-submitit-launcher's own ``launch`` submits the jobs and then waits on them in silence; a
failed job ends the whole sweep in a traceback, and the local executor leaves an empty folder
literally named ``%j`` behind.  These subclasses submit the same jobs through the same executor
(:func:`make_executor`, which ``launch/dry_run.py`` uses too), then:

* print one line per job with its submitit job id and log file, right after submission;
* print a line as each job ends (done or failed, with the job's last ``error:`` line);
* print a summary table on stdout, and exit with :data:`EXIT_SOME_FAILED` if any job failed.

``bsi/configs/hydra/launcher/{local,slurm}.yaml`` select them.  The jobs themselves run hydra's task
exactly as the base class does (its ``__call__`` and ``checkpoint``, so requeues work as before).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

EXIT_SOME_FAILED = 1
POLL_S = {"local": 1.0, "slurm": 30.0}  # between looks at the jobs' states (SLURM: one sacct call)


def make_executor(params: dict[str, Any], cluster: str) -> Any:
    """A submitit executor for ``cluster`` from the launcher config's ``params`` (as the base class makes it)."""
    import submitit

    params = dict(params)
    params.pop("_target_", None)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"{cluster}_{k}": v for k, v in params.items() if v is not None})
    return executor


def last_error(job: Any, err: BaseException | None = None) -> str:
    """The line that says why ``job`` failed: its last ``error:`` line on stderr, else the exception's last line."""
    try:
        lines = [line.strip() for line in (job.stderr() or "").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1]
    text = [line.strip() for line in str(err or "").splitlines() if line.strip()]
    return (text or lines or ["no output"])[-1]


class Outcome:
    """How one job of the sweep ended."""

    def __init__(self, number: int, overrides: str, job: Any) -> None:
        self.number, self.overrides, self.job = number, overrides, job
        self.result: JobReturn | None = None
        self.failure: str | None = None

    def collect(self) -> None:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            self.result = self.job.results()[0]
        except (FailedJobError, UncompletedJobError) as err:
            self.failure = last_error(self.job, err)
            return
        if self.result.status == JobStatus.FAILED:  # the task raised; hydra kept the exception
            self.failure = f"{type(self.result._return_value).__name__}: {self.result._return_value}"

    @property
    def state(self) -> str:
        return "failed" if self.failure else "done"

    def detail(self) -> str:
        if self.failure:
            return f"{self.failure} (log: {self.job.paths.stderr})"
        value = self.result.return_value if self.result is not None else None
        where = self.result.hydra_cfg.hydra.runtime.output_dir if self.result and self.result.hydra_cfg else ""
        return f"{headline(value)}  {where}".strip()


def headline(value: Any) -> str:
    """The number a job returned that a person looks for first (training's and evaluation's results)."""
    if not isinstance(value, dict):
        return ""
    if "test_bpd" in value:  # bsi.train
        return f"test bpd {value['test_bpd']:.4f}"
    if value.get("elbo"):  # bsi.evaluate likelihood
        total = value["elbo"][0]["total"]
        return f"bpd {total['bpd']:.4f} ± {total['stderr']:.4f}"
    if "fid" in value:  # bsi.evaluate fid
        return f"FID {value['fid']:.3f}"
    return ""


def labels(job_overrides: Sequence[Sequence[str]]) -> tuple[list[str], str]:
    """Each job's overrides without those shared by all jobs, and the shared ones."""
    lists = [filter_overrides(o) for o in job_overrides]
    shared = [o for o in lists[0] if all(o in other for other in lists)] if len(lists) > 1 else []
    return [" ".join(o for o in one if o not in shared) or "(no overrides)" for one in lists], " ".join(shared)


class ReportingLauncher(BaseSubmititLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        executor = make_executor(self.params, self._EXECUTOR)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        job_args = [(list(o), "hydra.sweep.dir", i, f"job_id_for_{i}", Singleton.get_state())
                    for i, o in zip(numbers, job_overrides)]
        jobs = executor.map_array(self, *zip(*job_args))
        own, shared = labels(job_overrides)
        outcomes = [Outcome(i, label, job) for i, label, job in zip(numbers, own, jobs)]
        where = "on this machine, all at once" if self._EXECUTOR == "local" else "on SLURM"
        say(f"[sweep] launched {len(jobs)} job(s) {where}; runs in {sweep_dir}")
        if shared:
            say(f"[sweep]   all with: {shared}")
        for o in outcomes:
            say(f"[sweep]   #{o.number} {o.overrides}: job {o.job.job_id}, log {o.job.paths.stderr}")
        say(f"[sweep] waiting for them (follow one with: tail -f {outcomes[0].job.paths.stderr})")
        self.wait(outcomes)
        self.remove_literal_folder(executor.folder)
        return self.summarise(outcomes, sweep_dir)

    def wait(self, outcomes: list[Outcome]) -> None:
        started, pending = time.monotonic(), list(outcomes)
        while pending:
            for o in [o for o in pending if o.job.done()]:
                pending.remove(o)
                o.collect()
                elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - started))
                tail = f": {o.failure}" if o.failure else ""
                say(f"[sweep] #{o.number} {o.overrides}: {o.state}{tail} "
                    f"({len(outcomes) - len(pending)} of {len(outcomes)} ended, {elapsed})")
            if pending:
                time.sleep(POLL_S.get(self._EXECUTOR, 10.0))

    @staticmethod
    def remove_literal_folder(folder: Path) -> None:
        """Submitit's local runner creates the folder ``.../%j`` itself, besides the real ``.../<job id>``."""
        if any(tag in folder.name for tag in ("%j", "%A", "%a", "%t")) and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    def summarise(self, outcomes: list[Outcome], sweep_dir: Path) -> list[JobReturn]:
        failed = [o for o in outcomes if o.failure]
        width = max(len(o.overrides) for o in outcomes)
        print(f"sweep in {sweep_dir}: {len(outcomes) - len(failed)} of {len(outcomes)} job(s) done, {len(failed)} failed")
        for o in outcomes:
            print(f"  #{o.number:<3} {o.overrides:<{width}}  {o.state:<6}  {o.detail()}")
        sys.stdout.flush()
        if failed:
            say(f"error: {len(failed)} of {len(outcomes)} job(s) failed (see the summary above and their logs)")
            sys.exit(EXIT_SOME_FAILED)
        return [o.result for o in outcomes if o.result is not None]


def say(line: str) -> None:
    """Progress goes to stderr, beside hydra's log; the summary goes to stdout."""
    print(line, file=sys.stderr, flush=True)


class LocalLauncher(ReportingLauncher):
    _EXECUTOR = "local"


class SlurmLauncher(ReportingLauncher):
    _EXECUTOR = "slurm"
