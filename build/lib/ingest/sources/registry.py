"""The sources a build reads, in one table (as ``shards.format.registry`` is for formats).

Each ``Source`` says how a user names it (``chosen``), how it is prepared into what the pipeline reads
(``prepare``: every check a user can fail, before anything is written), and what the pipeline and the
reports need to know of it. Nothing else in ingest branches on a source's kind. Heavy libraries
(tiledbsoma, cellxgene_census) are imported by a source's own ``prepare`` only, so an h5ad build never
loads them.

Adding a source: a module with its ``prepare(opts, work_params) -> Prepared`` (a SOMA-backed one returns
an ``experiment.ExperimentTarget`` and lets ``prepare_experiment`` do the rest), a row in ``SOURCES``, its
options in ``options.BuildOptions``, and its ``kind`` in the manifest schema's ``source.kind``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import IngestError
from .base import Prepared

__all__ = ["SOURCES", "Source", "source_kind", "source_of"]


@dataclass(frozen=True)
class Source:
    kind: str  # the manifest's source.kind
    usage: str  # how a user names it, for the one-source error
    chosen: Callable[[Any], bool]  # do these build options name this source?
    prepare: Callable[[Any, dict | None], Prepared]
    split_checked_while_preparing: bool  # h5ad: keys read while preparing; SOMA: the dry run reads obs
    var_filter: bool  # --var-filter can leave columns out (counted as dropped genes: var_filter)
    describe: Callable[[Prepared], str]  # the build's first line: what is read
    summary: Callable[[dict], str]  # ``ingest inspect``'s source line, from the manifest's source section


def _prepare_h5ad(opts, work_params):
    from .prepare import prepare_h5ad

    return prepare_h5ad(opts, work_params)


def _prepare_census(opts, work_params):
    from .census import census_target
    from .experiment import prepare_experiment, tiledb_config

    return prepare_experiment(opts, census_target(opts, tiledb_config(opts)), work_params)


def _prepare_soma(opts, work_params):
    from .experiment import prepare_experiment, tiledb_config
    from .soma import soma_target

    return prepare_experiment(opts, soma_target(opts, tiledb_config(opts)), work_params)


def _census_summary(src: dict) -> str:
    label, resolved = src.get("census_version"), src.get("resolved_version")
    return (
        f"Census {label}" + (f" (= {resolved})" if resolved and resolved != label else "") + f", {src.get('organism')}"
    )


SOURCES: dict[str, Source] = {
    "h5ad": Source(
        kind="h5ad",
        usage="--input FILE.h5ad ...",
        chosen=lambda o: bool(o.input),
        prepare=_prepare_h5ad,
        split_checked_while_preparing=True,
        var_filter=False,
        describe=lambda p: f"{len(p.inputs)} file(s)",
        summary=lambda src: f"{len(src.get('inputs', []))} h5ad file(s)",
    ),
    "census": Source(
        kind="census",
        usage="--census-version VERSION",
        chosen=lambda o: o.census_version is not None or o.census_uri is not None,
        prepare=_prepare_census,
        split_checked_while_preparing=False,
        var_filter=True,
        describe=lambda p: f"census {p.inputs[0].label}",
        summary=_census_summary,
    ),
    "soma": Source(
        kind="soma",
        usage="--soma-uri URI",
        chosen=lambda o: bool(o.soma_uri),
        prepare=_prepare_soma,
        split_checked_while_preparing=False,
        var_filter=True,
        describe=lambda p: f"soma {p.inputs[0].label}",
        summary=lambda src: f"SOMA {src.get('uri')}",
    ),
}


def source_of(opts) -> Source:
    """The one source the build options name."""
    chosen = [s for s in SOURCES.values() if s.chosen(opts)]
    if len(chosen) != 1:
        usages = [s.usage for s in SOURCES.values()]
        raise IngestError(f"give exactly one source: {', '.join(usages[:-1])}, or {usages[-1]}")
    return chosen[0]


def source_kind(kind: str) -> Source:
    """The source of a manifest's or a prepared build's kind."""
    if kind not in SOURCES:
        raise IngestError(f"source kind {kind!r} is not one this cellshard reads ({', '.join(SOURCES)})")
    return SOURCES[kind]
