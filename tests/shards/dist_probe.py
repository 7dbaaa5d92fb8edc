"""Run under torchrun by tests/test_distributed.py: stream, and write what this rank saw.

DATA is a shard set, or a JSON object of dataset arguments (``{"path": [streams...], "weighting": ...}``).

``probe.py DATA OUT WORKERS epochs``: two epochs, cell ids per epoch.
``probe.py DATA OUT WORKERS stop N GLOBAL_BATCH``: epoch 0 up to N batches per rank, then save the loader
state (rank 0's, as Lightning does) and the cells served.
``probe.py DATA OUT WORKERS resume STATE GLOBAL_BATCH``: load that state and finish the epoch.

It ends in order, as ``training.fit.cli.teardown`` does: the loader's workers, then the process group.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch.distributed as dist

from shards import ShardedCellDataset
from shards.loading.loader import CellDataLoader


def main(data: str, out: str, workers: int, mode: str, *args: str) -> None:
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    batch = int(args[1]) // world if mode != "epochs" else 8
    spec = json.loads(data) if data.startswith("{") else {"path": data}  # JSON: a mix of streams and options
    ds = ShardedCellDataset(spec.pop("path"), batch_size=batch, context_length=64, seed=2, return_cell_ids=True, **spec)
    topo = ds.topology()  # from the process group: never a silent rank 0
    loader = CellDataLoader(ds, num_workers=workers, persistent_workers=mode == "epochs")
    record = {"rank": topo.rank, "world_size": topo.world_size, "epochs": []}
    if mode == "epochs":
        for epoch in range(2):
            ds.set_epoch(epoch)
            ids = [b["cell_id"] for b in loader]
            record["epochs"].append({"batches": len(ids), "cells": [c for batch in ids for c in batch]})
    elif mode == "stop":
        ds.set_epoch(0)
        ids = [b["cell_id"] for b in itertools.islice(loader, int(args[0]))]
        record["epochs"].append({"batches": len(ids), "cells": [c for batch in ids for c in batch]})
        if topo.rank == 0:
            Path(out, "state.json").write_text(json.dumps(loader.state_dict()))
    else:
        loader.load_state_dict(json.loads(Path(args[0]).read_text()))
        ids = [b["cell_id"] for b in loader]
        record["epochs"].append({"batches": len(ids), "cells": [c for batch in ids for c in batch]})
    dist.barrier()
    Path(out, f"rank{topo.rank}.json").write_text(json.dumps(record))
    dist.barrier()
    loader.shutdown_workers()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:])
