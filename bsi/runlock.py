"""One run per run directory: ``RUN/run.lock`` names the process that trains into it.

A second training (or resume) into a directory whose lock is held by a live process is refused
with one line naming that process, its host and what to do: two runs writing one directory mix
their metrics and overwrite each other's checkpoints.

The lock file is JSON (process id, host, start time, the process's own start mark, the SLURM job
and restart count) and appears whole: it is written under a temporary name and hard-linked to
``run.lock``, which fails if the name exists, so of two starters exactly one wins, also on NFS.
(File systems without hard links get ``O_CREAT | O_EXCL``.)  While held, a thread touches the
file every :data:`HEARTBEAT` seconds.

When is a lock stale, so that a new run takes it over (saying so in one line)?

* Held on this host: when its process is gone (or its process id now belongs to a newer process).
* Held on another host: when it belongs to an earlier incarnation of this same SLURM job (a
  requeued job restarts on any node; SLURM never runs two incarnations of a job at once), or when
  its heartbeat has stopped for :data:`STALE_AFTER` seconds (the node died or lost the file
  system).  A process on another host cannot be asked directly; a live one keeps its heartbeat.
* ``force=True`` takes over any lock (the operator knows the other run is gone).

Released when the ``with`` block ends, however it ends; a process killed with SIGKILL leaves the
file behind, which the rules above recognise as stale.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .atomic import process_alive, temporary_name, this_host

LOCK_FILE = "run.lock"
HEARTBEAT = 60.0  # seconds between touches of a held lock
STALE_AFTER = 10 * 60.0  # seconds without a heartbeat after which another host's lock is stale
TAKEOVER_GUARD_AGE = 30.0  # seconds after which a takeover guard is a dead taker's leftover
log = logging.getLogger(__name__)


class RunLockError(Exception):
    """The run directory is in use by a live run (or its lock cannot be taken); the message is one line."""


def process_mark(pid: int) -> str | None:
    """What tells process ``pid`` from a later process with the same id: its start time in clock ticks
    since boot (Linux), ``None`` where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Holder:
    """Who holds a run directory's lock."""

    pid: int
    host: str
    started: float            # Unix time the lock was taken
    mark: str | None = None   # :func:`process_mark` of ``pid`` on ``host``
    job: str | None = None    # SLURM job id (with the array task), if any
    restart: int = 0          # SLURM_RESTART_COUNT: how often the job was requeued

    @classmethod
    def current(cls) -> Holder:
        job = os.environ.get("SLURM_JOB_ID")
        if job and os.environ.get("SLURM_ARRAY_TASK_ID"):
            job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        return cls(os.getpid(), this_host(), time.time(), process_mark(os.getpid()), job or None,
                   int(restart) if restart.isdigit() else 0)

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """The holder a lock file names, or ``None`` for anything that is not a complete lock file."""
        try:
            fields: dict[str, Any] = json.loads(data)
            return cls(int(fields["pid"]), str(fields["host"]), float(fields["started"]), fields.get("mark"),
                       fields.get("job"), int(fields.get("restart", 0)))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        job = f", SLURM job {self.job}" if self.job else ""
        return f"process {self.pid} on host {self.host} (started {started}{job})"


def stale_reason(holder: Holder | None, age: float, me: Holder, stale_after: float = STALE_AFTER) -> str | None:
    """Why the lock of ``holder`` (its file unchanged for ``age`` seconds) no longer counts, or ``None`` while it does."""
    if holder is None:  # a lock file that is not one: only a writer of the fallback path shows it, briefly
        return "its lock file is unreadable" if age > TAKEOVER_GUARD_AGE else None
    if holder.host == me.host:
        if not process_alive(holder.pid):
            return "that process is gone"
        mark = process_mark(holder.pid)
        if holder.mark is not None and mark is not None and mark != holder.mark:
            return "that process is gone (its process id now belongs to another process)"
        return None
    if holder.job is not None and holder.job == me.job and me.restart > holder.restart:
        return f"SLURM job {me.job} was requeued, so its earlier run has ended"
    if age > stale_after:
        return f"its heartbeat stopped {age / 60:.0f} minutes ago"
    return None


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/run.lock`` for the block, or raises :class:`RunLockError`.

    ``force`` takes over a live run's lock too.  ``how_to_force`` is the override the refusal
    message suggests (the entry point's own name for ``force``).  After entering, ``took_over``
    is the line that was logged if a stale lock was replaced (``None`` otherwise), and
    :meth:`check` raises if another process has forced the lock away meanwhile.
    """

    def __init__(self, run_dir: str | Path, *, force: bool = False, stale_after: float = STALE_AFTER,
                 heartbeat: float = HEARTBEAT, how_to_force: str = "force_lock=true"):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / LOCK_FILE
        self.force, self.stale_after, self.heartbeat, self.how_to_force = force, stale_after, heartbeat, how_to_force
        self.holder: Holder | None = None
        self.took_over: str | None = None
        self.lost: Holder | None = None  # who took the lock from us, if anyone did
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and giving back ---------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock, taking over a stale one; :class:`RunLockError` if a live run holds it."""
        me = Holder.current()
        payload = me.to_bytes()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(self.path)
        tmp.write_bytes(payload)
        try:
            for _ in range(100):
                if self._create(tmp, payload):
                    self.holder = me
                    self._start_heartbeat(payload)
                    return
                try:
                    seen, age = self.path.read_bytes(), time.time() - self.path.stat().st_mtime
                except FileNotFoundError:  # released meanwhile: try again
                    continue
                holder = Holder.from_bytes(seen)
                reason = stale_reason(holder, age, me, self.stale_after)
                if reason is None and not self.force:
                    if holder is None:  # being written right now by the fallback path
                        time.sleep(0.05)
                        continue
                    raise RunLockError(self._refusal(holder, age))
                if self._remove_if_unchanged(seen):
                    who = holder.describe() if holder else "an unknown process"
                    why = reason or f"force: taken from a run that may still be live; stop {who} if it is"
                    self.took_over = f"took over the lock of {self.run_dir} from {who}: {why}"
                    log.warning(self.took_over)
                else:
                    time.sleep(0.05)  # another starter is taking it over: see who wins
            raise RunLockError(f"could not take the lock {self.path}: other processes keep taking it; "
                               f"is more than one run starting in {self.run_dir}?")
        finally:
            tmp.unlink(missing_ok=True)

    def refusal(self) -> str | None:
        """Why this lock cannot be taken now (a live run holds it), read without taking it; ``None`` if it can."""
        if self.force:
            return None
        try:
            seen, age = self.path.read_bytes(), time.time() - self.path.stat().st_mtime
        except OSError:
            return None
        holder = Holder.from_bytes(seen)
        if holder is None or stale_reason(holder, age, Holder.current(), self.stale_after) is not None:
            return None
        return self._refusal(holder, age)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file, unless another process has taken it over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.holder is not None:
            try:
                if self.path.read_bytes() == self.holder.to_bytes():
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self.holder = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def check(self) -> None:
        """Raise :class:`RunLockError` if another process took this lock over (``force``) while we ran."""
        if self.lost is not None:
            who = self.lost.describe() if self.lost.pid >= 0 else "another process (or a person)"
            raise RunLockError(f"{who} removed or took over {self.path} while this run was writing to "
                               f"{self.run_dir}: stopping so that two runs do not mix their files")

    # -- helpers ------------------------------------------------------------------------------------
    def _create(self, tmp: Path, payload: bytes) -> bool:
        """Make ``run.lock`` hold ``payload`` if no such file exists: atomically, complete when visible."""
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            pass
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _remove_if_unchanged(self, seen: bytes) -> bool:
        """Remove the lock file if it still holds ``seen``, under a guard that only one taker gets."""
        guard = self.path.with_name(f".{LOCK_FILE}.takeover")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > TAKEOVER_GUARD_AGE:
                    guard.unlink(missing_ok=True)  # a taker died between taking and dropping the guard
            except FileNotFoundError:
                pass
            return False
        try:
            if self.path.read_bytes() == seen:
                self.path.unlink()
                return True
            return False
        except FileNotFoundError:
            return False
        finally:
            guard.unlink(missing_ok=True)

    def _refusal(self, holder: Holder, age: float) -> str:
        if holder.host == this_host():
            gone = f"stop it first (kill {holder.pid})"
        else:
            left = max(0.0, self.stale_after - age) / 60
            gone = (f"if that run is gone (its node died), it counts as stale {left:.0f} minutes from now, "
                    f"or rerun with {self.how_to_force}")
        return (f"run directory {self.run_dir} is in use by {holder.describe()}: wait for that run to finish, "
                f"train into another directory (hydra.run.dir=...), or {gone}")

    def _start_heartbeat(self, payload: bytes) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat):
                try:
                    current = self.path.read_bytes()
                    if current != payload:
                        self.lost = Holder.from_bytes(current) or Holder(-1, "an unknown host", time.time())
                        return
                    os.utime(self.path)
                except FileNotFoundError:  # removed by hand: whoever starts next must not think it free
                    self.lost = Holder(-1, "an unknown host", time.time())
                    return
                except OSError:  # a file-system hiccup: the next beat tries again
                    continue

        self._thread = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
