"""cellshard's ingest stage: h5ad files, the CELLxGENE Census and SOMA experiments into tokenized shard sets."""

from .build import BuildResult, build
from .errors import IngestError
from .plan import BuildOptions
from .synth import SynthSpec, synthesize

__all__ = ["BuildOptions", "BuildResult", "IngestError", "SynthSpec", "build", "synthesize"]
