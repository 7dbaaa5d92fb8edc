"""cellshard's ingest stage: h5ad files, the CELLxGENE Census and SOMA experiments into tokenized shard sets.

``sources`` reads and checks the inputs, the math modules (``vocab``, ``medians``, ``tokenize``,
``split``, ``permute``, ``layout``) are pure, and ``pipeline`` runs the stages of a build.
"""

from .errors import IngestError
from .options import BuildOptions
from .pipeline import BuildResult, build
from .synth import SynthSpec, synthesize

__all__ = ["BuildOptions", "BuildResult", "IngestError", "SynthSpec", "build", "synthesize"]
