"""Integer and floating-point bit arithmetic: ``gcd``, ``lcm``, ``nextafter``.

Elementwise by meaning, but with no fused-kernel expression (Euclid's loop, the next
representable float): they run as NumPy library steps in compiled plans.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register
from ..shapes import broadcast_shapes


_TORCH_NAMES = {"float16": "Half", "bfloat16": "BFloat16", "float32": "Float",
                "float64": "Double", "bool": "Bool", "uint8": "Byte", "int8": "Char",
                "int16": "Short", "int32": "Int", "int64": "Long"}


def _binary_infer(name: str, kinds: str, what: str):
    def infer(specs, attrs):
        (sa, da), (sb, db) = specs
        d = dt.result_type((da, len(sa)), (db, len(sb)))
        if d.kind not in kinds:
            raise NotImplementedError(f"\"{name}_cpu\" not implemented for "
                                      f"'{_TORCH_NAMES.get(d.name, d.name)}' ({what} only)")
        return broadcast_shapes(sa, sb, op=name), d
    return infer


def _cast_impl(fn):
    def impl(a, b):
        d = np.result_type(a, b)
        return fn(a.astype(d, copy=False), b.astype(d, copy=False))
    return impl


register(OpDef("gcd", "other", _cast_impl(np.gcd), infer=_binary_infer("gcd", "iu", "integers"),
               doc="greatest common divisor (non-negative)"))
register(OpDef("lcm", "other", _cast_impl(np.lcm), infer=_binary_infer("lcm", "iu", "integers"),
               doc="least common multiple (non-negative)"))
def _nextafter_grad(b, g, xs, out):
    raise RuntimeError("the derivative for 'nextafter' is not implemented.")  # as torch


register(OpDef("nextafter", "other", _cast_impl(np.nextafter),
               infer=_binary_infer("nextafter", "f", "floating point"), grad=_nextafter_grad,
               doc="the next representable value after x towards y"))
