"""Property test: a compiled function gives eager's results, on its first call
and on later calls with other data, for random programs with in-place ops,
views, casts, reductions, bool/int/float dtypes, 0-d and 0-size shapes, and
aliased arguments. Outputs and the arguments' final values (what in-place
writes left in them) must match; an eager error must be the compiled error.

The bulk runs on the reference-interpreter backend (the whole front end:
tracing, guards, write-backs, views, functionalisation; no kernel compiles,
so it stays fast from a cold cache); a smaller run uses generated kernels.
"""
from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gcompile as torch

SHAPES = [(), (0,), (3,), (2, 3), (0, 2), (1, 3)]
DTYPES = ["float32", "int64", "bool"]
BINARY = ["add", "mul", "sub", "maximum", "eq", "lt"]
UNARY = ["neg", "abs", "float", "long", "bool", "sum", "clone", "exp"]
VIEWS = ["first", "flat", "t", "unsqueeze"]
INPLACE = ["add_", "mul_", "zero_", "copy_"]


def _binary(name, a, b):
    return getattr(torch, name)(a, b)


def _unary(name, a):
    if name in ("float", "long", "bool"):
        return getattr(a, name)()
    if name == "exp":
        return a.float().exp()
    return getattr(a, name)()


def _view(name, a):
    if name == "first":
        return a[0] if a.dim() >= 1 and a.shape[0] > 0 else a
    if name == "flat":
        return a.reshape(-1)
    if name == "t":
        return a.t() if a.dim() == 2 else a
    return a.unsqueeze(0)


def _inplace(name, a, b):
    if name == "zero_":
        return a.zero_()
    if name == "copy_":
        return a.copy_(b)
    return getattr(a, name)(b)


def run(prog, x, y):
    """Interpret ``prog`` (a tuple of instructions) on tensors x, y."""
    pool = [x, y]
    for ins in prog:
        kind, name, i, j = ins
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        if kind == "binary":
            pool.append(_binary(name, a, b))
        elif kind == "unary":
            pool.append(_unary(name, a))
        elif kind == "view":
            pool.append(_view(name, a))
        else:
            pool.append(_inplace(name, a, b))
    return tuple(pool[-3:])


instructions = st.one_of(
    st.tuples(st.just("binary"), st.sampled_from(BINARY), st.integers(0, 9), st.integers(0, 9)),
    st.tuples(st.just("unary"), st.sampled_from(UNARY), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("view"), st.sampled_from(VIEWS), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("inplace"), st.sampled_from(INPLACE), st.integers(0, 9),
              st.integers(0, 9)),
)


@st.composite
def cases(draw):
    shape = draw(st.sampled_from(SHAPES))
    dx, dy = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    aliased = draw(st.booleans())
    prog = tuple(draw(st.lists(instructions, min_size=1, max_size=6)))
    seeds = draw(st.tuples(st.integers(0, 2**16), st.integers(0, 2**16)))
    return shape, dx, (dx if aliased else dy), aliased, prog, seeds


def _make(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        a = rng.random(shape) > 0.5
    elif dtype == "int64":
        a = rng.integers(-3, 4, shape)
    else:
        a = rng.standard_normal(shape).astype(np.float32)
    return torch.tensor(a)


def _outcome(fn, x, y):
    try:
        out = fn(x, y)
    except Exception as e:  # noqa: BLE001 - compared against the other side's error
        return ("error", type(e))
    return ("ok", [o.detach().numpy().copy() for o in out],
            [x.numpy().copy(), y.numpy().copy()])


def _args(shape, dx, dy, aliased, seed):
    x = _make(shape, dx, seed)
    return (x, x) if aliased else (x, _make(shape, dy, seed + 1))


def _check(case, backend):
    shape, dx, dy, aliased, prog, seeds = case

    def fn(x, y):
        return run(prog, x, y)

    compiled = torch.compile(fn, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in seeds:  # the first call traces, the second runs the plan
            want = _outcome(fn, *_args(shape, dx, dy, aliased, seed))
            got = _outcome(compiled, *_args(shape, dx, dy, aliased, seed))
            assert got[0] == want[0], (prog, want, got)
            if want[0] == "error":
                assert got[1] is want[1], (prog, want, got)
                continue
            for a, b in zip(want[1] + want[2], got[1] + got[2]):
                assert a.shape == b.shape and a.dtype == b.dtype, (prog, a, b)
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=str(prog))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_equals_eager_interpreted_plans(case):
    _check(case, "interpreter")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_equals_eager_generated_kernels(case):
    _check(case, "plan")
