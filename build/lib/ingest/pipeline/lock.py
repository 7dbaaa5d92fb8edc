"""One build per output directory: a lock file with an advisory ``flock`` and a holder record.

- The ``flock`` is the lock wherever the filesystem supports it (local disks, NFSv4, GPFS, Lustre with
  ``-o flock``): the kernel drops it when its holder dies, however it dies, so a lock left by a crashed
  or killed build is stale by construction and the next build takes it over.
- The holder record (pid, host, boot id, process start time) names the holder in the error message, and
  is the lock itself where ``flock`` is unavailable (``ENOLCK``/``ENOSYS``/``EOPNOTSUPP``, e.g. Lustre
  without ``-o flock``): the file is then created exclusively, and a record left by a process of this
  host that no longer runs (pid gone, pid reused by a younger process, or the host rebooted since) is
  stale and taken over. A record of another host cannot be checked from here: it is refused, with the
  command that clears it once that build is known to be dead.

In ``flock`` mode a build re-checks, after locking, that the file it locked is still the one at the path
(a finishing build unlinks it), so two builds can never both hold the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import IngestError

__all__ = ["LOCK_NAME", "BuildLock", "holder_record", "holder_state"]

LOCK_NAME = ".cellshard-build.lock"
_NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP}

log = logging.getLogger(__name__)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def holder_record(pid: int | None = None) -> dict[str, Any]:
    """What a lock file says about its holder (this process by default)."""
    pid = os.getpid() if pid is None else pid
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "start_ticks": _start_ticks(pid),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holder_state(record: dict[str, Any], *, host: str, boot_id: str | None) -> str:
    """``"alive"``, ``"stale"`` or ``"unknown"`` (another host) for a holder record, judged from ``host``."""
    if record.get("host") != host:
        return "unknown"
    if boot_id is not None and record.get("boot_id") not in (None, boot_id):
        return "stale"  # the host rebooted since: nothing of that boot runs
    pid = record.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return "stale"
    started = record.get("start_ticks")
    if started is not None and _start_ticks(pid) not in (None, started):
        return "stale"  # the pid was reused by another process
    return "alive"


def _describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "another process"
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('since')}"


def _parse(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class BuildLock:
    """``with BuildLock(out): ...`` — refuses (``IngestError``) while another live build holds ``out``.

    ``mode`` is ``"auto"`` (``flock``, or the record alone where ``flock`` is unavailable), ``"flock"``
    or ``"record"``. ``took_over`` names the stale holder a build replaced, if any.
    """

    def __init__(self, directory: Path, mode: str = "auto") -> None:
        if mode not in ("auto", "flock", "record"):
            raise ValueError(f"lock mode {mode!r}: choose auto, flock or record")
        self.path = Path(directory) / LOCK_NAME
        self.mode = mode
        self.took_over: str | None = None
        self._fd: int | None = None

    def _refuse(self, record: dict[str, Any] | None, hint: str = "") -> IngestError:
        return IngestError(
            f"{self.path.parent}: another build is writing to this directory ({_describe(record)}); "
            f"wait for it to finish or choose another --out{hint}"
        )

    def __enter__(self) -> BuildLock:
        if self.mode in ("auto", "flock"):
            try:
                self._enter_flock()
                return self
            except OSError as exc:
                if exc.errno not in _NO_FLOCK or self.mode == "flock":
                    raise
                log.warning("%s: the filesystem has no flock (%s); locking by holder record", self.path, exc.strerror)
        self._enter_record()
        return self

    def _write_record(self, fd: int) -> None:
        data = (json.dumps(holder_record()) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _enter_flock(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                writable = True
            except PermissionError:  # a lock file of another user (a dead build of theirs, or a live one)
                fd = os.open(self.path, os.O_RDONLY)
                writable = False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                record = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
                os.close(fd)
                raise self._refuse(record) from None
            except OSError:
                os.close(fd)
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder finished and unlinked the file we opened: lock the new one
                os.close(fd)
                continue
            if not writable:  # we hold it, so its owner is gone: replace it with a file of ours
                self.took_over = _describe(_parse(os.pread(fd, 4096, 0).decode(errors="replace")))
                self.path.unlink()
                os.close(fd)
                continue
            previous = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
            if previous or self.took_over:
                self.took_over = self.took_over or _describe(previous)
                log.warning(
                    "%s: took over the lock of a build that is no longer running (%s)", self.path.parent, self.took_over
                )
            self._write_record(fd)
            self._fd = fd
            return

    def _enter_record(self) -> None:
        host, boot = socket.gethostname(), _boot_id()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    text = self.path.read_text()
                except FileNotFoundError:
                    continue  # released meanwhile
                record = _parse(text)
                if record is None:  # being written by its creator right now, or garbage: look again
                    time.sleep(0.2)
                    record = _parse(self.path.read_text()) if self.path.exists() else {}
                    if record is None:
                        raise self._refuse(None, f", or delete {self.path} if no build is running") from None
                    if not record:
                        continue
                state = holder_state(record, host=host, boot_id=boot)
                if state == "alive":
                    raise self._refuse(record) from None
                if state == "unknown":
                    raise self._refuse(record, f"; if that build is no longer running, delete {self.path}") from None
                self.took_over = _describe(record)
                log.warning(
                    "%s: taking over the lock of a build that is no longer running (%s)",
                    self.path.parent,
                    self.took_over,
                )
                self.path.unlink(missing_ok=True)
                continue
            self._write_record(fd)
            self._fd = fd
            return
        raise self._refuse(None, f", or delete {self.path} if no build is running")

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiter re-checks the inode it locked
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            except OSError:
                pass  # record mode on a filesystem without flock
            os.close(self._fd)
            self._fd = None
