"""Every registered elementwise op through generated kernels, against its NumPy impl.

One kernel per input-dtype family holds every op that applies (one output per op),
so the whole registry costs a handful of Numba compiles. Inputs sweep the float
range: random bit patterns (normal, subnormal, huge), inf, nan, -0.0.
"""
from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import numpy as np
import pytest

import ir.ops  # noqa: F401 - registers the ops
from ir import dtypes as dt
from ir.registry import REGISTRY
from kernels.cpu import codegen, compile_kernel
from kernels.spec import KernelSpec, Phase, Stmt, attrs_tuple, const, inp, var


def _load_cases():
    name = "_gcompile_op_cases"
    if name not in sys.modules:
        path = pathlib.Path(__file__).resolve().parents[1] / "op_cases.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


# Attribute settings come from the registry-wide case table (tests/op_cases.py, which must
# cover every registered op): each elementwise op runs once per distinct attrs of its cases.
CASES = _load_cases().CASES
# elementwise ops the family sweep leaves to a test of their own, and why
OWN_TEST = {
    "cast": "float -> int casts are undefined for nan, inf and out-of-range values, which the "
            "sweep's random bit patterns are full of: test_cast_and_clamp uses finite inputs",
}
# Gradient formulas are ill-conditioned far out (1 + tanh(x) and 1 - erf(x) cancel, so a
# 1-ulp difference in tanh becomes a 1e-3 relative difference; x**3 overflows on other
# paths than the eager formula): test them on moderate inputs.
MODERATE_PREFIX = ("_backward",)


def _sweep_ops():
    return sorted(n for n, op in REGISTRY.items()
                  if op.expr is not None and op.is_elementwise and n not in OWN_TEST)


def _attr_sets(name):
    sets = []
    for case in CASES[name]:
        if case.attrs not in sets:
            sets.append(case.attrs)
    return sets


def _float_inputs(np_dtype, n_random=60000, seed=0):
    rng = np.random.default_rng(seed)
    f = np.dtype(np_dtype)
    ibits = np.uint32 if f == np.float32 else np.uint64
    bits = rng.integers(0, np.iinfo(ibits).max, n_random, dtype=ibits, endpoint=True)
    special = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.7, 1e-40, -1e-40, 1e-310, 1e30, -1e30,
               np.inf, -np.inf, np.nan, 88.7, -87.5, 100.0, -100.0, 20.0, 1e-8, 4.0, 0.625,
               -0.625, 9.0, 1.0000001, 0.9999999, -1.0000001, 1e-3, -1e-3]
    parts = [bits.view(f), np.array(special, f),
             (rng.standard_normal(20000) * 3).astype(f),
             np.linspace(-30, 30, 20001).astype(f)]
    x = np.concatenate(parts)
    y = np.concatenate([x[1:], x[:1]])
    y[::7] = rng.standard_normal(y[::7].shape).astype(f)
    return x, y


def _family_inputs(family):
    if family in ("float32", "float64"):
        x, y = _float_inputs(family)
        c = np.signbit(x) ^ (np.arange(x.size) % 3 == 0)
        rng = np.random.default_rng(2)
        xm = rng.standard_normal(x.size).astype(family)
        ym = np.clip(rng.standard_normal(x.size), -3, 3).astype(family)
        return {"x": x, "y": y, "c": c, "xm": xm, "ym": ym}, ("float", family)
    rng = np.random.default_rng(1)
    if family == "int":
        x = rng.integers(-50, 50, 5000).astype(np.int32)
        y = rng.integers(1, 7, 5000).astype(np.int64)
        c = rng.integers(0, 2, 5000).astype(bool)
        return {"x": x, "y": y, "c": c}, ("int", "int32")
    x = rng.integers(0, 2, 64).astype(bool)
    y = rng.integers(0, 2, 64).astype(bool)
    return {"x": x, "y": y, "c": x ^ y}, ("bool", "bool")


def _build(family):
    arrays, _ = _family_inputs(family)
    names = ("c", "x", "y") + (("xm", "ym") if "xm" in arrays else ())
    in_dtypes = tuple(arrays[n].dtype.name for n in names)
    stmts, stores, refs, labels, outs = [], [], [], [], []
    for name in _sweep_ops():
        op = REGISTRY[name]
        operands = {"unary": ("x",), "binary": ("x", "y"), "ternary": ("c", "x", "y")}[
            op.category]
        if name.endswith(MODERATE_PREFIX) and "xm" in arrays:
            operands = tuple(o + "m" if o in ("x", "y") else o for o in operands)
        for attrs in _attr_sets(name):
            specs = [(arrays[o].shape, dt.from_numpy(arrays[o].dtype)) for o in operands]
            try:
                out_d = op.infer(specs, attrs)[1]
                with np.errstate(all="ignore"):
                    vals = [arrays[o] for o in operands]
                    if op.dtype_rule == "float":  # eager computes these in the float dtype
                        vals = [v.astype(out_d.np) for v in vals]
                    ref = op.impl(*vals, **attrs)
            except Exception:  # noqa: BLE001 - op does not apply to this family
                # (test_every_elementwise_op checks that no op drops out where it applies)
                continue
            ref = np.asarray(ref).astype(out_d.np)
            one = Stmt("s", name, tuple(inp(names.index(o)) for o in operands),
                       attrs_tuple(attrs), out_d.name)
            try:
                codegen.elementwise_source(KernelSpec(in_dtypes, ((out_d.name, "full"),), (
                    Phase("map", (one,), stores=((0, var("s")),)),), "elementwise"),
                    ("flat", (-1,) * len(names), None))
            except NotImplementedError:
                # e.g. elu on integers (torch rejects it too); float families must not skip
                assert family not in ("float32", "float64"), (name, attrs)
                continue
            k = len(stmts)
            stmts.append(Stmt(f"s{k}", name, tuple(inp(names.index(o)) for o in operands),
                              attrs_tuple(attrs), out_d.name))
            stores.append((k, var(f"s{k}")))
            outs.append((out_d.name, "full"))
            refs.append(ref)
            labels.append(f"{name}{attrs or ''}")
    spec = KernelSpec(in_dtypes, tuple(outs), (Phase("map", tuple(stmts), stores=tuple(stores)),),
                      "elementwise")
    return spec, [arrays[n] for n in names], refs, labels


@pytest.mark.parametrize("family", ["float32", "float64", "int", "bool"])
def test_every_elementwise_op(family):
    spec, inputs, refs, labels = _build(family)
    composite = {lb: REGISTRY[lb.split("{")[0]].impl.__module__ != "ir.ops.elementwise"
                 for lb in labels}
    # no op silently drops out: float families hold every op but the integer-only ones,
    # the int family at least those
    want = {n for n in _sweep_ops()
            if (REGISTRY[n].dtype_rule == "int_only") == (family == "int")}
    if family != "bool":
        missing = sorted(want - {lb.split("{")[0] for lb in labels})
        assert not missing, f"elementwise ops left out of the {family} kernel: {missing}"
    assert len(labels) >= {"float32": 40, "float64": 40, "int": 20, "bool": 8}[family]
    k = compile_kernel(spec)
    outs = [np.empty(inputs[0].shape, np.dtype(d)) for d, _ in spec.outputs]
    k(inputs, outs)
    failures = []
    for label, out, ref in zip(labels, outs, refs):
        if out.dtype.kind == "f":
            tol = dict(rtol=1e-5, atol=1e-6) if out.dtype == np.float32 else dict(
                rtol=1e-12, atol=1e-300)
            if composite[label]:
                # composite formulas (gelu, gradients) cancel in 1 + tanh(x): a few-ulp
                # tanh difference (or an FMA) becomes a larger relative difference
                tol = dict(rtol=1e-4, atol=1e-5) if out.dtype == np.float32 else dict(
                    rtol=1e-9, atol=1e-12)
            ok = np.isclose(out, ref, equal_nan=True, **tol)
        else:
            ok = out == ref
        if not ok.all():
            bad = np.flatnonzero(~ok)[:3]
            failures.append(f"{label}: {(~ok).sum()} mismatches, e.g. inputs "
                            f"{[a[bad].tolist() for a in inputs[1:3]]} got {out[bad].tolist()} "
                            f"want {ref[bad].tolist()}")
    assert not failures, "\n".join(failures)


def test_own_tests_name_elementwise_ops():
    for name, reason in OWN_TEST.items():
        assert name in REGISTRY and REGISTRY[name].is_elementwise, name
        assert reason
    assert CASES.keys() >= set(_sweep_ops()), sorted(set(_sweep_ops()) - CASES.keys())


def test_cast_and_clamp():
    f = "float32"
    stmts = (
        Stmt("i", "cast", (inp(0),), attrs_tuple({"dtype": dt.int32}), "int32"),
        Stmt("b", "cast", (inp(0),), attrs_tuple({"dtype": dt.bool_}), "bool"),
        Stmt("d", "cast", (var("i"),), attrs_tuple({"dtype": dt.float64}), "float64"),
        Stmt("c1", "clamp", (inp(0),), attrs_tuple({"min": -1.5, "max": 2.0}), f),
        Stmt("c2", "clamp", (inp(0),), attrs_tuple({"min": 0.25, "max": None}), f),
        Stmt("c3", "clamp", (inp(0),), attrs_tuple({"min": None, "max": -0.5}), f),
    )
    outs = (("int32", "full"), ("bool", "full"), ("float64", "full"), (f, "full"),
            (f, "full"), (f, "full"))
    spec = KernelSpec((f,), outs, (Phase("map", stmts, stores=tuple(
        (k, var(s.name)) for k, s in enumerate(stmts))),), "elementwise")
    x = np.array([-3.7, -1.5, -0.2, 0.0, 0.3, 1.9, 2.5, 1e6, np.nan], np.float32)
    res = [np.empty(x.shape, np.dtype(d)) for d, _ in outs]
    compile_kernel(spec)([x], res)
    fin = np.isfinite(x)
    np.testing.assert_array_equal(res[0][fin], x[fin].astype(np.int32))
    np.testing.assert_array_equal(res[1], x.astype(bool))
    np.testing.assert_array_equal(res[2][fin], x[fin].astype(np.int32).astype(np.float64))
    np.testing.assert_array_equal(res[3], np.clip(x, -1.5, 2.0))
    np.testing.assert_array_equal(res[4], np.maximum(x, np.float32(0.25)))
    np.testing.assert_array_equal(res[5], np.minimum(x, np.float32(-0.5)))


# ---- fast math: the inlined float32 transcendentals over the whole float32 range ----------
# DESIGN's tolerance for elementwise work is rtol 1e-5 / atol 1e-6; these functions are held
# to a relative error of 5e-7 (a few ulp) wherever the true result is a normal float32, and
# must get inf, nan, -0.0, subnormal and overflow cases right.

FUNCS = ("exp", "expm1", "log", "log1p", "log2", "log10", "tanh", "sigmoid", "erf")


def _fm_ref(name, x64):
    with np.errstate(all="ignore"):
        if name == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x64))
        if name == "erf":
            return np.vectorize(math.erf, otypes=[np.float64])(x64)
        return getattr(np, name)(x64)


def test_fast_math_float32_whole_range():
    rng = np.random.default_rng(123)
    bits = rng.integers(0, 2**32, 150_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, -1e-40,
                        1.17549435e-38, 3.4028235e38, -3.4028235e38, 1.0, -1.0, 88.72, 88.73,
                        -87.33, -103.9, -104.0, 9.0, -9.0, 4.0, 0.5, -0.5, 1e-7, -0.9999999],
                       np.float32)
    x = np.concatenate([bits.view(np.float32), special,
                        np.linspace(-120, 120, 60_001, dtype=np.float32)])
    # the same spec (hence the same compiled kernel) as the float32 registry test
    spec, _, _, labels = _build("float32")
    c = np.signbit(x)
    all_outs = [np.empty(x.shape, np.dtype(d)) for d, _ in spec.outputs]
    compile_kernel(spec)([c, x, x, x, x], all_outs, parallel=False)
    outs = [all_outs[labels.index(f)] for f in FUNCS]
    with np.errstate(invalid="ignore"):  # random bits include signalling NaNs
        x64 = x.astype(np.float64)
    fails = []
    for name, got in zip(FUNCS, outs):
        ref = _fm_ref(name, x64)
        with np.errstate(over="ignore"):
            ref32 = ref.astype(np.float32)
        # special values exactly: nan where NumPy gives nan, same infinities
        nan_ok = np.array_equal(np.isnan(got), np.isnan(ref32))
        inf_ok = np.array_equal(got[np.isinf(ref32)], ref32[np.isinf(ref32)])
        normal = np.isfinite(ref32) & (np.abs(ref) >= 1.17549435e-38)
        rel = np.abs(got[normal].astype(np.float64) - ref[normal]) / np.abs(ref[normal])
        tiny = np.isfinite(ref32) & ~normal  # subnormal or zero results
        tiny_ok = np.all(np.abs(got[tiny] - ref32[tiny]) <= 2e-45 + 1e-6 * np.abs(ref32[tiny]))
        if not (nan_ok and inf_ok and tiny_ok and rel.max() <= 5e-7):
            fails.append(f"{name}: nan_ok={nan_ok} inf_ok={inf_ok} tiny_ok={tiny_ok} "
                         f"max_rel={rel.max():.2e}")
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8"])
def test_integer_floordiv_remainder_edges(dtype):
    """NumPy's integer semantics for every non-zero constant divisor: results floor
    towards -inf, and the minimum value // -1 wraps."""
    info = np.iinfo(dtype)
    vals = sorted({0, 1, 2, 3, 7, info.max, info.min, info.max - 1}
                  | ({-1, -2, -3, -7, info.min + 1} if info.min < 0 else set()))
    a = np.array(vals, dtype)
    for d in (v for v in vals if v != 0):
        st = (Stmt("q", "floor_divide", (inp(0), const(d, dtype)), (), dtype),
              Stmt("r", "remainder", (inp(0), const(d, dtype)), (), dtype))
        spec = KernelSpec((dtype,), ((dtype, "full"), (dtype, "full")),
                          (Phase("map", st, stores=((0, var("q")), (1, var("r")))),),
                          "elementwise")
        q, r = np.empty_like(a), np.empty_like(a)
        compile_kernel(spec)([a], [q, r])
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(q, np.floor_divide(a, np.array(d, dtype)))
            np.testing.assert_array_equal(r, np.remainder(a, np.array(d, dtype)))


@pytest.mark.parametrize("op", ["floor_divide", "remainder"])
def test_integer_division_by_a_runtime_divisor_is_not_a_kernel(op):
    # a zero integer divisor must raise as in torch; a kernel cannot raise
    st = (Stmt("q", op, (inp(0), inp(1)), (), "int64"),)
    spec = KernelSpec(("int64", "int64"), (("int64", "full"),),
                      (Phase("map", st, stores=((0, var("q")),)),), "elementwise")
    with pytest.raises(NotImplementedError, match="run-time or zero divisor"):
        codegen.elementwise_source(spec, ("flat", (-1, -1), None))


def test_integer_pow_with_a_runtime_exponent_is_not_a_kernel():
    # a negative integer exponent must raise as in NumPy; a kernel cannot raise
    st = (Stmt("p", "pow", (inp(0), inp(1)), (), "int64"),)
    spec = KernelSpec(("int64", "int64"), (("int64", "full"),),
                      (Phase("map", st, stores=((0, var("p")),)),), "elementwise")
    with pytest.raises(NotImplementedError, match="integer power"):
        codegen.elementwise_source(spec, ("flat", (-1, -1), None))
