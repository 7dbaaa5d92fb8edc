"""The build pipeline: ``build`` (``build``) runs the stages of ``stages`` under the output's lock
(``lock``), with unit work in ``passes`` (in this process or spawned workers, ``runner``), the work
directory's rules in ``workdir`` and the manifest in ``manifest``."""

from .build import BuildResult, build
from .workdir import WORK_DIR, io_error_message

__all__ = ["WORK_DIR", "BuildResult", "build", "io_error_message"]
