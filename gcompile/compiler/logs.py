"""Named log channels: ``GCOMPILE_LOG=recompiles,graph_breaks,kernels,memory,stages``
(or ``all``).

The parser lives in ``runtime.logs`` so the runtime (which must not import
gcompile) and the compiler read the variable the same way; an unknown channel
raises ValueError listing the valid ones.
"""
from __future__ import annotations

from runtime.logs import CHANNELS, enabled, log, parse, stage

__all__ = ["CHANNELS", "enabled", "log", "parse", "stage"]
