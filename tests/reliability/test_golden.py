"""Refactors and speed work change no output byte: shards and batches against values recorded before.

``golden.json`` was written by ``python -m tests.reliability.golden --record`` from the code before the
change; this test rebuilds the same corpus in both formats and through the SOMA path, and streams the first
batches of two epochs in every loader mode.
"""

from __future__ import annotations

import json

from tests.reliability.golden import GOLDEN, record


def test_shards_and_batches_match_the_recorded_golden_values(tmp_path):
    want = json.loads(GOLDEN.read_text())
    got = record(tmp_path)
    assert got["synth"] == want["synth"] and got["build"] == want["build"]
    for name, files in want["files"].items():
        moved = sorted(f for f in set(files) | set(got["files"][name]) if files.get(f) != got["files"][name].get(f))
        assert not moved, f"{name}: files differ from the golden build: {moved[:5]}"
    unrecorded = sorted(set(got["batches"]) - set(want["batches"]))
    assert not unrecorded, (
        "loader cases without golden digests: record them with "
        f"`python -m tests.reliability.golden --record {' '.join(unrecorded)}`"
    )
    for case, digests in want["batches"].items():
        bad = [i for i, (a, b) in enumerate(zip(digests, got["batches"][case], strict=True)) if a != b]
        assert not bad, f"loader case {case}: batches {bad} differ from the golden values"
