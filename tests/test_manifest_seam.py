"""The manifest is parsed once, in ``shards/format`` (``Manifest``, ``ShardEntry``): nothing outside that
layer reads it by raw keys. A raw read escapes the schema's types (an ``int`` that is a string, a key
renamed in a format version) and spreads the document's layout over the codebase."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from shards.format.manifest import Manifest, ShardEntry, read_manifest

ROOT = Path(__file__).resolve().parents[1]
#: the product's packages (benchmarks/ hand-build synthetic manifests, e.g. a shard listed 1,000 times)
PACKAGES = ("shards", "ingest", "training")
#: the layer that owns the document, and the writer that assembles it for the schema to validate
OWNERS = ("shards/format/", "ingest/pipeline/manifest.py")
#: receivers that hold a manifest document or one of its shard entries
RECEIVER = re.compile(r"manifest|\bm\b|shards?\[|\bshard\b|\bsh\b")


def _raw_reads(path: Path) -> list[str]:
    text = path.read_text()
    out = []
    for node in ast.walk(ast.parse(text)):
        receiver = key = None
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            receiver, key = node.value, node.slice.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            receiver, key = node.func.value, node.args[0].value
        if receiver is None:
            continue
        source = ast.get_source_segment(text, receiver) or ""
        if RECEIVER.search(source) or "load_manifest(" in source:
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {source}[{key!r}]")
    return out


def test_no_raw_manifest_key_outside_the_format_layer():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    raw = [r for p in files if not p.relative_to(ROOT).as_posix().startswith(OWNERS) for r in _raw_reads(p)]
    assert not raw, "read the manifest through shards.format.Manifest / ShardEntry:\n" + "\n".join(raw)


def test_the_detector_sees_a_raw_read(tmp_path):
    """The check above would fail on the reads it exists to catch."""
    probe = ROOT / "shards" / "_probe_raw_manifest.py"
    probe.write_text(
        'def f(reader, m):\n    return reader.manifest["build_id"], m.get("shards"), reader.shards[0]["path"]\n'
    )
    try:
        assert len(_raw_reads(probe)) == 3
    finally:
        probe.unlink()


def test_the_typed_manifest_reads_every_field_of_a_built_set(tmp_path):
    from ingest import BuildOptions, SynthSpec, build, synthesize

    files = [
        p for p, _ in synthesize(SynthSpec(cells=300, genes=120, datasets=2, files=1, seed=3), tmp_path / "c.h5ad")
    ]
    doc = build(
        BuildOptions(
            input=[str(f) for f in files], out=str(tmp_path / "set"), quiet=True, val_fraction=0.3, split_by="cell"
        )
    )
    m = read_manifest(tmp_path / "set")
    assert isinstance(m, Manifest) and m.raw == {k: v for k, v in doc.items() if k not in ("seconds", "cells_per_sec")}
    assert (m.build_id, m.n_cells, m.n_tokens, m.format) == (
        doc["build_id"],
        doc["n_cells"],
        doc["n_tokens"],
        doc["format"],
    )
    assert all(isinstance(s, ShardEntry) for s in m.shards) and [s.raw for s in m.shards] == doc["shards"]
    assert sum(s.n_cells for s in m.split("val")) == m.splits["val"].n_cells > 0
    assert m.vocab.file == "vocab.csv" and m.genes == doc["vocab"]["size"] - len(doc["vocab"]["special_tokens"])
    assert m.labels is not None and "cell_type" in m.labels.columns and m.file("labels") is m.labels
    assert m.split_by == doc["options"]["split_by"] and m.val_fraction == 0.3
    assert m.counters.skipped_cells == doc["counters"]["skipped_cells"] and m.stats.datasets == doc["stats"]["datasets"]
