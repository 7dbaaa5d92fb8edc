"""One build per output directory, enforced with an advisory ``flock``.

The kernel drops an flock when its process dies, however it dies, so a lock left by a crashed or killed
build is stale by construction and the next build takes it over; the pid written in the file is only there
to name the holder in the error message.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from .errors import IngestError

__all__ = ["LOCK_NAME", "BuildLock"]

LOCK_NAME = ".cellshard-build.lock"


class BuildLock:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise IngestError(
                f"{self.path.parent}: another build is writing to this directory ({holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
