"""Shard sets behind a URL (``http(s)://``, ``s3://``, any fsspec protocol): filesystems, retries, redaction.

Without a cache, ranges are read remotely: WebDataset through the sample index (one HTTP Range request
per run of cells), Zarr through zarr's fsspec store (range requests into its shard files); with one,
whole shards are downloaded and kept (``cache.ShardCache``). Transient errors are retried with
exponential back-off; credentials in URLs and secret-named options never reach a message or a file.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import fsspec

from ..errors import ShardError

__all__ = ["is_remote", "is_secret_key", "open_filesystem", "redact", "redact_options", "with_retries"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_CREDENTIALS = re.compile(r"(?<=://)[^/@]+@")
_SECRET_KEYS = re.compile(r"secret|password|passwd|token|key|auth|credential|session|signature", re.IGNORECASE)


def is_remote(root: str | Path) -> bool:
    text = str(root)
    return "://" in text and not text.startswith("file://")


def is_secret_key(key: object) -> bool:
    """Does an option's name say it holds a secret (``key``, ``secret``, ``token``, ``Authorization``, ...)?"""
    return bool(_SECRET_KEYS.search(str(key)))


def redact(url: str) -> str:
    """The URL without ``user:password@``, for messages and logs."""
    return _CREDENTIALS.sub("***@", str(url))


def redact_options(value: Any) -> Any:
    """fsspec storage options (or any nested config) with secrets replaced by ``***``: values under
    keys that name a secret (``key``, ``secret``, ``token``, ``Authorization``, ...), and credentials in
    URLs. For what is written to disk or logged; the run itself keeps the real values."""
    if isinstance(value, dict):
        return {k: "***" if is_secret_key(k) and v not in (None, "") else redact_options(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_options(v) for v in value)
    return redact(value) if isinstance(value, str) else value


def open_filesystem(url: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except (ImportError, ValueError) as exc:
        raise ShardError(f"{redact(url)}: no filesystem for this URL ({exc}); install the fsspec extra") from exc


def with_retries(fn: Callable[[], T], what: str, attempts: int = 4, backoff: float = 0.25) -> T:
    """Call ``fn``; on a transport error retry with back-off 0.25, 0.5, 1 s; then raise a ShardError."""
    for attempt in range(attempts):
        try:
            return fn()
        except (FileNotFoundError, PermissionError) as exc:  # retrying cannot help
            raise ShardError(f"{redact(what)}: {type(exc).__name__} ({redact(str(exc))})") from exc
        except ShardError:
            raise
        except Exception as exc:  # transport errors differ by protocol (aiohttp, botocore, OSError)
            if attempt == attempts - 1:
                raise ShardError(f"{redact(what)}: failed after {attempts} attempts ({redact(str(exc))})") from exc
            log.warning("retrying %s after %s", redact(what), type(exc).__name__)
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")
