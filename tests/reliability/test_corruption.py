"""Damaged shard sets: a flipped byte (20 seeded trials per format, anywhere in any file of a random
shard), a truncated shard, a deleted shard or sidecar, an edited manifest. ``ingest verify`` names every
one; the loader refuses the shard when it reads it (default) or, when the user opted in
(``on_error="skip"``), skips it with one warning and counts it, keeping every rank's batch count."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest.cli import main as ingest_main
from shards import ShardedCellDataset, ShardError, load_manifest
from tests.conftest import small_build

TRIALS = 20


@pytest.fixture(scope="module")
def sets(corpus, tmp_path_factory) -> dict[str, Path]:
    """One small set per format: 4 train shards and 1 val shard."""
    out = {}
    for fmt in ("zarr", "webdataset"):
        out[fmt] = tmp_path_factory.mktemp(f"damage-{fmt}") / "set"
        small_build(corpus, out[fmt], format=fmt, cells_per_shard=600, val_fraction=0.2)
    return out


def _files(root: Path, shard: dict) -> list[Path]:
    """Every file of one shard: its main file (or a directory shard's files) and its sidecar."""
    main = root / shard["path"]
    files = sorted(p for p in main.rglob("*") if p.is_file()) if main.is_dir() else [main]
    return files + [root / f["path"] for f in shard["files"]]


def _epoch(root: Path, split: str, **kw) -> tuple[ShardedCellDataset, list]:
    """Every cell of the split, once (padded remainder): every byte of its shards is read."""
    ds = ShardedCellDataset(
        root,
        batch_size=7,
        context_length=64,
        split=split,
        seed=1,
        rank=0,
        world_size=1,
        remainder="pad",
        lanes=2,
        lane_cells=50,
        return_cell_ids=True,
        **kw,
    )
    ds.set_epoch(0)
    return ds, list(ds)


def _verify_names(root: Path, what: str, capsys) -> None:
    assert ingest_main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"FAULT {what}" in out, out


def _loader_refuses_and_skips(root: Path, shard: dict, clean_batches: int, caplog) -> None:
    stem = shard["path"].split(".")[0]
    with pytest.raises(ShardError, match=stem):
        _epoch(root, shard["split"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shards.loading.dataset"):
        ds, batches = _epoch(root, shard["split"], on_error="skip")
    assert list(ds.skipped_shards) == [shard["path"]] and caplog.text.count("skipping shard") == 1
    assert len(batches) == clean_batches  # every rank would still yield the same number of batches
    placeholders = sum(sum(c.startswith("skipped:") for c in b["cell_id"]) for b in batches) if batches else 0
    assert 0 < ds.skipped_cells == placeholders  # (pad repeats of its cells are skipped too)
    assert all(
        float(b["loss_weight"][i]) == 0 for b in batches for i, c in enumerate(b["cell_id"]) if c.startswith("skipped:")
    )


@pytest.fixture(scope="module")
def clean_counts(sets) -> dict[tuple[str, str], int]:
    return {(fmt, split): len(_epoch(root, split)[1]) for fmt, root in sets.items() for split in ("train", "val")}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_a_flipped_byte_anywhere_is_caught_20_of_20(fmt, sets, clean_counts, tmp_path, capsys, caplog):
    rng = np.random.default_rng([7, len(fmt)])
    caught = {"verify": 0, "loader": 0, "skip": 0}
    where = []
    for trial in range(TRIALS):
        root = tmp_path / f"t{trial}"
        shutil.copytree(sets[fmt], root)
        shards = load_manifest(root)["shards"]
        shard = shards[int(rng.integers(len(shards)))]
        files = _files(root, shard)
        target = files[int(rng.integers(len(files)))]  # any file: data, index, zarr.json, sidecar
        data = bytearray(target.read_bytes())
        at = int(rng.integers(len(data)))
        data[at] ^= int(rng.integers(1, 256))
        target.write_bytes(bytes(data))
        where.append(f"{target.relative_to(root)}@{at}")
        _verify_names(root, shard["path"] if target.is_relative_to(root / shard["path"]) else target.name, capsys)
        caught["verify"] += 1
        _loader_refuses_and_skips(root, shard, clean_counts[(fmt, shard["split"])], caplog)
        caught["loader"] += 1
        caught["skip"] += 1
        shutil.rmtree(root)
    assert caught == {"verify": TRIALS, "loader": TRIALS, "skip": TRIALS}, where
    assert len({w.split("@")[0].split("/")[-1] for w in where}) > 2  # the trials hit several kinds of file


@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
@pytest.mark.parametrize("damage", ["truncate", "delete shard", "delete sidecar"])
def test_truncated_or_deleted_files_are_named(fmt, damage, sets, clean_counts, tmp_path, capsys, caplog):
    root = tmp_path / "set"
    shutil.copytree(sets[fmt], root)
    shard = load_manifest(root)["shards"][1]
    main, sidecar = root / shard["path"], root / shard["files"][0]["path"]
    if damage == "truncate":
        target = max(_files(root, shard), key=lambda p: p.stat().st_size)  # the tar, or the genes array's data
        target.write_bytes(target.read_bytes()[: target.stat().st_size * 2 // 3])
        named = shard["path"]
    elif damage == "delete shard":
        shutil.rmtree(main) if main.is_dir() else main.unlink()
        named = f"{shard['path']}: missing"
    else:
        sidecar.unlink()
        named = f"{sidecar.name}: missing"
    _verify_names(root, named, capsys)
    _loader_refuses_and_skips(root, shard, clean_counts[(fmt, shard["split"])], caplog)


@pytest.mark.parametrize(
    "edit",
    ["shard n_cells", "shard sha256", "drop a shard", "seed", "truncated file", "not json", "format_version"],
)
def test_an_edited_manifest_is_refused_everywhere(edit, sets, tmp_path, capsys):
    root = tmp_path / "set"
    shutil.copytree(sets["zarr"], root)
    index = root / "index.json"
    doc = json.loads(index.read_text())
    if edit == "shard n_cells":
        doc["shards"][0]["n_cells"] -= 1
    elif edit == "shard sha256":
        doc["shards"][0]["sha256"] = "0" * 64
    elif edit == "drop a shard":
        doc["shards"].pop()
    elif edit == "seed":
        doc["seed"] += 1
    elif edit == "format_version":
        doc["format_version"] = 1
    text = json.dumps(doc, indent=1, sort_keys=True)
    if edit == "truncated file":
        text = index.read_text()[: len(index.read_text()) // 2]
    elif edit == "not json":
        text = "<html>404</html>"
    index.write_text(text)
    needles = {
        "truncated file": "unreadable manifest",
        "not json": "unreadable manifest",
        "format_version": "format_version 1 is not supported",
    }
    needle = needles.get(edit, "does not match its checksum")
    _verify_names(root, "index.json", capsys)
    with pytest.raises(ShardError, match=needle) as err:
        ShardedCellDataset(root, batch_size=4, rank=0, world_size=1)
    assert "index.json" in str(err.value)


REGIONS = {
    "webdataset": [("tar", 0), ("tar", "middle"), ("tar", -1), ("idx", 20), ("idx", -1)],
    "zarr": [
        ("zarr.json", 30),
        ("genes/zarr.json", -3),
        ("genes/c/0", 0),
        ("genes/c/0", -1),
        ("offsets/c/0", "middle"),
        ("parquet", 0),
        ("parquet", -12),
    ],
}


@pytest.mark.parametrize(("fmt", "region"), [(f, r) for f, regions in REGIONS.items() for r in regions])
def test_every_region_of_a_shard_is_checked_by_the_loader(fmt, region, sets, tmp_path):
    """Aimed flips where a random trial rarely lands: a tar's end-of-archive zeros, the sample index's
    header, each zarr.json, a Zarr shard index's crc, the Parquet footer."""
    root = tmp_path / "set"
    shutil.copytree(sets[fmt], root)
    shard = load_manifest(root)["shards"][0]
    name, at = region
    if name in ("tar", "idx", "parquet"):
        target = root / (shard["path"] if name == "tar" else shard["files"][0]["path"])
    else:
        target = root / shard["path"] / name
    data = bytearray(target.read_bytes())
    at = len(data) // 2 if at == "middle" else at
    data[at] ^= 0x20
    target.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=shard["path"].split(".")[0]):
        _epoch(root, shard["split"])


def test_a_resealed_manifest_with_a_wrong_metadata_hash_is_caught(sets, tmp_path, capsys):
    """Someone edits a shard's metadata_sha256 and recomputes the checksum: verify and the loader agree."""
    from shards import dump_manifest

    root = tmp_path / "set"
    shutil.copytree(sets["zarr"], root)
    manifest = load_manifest(root)
    shard = manifest["shards"][0]
    shard["metadata_sha256"] = "1" * 64
    dump_manifest(root, manifest)
    _verify_names(root, f"{shard['path']}: metadata_sha256 differs", capsys)
    with pytest.raises(ShardError, match="metadata_sha256"):
        _epoch(root, shard["split"])
