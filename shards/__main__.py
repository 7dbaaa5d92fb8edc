"""``python -m shards stream PATH``: stream a shard set through the loader and report throughput.

A quick check that a shard set (local or a URL) loads, and how fast, with the settings training uses:
every ``LoaderConfig`` option is a flag (``--batch-size``, ``--token-budget``, ``--weighting '{...}'``).
The command is a typed function in ``COMMANDS`` (``shards.commands``: the idiom of every cellshard CLI).
"""

from __future__ import annotations

import sys
import time

from .commands import command_parser, run
from .loading.config import LoaderConfig

__all__ = ["COMMANDS", "main", "parser"]

DESCRIPTION = "Stream a shard set and report cells/s."


def stream(
    path: str,
    options: LoaderConfig = LoaderConfig(batch_size=64),  # noqa: B008 (immutable: a frozen dataclass)
    *,
    split: str = "train",
    workers: int = 0,
    epochs: int = 1,
    max_batches: int | None = None,
) -> int:
    """Stream a shard set's batches through the loader and report throughput.

    Args:
        path: the shard set: a directory or a URL (https://, s3://).
        split: the split to stream.
        workers: DataLoader worker processes (spawned).
        epochs: epochs to stream (each reported).
        max_batches: stop each epoch after this many batches.
    """
    from .loading.dataset import ShardedCellDataset
    from .loading.loader import CellDataLoader

    ds = ShardedCellDataset(path, split, options)
    ds.require_batches(workers, 0, lambda name: "--" + name.replace("_", "-"))
    loader = CellDataLoader(ds, num_workers=workers, persistent_workers=True)
    # ragged batches (collate_on device) are padded here, on this machine's device: the work a GPU would do
    collate = ds.device_collator() if options.collate_on == "device" else None
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        t0, cells, tokens, batches = time.perf_counter(), 0, 0, 0
        for batch in loader:
            batch = collate(batch) if collate is not None else batch
            batches += 1
            cells += batch["loss_weight"].shape[0]  # packed batches hold more cells than rows
            tokens += int(batch["attention_mask"].sum())
            if max_batches and batches >= max_batches:
                break
        dt = time.perf_counter() - t0
        shape = tuple(batch["input_ids"].shape) if batches else ()
        print(
            f"epoch {epoch}: {batches} batches {shape}, {cells:,} cells in {dt:.1f} s "
            f"({cells / dt:,.0f} cells/s, {tokens / dt:,.0f} tokens/s)"
        )
    return 0


#: the ``python -m shards`` commands: name -> typed function
COMMANDS = {"stream": stream}


def parser():
    return command_parser("python -m shards", DESCRIPTION, COMMANDS)[0]


def main(argv: list[str] | None = None) -> int:
    return run("python -m shards", DESCRIPTION, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
