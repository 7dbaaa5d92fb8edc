"""Named fault points for the crash tests: a hard kill at a chosen point, as a power cut or the OOM
killer would deliver it.

A test sets ``CELLSHARD_TEST_FAULT=NAME:N`` for the process under test; the N-th time that process
passes the point ``NAME`` it sends itself SIGKILL (no cleanup, no ``finally``, no flush). Without the
variable a fault point is one dictionary lookup. Points are named by what is happening there, e.g.
``pass1-block`` (a block of pass 1 was read, its unit not yet written), ``bucket`` (a batch was appended
to an open bucket file), ``rename:index.json`` (a file is complete under its temporary name, not yet
renamed). The variable is meant for tests only; nothing else reads it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["FAULT_ENV", "fault_point"]

FAULT_ENV = "CELLSHARD_TEST_FAULT"

_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Count a pass through ``name``; SIGKILL this process at the pass the fault spec asks for."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want, _, count = spec.rpartition(":")
    if want != name:
        return
    _hits[name] += 1
    if str(_hits[name]) == count:
        os.kill(os.getpid(), signal.SIGKILL)
