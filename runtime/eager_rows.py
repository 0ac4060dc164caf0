"""Eager softmax, log_softmax and layer_norm served by the rows kernel a plan runs.

Their NumPy implementations take four to seven passes over memory and allocate between
them (an eager GPT block spent ~1 ms per softmax and ~0.5 ms per layer_norm against
torch's ~0.1). Importing this module serves the three ops through ``OpDef.use_native``
from the kernel ``compile()`` itself makes for the op: a one-node graph goes through the
same decomposition, fusion and lowering (``runtime.lower.compile_graph``), so the eager
op and a plan compute the same operations in the same order, and the op stays defined
once (its decomposition). The kernel is generic in sizes: one is built per (op, dtype,
attributes) and kept (its machine code in the disk cache), and a call passes the input
as ``[rows, row length]`` with weight and bias broadcast over the rows.

``op.reference`` (the NumPy implementation) serves the rest: arrays below ``MIN_SIZE``
elements, a softmax over any dim but the last, dtypes other than float32/float64, mixed
dtypes, inputs that do not fold to two dims without a copy, and any kernel that cannot be
built (which warns once). While ``compile()`` traces a function (its first call), the
reference also serves where no kernel was built for the op yet
(``kernels.cpu.defer_build``: building one costs graph passes and loads even on a warm
cache, and the plan runs its own), and where a built kernel's loop variant is neither
loaded nor on disk (``kernels.cpu.defer_compile``).
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np

from ir.registry import REGISTRY
from kernels.cpu import defer_build, defer_compile
from kernels.cpu.handwritten import view_as

__all__ = ["MIN_SIZE", "SERVED"]

SERVED = ("softmax", "log_softmax", "layer_norm")
_DTYPES = ("float32", "float64")
# below this many elements the kernel call (~7 us) costs more than NumPy's passes
MIN_SIZE = int(os.environ.get("GCOMPILE_EAGER_ROWS_MIN", 2048))
_MISSING = object()


def _rows_view(x: np.ndarray, r: int) -> np.ndarray | None:
    """``x`` as ``[rows, r]`` without a copy (rows of unit stride), or None."""
    v = view_as(x, (x.size // r, r))
    return v if v is not None and v.strides[1] == x.itemsize else None


class _RowsNative:
    """``impl`` for one of ``SERVED``: the plan's rows kernel where it serves the call,
    else the reference."""

    def __init__(self, name: str) -> None:
        op = REGISTRY[name]
        self.name = name
        self.ref = op.reference if op.reference is not None else op.impl
        self.kernels: dict = {}
        self.__name__ = f"{name}_rows_native"
        self.__doc__ = f"{name}: the compiled plan's rows kernel for large float arrays, " \
                       "else NumPy."

    def __call__(self, x, *wb, **attrs):
        operands = self._operands(x, wb, attrs)
        if operands is None:
            return self.ref(x, *wb, **attrs)
        ins, r = operands
        # the kernel sees [rows, r]: layer_norm normalizes its one trailing dim
        kattrs = dict(attrs, normalized_ndim=1) if self.name == "layer_norm" else attrs
        try:
            key = (x.dtype.name, tuple(sorted(kattrs.items())))
        except TypeError:
            return self.ref(x, *wb, **attrs)
        k = self.kernels.get(key, _MISSING)
        if k is _MISSING:
            if defer_build():
                return self.ref(x, *wb, **attrs)
            k = self.kernels[key] = self._build(x.dtype.name, len(ins), kattrs, r)
        if k is None or defer_compile([k]):
            return self.ref(x, *wb, **attrs)
        out = np.empty(x.shape, x.dtype)
        try:
            k(ins, [out.reshape(ins[0].shape)])
        except Exception as e:  # noqa: BLE001 - a variant that cannot be built: NumPy serves
            self._failed(key, e)
            self.kernels[key] = None
            return self.ref(x, *wb, **attrs)
        return out

    def _operands(self, x, wb, attrs) -> tuple[list, int] | None:
        """The kernel's operands (``[rows, r]`` views) and the row length, or None when
        the reference serves this call."""
        if x.__class__ is not np.ndarray or x.dtype.name not in _DTYPES or \
                not x.dtype.isnative or not x.flags.aligned or x.size < MIN_SIZE:
            return None
        if self.name == "layer_norm":
            k = attrs.get("normalized_ndim")
            if not isinstance(k, int) or not 1 <= k <= x.ndim:
                return None
            r = math.prod(x.shape[x.ndim - k:])
        else:
            dim = attrs.get("dim")
            if not isinstance(dim, int) or dim not in (-1, x.ndim - 1):
                return None
            r = x.shape[-1]
        x2 = _rows_view(x, r)
        if x2 is None:
            return None
        ins = [x2]
        for w in wb:
            if w.__class__ is not np.ndarray or w.dtype != x.dtype or w.size != r or \
                    not w.flags.aligned:
                return None
            ins.append(np.broadcast_to(w.reshape(r), x2.shape))
        return ins, r

    def _build(self, dtype: str, nin: int, attrs: dict, r: int):
        """The rows kernel ``compile_graph`` makes for this op alone, or None."""
        try:
            from ir.graph import Graph

            from .lower import compile_graph
            g = Graph(f"eager_{self.name}")
            ins = [g.add_input((2, r), dtype, "x")]
            ins += [g.add_input((r,), dtype, f"p{i}") for i in range(nin - 1)]
            g.set_outputs([g.add_node(self.name, ins, dict(attrs))])
            steps = [s for s in compile_graph(g).plan.steps if s.kind != "view"]
            if len(steps) != 1 or steps[0].kind != "kernel":
                return None
            low = steps[0].run.low
            if [id(v) for v in low.ext] != [id(v) for v in ins] or \
                    getattr(low.spec, "kind", None) != "rows":
                return None  # operands in another order, or not one rows loop
            return steps[0].kernel
        except Exception as e:  # noqa: BLE001 - anything the pipeline rejects: NumPy serves
            self._failed((dtype, tuple(sorted(attrs.items()))), e)
            return None

    def _failed(self, key, e: Exception) -> None:
        warnings.warn(f"gcompile: eager kernel for {self.name} ({key[0]}) could not be built "
                      f"({type(e).__name__}: {e}); using the NumPy implementation",
                      RuntimeWarning, stacklevel=4)


for _name in SERVED:
    REGISTRY[_name].use_native(_RowsNative(_name))
