"""Run-time checks: ops that pass their input through or raise, as the eager op would.

A check that reads tensor values in Python (``if target.max() >= n: raise``)
runs once, while tracing, and a compiled plan would then skip it. As an op it
is part of the graph and runs on every call, compiled or eager: an out-of-range
class index or a non-finite gradient norm raises the same error both ways.
"""
from __future__ import annotations

import numpy as np

from ..registry import OpDef, register

_ERRORS = {"RuntimeError": RuntimeError, "IndexError": IndexError, "ValueError": ValueError}


def _check_impl(x, kind, low=None, high=None, ignore=None, error="RuntimeError",
                message="check failed: {bad}"):
    """``x`` (copied) if every element passes, else ``error(message.format(bad=...))``.

    kind "finite": no NaN or infinity. kind "range": ``low <= x <= high`` (either
    bound may be None) for every element that is not ``ignore``; the first
    offending value is reported.
    """
    a = np.asarray(x)
    if a.size:
        if kind == "finite":
            bad_mask = ~np.isfinite(a)
        elif kind == "range":
            bad_mask = np.zeros(a.shape, bool)
            if low is not None:
                bad_mask |= a < low
            if high is not None:
                bad_mask |= a > high
            if ignore is not None:
                bad_mask &= a != ignore
            if a.dtype.kind == "f":
                bad_mask |= np.isnan(a)
        else:
            raise ValueError(f"check: unknown kind {kind!r}")
        if bad_mask.any():
            bad = a[bad_mask].flat[0]
            raise _ERRORS[error](message.format(bad=bad.item()))
    return np.array(a, copy=True)


register(OpDef("check", "other", _check_impl,
               infer=lambda specs, attrs: (tuple(specs[0][0]), specs[0][1]),
               attrs=("kind", "low", "high", "ignore", "error", "message"),
               grad=lambda b, g, xs, out, **attrs: (g,),  # the values pass through
               extra={"impure": True},
               doc="pass the input through, or raise (non-finite values, values out of range)"))
