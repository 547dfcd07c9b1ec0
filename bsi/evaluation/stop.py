"""How ``bsi.evaluate`` stops on a signal: within the current network call, with no partial result."""

from __future__ import annotations

from pathlib import Path

from ..signals import StopSignal, signal_name


class Interrupted(BaseException):
    """SIGTERM or SIGUSR1 arrived: the evaluation stopped.

    A ``BaseException``, like ``KeyboardInterrupt``: it is raised wherever the program happens to
    be, and library code that catches ``Exception`` must not swallow it.
    """


class StopOnSignal(StopSignal):
    """bsi.signals' handler for an evaluation: the loops poll it (within one network call; torch-fidelity's
    loop through :class:`~bsi.evaluation.RGBImages`), submitit's requeue signal is left to submitit, and
    ``written`` lists complete output files to name in the message of a stop."""

    def __init__(self) -> None:
        super().__init__(include_launcher=False)
        self.written: list[Path] = []


def interrupted_message(task: str, stop: StopOnSignal) -> str:
    name = signal_name(stop.signum)
    if stop.written:
        samples = stop.written[0]
        return (f"stopped by {name} during the {task}: no result was written, but the samples in {samples} are "
                f"complete; rerun with fid.samples={samples} to compute the FID without sampling again")
    return f"stopped by {name} before the {task} finished: no result was written (rerun the command to start over)"
