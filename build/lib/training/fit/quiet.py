"""Lightning's known noise, filtered narrowly: by message, never by category or module, so that every
other warning still reaches the user.

Each entry is a message that asks for no action here: a log tip advertising a hosted logger; a
deprecation inside Lightning's own pytree helper (torch renamed ``LeafSpec``; nothing in a user's code
calls it); the notice that the LightningModule's ``on_after_batch_transfer`` is used although a
DataModule is given, which is this package's design (device-side collate lives in the module); the
advice to log ``val/*`` with ``sync_dist=True`` under DDP, which the module does not need (it logs
validation metrics already reduced over every rank, identical on all of them).

The run logs at INFO (its own lines and Lightning's); the object-store clients' INFO lines (botocore's
"Found credentials in environment variables", endpoint discovery) are raised to WARNING, so their
warnings and errors still show.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_known_noise"]

_LOG_PREFIXES = ("💡 Tip: For seamless cloud logging",)
_WARNING_MESSAGES = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`",
    r"It is recommended to use `self.log\('val/[a-z_]+', \.\.\., sync_dist=True\)`",
)


_CHATTY_LOGGERS = ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3")


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LOG_PREFIXES)


def quiet_known_noise() -> None:
    """Install the filters (idempotent)."""
    for message in _WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.WARNING))
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
        logger.addFilter(_DropPrefixes())
