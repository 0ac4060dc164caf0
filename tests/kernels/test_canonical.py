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


def test_float_constants_differ_bit_for_bit():
    """Specs that differ only in -0.0 against 0.0 are different kernels; NaN constants are
    one key (a cache hit, not a recompile at each lookup); plain equal numbers still match."""
    import math
    import pickle

    from kernels.spec import ExactFloat, KernelSpec, Phase, Stmt, const

    def spec(v):
        st = Stmt("t0", "where", (("in", 0), ("in", 1), const(v, "float32")), (), "float32")
        return KernelSpec(("bool", "float32"), (("float32", "full"),),
                          (Phase("map", (st,), stores=((0, ("v", "t0")),)),), "elementwise")

    assert spec(-0.0) != spec(0.0)
    assert spec(float("nan")) == spec(math.nan) and hash(spec(float("nan"))) == hash(spec(math.nan))
    assert spec(1.0) == spec(1) and spec(2.5) == spec(2.5)
    assert ExactFloat(0.5) == 0.5 and ExactFloat(1.0) == 1 and ExactFloat(1.0) != True  # noqa: E712
    assert repr(ExactFloat(-0.0)) == "-0.0" and pickle.loads(pickle.dumps(ExactFloat(-0.0))) == -0.0
    assert str(ExactFloat(float("inf"))) == "inf"


def test_compiled_where_keeps_the_sign_of_a_zero_constant():
    """A plan of where(c, x, 0.0) compiled before one of where(c, x, -0.0) does not lend it
    its kernel."""
    import gcompile as torch
    x = torch.randn(64, 64)
    c = x > 0
    pos = torch.compile(lambda c, x: torch.where(c, x * 2, 0.0))(c, x)
    neg = torch.compile(lambda c, x: torch.where(c, x * 2, -0.0))(c, x)
    assert not np.signbit(pos.numpy()[~c.numpy()]).any()
    assert np.signbit(neg.numpy()[~c.numpy()]).all()
