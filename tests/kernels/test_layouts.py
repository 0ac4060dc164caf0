"""Kernel variants: contiguous, strided, broadcast, negative strides, in place, parallel.

Few distinct kernels (compiles are ~1 s each): the same two specs are called on many
array layouts.
"""
from __future__ import annotations

import numpy as np
import pytest

from kernels.cpu import cache_stats, compile_kernel, set_parallel_threshold
from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var

F = "float32"


def _axpb_spec():
    # out0 = x * y + 1.5 ; out1 = (out0 > 0)
    st = (Stmt("m", "mul", (inp(0), inp(1)), (), F),
          Stmt("a", "add", (var("m"), const(1.5, F)), (), F),
          Stmt("g", "gt", (var("a"), const(0.0, F)), (), "bool"))
    return KernelSpec((F, F), ((F, "full"), ("bool", "full")),
                      (Phase("map", st, stores=((0, var("a")), (1, var("g")))),), "elementwise")


def _ref(x, y):
    a = x * y + np.float32(1.5)
    return a, a > 0


def _run(x, y, out_a=None, out_g=None):
    shape = np.broadcast_shapes(x.shape, y.shape)
    xb, yb = np.broadcast_to(x, shape), np.broadcast_to(y, shape)
    out_a = np.empty(shape, np.float32) if out_a is None else out_a
    out_g = np.empty(shape, bool) if out_g is None else out_g
    compile_kernel(_axpb_spec())([xb, yb], [out_a, out_g])
    ra, rg = _ref(xb, yb)
    np.testing.assert_allclose(out_a, ra, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out_g, rg)


rng = np.random.default_rng(0)


def R(*shape):
    return rng.standard_normal(shape).astype(np.float32)


LAYOUTS = {
    "contiguous": lambda: (R(5, 7), R(5, 7)),
    "transposed": lambda: (R(7, 5).T, R(5, 7)),
    "sliced": lambda: (R(10, 14)[::2, 1::2], R(5, 7)),
    "row_broadcast": lambda: (R(5, 7), R(7)),
    "col_broadcast": lambda: (R(5, 7), R(5, 1)),
    "both_broadcast": lambda: (R(5, 1), R(1, 7)),
    "permuted_3d": lambda: (R(3, 4, 5).transpose(2, 0, 1), R(5, 3, 4)),
    "negative_stride": lambda: (R(5, 7)[::-1], R(5, 7)[:, ::-1]),
    "zero_d": lambda: (R(), R()),
    "empty": lambda: (R(0, 3), R(0, 3)),
    "scalar_broadcast": lambda: (R(4, 6), R()),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts(layout):
    x, y = LAYOUTS[layout]()
    _run(x, y)


def test_strided_outputs():
    x, y = R(6, 4), R(6, 4)
    out_a = np.empty((4, 6), np.float32).T
    out_g = np.empty((6, 8), bool)[:, ::2]
    _run(x, y, out_a, out_g)
    out_a = np.empty((6, 4), np.float32)[::-1]
    _run(x, y, out_a, np.empty((6, 4), bool))


def test_in_place_alias():
    x = R(33, 17)
    y = R(33, 17)
    want = _ref(x.copy(), y)
    g = np.empty(x.shape, bool)
    compile_kernel(_axpb_spec())([x, y], [x, g])  # input 0 is output 0
    np.testing.assert_allclose(x, want[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(g, want[1])
    # in place on a transposed view
    xt = R(17, 33).T
    want = _ref(xt.copy(), y)
    compile_kernel(_axpb_spec())([xt, y], [xt, g])
    np.testing.assert_allclose(xt, want[0], rtol=1e-6, atol=1e-6)


def test_parallel_path(monkeypatch):
    from kernels.cpu import CompiledKernel
    calls = []
    orig = CompiledKernel._run_parallel

    def spy(self, variant, args, n, nthr, scratch=()):
        calls.append((variant[0], n))
        return orig(self, variant, args, n, nthr, scratch)
    monkeypatch.setattr(CompiledKernel, "_run_parallel", spy)
    monkeypatch.setenv("GCOMPILE_NUM_THREADS", "3")
    _run(R(64, 33), R(33))                    # strided, serial: below the threshold
    assert calls == []
    old = set_parallel_threshold(0)
    try:
        for _ in range(2):
            _run(R(64, 33), R(64, 33))        # flat
            _run(R(64, 33), R(33))            # strided, same layout as above
    finally:
        set_parallel_threshold(old)
    assert ("flat", 64 * 33) in calls and ("strided", 64) in calls
    k = compile_kernel(_axpb_spec())
    x, y = R(64, 33), R(64, 33)
    a, g = np.empty_like(x), np.empty(x.shape, bool)
    n = len(calls)
    k([x, y], [a, g], parallel=False)         # explicit override of the threshold
    assert len(calls) == n
    k([x, y], [a, g], parallel=True)
    assert len(calls) == n + 1
    np.testing.assert_allclose(a, _ref(x, y)[0], rtol=1e-6, atol=1e-6)


def test_broadcast_scalars_take_the_flat_loop():
    """Inputs broadcast from one element (0-d, (1, 1), a zero-stride view) over an
    otherwise contiguous call run the flat variant, reading them once: the same bits
    as with the value spelled out in full, on one thread and split over threads."""
    k = compile_kernel(_axpb_spec())
    x = R(64, 33)
    for s in (np.asarray(R()), R(1, 1), np.broadcast_to(R(), (64, 33))):
        full = np.ascontiguousarray(np.broadcast_to(s, x.shape))
        want = [np.empty(x.shape, np.float32), np.empty(x.shape, bool)]
        k([x, full], want)
        assert k.variant_for([x, np.broadcast_to(s, x.shape)], want) == \
            ("flat", (-1, -1), ("c", "b", "c", "c"))
        for parallel in (False, True):
            got = [np.empty(x.shape, np.float32), np.empty(x.shape, bool)]
            old = set_parallel_threshold(0)
            try:
                k([x, np.broadcast_to(s, x.shape)], got, parallel=parallel)
            finally:
                set_parallel_threshold(old)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_generic_in_size():
    _run(R(3, 9), R(3, 9))
    before = cache_stats()["compiles"]
    for n in (1, 2, 17, 1000):
        _run(R(n, 9), R(n, 9))
    assert cache_stats()["compiles"] == before  # a new size reuses the compiled loop


def test_same_spec_same_object():
    assert compile_kernel(_axpb_spec()) is compile_kernel(_axpb_spec())
    assert cache_stats()["memory_hits"] >= 1


def test_errors():
    k = compile_kernel(_axpb_spec())
    with pytest.raises(ValueError):
        k([R(2, 3), R(2, 3)], [np.empty((2, 3), np.float32)])
    with pytest.raises(TypeError):
        k([R(2, 3).astype(np.float64), R(2, 3)],
          [np.empty((2, 3), np.float32), np.empty((2, 3), bool)])
    with pytest.raises(ValueError):
        k([R(2, 3), R(2, 4)], [np.empty((2, 3), np.float32), np.empty((2, 3), bool)])
    with pytest.raises(NotImplementedError):
        compile_kernel(KernelSpec((F,), ((F, "full"),), (Phase("map", (
            Stmt("s", "sum", (inp(0),), (), F),), stores=((0, var("s")),)),), "elementwise"))
    with pytest.raises(ValueError):
        compile_kernel(KernelSpec((F,), ((F, "full"),), (Phase("map", (
            Stmt("s", "exp", (var("nope"),), (), F),), stores=((0, var("s")),)),),
            "elementwise"))
    with pytest.raises(NotImplementedError, match="float16"):
        compile_kernel(KernelSpec(("float16",), (("float16", "full"),), (Phase("map", (
            Stmt("s", "neg", (inp(0),), (), "float16"),), stores=((0, var("s")),)),),
            "elementwise"))


def test_a_kernel_with_more_operands_than_ctypes_takes_is_refused_early():
    from kernels.spec import KernelSpec, Phase, Stmt, inp, var
    f = "float32"
    n = 600
    st = tuple(Stmt(f"s{i}", "neg", (inp(0),), (), f) for i in range(n))
    spec = KernelSpec((f,), tuple((f, "full") for _ in range(n)),
                      (Phase("map", st, stores=tuple((i, var(f"s{i}")) for i in range(n))),),
                      "elementwise")
    with pytest.raises(NotImplementedError, match="more arguments"):
        compile_kernel(spec)
