"""Batches from DataLoader workers to the main process through reused shared-memory slots.

Every batch of this loader is one buffer (``collate._batch_buffer``, ``device.pack_ragged``). PyTorch's
DataLoader moves a worker's tensors by putting each storage into *new* shared memory and passing its
file descriptor through a socket: measured here (py-spy of a worker, 64 cells x 2,048 tokens, a 2.2 MB
batch) that is 20% of the worker's time in ``_share_fd_cpu_`` (a new segment, a copy, its page faults)
and another ~15% in the descriptor hand-over, ~3.5 ms a batch: a worker served half the cells per
second of the same code in one process.

Here each worker keeps a small ring of slots in shared memory and builds batches straight into a free
slot. A slot's storage (and a shared array of per-slot flags) travel to the main process once, with
the slot's first batch; after that a batch is a few hundred bytes of layout. The main process wraps
the slot's bytes in tensors without copying, and a finalizer on the NumPy array that owns them (every
tensor of the batch keeps it alive) marks the slot free when the last of them is dropped; the worker
then reuses it. A worker that finds no free slot (the consumer holds on to batches) allocates a
batch the ordinary way, so nothing ever waits for a slot. With ``pin_memory`` the DataLoader's pin
thread copies the slot into page-locked memory and frees it at once.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["BufferedBatch", "SlotRing", "materialize", "new_token", "release_token"]

_FREE, _BUSY = 0, 1
_TORCH = {name: getattr(torch, name) for name in ("int64", "int32", "bool", "float32", "uint8")}
_TOKENS = itertools.count(1)


@dataclass
class BufferedBatch:
    """A batch built in slot ``slot`` of ring ``ring`` (picklable, small): where each tensor lies in the
    slot, the other values, and the slot's storage and the ring's flags the first time they travel."""

    token: int  # the loader it belongs to (``CellDataLoader`` forgets its rings by it)
    ring: tuple[int, int]  # (worker pid, ring number)
    slot: int
    nbytes: int
    tensors: tuple[tuple[str, str, tuple[int, ...], int], ...]  # (key, numpy dtype, shape, byte offset)
    extras: dict[str, Any]
    attach: dict[str, torch.Tensor] | None = None  # {"storage": slot tensor, "flags": int32 flags}

    def pin_memory(self, device: Any = None) -> dict[str, Any]:
        """What torch's pin thread calls: the batch copied to page-locked memory, the slot freed."""
        return materialize(self, pin=True)


@dataclass
class _Received:
    slots: dict[int, np.ndarray] = field(default_factory=dict)
    flags: np.ndarray | None = None
    keep: list[torch.Tensor] = field(default_factory=list)  # the shared tensors behind those arrays


_LOCK = threading.Lock()  # the pin thread and the consumer's thread both materialize
_RECEIVED: dict[tuple[int, tuple[int, int]], _Received] = {}


def materialize(batch: BufferedBatch, pin: bool = False) -> dict[str, Any]:
    """The batch's tensors over the slot's bytes (no copy; the slot is freed when they are all gone),
    or, with ``pin``, copied to page-locked memory (the slot freed now)."""
    key = (batch.token, batch.ring)
    with _LOCK:
        got = _RECEIVED.setdefault(key, _Received())
        if batch.attach is not None:
            storage, flags = batch.attach["storage"], batch.attach["flags"]
            got.keep += [storage, flags]
            got.slots[batch.slot] = storage.numpy()
            got.flags = flags.numpy()
        slot, flags = got.slots[batch.slot], got.flags
    if pin:
        buffer = torch.from_numpy(slot[: batch.nbytes]).pin_memory()
        flags[batch.slot] = _FREE
    else:
        # ``region`` owns nothing but is the one object every tensor of the batch keeps alive (torch
        # holds the NumPy array it wraps): when the last of them is dropped, the slot is free again
        region = slot[: batch.nbytes].view()
        weakref.finalize(region, _free, flags, batch.slot)
        buffer = torch.from_numpy(region)
        del region
    out = dict(batch.extras)
    for name, dtype, shape, start in batch.tensors:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        out[name] = buffer[start : start + size].view(_TORCH[dtype]).view(shape)
    return out


def _free(flags: np.ndarray, slot: int) -> None:
    flags[slot] = _FREE


def release_token(token: int) -> None:
    """Forget every ring of loader ``token`` (its workers are gone); batches still held stay valid."""
    with _LOCK:
        for key in [k for k in _RECEIVED if k[0] == token]:
            del _RECEIVED[key]


class SlotRing:
    """A worker's slots: ``alloc(n)`` gives a uint8 tensor of ``n`` bytes, in a free slot when there is
    one; ``wrap(batch)`` turns a batch built there into a ``BufferedBatch``."""

    _rings = itertools.count()

    def __init__(self, token: int, max_slots: int) -> None:
        self.token = token
        self.id = (os.getpid(), next(self._rings))
        self.max_slots = max_slots
        self.flags = torch.zeros(max_slots, dtype=torch.int32).share_memory_()
        self._flags = self.flags.numpy()
        self.slots: list[torch.Tensor] = []
        self.sent: set[int] = set()
        self._last: tuple[int, int] | None = None  # (slot, bytes) of the last alloc from a slot

    def alloc(self, nbytes: int) -> torch.Tensor:
        self._last = None
        slot = self._free_slot(nbytes)
        if slot is None:  # every slot is held by the consumer: an ordinary batch
            return torch.empty(nbytes, dtype=torch.uint8)
        self._flags[slot] = _BUSY
        self._last = (slot, nbytes)
        return self.slots[slot][:nbytes]

    def _free_slot(self, nbytes: int) -> int | None:
        small = None
        for i, t in enumerate(self.slots):
            if self._flags[i] == _FREE:
                if t.numel() >= nbytes:
                    return i
                small = i
        size = max(nbytes + nbytes // 4, max((t.numel() for t in self.slots), default=0))
        if len(self.slots) < self.max_slots:
            self.slots.append(torch.empty(size, dtype=torch.uint8).share_memory_())
            return len(self.slots) - 1
        if small is not None:  # a free slot too small for this batch: replaced by a larger one
            self.slots[small] = torch.empty(size, dtype=torch.uint8).share_memory_()
            self.sent.discard(small)
            return small
        return None

    def wrap(self, batch: dict[str, Any]) -> dict[str, Any] | BufferedBatch:
        """A batch whose buffer came from the last ``alloc``: its ``BufferedBatch``; else the batch."""
        if self._last is None:
            return batch
        slot, nbytes = self._last
        self._last = None
        base = self.slots[slot].untyped_storage().data_ptr()
        tensors, extras = [], {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() == base:
                start = value.storage_offset() * value.element_size()
                dtype = value.numpy().dtype.name
                tensors.append((key, dtype, tuple(value.shape), start))
            else:
                extras[key] = value
        attach = None
        if slot not in self.sent:
            self.sent.add(slot)
            attach = {"storage": self.slots[slot], "flags": self.flags}
        return BufferedBatch(self.token, self.id, slot, nbytes, tuple(tensors), extras, attach)


def new_token() -> int:
    return next(_TOKENS)
