"""Atomic writes and content hashes.

Every file of a shard set appears under its final name only once it is complete: it is written to a
temporary name in the same directory, flushed to disk and renamed (rename is atomic on POSIX within one
filesystem). A crash therefore leaves temporary names, never a truncated file under a final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_dir",
    "atomic_file",
    "fsync_dir",
    "path_bytes",
    "sha256_file",
    "sha256_path",
    "sha256_tree",
    "tmp_name",
    "write_bytes_atomic",
]

_CHUNK = 1 << 22


def tmp_name(path: Path) -> Path:
    """A temporary sibling of ``path``; the pid keeps concurrent writers (which the lock forbids) apart."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_dir(path: Path) -> None:
    """Persist a rename: the directory entry must reach the disk, not only the file's data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed to ``path``, on error removed."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (a directory) in one rename."""
    path = Path(path)
    tmp = tmp_name(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(path: Path | str) -> str:
    """The contract's hash of a directory shard: sha256 of its sorted ``<relpath>\\0<sha256>\\n`` lines."""
    root = Path(path)
    lines = sorted(f"{p.relative_to(root).as_posix()}\0{sha256_file(p)}\n" for p in root.rglob("*") if p.is_file())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def sha256_path(path: Path | str) -> str:
    """sha256 of a file, or the tree hash of a directory."""
    path = Path(path)
    return sha256_tree(path) if path.is_dir() else sha256_file(path)


def path_bytes(path: Path | str) -> int:
    """Size of a file, or the total size of a directory's files."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
