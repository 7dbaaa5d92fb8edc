"""Sampling modes: how an epoch's cells are chosen and cut into batches, one module per mode.

``base.SamplingMode`` is the protocol (plan an epoch, a worker's batch schedule, its batch count, the
identity a resume must match, what a resume refuses). ``select_mode`` picks a mode from the loader's
options through two tables: ``CHOOSERS`` (which cells: the first whose ``wants`` accepts the options) and
``GROUPERS`` (how they are batched, when ``group_by`` is set). Adding a mode is one module and one row
here; docs/SAMPLING.md walks through it.

| mode | module | when |
|---|---|---|
| ``plain`` | ``plain`` | one shard set or several, every cell once (default) |
| ``runs`` | ``runs`` | a mix: stream weights, repeats, ``choose``, ``num_samples`` |
| ``weighted`` | ``weighted`` | ``weighting`` and/or ``replacement`` |
| ``grouped-bounded`` | ``grouped_bounded`` | ``group_by`` (over any of the above) |
| ``grouped-exact`` | ``grouped_exact`` | ``group_by`` with ``group_exact: true`` |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...plan.mixing import Stream
from ..config import LoaderConfig
from ..streams import MultiReader
from .base import ModeBase, SamplingMode, Schedule, SequentialSchedule
from .grouped import Grouped
from .grouped_bounded import DEFAULT_GROUP_POOL, GroupedBounded
from .grouped_exact import LARGE_EXACT_GROUPS, GroupedExact
from .plain import Plain
from .runs import Runs
from .weighted import Weighted

__all__ = [
    "CHOOSERS",
    "DEFAULT_GROUP_POOL",
    "GROUPERS",
    "LARGE_EXACT_GROUPS",
    "Grouped",
    "GroupedBounded",
    "GroupedExact",
    "ModeBase",
    "Plain",
    "Runs",
    "SamplingMode",
    "Schedule",
    "SequentialSchedule",
    "Weighted",
    "select_mode",
]


def _drawn(config: LoaderConfig, streams: Sequence[Stream]) -> bool:
    return config.sampled or any(s.kind()[0] != "natural" for s in streams)


#: which cells an epoch serves: (name, wants(config, streams), make(reader, streams, config)), first match
CHOOSERS: tuple[tuple[str, Callable[[LoaderConfig, Sequence[Stream]], bool], Callable[..., SamplingMode]], ...] = (
    ("weighted", lambda c, s: _drawn(c, s) and (c.weighting is not None or c.replacement), Weighted),
    ("runs", _drawn, Runs),
    ("plain", lambda c, s: True, lambda reader, streams, config: Plain(reader, config)),
)

#: how they are batched when grouped: (name, wants(config), make(inner, reader)), first match
GROUPERS: tuple[tuple[str, Callable[[LoaderConfig], bool], Callable[..., SamplingMode]], ...] = (
    ("grouped-exact", lambda c: c.group_by is not None and c.group_exact, GroupedExact),
    ("grouped-bounded", lambda c: c.group_by is not None, GroupedBounded),
)


def select_mode(reader: MultiReader, streams: Sequence[Stream], config: LoaderConfig) -> SamplingMode:
    """The mode these options ask for (see the tables above)."""
    mode = next(make(reader, list(streams), config) for _, wants, make in CHOOSERS if wants(config, streams))
    for _, wants, make in GROUPERS:
        if wants(config):
            return make(mode, reader)
    return mode
