"""The sources of a build: h5ad files (``h5ad``), the CELLxGENE Census (``census``) and any SOMA
experiment (``soma``), each prepared and checked (``prepare``) into what the pipeline reads."""

from .base import CENSUS_DEFAULT_OBS_COLUMNS, Prepared, PreparedInput
from .h5ad import H5adInput, H5adSpec, InputOptions, expand_inputs
from .prepare import prepare_source

__all__ = [
    "CENSUS_DEFAULT_OBS_COLUMNS",
    "H5adInput",
    "H5adSpec",
    "InputOptions",
    "Prepared",
    "PreparedInput",
    "expand_inputs",
    "prepare_source",
]
