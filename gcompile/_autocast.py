"""The autocast state (per thread) and the operand cast matrix products take under it.

Why here and not in ``gcompile.amp``: the eager core's matmul reads it, and ``amp`` sits
above the core (it wraps functions of ``nn.functional`` and the core). ``amp.autocast``
sets this state; ``cast_inputs`` applies it.
"""
from __future__ import annotations

import threading

from ir import dtypes as dt

_local = threading.local()
_LOWER = (dt.float16, dt.bfloat16)


def _current():
    """The active autocast dtype (None when off)."""
    return getattr(_local, "dtype", None)


def cast_inputs(*tensors):
    """The operands of a matrix product under autocast: floating ones other than float64
    in the autocast dtype (torch casts float32 and the other lower precision alike)."""
    d = _current()
    if d is None:
        return tensors
    return tuple(t.to(d) if t is not None and t.dtype in (dt.float32,) + _LOWER else t
                 for t in tensors)
