"""Compiled (generated Numba kernels) equals eager over bool/int/float dtypes (issue 10).

Generated code once computed bool arithmetic in Numba's integers: ``(b + b).float()``
gave 2 where eager gives 1 (bool + bool is logical or, computed in bool). Codegen now
takes comparison compute dtypes from ``ir.registry.compute_dtype`` and brings every
arithmetic result back to its compute dtype as NumPy's loop for that dtype does.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gcompile as torch
from kernels.cpu import compile_kernel
from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var
from runtime.reference import ReferenceKernel


def assert_same(got, want):
    """Exact for bool/int results, rtol 1e-5 for floats; dtypes and shapes equal."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert tuple(a.shape) == tuple(b.shape), (a.shape, b.shape)
        assert a.dtype == b.dtype, (a.dtype, b.dtype)
        a, b = a.numpy(), b.numpy()
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
        else:
            np.testing.assert_array_equal(a, b)


def compiled_vs_eager(fn, *args, calls=2):
    """The first call traces (and runs eagerly); later ones run the generated plan."""
    cf = torch.compile(fn)
    want = fn(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(calls):
            got = cf(*args)
            assert_same(got, want)
    return cf


# ---- item (a): arithmetic over bool operands ---------------------------------------------
B1 = [True, False, True, False]
B2 = [True, True, False, False]


@pytest.mark.parametrize("name,fn", [
    ("add_float", lambda b, c: (b + b).float()),
    ("add_two", lambda b, c: (b + c).float()),
    ("add_long_then_int_math", lambda b, c: (b + c).long() * 3 + 1),
    ("add_scalar_true", lambda b, c: (b + True).float()),
    ("add_then_mul", lambda b, c: ((b + c) * b).to(torch.float64)),
    ("mul_then_add", lambda b, c: (b * c + b + c).float() * 0.5),
    ("max_min", lambda b, c: (torch.maximum(b, c) + torch.minimum(b, c)).float()),
    ("where_of_sum", lambda b, c: torch.where(b + c, 1.0, -1.0)),
    ("sum_of_sum_with_ints", lambda b, c: (b + c).int() + b.int()),
    ("add_then_compare", lambda b, c: ((b + c) == b).float()),
])
def test_bool_arithmetic_stays_bool(name, fn):
    b, c = torch.tensor(B1), torch.tensor(B2)
    compiled_vs_eager(fn, b, c)


def _elementwise_spec(stmts, in_dtypes, out_dtype, result):
    return KernelSpec(tuple(in_dtypes), ((out_dtype, "full"),),
                      (Phase("map", tuple(stmts), stores=((0, var(result)),)),), "elementwise")


@pytest.mark.parametrize("op,want", [("add", np.logical_or), ("mul", np.logical_and),
                                     ("maximum", np.logical_or), ("minimum", np.logical_and)])
def test_codegen_bool_binary_is_numpy_bool_loop(op, want):
    # a bool stmt feeding a float cast inside one kernel: the value must be 0 or 1
    spec = _elementwise_spec([Stmt("s", op, (inp(0), inp(1)), (), "bool"),
                              Stmt("f", "cast", (var("s"),), (("dtype", "float32"),),
                                   "float32")],
                             ("bool", "bool"), "float32", "f")
    a, b = np.array(B1), np.array(B2)
    out = np.empty(4, np.float32)
    compile_kernel(spec)([a, b], [out])
    np.testing.assert_array_equal(out, want(a, b).astype(np.float32))
    ref = np.empty(4, np.float32)
    ReferenceKernel(spec)([a, b], [ref])
    np.testing.assert_array_equal(out, ref)


def test_codegen_comparison_uses_registry_compute_dtype():
    # int32 tensor >= 0-d float constant 2.5: eager compares in float (the constant's
    # category wins); a separate rule that ignored constants compared in int32 (2.5 -> 2)
    spec = _elementwise_spec([Stmt("g", "ge", (inp(0), const(2.5, "float32")), (), "bool")],
                             ("int32",), "bool", "g")
    x = np.array([1, 2, 3, 4], np.int32)
    out = np.empty(4, np.bool_)
    compile_kernel(spec)([x], [out])
    np.testing.assert_array_equal(out, x >= 2.5)


@pytest.mark.parametrize("op", ["sub", "rsub", "neg"])
def test_codegen_refuses_bool_subtraction_and_negation(op):
    # NumPy (so eager) refuses both; the node must run its NumPy implementation instead
    # of silently computing xor / identity
    args = (inp(0),) if op == "neg" else (inp(0), inp(1))
    spec = _elementwise_spec([Stmt("s", op, args, (), "bool")], ("bool",) * len(args),
                             "bool", "s")
    with pytest.raises(NotImplementedError, match="bool"):
        compile_kernel(spec)


# ---- property: random small programs ---------------------------------------------------------
DTYPES = [torch.bool, torch.bool, torch.bool, torch.int32, torch.int64, torch.float32,
          torch.float64]
SHAPES = [(), (0,), (5,), (2, 4), (1, 4), (2, 0)]
UNARY = ["float", "long", "bool", "abs", "neg", "relu", "exp", "logical_not", "clamp", "sign"]
BINARY = ["add", "add", "add", "mul", "mul", "sub", "maximum", "minimum", "gt", "eq",
          "logical_and", "logical_or", "logical_xor", "bitwise_and", "where"]
SCALARS = [True, 2, 1.5]


def _unary(name, x):
    if name in ("float", "long", "bool"):
        return getattr(x, name)()
    if name == "clamp":
        return x.clamp(0, 2)
    return getattr(torch, name)(x)


def _binary(name, a, b):
    if name == "where":
        return torch.where(a > 0, b, a)
    return getattr(torch, name)(a, b)


def _reduce(name, x, keep):
    if name == "sum":
        return x.sum(dim=-1, keepdim=True) if keep else x.sum()
    if name == "amax":
        return x.amax(dim=-1, keepdim=True) if keep else x.amax()
    return x.mean(dim=-1, keepdim=True) if keep else x.mean()


def _ok(name, *xs):
    """Skip combinations eager rejects (torch rejects them too)."""
    ts = [x for x in xs if isinstance(x, torch.Tensor)]
    dts = [x.dtype for x in ts]
    if name in ("neg", "sign", "clamp") and torch.bool in dts:
        return False
    if name == "sub" and all(d is torch.bool for d in dts) and \
            all(not isinstance(x, (int, float)) or isinstance(x, bool) for x in xs):
        return False
    if name == "bitwise_and" and any(d.is_floating_point for d in dts):
        return False
    if name in ("amax", "mean") and ts[0].numel() == 0:
        return False
    if name == "mean" and not ts[0].dtype.is_floating_point:
        return False
    if name in ("amax", "mean", "sum") and ts[0].dim() == 0:
        return name == "sum"
    return True


class Program:
    """Inputs and steps: ("u", op, i) | ("b", op, i, j) | ("s", op, i, scalar) |
    ("r", op, i, keepdim) over earlier values (inputs first)."""

    def __init__(self, inputs, steps):
        self.inputs, self.steps = inputs, steps

    def __repr__(self) -> str:
        ins = ", ".join(f"{str(x.dtype)[6:]}{list(x.shape)}={x.tolist()}" for x in self.inputs)
        return f"Program(inputs: {ins}; steps: {self.steps})"


@st.composite
def programs(draw):
    """A random program over one base shape (inputs are that shape or 0-d, reductions
    keep dims or reduce to 0-d, so all values broadcast). Hypothesis draws the shape,
    the main dtype, the input count and a seed; the seed draws the values and steps, so
    every example is a new program (drawing each step from Hypothesis made most of a
    small budget near-copies of a few programs)."""
    shape = draw(st.sampled_from(SHAPES))
    main = draw(st.sampled_from(DTYPES))  # mostly one dtype: its own loops get exercised
    n_in = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    def mostly():
        return rng.random() < 0.75

    inputs = []
    for _ in range(n_in):
        d = main if mostly() else pick(DTYPES)
        s = shape if mostly() else ()  # a 0-d operand broadcasting in
        if d is torch.bool:
            a = rng.random(s) < 0.7  # True + True is where bool arithmetic goes wrong
        elif d.is_floating_point:
            a = rng.standard_normal(s) * 2
        else:
            a = rng.integers(-3, 4, s)
        inputs.append(torch.tensor(a, dtype=d))
    vals = list(inputs)
    steps = []
    for _ in range(int(rng.integers(1, 7))):
        kind = pick("uubbbssr")
        # mostly the latest value, so steps chain inside one kernel
        i = len(vals) - 1 if rng.random() < 0.5 else int(rng.integers(len(vals)))
        x = vals[i]
        if kind == "u":
            step = ("u", pick(UNARY), i)
            args = (x,)
        elif kind == "b":
            # half the time an operand of the same dtype: per-dtype loops (bool + bool,
            # int32 * int32) are where generated code and NumPy can disagree
            same = [j for j, v in enumerate(vals) if v.dtype is x.dtype]
            j = pick(same) if rng.random() < 0.5 else int(rng.integers(len(vals)))
            step = ("b", pick(BINARY), i, j)
            args = (x, vals[j])
        elif kind == "s":
            # likewise a scalar of the tensor's own category half the time
            own = True if x.dtype is torch.bool else 1.5 if x.dtype.is_floating_point else 2
            scalar = own if rng.random() < 0.5 else pick(SCALARS)
            step = ("s", pick(["add", "add", "mul", "sub", "maximum"]), i, scalar)
            args = (x, scalar)
        else:
            step = ("r", pick(["sum", "amax", "mean"]), i, bool(rng.random() < 0.5))
            args = (x,)
        if not _ok(step[1], *args):
            continue
        try:
            vals.append(_run_step(step, vals))
        except RuntimeError:
            continue  # an eager error (e.g. a dtype torch rejects): not a program
        steps.append(step)
    assume(steps)
    return Program(inputs, steps)


def _run_step(step, vals):
    kind, name = step[0], step[1]
    if kind == "u":
        return _unary(name, vals[step[2]])
    if kind == "b":
        return _binary(name, vals[step[2]], vals[step[3]])
    if kind == "s":
        x, s = vals[step[2]], step[3]
        return torch.maximum(x, torch.tensor(s)) if name == "maximum" else \
            _binary(name, x, s)
    return _reduce(name, vals[step[2]], step[3])


def _program_fn(steps, n_in):
    def fn(*xs):
        vals = list(xs)
        for step in steps:
            vals.append(_run_step(step, vals))
        # every computed value, and each as float64: values leave kernels both as
        # stored outputs and as operands of a cast inside the kernel
        out = vals[n_in:]
        return tuple(out) + tuple(v.double() for v in out)
    return fn


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(programs())
def test_random_programs_compiled_equal_eager(prog):
    compiled_vs_eager(_program_fn(prog.steps, len(prog.inputs)), *prog.inputs)
