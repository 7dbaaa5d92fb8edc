"""The output directory of a build and its work directory: what may be there, what a rerun reuses, and
how an I/O error is told.

Work happens in ``<out>/.cellshard-work/``; every file there and every shard is written under a
temporary name and renamed when complete, so a rerun after a crash removes the temporaries, skips what
exists and recomputes only the rest. ``index.json`` is written last: the commit point.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

from shards.errors import ShardError
from shards.format.manifest import INDEX_NAME, read_manifest

from ..errors import IngestError
from .lock import LOCK_NAME

__all__ = [
    "WORK_DIR",
    "check_out_dir",
    "interrupted_params",
    "io_error_message",
    "remove_stale_temporaries",
    "writable_target",
]

WORK_DIR = ".cellshard-work"


def check_out_dir(out: Path, build_id: str) -> bool:
    """True when ``out`` already holds this very build. Refuses a directory holding anything else."""
    if (out / INDEX_NAME).exists():
        try:
            manifest = read_manifest(out)
        except ShardError as exc:
            raise IngestError(f"{out}: holds an unreadable shard set ({exc}); choose another --out") from None
        if manifest.build_id != build_id:
            raise IngestError(
                f"{out}: holds a different shard set (other inputs or options); choose another --out "
                "or delete the directory"
            )
        return True
    work = out / WORK_DIR
    params = work / "params.json"
    if params.exists():
        previous = json.loads(params.read_text()).get("build_id")
        if previous != build_id:
            raise IngestError(
                f"{out}: holds an interrupted build with other inputs or options; rerun that command to "
                f"finish it, or delete {work} to start over"
            )
        return False
    others = [p.name for p in out.iterdir() if p.name not in (LOCK_NAME, WORK_DIR)] if out.exists() else []
    if others:
        raise IngestError(f"{out}: not empty and not a cellshard build ({others[:3]}); choose an empty --out")
    return False


def writable_target(out: Path) -> None:
    """Refuse an output that cannot be written before any source is read (a Census scan takes a while)."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not os.access(probe, os.W_OK):
        raise IngestError(f"--out {out}: {probe} is not writable")
    if probe.exists() and not probe.is_dir():
        raise IngestError(f"--out {out}: {probe} is a file, not a directory")


def interrupted_params(out: Path) -> dict | None:
    params = out / WORK_DIR / "params.json"
    try:
        return json.loads(params.read_text())
    except (OSError, ValueError):
        return None


_OUT_OF_SPACE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded",
}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def io_error_message(exc: OSError, out: Path) -> str:
    """One line for an I/O error during a build: what failed, where, and that a rerun resumes."""
    where = exc.filename or f"--out {out}"
    code = f"[Errno {exc.errno}]" if exc.errno else type(exc).__name__
    resume = "then rerun the same command: finished work is kept and reused"
    if exc.errno in _OUT_OF_SPACE:
        return f"{where}: {_OUT_OF_SPACE[exc.errno]} {code}; free space for {out} (or choose another --out), {resume}"
    if exc.errno in _DENIED:
        return f"{where}: not writable by this user {code} ({exc.strerror}); fix the permissions of {out}, {resume}"
    return f"{where}: {exc.strerror or exc} {code} while building into {out}; fix the cause, {resume}"


_TEMPORARY = re.compile(r"^\..+\.tmp-\d+$")  # ``atomic.tmp_name``: ``.<name>.tmp-<pid>``


def remove_stale_temporaries(out: Path, work: Path) -> int:
    """Delete the temporary files an interrupted build left (under the lock, no writer is active)."""
    found = [p for p in out.iterdir() if _TEMPORARY.match(p.name)]
    if work.exists():
        found += [p for p in work.rglob(".*") if _TEMPORARY.match(p.name)]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(found)
