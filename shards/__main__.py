"""``python -m shards stream PATH``: stream a shard set through the loader and report throughput.

A quick check that a shard set (local or a URL) loads, and how fast, with the settings training uses:
every ``LoaderConfig`` option is a flag (``--batch-size``, ``--token-budget``, ``--weighting '{...}'``).
"""

from __future__ import annotations

import sys
import time

from jsonargparse import ActionConfigFile, ArgumentParser

from .errors import ShardError
from .loading.config import LoaderConfig
from .options import add_flags

__all__ = ["main", "parser"]


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m shards", description="Stream a shard set and report cells/s.")
    sub = p.add_subcommands(dest="command")
    s = ArgumentParser(description="Stream a shard set's batches through the loader and report throughput.")
    s.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of these options")
    s.add_argument("path", type=str, help="the shard set: a directory or a URL (https://, s3://)")
    s.add_argument("--split", type=str, default="train", help="the split to stream")
    s.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (spawned)")
    s.add_argument("--epochs", type=int, default=1, help="epochs to stream (each reported)")
    s.add_argument("--max-batches", type=int, default=None, help="stop each epoch after this many batches")
    add_flags(s, LoaderConfig, defaults={"batch_size": 64})
    sub.add_subcommand("stream", s, help="stream batches and report throughput")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv).stream
    options = {name: ns[name] for name in LoaderConfig.field_names()}
    try:
        from .loading.dataset import ShardedCellDataset
        from .loading.loader import CellDataLoader

        ds = ShardedCellDataset(ns.path, ns.split, LoaderConfig(**options))
        ds.require_batches(ns.workers, 0, lambda name: "--" + name.replace("_", "-"))
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
            print(
                f"epoch {epoch}: {batches} batches {shape}, {cells:,} cells in {dt:.1f} s "
                f"({cells / dt:,.0f} cells/s, {tokens / dt:,.0f} tokens/s)"
            )
    except ShardError as exc:
        print(f"python -m shards stream: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
