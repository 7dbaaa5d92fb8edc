"""``python -m benchmarks ingest --cells N --out DIR [--corpus GLOB] [--workers W]``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import ingest
from .report import write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = p.add_subparsers(dest="suite", required=True)
    ing = sub.add_parser("ingest", help="h5ad -> shards, next to Geneformer's tokenizer algorithm")
    ing.add_argument("--cells", type=int, default=100_000)
    ing.add_argument("--corpus", default=None, help="glob of existing h5ad files instead of a synthetic corpus")
    ing.add_argument("--workers", type=int, default=1)
    ing.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    results = ingest.run(args.out, args.cells, args.corpus, args.workers)
    write_report(args.out, results, "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv))
    print((args.out / "REPORT.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
