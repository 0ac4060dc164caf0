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
    if a.size and not _passes(a, kind, low, high):
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


def _passes(a: np.ndarray, kind: str, low, high) -> bool:
    """The common case in two reductions (a class-index check ran at ~40 us per call
    through its masks); False sends the caller to the masks that find the offender."""
    if kind == "finite":
        return a.dtype.kind not in "fc" or bool(np.isfinite(a.min()) & np.isfinite(a.max()))
    if kind != "range":
        return False
    lo, hi = a.min(), a.max()   # NaN propagates: compares False, so the masks look
    return (low is None or bool(lo >= low)) and (high is None or bool(hi <= high))


register(OpDef("check", "other", _check_impl,
               infer=lambda specs, attrs: (tuple(specs[0][0]), specs[0][1]),
               attrs=("kind", "low", "high", "ignore", "error", "message"),
               grad=lambda b, g, xs, out, **attrs: (g,),  # the values pass through
               extra={"impure": True},
               doc="pass the input through, or raise (non-finite values, values out of range)"))
