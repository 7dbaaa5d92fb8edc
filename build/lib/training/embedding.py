"""Cell embeddings from a checkpoint, as ``python -m training embed`` writes them.

``embed_h5ad``: a copy of the user's own AnnData (tokenized in process with the model's vocabulary and
medians by ``shards.tokens``, exactly as ``ingest build`` would) with ``.obsm["X_cellshard"]``;
``embed``: a shard set's cells, with their stored metadata and where each came from as ``.obs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from shards.errors import ShardError
from shards.loading.readers import ShardSetReader
from shards.storage.atomic import tmp_name

from .checkpoints import load_model, training_files
from .errors import ConfigError
from .evaluate.embed import DEFAULT_POOLING, cell_metadata, embed_cells
from .model import CellEncoder
from .user_cells import CountsSource, tokenize_anndata

__all__ = ["embed", "embed_anndata", "embed_h5ad", "place_rows"]


#: the weights file of an exported model directory (``export --out DIR``)
def _same_tokens(a: Path, b: Path) -> bool:
    """Whether two vocabularies map every gene id to the same token (their files may differ in bytes:
    names, order, line endings)."""
    from shards.format.vocab import read_vocab

    va, vb = read_vocab(a), read_vocab(b)
    return (
        dict(zip(va.gene_ids, va.tokens.tolist(), strict=True))
        == dict(zip(vb.gene_ids, vb.tokens.tolist(), strict=True))
        and va.special == vb.special
    )


def _context(model: CellEncoder, context_length: int | None) -> int:
    """The context to embed with: the model's positions unless a shorter one is asked for."""
    n = context_length or model.cfg.max_positions
    if n > model.cfg.max_positions:
        raise ConfigError(f"--context-length {n} exceeds the model's {model.cfg.max_positions} positions")
    return n


def _write_h5ad(adata: Any, out: str) -> Path:
    """Write ``adata`` to ``out`` atomically (a temporary sibling, then a rename)."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(target).with_suffix(".h5ad")
    adata.write_h5ad(tmp)
    tmp.replace(target)
    return target


def embed_anndata(
    model: CellEncoder,
    vocab: Path,
    medians: Path,
    adata: Any,
    *,
    counts: CountsSource | None = None,
    where: str = "adata",
    pooling: str = DEFAULT_POOLING,
    batch_size: int = 64,
    context_length: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[list[str], Any]:
    """(obs names, float32 embeddings) of an AnnData's cells that have tokens (backed or in memory),
    tokenized in this process exactly as a build tokenizes them (``user_cells.tokenize_anndata``:
    ``shards.tokens`` with the model's vocabulary and medians)."""
    n = _context(model, context_length)
    cells = tokenize_anndata(adata, vocab, medians, counts or CountsSource(), where)
    ids, x = embed_cells(
        model,
        cells,
        context_length=n,
        pooling=pooling,
        batch_size=batch_size,
        value_bins=model.cfg.value_bins,
        device=device,
        progress=f"embedding {where}" if progress else None,
    )
    return [str(i) for i in ids], x


def place_rows(obs_names: Any, names: list[str], x: Any, where: str) -> Any:
    """Embeddings in the order of ``obs_names`` (NaN rows for cells without tokens)."""
    import numpy as np

    index = pd.Index(np.asarray(obs_names).astype(str))
    if not index.is_unique:
        raise ConfigError(f"{where}: obs_names are not unique; run adata.obs_names_make_unique() first")
    out = np.full((len(index), x.shape[1]), np.nan, dtype=np.float32)
    out[index.get_indexer(names)] = x
    return out


def embed_h5ad(
    ckpt: str,
    h5ad: str,
    out: str,
    *,
    data: str | None = None,
    pooling: str = DEFAULT_POOLING,
    batch_size: int = 64,
    context_length: int | None = None,
    device: str = "cpu",
    counts: CountsSource | None = None,
    progress: bool = False,
) -> tuple[Path, int]:
    """A copy of the user's AnnData (same obs_names, order, obs, var, X and layers) with
    ``.obsm["X_cellshard"]``: (the file written, cells without an embedding). Cells with no counts on
    the vocabulary's genes have no tokens: their rows are NaN, and counted."""
    import anndata as ad

    model, plain = load_model(ckpt)
    model.to(device)
    vocab, medians = training_files(plain, data, ckpt)
    source = Path(h5ad)
    if not source.is_file():
        raise ConfigError(f"--h5ad {h5ad}: no such file")
    counts = counts or CountsSource(cli=True)
    adata = ad.read_h5ad(source)
    names, x = embed_anndata(
        model,
        vocab,
        medians,
        adata,
        counts=counts,
        where=f"--h5ad {h5ad}" if counts.cli else str(source),
        pooling=pooling,
        batch_size=batch_size,
        context_length=context_length,
        device=device,
        progress=progress,
    )
    adata.obsm["X_cellshard"] = place_rows(adata.obs_names, names, x, f"--h5ad {h5ad}")
    adata.uns["cellshard"] = {"checkpoint": str(ckpt), "pooling": pooling, "vocab": str(vocab)}
    return _write_h5ad(adata, out), int(adata.n_obs - len(names))


def _same_vocab_as_training(plain: dict[str, Any], data: str) -> bool:
    """A shard set whose vocab.csv differs in bytes from the training set's may still map every gene to
    the same token (e.g. rebuilt with ``--vocab``): compared gene by gene when the training set is at hand."""
    trained = plain.get("data_path")
    if not trained or not (Path(trained) / "vocab.csv").is_file() or not (Path(data) / "vocab.csv").is_file():
        return False
    return _same_tokens(Path(trained) / "vocab.csv", Path(data) / "vocab.csv")


def embed(
    ckpt: str,
    data: str,
    out: str,
    split: str = "all",
    pooling: str = DEFAULT_POOLING,
    batch_size: int = 64,
    context_length: int | None = None,
    limit: int | None = None,
    device: str = "cpu",
    obs_columns: str | list[str] = "all",
    progress: bool = False,
) -> Path:
    """A shard set's cells embedded: ``.obs`` holds the stored metadata columns (``obs_columns``: ``all``
    or a comma-separated list), the split, and where each cell came from (``source_file`` and
    ``obs_name`` for h5ad inputs, ``source_uri`` and ``soma_joinid`` for SOMA and the Census)."""
    import anndata as ad
    import numpy as np

    from shards.format.provenance import cell_sources

    model, plain = load_model(ckpt)
    model.to(device)
    splits = ["train", "val"] if split == "all" else [split]
    ids_all, x_all, meta_all = [], [], []
    for s in splits:
        try:
            reader = ShardSetReader(data, s)
        except ShardError as exc:
            if split == "all" and "no shard in split" in str(exc):
                continue
            raise ConfigError(f"--data {data} --split {split}: {exc}") from None
        if (
            plain.get("vocab_sha256")
            and reader.manifest.vocab.sha256 != plain["vocab_sha256"]
            and not _same_vocab_as_training(plain, data)
        ):
            raise ConfigError(
                f"--data {data}: its vocabulary differs from the checkpoint's; build it with "
                "`ingest build --vocab <checkpoint dir>/vocab.csv --gene-medians "
                "<checkpoint dir>/gene_medians.csv`"
            )
        n = _context(model, context_length)
        ids, x = embed_cells(
            model,
            reader,
            context_length=n,
            pooling=pooling,
            batch_size=batch_size,
            limit=limit,
            value_bins=model.cfg.value_bins,
            device=device,
            progress=f"embedding {s}" if progress else None,
        )
        meta = _select_columns(cell_metadata(reader, ids), obs_columns, data)
        meta["split"] = s
        for name, values in cell_sources(ids, reader.manifest.source).items():
            meta[name] = values.to_numpy()
        ids_all.append(ids)
        x_all.append(x)
        meta_all.append(meta)
    if not ids_all:
        raise ConfigError(f"--data {data}: no cells in split {split!r}")
    obs = _obs_table(meta_all)
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(obs=obs, obsm={"X_cellshard": np.concatenate(x_all)})
    adata.uns["cellshard"] = {"checkpoint": str(ckpt), "pooling": pooling, "data": str(data)}
    return _write_h5ad(adata, out)


def _select_columns(meta: Any, obs_columns: str | list[str], data: str) -> Any:
    """The stored metadata columns asked for (``all``, or names: a list, or comma-separated)."""
    given = [obs_columns] if isinstance(obs_columns, str) else list(obs_columns)
    names = [c.strip() for item in given for c in item.split(",") if c.strip()]
    if names == ["all"]:
        return meta
    missing = [c for c in names if c not in meta.columns]
    if missing:
        raise ConfigError(
            f"--obs-columns {missing[0]!r}: not stored in {data} (stored: {', '.join(meta.columns)}; "
            "`ingest build --obs-columns` stores more)"
        )
    return meta[names].copy()


def _obs_table(frames):

    frame = pd.concat(frames)
    for col in frame.columns:  # h5ad needs plain types
        if frame[col].dtype == object:
            frame[col] = frame[col].astype(str)
    return frame
