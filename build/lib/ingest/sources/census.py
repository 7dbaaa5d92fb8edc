"""Finding and opening a CELLxGENE Census release, guarded against a network that does not answer.

``cellxgene_census`` locates releases through two JSON documents on a web server (``release.json``, then
``mirrors.json``) fetched with ``requests.get`` and no timeout: on a cluster node without internet access
that can hang for minutes, or forever. Every call that may touch them runs here in a daemon thread with a
deadline, and failure becomes one error that says what could not be reached and how to work offline
(``--census-uri`` for a local copy or mirror). Sites that mirror the release directory itself can point
the library at it with ``CELLSHARD_CENSUS_RELEASE_URL`` / ``CELLSHARD_CENSUS_MIRRORS_URL``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import cellxgene_census
import tiledbsoma as soma
from cellxgene_census import _release_directory as release_dir

from ..errors import IngestError

__all__ = [
    "MIRRORS_URL_ENV",
    "RELEASE_URL_ENV",
    "census_summary",
    "census_target",
    "normalize_organism",
    "open_census",
    "resolve_version",
]

RELEASE_URL_ENV = "CELLSHARD_CENSUS_RELEASE_URL"
MIRRORS_URL_ENV = "CELLSHARD_CENSUS_MIRRORS_URL"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
T = TypeVar("T")


def _apply_directory_urls() -> str:
    """Point the library at the release directory of the environment (if set); return its URL."""
    if os.environ.get(RELEASE_URL_ENV):
        release_dir.CELL_CENSUS_RELEASE_DIRECTORY_URL = os.environ[RELEASE_URL_ENV]
    if os.environ.get(MIRRORS_URL_ENV):
        release_dir.CELL_CENSUS_MIRRORS_DIRECTORY_URL = os.environ[MIRRORS_URL_ENV]
    return release_dir.CELL_CENSUS_RELEASE_DIRECTORY_URL


def _network_reason(exc: BaseException) -> str:
    """A short cause for requests' nested connection errors."""
    text = str(exc)
    for needle, reason in (
        ("NameResolution", "the host name does not resolve: no network or DNS"),
        ("Connection refused", "connection refused"),
        ("timed out", "connection timed out"),
        ("SSL", "TLS handshake failed"),
    ):
        if needle in text:
            return reason
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def _guarded(fn: Callable[[], T], timeout: float, what: str, advice: str) -> T:
    """``fn()`` in a daemon thread; an error naming ``what`` if it raises a network error or overruns."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="census-directory", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise IngestError(f"{what} did not answer within {timeout:g} s (--census-timeout); {advice}")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, (ValueError, IngestError)):
            raise exc
        raise IngestError(f"{what} could not be reached ({_network_reason(exc)}); {advice}") from None
    return box["value"]


def is_alias(version: str) -> bool:
    return not _DATE.match(version)


def resolve_version(version: str, timeout: float) -> dict:
    """The release directory's description of ``version`` (``release_build`` is the date it names)."""
    url = _apply_directory_urls()
    advice = "work offline with a local copy or mirror: --census-uri PATH_OR_S3_URI " + (
        "(with --census-version set to its release date)" if is_alias(version) else f"--census-version {version}"
    )

    def describe() -> dict:
        directory = release_dir.get_census_version_directory()
        if version not in directory:
            dated = sorted((k for k in directory if not is_alias(k)), reverse=True)[:5]
            aliases = sorted(k for k in directory if is_alias(k))
            raise IngestError(
                f"--census-version {version!r} is not a Census release (aliases: {', '.join(aliases)}; "
                f"recent releases: {', '.join(dated)})"
            )
        return dict(directory[version])

    return _guarded(describe, timeout, f"the Census release directory {url}", advice)


def normalize_organism(value: str) -> str:
    """``"Homo sapiens"`` → ``homo_sapiens`` (the experiment names of ``census_data``)."""
    return value.strip().lower().replace(" ", "_")


def census_summary(root: soma.Collection) -> dict[str, str]:
    """``census_info/summary`` as ``{label: value}``; empty when the copy has none."""
    try:
        table = root["census_info"]["summary"].read().concat().to_pandas()
    except (KeyError, soma.SOMAError):
        return {}
    return dict(zip(table["label"].astype(str), table["value"].astype(str), strict=True))


def open_census(
    version: str | None, uri: str | None, tiledb_config: dict, timeout: float
) -> tuple[soma.Collection, dict]:
    """Open the Census root collection by release (through the directory) or from ``uri``.

    Returns the collection and what the manifest records: the label asked for, the release it resolved
    to, the URI opened and the copy's build date and schema version.
    """
    record: dict[str, Any] = {"census_version": version, "census_uri": uri}
    resolved = None
    if version is not None and (uri is None or is_alias(version)):
        description = resolve_version(version, timeout)
        resolved = description.get("release_build")
    elif version is not None:
        resolved = version
    if uri is not None:
        try:
            root = cellxgene_census.open_soma(uri=uri, tiledb_config=tiledb_config)
        except (soma.SOMAError, ValueError) as exc:
            raise IngestError(
                f"--census-uri {uri}: not a SOMA collection ({str(exc).splitlines()[0]}); point it at the "
                "directory that holds census_data and census_info (e.g. .../2025-01-30/soma)"
            ) from None
    else:
        url = _apply_directory_urls()

        def open_release() -> soma.Collection:
            try:
                return cellxgene_census.open_soma(census_version=version, tiledb_config=tiledb_config)
            except soma.SOMAError as exc:
                raise IngestError(
                    f"--census-version {version}: the release directory names a location that cannot be opened "
                    f"({str(exc).splitlines()[0]}); try another --census-version or a copy with --census-uri"
                ) from None

        root = _guarded(
            open_release,
            timeout,
            f"the Census release {version!r} (directory {url})",
            "work offline with a local copy or mirror: --census-uri PATH_OR_S3_URI",
        )
    if not isinstance(root, soma.Collection) or "census_data" not in root:
        where = uri or version
        root.close()
        raise IngestError(f"{where}: not a Census (no census_data collection); for any SOMA experiment use --soma-uri")
    summary = census_summary(root)
    build_date = summary.get("census_build_date")
    if version is None:
        if not build_date:
            root.close()
            raise IngestError(
                f"--census-uri {uri}: the copy has no census_info/summary build date; pass --census-version"
            )
        version = resolved = build_date
    if build_date and resolved and build_date != resolved:
        root.close()
        raise IngestError(
            f"--census-version {record['census_version']} names release {resolved} but the copy at "
            f"{uri or root.uri} was built on {build_date}; pass the copy's release or point --census-uri elsewhere"
        )
    record.update(
        census_version=version,
        resolved_version=resolved,
        census_build_date=build_date,
        census_schema_version=summary.get("census_schema_version"),
        uri=root.uri,
    )
    return root, record


def census_target(opts, config: dict):
    """The experiment of ``--census-version`` / ``--census-uri`` and ``--organism``: the release opened
    (guarded against a network that does not answer), the organism checked against it."""
    from .base import CENSUS_DEFAULT_OBS_COLUMNS
    from .experiment import ExperimentTarget

    organism = normalize_organism(opts.organism)
    root, record = open_census(opts.census_version, opts.census_uri, config, opts.census_timeout)
    try:
        organisms = sorted(root["census_data"].keys())
        if organism not in organisms:
            raise IngestError(f"--organism {opts.organism!r}: the Census has {', '.join(organisms)}")
        exp_uri = root["census_data"][organism].uri
        config = dict(root.context.tiledb_config)
        info = root["census_info"] if "census_info" in root else {}
        datasets_uri = info["datasets"].uri if "datasets" in info else None
    finally:
        root.close()
    return ExperimentTarget(
        kind="census",
        uri=exp_uri,
        label=record["uri"],
        config=config,
        record=record,
        cell_id_prefix=f"census:{record['resolved_version']}:",  # the release date: an alias moves
        dataset_default=organism,
        organism=organism,
        organism_label=organism.replace("_", " ").capitalize(),
        datasets_uri=datasets_uri,
        default_obs_columns=CENSUS_DEFAULT_OBS_COLUMNS,
    )
