"""Imported once by the compile workers' fork server, before it forks any worker.

Numba's first compile in a process initialises its target and typing machinery
(about a second); doing that here, once, in the server means every forked compile
worker starts hot instead of paying it again (see ``kernels.cpu.prefetch``). The
float32 math library is left to compile in the workers that use it: warming all of
it here cost more CPU than it saved on a 2-core machine.
"""
from __future__ import annotations

import numpy as np
from numba import carray, cfunc, types

from . import codegen  # noqa: F401 - the generated modules import what it imports


@cfunc(types.void(types.voidptr, types.intp), nopython=True, error_model="numpy")
def _warm(p, n):  # the path a generated entry point takes: carray and a loop
    a = carray(p, (n,), np.float32)
    for i in range(n):
        a[i] = a[i] * np.float32(2.0) + np.float32(1.0)
