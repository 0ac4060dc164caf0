"""A native kernel for the ``check`` op's integer range checks (``ir.ops.checks``): a
loss's class-index check and an embedding's index check, on every call of a plan.

The NumPy implementation (``a.min()``, ``a.max()``, a copy) took 5-10 us alone but
50-70 us inside a GPT or LSTM training step's plan: its first reduction after the
plan's native kernels cost ~27 us there, its code and objects out of cache (measured by
timing each part inside the step). This kernel copies the values into the step's
planned buffer and flags one out of range in the same pass; a flagged call goes to the
NumPy implementation, which finds the offender and raises as before. Called through
its Python wrapper it was little faster inside the step (the wrapper's Python is as
cold); a plan's step binds it (``bind``, ``runtime.steps._IntoRun``): 5-30 us there.
Other checks (finite, float values, non-integer bounds) stay with NumPy.
"""
from __future__ import annotations

import numpy as np

from ir.registry import REGISTRY

from . import handwritten as hw
from .nn_native import _ready

__all__ = ["check", "bind", "register"]

_INTS = ("int64", "int32")
# flags: 1 a lower bound, 2 an upper bound, 4 an ignored value
_BODY = '''
@njit(nogil=True, inline="always")
def body(x, out, bad, low, high, ignore, flags, lo, hi):
    hit = 0
    for i in range(lo, hi):
        v = x[i]
        out[i] = v
        if (flags & 4) != 0 and v == ignore:
            continue
        if ((flags & 1) != 0 and v < low) or ((flags & 2) != 0 and v > high):
            hit = 1
    if hit:
        bad[0] = 1
'''


def _bound(v) -> bool:
    return v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                         and -(1 << 62) < int(v) < (1 << 62))


def _plan(x, kind, low, high, ignore):
    """The range kernel and its flags for ``x``, or None (NumPy's implementation)."""
    if kind != "range" or not isinstance(x, np.ndarray) or hw.dname(x) not in _INTS or \
            not x.flags.c_contiguous or x.size == 0 or not (
                _bound(low) and _bound(high) and _bound(ignore)):
        return None
    d = hw.dname(x)
    k = hw.kernel(f"check_range_{d}", (("x", "in", d), ("out", "out", d), ("bad", "out", "int8"),
                                       ("low", "int", None), ("high", "int", None),
                                       ("ignore", "int", None), ("flags", "int", None)),
                  _BODY, op="check")
    flags = (1 if low is not None else 0) | (2 if high is not None else 0) | \
        (4 if ignore is not None else 0)
    return k, (low or 0, high or 0, ignore or 0, flags)


def check(x, kind, low=None, high=None, ignore=None, error="RuntimeError",
          message="check failed: {bad}", out=None):
    """``check`` natively for a C-contiguous int32/int64 ``x`` in a range with integer
    bounds; anything else, and any call that finds a value out of range, through the
    NumPy implementation (which raises)."""
    ref = REGISTRY["check"].reference

    def by_reference():
        return hw.into(ref(x, kind, low=low, high=high, ignore=ignore, error=error,
                           message=message), out)
    plan = _plan(x, kind, low, high, ignore)
    if plan is None or not _ready(plan[0]):
        return by_reference()
    k, ints = plan
    res = hw.result(x.shape, x.dtype, out)
    if res is not x and np.may_share_memory(res, x):
        return by_reference()
    bad = np.zeros(1, np.int8)
    k(x.reshape(-1), res.reshape(-1), bad, *ints, n=x.size, parallel=False)
    if bad[0]:
        return by_reference()
    return hw.into(res, out)


def bind(x, kind, low=None, high=None, ignore=None, error="RuntimeError",
         message="check failed: {bad}", out=None):
    """``check(x, ..., out=out)`` as a prepared call for these arrays (a plan's step,
    ``runtime.steps._IntoRun``), or None. A value out of range still goes to the NumPy
    implementation, which raises."""
    plan = _plan(x, kind, low, high, ignore)
    if plan is None or plan[0]._fn is None or out is None or \
            hw.result(x.shape, x.dtype, out) is not out or np.may_share_memory(out, x):
        return None
    k, ints = plan
    bad = np.zeros(1, np.int8)
    ref = REGISTRY["check"].reference
    return hw.then_flagged(
        k.bind(x.reshape(-1), out.reshape(-1), bad, *ints, n=x.size, parallel=False), bad,
        lambda: hw.into(ref(x, kind, low=low, high=high, ignore=ignore, error=error,
                            message=message), out))


check.bind = bind
NATIVE = {"check": check}


def register() -> None:
    """Serve ``check`` natively (idempotent); it takes ``out=``."""
    hw.serve(NATIVE)


register()
