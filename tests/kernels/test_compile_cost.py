"""Generated code that costs Numba less to compile, and computes the same bits.

Row offsets of wide kernels accumulate in a scratch vector (``codegen._offsets``): a
strided, rows or blocked variant finds each operand's offset for outer row ``t`` from
the run-time shape/stride tables. With more than ``codegen.OFFS_VECTOR_MIN`` operands it
sums them in the scratch vector ``offs`` instead of one loop-carried scalar per operand;
both forms must compute the same bits, on one thread and split over two. Float
arithmetic already in its dtype is emitted without a no-op conversion call.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.cpu import CompiledKernel, codegen
from kernels.spec import KernelSpec, Phase, Stmt, const, inp, red, var

F = "float32"
N_IN = 10  # 10 inputs and 2 outputs: 12 operands, above OFFS_VECTOR_MIN (8)


def S(name, op, *args, dtype=F):
    return Stmt(name, op, tuple(args), (), dtype)


def _chain(p: str = "") -> tuple:
    """s9 = ((x0 * 0.5 + x1) * 0.5 + x2) ... : every input, in a fixed order."""
    sts = [S(f"{p}s0", "mul", inp(0), const(0.5, F))]
    for i in range(1, N_IN):
        sts.append(S(f"{p}a{i}", "add", var(f"{p}s{i - 1}"), inp(i)))
        sts.append(S(f"{p}s{i}", "mul", var(f"{p}a{i}"), const(0.5, F)))
    return tuple(sts)


def wide_map_spec() -> KernelSpec:
    last = f"s{N_IN - 1}"
    sts = _chain() + (S("e", "exp", var(last)),)
    return KernelSpec((F,) * N_IN, ((F, "full"), (F, "full")),
                      (Phase("map", sts, stores=((0, var(last)), (1, var("e")))),),
                      "elementwise")


def wide_rows_spec() -> KernelSpec:
    """The chain summed over each row (a row output), and the chain minus the row sum."""
    last = f"s{N_IN - 1}"
    return KernelSpec((F,) * N_IN, ((F, "full"), (F, "row")), (
        Phase("reduce", _chain(), reduce_op="sum", reduce_value=var(last), store_result=1),
        Phase("map", _chain("m") + (S("d", "sub", var("m" + last), red(0)),),
              stores=((0, var("d")),)),
    ), "rows")


def _kernel(spec: KernelSpec, vector: bool, monkeypatch) -> CompiledKernel:
    # a CompiledKernel of its own (not compile_kernel's shared one): its sources are
    # generated under this threshold
    monkeypatch.setattr(codegen, "OFFS_VECTOR_MIN", 8 if vector else 1000)
    return CompiledKernel(spec)


def _inputs(shape, rng):
    """Inputs laid out every way the strided variants see: contiguous, transposed,
    broadcast along rows, sliced with a step."""
    out = []
    for i in range(N_IN):
        kind = i % 4
        if kind == 0:
            a = rng.standard_normal(shape).astype(np.float32)
        elif kind == 1:
            a = rng.standard_normal(shape[::-1]).astype(np.float32).T
        elif kind == 2:
            a = np.broadcast_to(rng.standard_normal(shape[-1:]).astype(np.float32), shape)
        else:
            a = rng.standard_normal((shape[0], 2 * shape[1])).astype(np.float32)[:, ::2]
        out.append(a)
    return out


def _run(k: CompiledKernel, ins, shapes, parallel: bool):
    outs = [np.full(s, np.nan, np.float32) for s in shapes]
    k(ins, outs, parallel=parallel)
    return outs


def test_wide_kernels_use_the_vector_and_narrow_ones_do_not(monkeypatch):
    monkeypatch.setattr(codegen, "OFFS_VECTOR_MIN", 8)
    alias = (-1,) * N_IN
    wide = codegen.elementwise_source(wide_map_spec(), ("strided", alias, ("s",) * 12)).source
    assert "offs[q] += idx * ostr[q, d]" in wide
    assert "o0 += " not in wide
    narrow = KernelSpec((F, F), ((F, "full"),), (Phase("map", (
        S("y", "add", inp(0), inp(1)),), stores=((0, var("y")),)),), "elementwise")
    src = codegen.elementwise_source(narrow, ("strided", (-1, -1), ("s", "s", "c"))).source
    assert "offs" not in src and "o0 += idx * ostr[0, d]" in src


@pytest.mark.parametrize("parallel", [False, True])
def test_strided_map_bits_equal_both_forms(monkeypatch, parallel):
    from kernels.cpu import set_num_threads
    rng = np.random.default_rng(0)
    shape = (37, 19)
    ins = _inputs(shape, rng)
    set_num_threads(2)
    try:
        got = {v: _run(_kernel(wide_map_spec(), v, monkeypatch), ins, [shape, shape],
                       parallel) for v in (False, True)}
    finally:
        set_num_threads(None)
    for a, b in zip(got[False], got[True]):
        assert not np.isnan(a).any()
        np.testing.assert_array_equal(a, b)
    ref = ins[0] * np.float32(0.5)
    for i in range(1, N_IN):
        ref = (ref + ins[i]) * np.float32(0.5)
    np.testing.assert_allclose(got[True][0], ref, rtol=1e-6)


@pytest.mark.parametrize("transposed", [False, True])  # True: the blocked rows variant
def test_rows_bits_equal_both_forms(monkeypatch, transposed):
    from kernels.cpu import set_num_threads
    rng = np.random.default_rng(1)
    shape = (700, 23) if transposed else (31, 29)
    if transposed:
        ins = [rng.standard_normal(shape[::-1]).astype(np.float32).T for _ in range(N_IN)]
    else:
        ins = _inputs(shape, rng)
    results = {}
    set_num_threads(2)
    try:
        for v in (False, True):
            k = _kernel(wide_rows_spec(), v, monkeypatch)
            variant = k.variant_for(ins, [np.empty(shape, np.float32),
                                          np.empty(shape[:1], np.float32)])
            assert variant[0] == ("rowsblk" if transposed else "rows")
            results[v] = [_run(k, ins, [shape, shape[:1]], p) for p in (False, True)]
    finally:
        set_num_threads(None)
    for p in range(2):
        for a, b in zip(results[False][p], results[True][p]):
            assert not np.isnan(a).any()
            np.testing.assert_array_equal(a, b)


def test_float_arithmetic_in_its_dtype_has_no_conversion_call():
    """``(a * b)`` of two float32 operands is float32 in Numba: no ``np.float32(...)``
    around it. Integer arithmetic widens in Numba and keeps its conversion, as does a
    float32 product of a float64 argument (converted first)."""
    def src(d, d2=None):
        spec = KernelSpec((d, d2 or d), ((d, "full"),), (Phase("map", (
            S("m", "mul", inp(0), inp(1), dtype=d),
            S("y", "add", var("m"), const(2, d), dtype=d)),
            stores=((0, var("y")),)),), "elementwise")
        return codegen.elementwise_source(spec, ("flat", (-1, -1), None)).source
    f32 = src("float32")
    assert "v_m = (x0 * x1)" in f32 and "v_y = (v_m + K0)" in f32
    assert "np.float32((" not in f32
    i32 = src("int32")
    assert "v_m = np.int32((x0 * x1))" in i32
    mixed = src("float32", "float64")
    assert "np.float32(x1)" in mixed and "v_m = (x0 * t1)" in mixed


def test_float_arithmetic_without_conversion_bits(monkeypatch):
    """float32 and float64 add/sub/mul/div chains equal NumPy's, element for element."""
    rng = np.random.default_rng(2)
    for d in ("float32", "float64"):
        spec = KernelSpec((d, d, d), ((d, "full"),), (Phase("map", (
            S("a", "add", inp(0), inp(1), dtype=d), S("b", "sub", var("a"), inp(2), dtype=d),
            S("c", "mul", var("b"), const(0.375, d), dtype=d),
            S("e", "div", var("c"), inp(1), dtype=d)),
            stores=((0, var("e")),)),), "elementwise")
        x, y, z = (rng.standard_normal(1000).astype(d) for _ in range(3))
        out = np.empty(1000, d)
        CompiledKernel(spec)([x, y, z], [out])
        np.testing.assert_array_equal(out, ((x + y) - z) * np.dtype(d).type(0.375) / y)


def test_fastmath_helpers_are_one_subroutine_each():
    """The float32 helpers are intrinsics over one Numba subroutine per process and flag
    set (``fastmath._subroutine``), inlined by LLVM: a kernel calling each of them
    twice, one nested in another, has no raise path into Numba's runtime (its object
    loads), and computes what NumPy does to float32 rounding."""
    from kernels.cpu import fastmath
    ops = ["exp", "expm1", "log", "log1p", "log2", "log10", "tanh", "sigmoid", "erf"]
    sts = [S("a", "mul", inp(0), const(0.5, F))]
    for op in ops:
        sts += [S(f"{op}1", op, inp(0)), S(f"{op}2", op, var("a"))]
    sts += [S("n", "exp", var("tanh1"))]
    outs = [f"{op}{i}" for op in ops for i in (1, 2)] + ["n"]
    spec = KernelSpec((F,), tuple((F, "full") for _ in outs), (Phase(
        "map", tuple(sts), stores=tuple((o, var(n)) for o, n in enumerate(outs))),),
        "elementwise")
    x = np.random.default_rng(3).uniform(0.1, 3.0, 257).astype(np.float32)
    got = [np.empty_like(x) for _ in outs]
    CompiledKernel(spec)([x], got)
    ref = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p,
           "log2": np.log2, "log10": np.log10, "tanh": np.tanh,
           "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "erf": np.vectorize(math.erf)}
    for name, g in zip(outs, got):
        if name == "n":
            want = np.exp(np.tanh(x.astype(np.float64)))
        else:
            v = x.astype(np.float64) * (0.5 if name.endswith("2") else 1.0)
            want = ref[name[:-1]](v)
        np.testing.assert_allclose(g, want, rtol=2e-6, atol=1e-7, err_msg=name)
    names = {k[0] for k in fastmath._SUBROUTINES}
    assert {f"{op}_f32" for op in ops} <= names
