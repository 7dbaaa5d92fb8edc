"""The loader's saved state, typed and versioned: what a resume needs, and what it must match.

A state is rank-independent when the loader saves it (``batches`` = what *each rank* consumed in the
current stage of the epoch: Lightning keeps rank 0's loader state only, and every rank recomputes its
own position from it), or one worker's own when torchdata's ``StatefulDataLoader`` saves a state per
worker (``batches`` = what that worker yielded). Either way it has one shape, ``LoaderState``; a resume
refuses a state of another version or settings, naming the setting (torchtitan's rule: never resume
silently into a different data order).

A *stage* is a finished part of the epoch run with one world: after an elastic resume on another world
size the rest of the epoch is re-planned over the cells the stages did not serve (``elastic``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import ShardError

__all__ = ["STATE_VERSION", "LoaderState", "Resume", "Stage"]

#: 1: the layout below (written since the first release of the loader; unchanged by the typed form)
STATE_VERSION = 1

#: settings a resume must match, and how a message names them
_NAMES = {"build_id": "shard set", "mix": "streams/sampling"}


@dataclass(frozen=True)
class Stage:
    """A finished part of an epoch: run on ``world_size`` ranks x ``num_workers`` workers with
    ``batch_size`` cells per batch and the ``policy`` remainder, each rank consuming ``batches``."""

    world_size: int
    num_workers: int
    batch_size: int
    policy: str
    batches: int

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Stage:
        try:
            return cls(*(type_(doc[f.name]) for f, type_ in zip(fields(cls), (int, int, int, str, int), strict=True)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardError(f"cannot resume: a saved epoch stage is malformed ({doc!r}: {exc})") from None


@dataclass(frozen=True)
class LoaderState:
    """A loader's position (``epoch``, ``batches``, finished ``stages``) and the settings it is valid for."""

    build_id: str
    split: str
    seed: int
    batch_size: int
    remainder: str
    balance_tokens: bool
    token_budget: int | None
    world_size: int
    num_workers: int
    mix: str | None = None  # the streams and sampling of a mix (JSON); None for one plain shard set
    epoch: int = 0
    batches: int = 0
    stages: tuple[Stage, ...] = ()
    version: int = STATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The saved form (JSON-able; ``mix`` left out for a plain set, so such states read as before)."""
        out = asdict(self)
        out["stages"] = [asdict(s) for s in self.stages]
        if self.mix is None:
            del out["mix"]
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LoaderState:
        """A saved state; refuses another version, or one that lacks a field."""
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
            got = doc.get("version") if isinstance(doc, dict) else type(doc).__name__
            raise ShardError(f"loader state version {got} is not {STATE_VERSION}; cannot resume")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - {"mix", "stages", "version"} - set(doc))
        if missing:
            raise ShardError(f"cannot resume: the saved loader state lacks {missing}")
        values = {k: v for k, v in doc.items() if k in names}
        values["stages"] = tuple(Stage.from_dict(s) for s in doc.get("stages", []))
        return cls(**values)

    def with_position(self, epoch: int, batches: int, stages: tuple[Stage, ...]) -> LoaderState:
        return replace(self, epoch=epoch, batches=batches, stages=tuple(stages))

    def check_matches(self, mine: LoaderState, keys: tuple[str, ...]) -> None:
        """Refuse this saved state when a setting of ``keys`` differs from this run's (``mine``)."""
        for key in keys:
            saved, now = getattr(self, key), getattr(mine, key)
            if saved != now:
                raise ShardError(
                    f"cannot resume: the saved loader state has {_NAMES.get(key, key)}={saved!r}, this run has "
                    f"{now!r}; resume with the same data settings"
                )


@dataclass(frozen=True)
class Resume:
    """Where the next iteration of an epoch starts: ``batches`` served per rank (``per_rank``) or by this
    worker, after the finished ``stages``."""

    epoch: int
    batches: int
    stages: tuple[Stage, ...] = ()
    per_rank: bool = True
