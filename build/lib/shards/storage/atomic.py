"""Atomic writes and content hashes.

Every file of a shard set appears under its final name only once it is complete: it is written to a
temporary name in the same directory, flushed to disk and renamed (rename is atomic on POSIX within one
filesystem). A crash therefore leaves temporary names, never a truncated file under a final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .faults import fault_point

__all__ = [
    "atomic_dir",
    "atomic_file",
    "fsync_dir",
    "fsync_tree",
    "path_bytes",
    "sha256_file",
    "sha256_path",
    "sha256_tree",
    "tmp_name",
    "tree_digest",
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


def fsync_tree(root: Path) -> None:
    """Flush every file and directory of a tree to disk (before it is renamed into place)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed to ``path``, on error removed."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        fault_point(f"rename:{path.name}")
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
        fsync_tree(tmp)
        fault_point(f"rename:{path.name}")
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


def tree_digest(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 of the sorted ``<relpath>\\0<sha256>\\n`` lines of ``(relative path, file sha256)`` pairs."""
    lines = sorted(f"{rel}\0{digest}\n" for rel, digest in entries)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def sha256_tree(path: Path | str) -> str:
    """The contract's hash of a directory shard: the ``tree_digest`` of all its files."""
    root = Path(path)
    return tree_digest((p.relative_to(root).as_posix(), sha256_file(p)) for p in root.rglob("*") if p.is_file())


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
