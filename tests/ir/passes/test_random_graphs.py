"""Hypothesis: random DAGs (elementwise, broadcasts, reductions, views, matmul) compile
to plans that match the reference interpreter, and every plan passes the checker."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.shapes import broadcast_shapes
from ir.verify import verify
from runtime.lower import compile_graph, set_kernel_factory
from runtime.plan import Executor
from runtime.reference import ReferenceKernel

UNARY = ["tanh", "sigmoid", "neg", "relu", "abs", "sin", "exp_t"]
BINARY = ["add", "sub", "mul", "maximum", "div_s"]


@pytest.fixture(autouse=True, scope="module")
def _reference():
    from runtime import lower
    old = lower._KERNEL_FACTORY
    set_kernel_factory(ReferenceKernel)
    yield
    set_kernel_factory(old)


def _broadcastable(a, b):
    try:
        broadcast_shapes(a, b)
        return True
    except RuntimeError:
        return False


@st.composite
def graphs(draw):
    B = draw(st.integers(1, 5))
    N = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([dt.float32, dt.float64]))
    g = Graph("random")
    vals = [g.add_input((B, N), dtype, "x")]
    if draw(st.booleans()):
        vals.append(g.add_input((N,), dtype, "row"))
    if draw(st.booleans()):
        vals.append(g.add_input((B, 1), dtype, "col"))
    n_ops = draw(st.integers(2, 15))
    for _ in range(n_ops):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "reduce", "view", "matmul"]))
        a = draw(st.sampled_from(vals))
        if kind == "unary":
            op = draw(st.sampled_from(UNARY))
            v = (g.add_node("exp", [g.add_node("tanh", [a])]) if op == "exp_t"
                 else g.add_node(op, [a]))
        elif kind == "binary":
            cands = [b for b in vals if _broadcastable(a.shape, b.shape)]
            b = draw(st.sampled_from(cands))
            op = draw(st.sampled_from(BINARY))
            if op == "div_s":
                v = g.add_node("div", [a, g.add_node("add", [g.add_node("abs", [b]), 1.0])])
            else:
                v = g.add_node(op, [a, b])
        elif kind == "reduce":
            if a.ndim == 0:
                continue
            op = draw(st.sampled_from(["sum", "mean", "amax", "var"]))
            d = draw(st.integers(0, a.ndim - 1))
            dims = (d,) if draw(st.booleans()) else tuple(range(a.ndim))
            v = g.add_node(op, [a], {"dims": dims, "keepdim": draw(st.booleans())})
        elif kind == "view":
            if a.ndim >= 2:
                v = g.add_node("permute", [a], {"dims": tuple(reversed(range(a.ndim)))})
            elif a.ndim == 1:
                v = g.add_node("expand", [g.add_node("reshape", [a], {"shape": (1, a.shape[0])})],
                               {"shape": (3, a.shape[0])})
            else:
                v = g.add_node("reshape", [a], {"shape": (1,)})
        else:
            if a.ndim != 2:
                continue
            t = g.add_node("permute", [a], {"dims": (1, 0)})
            v = g.add_node("matmul", [a, t])
        vals.append(v)
    outs = [vals[-1]] + draw(st.lists(st.sampled_from(vals), max_size=2))
    g.set_outputs(outs)
    return g


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(0, 2**16))
def test_random_graph_matches_interpreter(g, seed):
    verify(g)
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(v.shape).astype(v.dtype.np) for v in g.inputs]
    want = interpret(g, inputs)
    comp = compile_graph(g.copy(), check=True)  # check=True: the memory-plan checker
    verify(comp.graph)
    ex = Executor(comp.plan)
    for _ in range(2):  # the second run reuses the arena
        got = ex(inputs)
        for a, b in zip(got, want):
            assert a.shape == b.shape and a.dtype == b.dtype
            tol = 1e-4 if a.dtype == np.float32 else 1e-9
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
