"""Run under torchrun by tests/test_distributed.py: stream two epochs, write what this rank saw.

Each rank records, per epoch, the cell ids of its batches and the number of batches; the test checks the
union. The process ends with ``os._exit`` after a clean finish: torch 2.13 + gloo sometimes aborts a
rank while tearing down at interpreter exit (PLATFORM.md), after all work is done.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
from torchdata.stateful_dataloader import StatefulDataLoader

from shards import ShardedCellDataset


def main(data: str, out: str, workers: int) -> None:
    dist.init_process_group("gloo")
    ds = ShardedCellDataset(data, batch_size=8, context_length=64, seed=2, return_cell_ids=True)
    topo = ds.topology()  # from the process group: never a silent rank 0
    loader = StatefulDataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                                multiprocessing_context="spawn" if workers else None)  # fmt: skip
    record = {"rank": topo.rank, "world_size": topo.world_size, "epochs": []}
    for epoch in range(2):
        ds.set_epoch(epoch)
        ids = [b["cell_id"] for b in loader]
        record["epochs"].append({"batches": len(ids), "cells": [c for batch in ids for c in batch]})
    dist.barrier()
    Path(out, f"rank{topo.rank}.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
