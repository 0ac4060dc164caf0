"""Creation ops: tensors made from sizes alone (``arange``, ``full``).

Eager creation functions build their arrays directly; a traced call records one of
these ops only when a size is symbolic (a dynamic dimension: ``arange(x.shape[1])``),
so the graph makes the tensor at run time at the call's size instead of baking a
constant of the traced size in.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register


def _arange_len(start, end, step):
    """The element count in integer arithmetic (symbolic sizes stay symbolic)."""
    if step > 0:
        return (end - start + step - 1) // step if end > start else 0
    return (start - end - step - 1) // (-step) if start > end else 0


def _arange_infer(specs, attrs):
    return (_arange_len(attrs["start"], attrs["end"], attrs["step"]),), attrs["dtype"]


def _arange_impl(*, start, end, step, dtype):
    return np.arange(start, end, step, dtype=dt.as_dtype(dtype).np)


def _full_impl(*, shape, value, dtype):
    return np.full(tuple(shape), value, dtype=dt.as_dtype(dtype).np)


register(OpDef("arange", "creation", _arange_impl, infer=_arange_infer,
               attrs=("start", "end", "step", "dtype"),
               doc="integers start, start+step, ... below end (integer bounds only)"))
register(OpDef("full", "creation", _full_impl,
               infer=lambda specs, attrs: (tuple(attrs["shape"]), attrs["dtype"]),
               attrs=("shape", "value", "dtype"), doc="a tensor of one value"))
