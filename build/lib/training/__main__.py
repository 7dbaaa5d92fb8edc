"""``python -m training fit|validate|embed|export ...``"""

from __future__ import annotations

import sys

USAGE = """usage: python -m training COMMAND [options]

cellshard training: pretrain on a shard set, then use the model

commands:
  fit        pretrain (or resume with --ckpt_path) a model on a shard set: --config configs/train/tiny.yaml
  validate   one pass over a run's val split
  embed      cell embeddings of a shard set into an h5ad (.obsm["X_cellshard"])
  export     a checkpoint as a plain state dict + model config
  report     a finished run's summary against baselines

`python -m training COMMAND --help` lists a command's options.
"""


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("embed", "export", "report"):
        from .tools import main as tools_main

        return tools_main(argv)
    from .fit.cli import main

    return main(None)  # LightningCLI reads sys.argv itself


if __name__ == "__main__":
    sys.exit(_dispatch(sys.argv[1:]))
