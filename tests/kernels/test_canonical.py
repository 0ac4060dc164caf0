"""Kernels that differ only in their statements' names are one compiled kernel."""
from __future__ import annotations

import numpy as np

from kernels.cpu import compile_kernel
from kernels.spec import KernelSpec, Phase, Stmt, canonical


def _spec(a: str, b: str) -> KernelSpec:
    stmts = (Stmt(a, "mul", (("in", 0), ("c", 2.0, "float32"))),
             Stmt(b, "add", (("v", a), ("in", 1))))
    return KernelSpec(inputs=("float32", "float32"), outputs=(("float32", "full"),),
                      phases=(Phase(kind="map", stmts=stmts, stores=((0, ("v", b)),)),),
                      kind="elementwise")


def test_names_do_not_split_kernels():
    s1, s2 = _spec("v12", "v13"), _spec("x7", "y9")
    assert s1 != s2 and canonical(s1) == canonical(s2)
    k1, k2 = compile_kernel(s1), compile_kernel(s2)
    assert k1 is k2
    x = np.arange(6, dtype=np.float32)
    out = np.empty_like(x)
    k2([x, x], [out])
    np.testing.assert_array_equal(out, x * 2 + x)
