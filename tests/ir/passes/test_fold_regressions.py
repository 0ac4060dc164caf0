"""Constant folding keeps each folded value's shape and dtype (issue 10, item 6).

``np.ascontiguousarray`` returns at least 1-d arrays, so folding turned 0-d results into
shape (1,): a compiled function returning a 0-d value computed only from constants
returned shape (1,), and a 0-d input combined with such a value did too.
"""
import warnings

import numpy as np
import pytest

import gcompile as torch
from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes import fold_constants, simplify
from ir.verify import verify


def test_fold_keeps_zero_dim_results():
    g = Graph("fold0d")
    x = g.add_input((), dt.float32, "x")
    c = g.add_const(np.array(2.0, np.float32))
    e = g.add_node("exp", [c])
    s = g.add_node("mul", [e, 3.0])
    flag = g.add_node("gt", [s, 1.0])
    g.set_outputs([s, g.add_node("add", [x, s]), flag])
    want = interpret(g, [np.array(0.5, np.float32)])
    assert fold_constants(g) == 3
    verify(g)  # every constant's data matches its declared type
    assert all(c.shape == () for c in g.constants)
    got = interpret(g, [np.array(0.5, np.float32)])
    for a, b in zip(got, want):
        assert a.shape == b.shape == () and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_fold_keeps_shapes_and_dtypes_of_every_rank():
    for shape in [(), (1,), (3,), (2, 1), (0,), (2, 0, 3)]:
        g = Graph("fold")
        c = g.add_const(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape))
        a = g.add_node("add", [c, 1])
        b = g.add_node("lt", [a, 2])
        t = g.add_node("permute", [a], {"dims": tuple(reversed(range(len(shape))))})
        g.set_outputs([a, b, t])
        want = interpret(g, [])
        simplify(g)
        verify(g)
        assert not g.nodes
        for v, w in zip(g.outputs, want):
            assert v.shape == w.shape and v.data.dtype == w.dtype
            np.testing.assert_array_equal(v.data, w)


def _compiled_vs_eager(fn, *args):
    cf = torch.compile(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):  # first call traces, later calls run the plan
            got = cf(*args)
            want = fn(*args)
            got = got if isinstance(got, tuple) else (got,)
            want = want if isinstance(want, tuple) else (want,)
            for a, b in zip(got, want):
                assert tuple(a.shape) == tuple(b.shape), (a.shape, b.shape)
                assert a.dtype == b.dtype
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_compiled_zero_dim_result_from_constants_only():
    def f():
        return torch.tensor(2.0).exp() * 2
    _compiled_vs_eager(f)


@pytest.mark.parametrize("shape", [(), (3,)])
def test_compiled_zero_dim_constant_expressions_next_to_inputs(shape):
    def f(x):
        a = torch.tensor(2.0)
        b = a * 3 + 1
        return x + b, b, a > 1, (x * 0).sum() + b
    _compiled_vs_eager(f, torch.ones(*shape))


def test_fold_never_retypes_a_value():
    # NumPy computes bool ** bool in int8 while the registry declares bool: folding must
    # not swap the declared bool value for an int8 constant (the graph would no longer
    # verify: bool + int8 is int8, not the declared bool)
    g = Graph("retype")
    x = g.add_input((2,), dt.bool_, "x")
    c = g.add_const(np.array([True, False]))
    p = g.add_node("pow", [c, c])
    g.set_outputs([g.add_node("add", [p, x])])
    fold_constants(g)
    verify(g)
    assert all(v.dtype is dt.bool_ for v in g.constants)
