"""``python -m shards stream PATH``: stream a shard set through the loader and report throughput.

A quick check that a shard set (local or a URL) loads, and how fast, with the settings training uses.
"""

from __future__ import annotations

import sys
import time

from jsonargparse import ArgumentParser

from .dataset import ShardedCellDataset
from .errors import ShardError
from .loader import CellDataLoader


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m shards", description="Stream a shard set and report cells/s.")
    sub = p.add_subcommands(dest="command")
    s = ArgumentParser()
    s.add_argument("path", type=str, help="shard set directory or URL")
    s.add_argument("--split", type=str, default="train")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--context-length", type=int, default=2048)
    s.add_argument("--workers", type=int, default=0)
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-batches", type=int, default=None)
    sub.add_subcommand("stream", s, help="stream batches and report throughput")
    ns = p.parse_args(argv).stream
    try:
        ds = ShardedCellDataset(ns.path, batch_size=ns.batch_size, context_length=ns.context_length, split=ns.split,
                                seed=ns.seed)  # fmt: skip
        loader = CellDataLoader(ds, num_workers=ns.workers, persistent_workers=True)
        for epoch in range(ns.epochs):
            ds.set_epoch(epoch)
            t0, cells, tokens, batches = time.perf_counter(), 0, 0, 0
            for batch in loader:
                batches += 1
                cells += batch["input_ids"].shape[0]
                tokens += int(batch["attention_mask"].sum())
                if ns.max_batches and batches >= ns.max_batches:
                    break
            dt = time.perf_counter() - t0
            shape = tuple(batch["input_ids"].shape) if batches else ()
            print(f"epoch {epoch}: {batches} batches {shape}, {cells:,} cells in {dt:.1f} s "
                  f"({cells / dt:,.0f} cells/s, {tokens / dt:,.0f} tokens/s)")  # fmt: skip
    except ShardError as exc:
        print(f"python -m shards stream: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
