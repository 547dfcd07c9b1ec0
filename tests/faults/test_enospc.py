"""A full disk at any write site: the run ends with ``SaveError`` (status 6) in one line, every file on
disk is whole (the one being written keeps its previous version), and ``resume=auto`` ends bit for bit
as an uninterrupted run.  ``bsi.evaluate`` likewise ends with status 6 and no partial output."""

from __future__ import annotations

import builtins
import errno
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import bsi.checkpoint
import bsi.evaluation.samples
import bsi.metrics_log
from bsi.evaluate import main as evaluate
from bsi.exits import EXIT_SAVE, SaveError
from bsi.train import train
from tests.faults.test_full_disk import FillsUp
from tests.faults.tiny import assert_same_end, metric_rows, temporaries, tiny

FULL = "No space left on device"
Failed = dict[Path, bytes | None]  # the file whose write failed -> its contents just before (None: it did not exist)


def before(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def destination(tmp: str | Path) -> Path:
    """The file that temporary ``.NAME.tmp-HOST-PID`` replaces."""
    tmp = Path(tmp)
    return tmp.with_name(tmp.name[1:].split(".tmp-")[0])


def fail_path_write(patch: pytest.MonkeyPatch, failed: Failed, name: str) -> None:
    """The atomic write of the file ``name`` (``bsi.atomic.write_bytes``) takes half its bytes, then meets a full disk."""
    write_bytes = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.name.startswith(f".{name}.tmp-") and not failed:
            failed[destination(self)] = before(destination(self))
            write_bytes(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, FULL)
        return write_bytes(self, data)

    patch.setattr(Path, "write_bytes", full)


def fail_open(patch: pytest.MonkeyPatch, failed: Failed, module: Any, chosen: Callable[[str, str], bool]) -> None:
    """A file that ``module`` opens where ``chosen(path, mode)`` takes 10 more bytes, then meets a full disk."""

    def opened(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (the caller closes it)
        if failed or not chosen(str(file), mode):
            return f
        target = Path(file) if "a" in mode else destination(file)
        failed[target] = before(target)
        return FillsUp(f, 10)

    patch.setattr(module, "open", opened, raising=False)


def fail_checkpoint(patch: pytest.MonkeyPatch, failed: Failed) -> None:
    """``torch.save`` of step 5's checkpoint writes half of it, then meets a full disk."""
    save = torch.save

    def full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        name = getattr(f, "name", "")
        if ".step_0000005.pt.tmp-" not in str(name) or failed:
            return save(obj, f, *args, **kwargs)
        failed[destination(name)] = before(destination(name))
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        raise OSError(errno.ENOSPC, FULL)

    patch.setattr(bsi.checkpoint.torch, "save", full)


def fail_metrics(patch: pytest.MonkeyPatch, failed: Failed) -> None:
    """The third append to metrics.csv (step 3's row) takes 10 bytes, then meets a full disk."""
    appends = []

    def chosen(path: str, mode: str) -> bool:
        appends.append(mode == "ab" and path.endswith("metrics.csv"))
        return appends[-1] and sum(appends) == 3

    fail_open(patch, failed, bsi.metrics_log, chosen)


def fail_tensorboard(patch: pytest.MonkeyPatch, failed: Failed) -> None:
    """TensorBoard's event file meets a full disk at step 3's record (reported at the flush that follows)."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    write, records = RecordWriter.write, []

    def full(self: Any, data: bytes) -> None:
        records.append(1)
        if len(records) == 12 and not failed:
            failed[Path("tensorboard")] = None
            raise OSError(errno.ENOSPC, FULL)
        write(self, data)

    patch.setattr(RecordWriter, "write", full)


SITES: dict[str, Callable[[pytest.MonkeyPatch, Failed], None]] = {
    "checkpoint": fail_checkpoint,
    "metrics.csv": fail_metrics,
    "grid png": lambda patch, failed: fail_open(patch, failed, bsi.evaluation.samples,
                                                lambda path, mode: ".step_0000004.png.tmp-" in path),
    "final.json": lambda patch, failed: fail_path_write(patch, failed, "final.json"),
    "config.yaml": lambda patch, failed: fail_path_write(patch, failed, "config.yaml"),
    "tensorboard": fail_tensorboard,
}


def fail_once_then_resume(site: str, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SaveError, Failed]:
    """Train with a full disk at ``site`` (the error it ended with, and the file that failed), then ``resume=auto``."""
    failed: Failed = {}
    with monkeypatch.context() as patch:
        SITES[site](patch, failed)
        with pytest.raises(SaveError) as err:
            train(tiny(), run_dir=run_dir)
    assert len(failed) == 1, "the full disk was met exactly once"
    (target, previous), = failed.items()
    if target != Path("tensorboard"):
        assert before(target) == previous  # the previous version, whole (or still no file)
    assert temporaries(run_dir) == []
    train(tiny("resume=auto"), run_dir=run_dir)
    return err.value, failed


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # TensorBoard's writer thread
@pytest.mark.parametrize("site", SITES)
def test_a_full_disk_at_each_write_site_ends_with_status_6_and_resumes_bit_identical(
        site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path) -> None:
    """ENOSPC once at ``site``: SaveError (status 6) in one line, the file keeps its previous version (or does not
    exist), no temporary file is left, and ``resume=auto`` ends exactly as the uninterrupted run (its metrics
    rows too, but for the metrics row that met the full disk: see the next test)."""
    err, _ = fail_once_then_resume(site, tmp_path, monkeypatch)
    message = str(err)
    assert err.exit_status == EXIT_SAVE == 6 and "\n" not in message and "full" in message
    assert_same_end(tmp_path, reference, rows=site != "metrics.csv")


@pytest.mark.slow
def test_a_full_disk_at_a_metrics_row_loses_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   reference: Path) -> None:
    """After a full disk at step 3's metrics rows and a resume, metrics.csv holds every row of the uninterrupted run."""
    fail_once_then_resume("metrics.csv", tmp_path, monkeypatch)
    assert metric_rows(tmp_path) == metric_rows(reference)


@pytest.mark.parametrize("task, name", [("likelihood", "likelihood.json"), ("sample", "samples.png"),
                                        ("sample", "samples.npz")])
def test_a_full_disk_in_evaluate_ends_with_status_6_and_no_partial_file(
        task: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        reference: Path) -> None:
    """``bsi.evaluate TASK`` meeting a full disk while writing ``name``: status 6, one line on stderr, and
    no 0-byte, partial or temporary file in the output folder."""
    failed: Failed = {}
    if name.endswith(".json"):
        fail_path_write(monkeypatch, failed, name)
    else:
        fail_open(monkeypatch, failed, bsi.evaluation.samples, lambda path, mode: f".{name}.tmp-" in path)
    settings = (["likelihood.ks=[2]", "likelihood.n_samples=1", "likelihood.pilot=8"] if task == "likelihood"
                else ["n=4", "sample.steps=3"])
    with pytest.raises(SystemExit) as exit_:
        evaluate([task, f"checkpoint={reference}", f"out_dir={tmp_path}", *settings])
    assert exit_.value.code == 6 and list(failed) == [tmp_path / name]
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar's lines
    assert last.startswith("error: could not write") and "the disk is full" in last
    assert err.count("error: ") == 1 and "Traceback" not in err
    assert not (tmp_path / name).exists() and temporaries(tmp_path) == []
    assert all(p.stat().st_size > 0 for p in tmp_path.iterdir())  # what was written (samples.png) is whole
