"""The compiler front end: tracer, guards, ``compile`` and ``explain``."""
from .api import (RECOMPILE_LIMIT, CompiledFunction, GraphBreakWarning,  # noqa: F401
                  RecompileLimitWarning, compile)
from .explain import Explanation, explain  # noqa: F401
from .tracer import GraphBreakError, Tracer  # noqa: F401
from .dynamic import mark_dynamic, maybe_mark_dynamic  # noqa: F401
