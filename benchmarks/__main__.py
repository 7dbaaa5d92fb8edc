"""``python -m benchmarks ingest|loader|mixing|train|padding|pack-curve|gpu|startup ...`` (see ``--help``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from . import ingest, loader, mixing
from .report import write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = p.add_subparsers(dest="suite", required=True)
    ing = sub.add_parser("ingest", help="h5ad and SOMA -> shards, next to Geneformer's tokenizer algorithm")
    ing.add_argument("--cells", type=int, default=100_000)
    ing.add_argument("--corpus", default=None, help="glob of existing h5ad files instead of a synthetic corpus")
    ing.add_argument("--workers", type=int, default=1)
    ing.add_argument("--no-soma", action="store_true", help="leave out the SOMA (Census-shaped copy) rows")
    ing.add_argument("--threads", type=int, default=2, help="also build with this many threads per process")
    ing.add_argument("--out", type=Path, required=True)
    ld = sub.add_parser("loader", help="streaming: I/O limit, collate limit, end to end, RSS, shuffle quality")
    ld.add_argument("--zarr", type=Path, required=True, help="a Zarr shard set (>= 100k cells for the issue's figures)")
    ld.add_argument("--wds", type=Path, required=True, help="the same corpus as a WebDataset shard set")
    ld.add_argument("--batch-size", type=int, default=64)
    ld.add_argument("--context-length", type=int, default=2048)
    ld.add_argument("--out", type=Path, required=True)
    mx = sub.add_parser("mixing", help="overhead of streams, weighting, grouping and panels over plain streaming")
    mx.add_argument("--zarr", type=Path, required=True, help="a Zarr shard set")
    mx.add_argument("--batch-size", type=int, default=64)
    mx.add_argument("--context-length", type=int, default=2048)
    mx.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each counts")
    mx.add_argument("--out", type=Path, required=True)
    tr = sub.add_parser("train", help="training cells/s on CPU; the loader feeding a simulated H100")
    tr.add_argument("--data", type=Path, required=True, help="a Zarr shard set (e.g. the demo's)")
    tr.add_argument("--steps", type=int, default=20, help="optimizer steps per tiny run")
    tr.add_argument("--big-steps", type=int, default=6, help="optimizer steps per geneformer-10m run")
    tr.add_argument("--feed-batches", type=int, default=300, help="batches per simulated-GPU run")
    tr.add_argument("--quick", action="store_true", help="leave out the geneformer-10m CPU runs")
    tr.add_argument(
        "--learn-steps",
        type=int,
        default=1500,
        help="steps of the demo recipe's run whose embedding is compared with PCA-50 and an untrained encoder "
        "(0: none)",
    )
    tr.add_argument("--no-scvi", action="store_true", help="leave scVI out of the learning evidence")
    tr.add_argument("--out", type=Path, required=True)
    pd_ = sub.add_parser("padding", help="padded share of computed tokens and FLOPs: plain, token budget, packed")
    pd_.add_argument("--data", default=None, help="an atlas shard set (its genes per cell); else census-like only")
    pd_.add_argument("--cells", type=int, default=200_000, help="census-like cells drawn")
    pd_.add_argument("--out", type=Path, required=True)
    pc = sub.add_parser("pack-curve", help="the demo recipe padded vs packed on the same cells: loss curves, seeds")
    pc.add_argument("--data", required=True, help="a Zarr shard set with a val split")
    pc.add_argument("--steps", type=int, default=1500)
    pc.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    pc.add_argument("--context-length", type=int, default=512)
    pc.add_argument("--batch-size", type=int, default=32)
    pc.add_argument("--out", type=Path, required=True)
    gp = sub.add_parser("gpu", help="every GPU code path in one run (rows that need CUDA are skipped elsewhere)")
    gp.add_argument("--data", type=Path, default=None, help="a Zarr shard set (default: a small synthetic one)")
    gp.add_argument("--quick", action="store_true", help="CPU rows on a tiny model with fewer steps")
    gp.add_argument("--only", nargs="*", default=None, help="run only these rows (names as in REPORT.md)")
    gp.add_argument("--out", type=Path, required=True)
    st = sub.add_parser("startup", help="import and --help times, fresh interpreters, interleaved rounds")
    st.add_argument("--rounds", type=int, default=5)
    st.add_argument("--out", type=Path, required=True)
    rn = sub.add_parser("run", help="the whole suite in one run: results.json, REPORT.md, plots")
    rn.add_argument("--suite", dest="suite_name", choices=["tiny", "quick", "full"], default="quick")
    rn.add_argument("--out", type=Path, required=True)
    rn.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "cellshard-bench",
        help="where the corpus, its shard sets and its SOMA copy are kept between runs",
    )
    args = p.parse_args(argv)
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.suite == "run":
        from . import suite

        results, derived = suite.run(args.suite_name, args.out, args.cache)
        s = suite.SUITES[args.suite_name]
        write_report(args.out, results, command, derived, suite.notes(s), {"suite": args.suite_name, **asdict(s)})
    elif args.suite == "ingest":
        results = ingest.run(
            args.out, args.cells, args.corpus, args.workers, soma=not args.no_soma, threads=args.threads
        )
        write_report(args.out, results, command, ingest.ratios(results))
    elif args.suite == "pack-curve":
        from . import pack_curve

        results = pack_curve.run(
            args.data, args.out, args.steps, tuple(args.seeds), args.context_length, args.batch_size
        )
        write_report(args.out, results, command, pack_curve.ratios(results))
    elif args.suite == "gpu":
        from . import gpu

        results, skipped = gpu.run(args.out, args.data, args.quick, args.only)
        write_report(args.out, results, command, None, gpu.notes(skipped), gpu.report_config(skipped, args.quick))
    elif args.suite == "padding":
        from . import padding

        results = padding.run(args.data, args.cells)
        write_report(args.out, results, command, padding.ratios(results), padding.NOTES)
    elif args.suite == "train":
        # imported here only: it pulls in Lightning, which spawned loader processes would otherwise
        # re-import (spawn imports __main__), adding ~140 MiB to every peak RSS the loader suite measures
        from . import train

        results = train.run(
            args.data,
            args.out,
            args.steps,
            args.big_steps,
            args.feed_batches,
            args.quick,
            args.learn_steps,
            scvi=False if args.no_scvi else None,
        )
        write_report(args.out, results, command, train.ratios(results))
    elif args.suite == "startup":
        from . import startup

        results = startup.run(args.out, args.rounds)
        write_report(args.out, results, command, startup.ratios(results))
    elif args.suite == "mixing":
        results = mixing.run(args.zarr, args.out, args.batch_size, args.context_length, args.rounds)
        write_report(args.out, results, command, mixing.ratios(results))
    else:
        results = loader.run(args.zarr, args.wds, args.out, args.batch_size, args.context_length)
        write_report(args.out, results, command, loader.ratios(results))
    print((args.out / "REPORT.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
