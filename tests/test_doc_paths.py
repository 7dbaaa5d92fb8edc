"""Every repository file and ``tests/…::name`` that README.md and docs/ cite exists: a moved file or a
renamed test otherwise leaves the contract pointing at nothing (it happened: USAGE and GUARANTEES cited
files and tests that had moved)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: a path into one of the repository's top folders, ending in a file (an extension) or a folder (a slash),
#: optionally a test's ``::name``; paths a command creates (``--out shards/census-human``) have neither
REF = re.compile(
    r"(?<![\w/.-])((?:ingest|shards|training|tests|benchmarks|docs|configs|\.ci)/[\w./-]*(?:\.(?:py|md|yaml|yml|json|toml|sh|csv)|/))"
    r"(?:::([\w\[\]-]+))?"
)


def references(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in REF.finditer(text)]


def missing(text: str) -> list[str]:
    out = []
    for ref, name in references(text):
        path = ROOT / ref
        if not path.exists():
            out.append(ref)
        elif name and not re.search(rf"^\s*(async )?def {re.escape(name.split('[')[0])}\b", path.read_text(), re.M):
            out.append(f"{ref}::{name}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_cited_file_and_test_exists(doc):
    gone = missing(doc.read_text())
    assert not gone, f"{doc.name} cites what does not exist: {gone}"


def test_the_resolver_sees_a_moved_file_and_a_renamed_test():
    text = "see `shards/sampler.py` and `tests/shards/test_mixing.py::test_no_such_test` (`--out shards/x`)"
    assert missing(text) == ["shards/sampler.py", "tests/shards/test_mixing.py::test_no_such_test"]
    assert missing("`shards/plan/sampler.py`, `tests/shards/test_mixing.py::test_training_config_streams`") == []


def test_the_docs_are_read_for_references():
    """The check above reads real citations (190 when written), tests included, not a pattern that
    matches nothing."""
    found = [r for d in DOCS for r in references(d.read_text())]
    assert len(found) > 100 and sum(1 for _, name in found if name) > 10
