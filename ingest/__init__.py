"""cellshard's ingest stage: h5ad files, the CELLxGENE Census and SOMA experiments into tokenized shard sets.

``sources`` reads and checks the inputs (one table of them: ``sources.registry``), the math modules
(``vocab``, ``medians``, ``split``, ``permute``, ``layout``; the tokens themselves are ``shards.tokens``)
are pure, and ``pipeline`` runs the stages of a build. Public names load on first use, so ``import
ingest`` and ``ingest --help`` start without numba, pandas or tiledbsoma.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shards.lazy import lazy_namespace

from .errors import IngestError

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name loads on first use
    from .options import BuildOptions
    from .pipeline import BuildResult, build
    from .synth import synthesize
    from .synth_spec import SynthSpec

_EXPORTS = {
    "BuildOptions": ".options",
    "BuildResult": ".pipeline",
    "SynthSpec": ".synth_spec",
    "build": ".pipeline",
    "synthesize": ".synth",
}

__all__ = ["BuildOptions", "BuildResult", "IngestError", "SynthSpec", "build", "synthesize"]


__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
