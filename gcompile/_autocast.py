"""The autocast state (per thread and device type) and the operand cast matrix products
take under it.

Why here and not in ``gcompile.amp``: the eager core's matmul reads it, and ``amp`` sits
above the core (it wraps functions of ``nn.functional`` and the core). ``amp.autocast``
sets this state; ``cast_inputs`` applies it. As in torch, ``autocast("cpu")`` acts on ops
whose operands are CPU tensors and ``autocast("cuda")`` on ops over CUDA tensors.
"""
from __future__ import annotations

import threading

from ir import dtypes as dt

_local = threading.local()
_LOWER = (dt.float16, dt.bfloat16)


def _current(device_type: str = "cpu"):
    """The autocast dtype active for ``device_type`` (None when off)."""
    return getattr(_local, "dtypes", {}).get(device_type)


def _set(device_type: str, dtype) -> None:
    d = dict(getattr(_local, "dtypes", {}))
    if dtype is None:
        d.pop(device_type, None)
    else:
        d[device_type] = dtype
    _local.dtypes = d


def device_type_of(tensors) -> str:
    """"cuda" when any operand is a CUDA tensor, else "cpu"."""
    return "cuda" if any(getattr(t, "is_cuda", False) for t in tensors) else "cpu"


def active_for(tensors):
    """The autocast dtype for an op over ``tensors`` (None when off for their device)."""
    dtypes = getattr(_local, "dtypes", None)
    if not dtypes:
        return None
    return dtypes.get(device_type_of(tensors))


def cast_inputs(*tensors):
    """The operands of a matrix product under autocast: floating ones other than float64
    in the autocast dtype (torch casts float32 and the other lower precision alike)."""
    d = active_for(tensors)
    if d is None:
        return tensors
    return tuple(t.to(d) if t is not None and t.dtype in (dt.float32,) + _LOWER else t
                 for t in tensors)
