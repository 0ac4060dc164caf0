"""Imported once by the compile workers' fork server, before it forks any worker.

Numba's first compile in a process initialises its target and typing machinery
(about a second), and each float32 math function compiles on first use; doing both
here, in the one server process, means every forked compile worker starts hot
instead of paying that again (see ``kernels.cpu.prefetch``).
"""
from __future__ import annotations

import numpy as np
from numba import carray, cfunc, types

from . import codegen  # noqa: F401 - the generated modules import what it imports
from . import fastmath as _fm


@cfunc(types.void(types.voidptr, types.intp), nopython=True, error_model="numpy")
def _warm(p, n):  # the same path a generated entry point takes: carray, loop, math
    a = carray(p, (n,), np.float32)
    for i in range(n):
        a[i] = _fm.exp_f32(a[i]) + _fm.tanh_f32(a[i])


def _warm_math() -> None:
    x32 = np.float32(0.5)
    for name in ("exp_f32", "expm1_f32", "log_f32", "log1p_f32", "log2_f32", "log10_f32",
                 "tanh_f32", "sigmoid_f32", "erf_f32"):
        try:
            getattr(_fm, name)(x32)
        except Exception:  # noqa: BLE001 - warming only: a worker compiles it if needed
            pass
    for name, args in (("sigmoid_f64", (0.5,)), ("index_div", (7, 2)), ("index_rem", (7, 2))):
        try:
            getattr(_fm, name)(*args)
        except Exception:  # noqa: BLE001
            pass


_warm_math()
