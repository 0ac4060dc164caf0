"""OpDef.decomposition: each rule equals its op, declines what it must, and the
decompose pass rewrites every composite into primitives."""
import numpy as np
import pytest

from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes.decompose import decompose_node, decompose_ops
from ir.registry import REGISTRY
from ir.verify import verify

CASES = [
    ("gelu", {"approximate": "none"}, (4, 7)),
    ("gelu", {"approximate": "tanh"}, (3, 5)),
    ("softmax", {"dim": 1}, (4, 6)),
    ("softmax", {"dim": -3}, (2, 3, 4)),
    ("log_softmax", {"dim": 0}, (5, 3)),
    ("logsumexp", {"dims": (1,), "keepdim": False}, (3, 4, 2)),
    ("logsumexp", {"dims": (0, 2), "keepdim": True}, (3, 4, 2)),
]


def _graph(op, attrs, shape, dtype):
    g = Graph("t")
    x = g.add_input(shape, dtype, "x")
    g.set_outputs([g.add_node(op, [x], attrs)])
    return g


@pytest.mark.parametrize("dtype", [dt.float32, dt.float64])
@pytest.mark.parametrize("op,attrs,shape", CASES)
def test_each_decomposition_equals_its_op(op, attrs, shape, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(dtype.np)
    if op != "gelu":
        x.flat[0] = -np.inf  # a -inf entry: the finite-guarded max keeps the rest right
    want = REGISTRY[op].impl(x, **attrs)
    g = _graph(op, attrs, shape, dtype)
    assert decompose_ops(g) == 1
    verify(g)
    assert all(REGISTRY[n.op].decomposition is None for n in g.nodes)
    got = interpret(g, [x])[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-5 if dtype is dt.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_a_rule_declines_dtypes_it_would_compute_differently():
    g = _graph("softmax", {"dim": 0}, (3,), dt.float16)
    n = g.nodes[0]
    assert not decompose_node(g, n)
    assert [m.op for m in g.nodes] == ["softmax"]


def test_an_op_added_at_run_time_is_decomposed_by_the_compiler():
    """The slot is all a new composite needs: the back end splits it into primitives
    that fuse, and the compiled result equals the eager one."""
    import gcompile as torch
    from ir.registry import OpDef, register

    from gcompile._tensor import apply_op

    name = "test_decomp_clamp_sq"
    register(OpDef(name, "unary", lambda x: np.clip(x, -1, 1) ** 2,
                   expr="(min(max({0}, -1.0), 1.0) * min(max({0}, -1.0), 1.0))",
                   dtype_rule="same",
                   decomposition=lambda b, x: b.mul(b.clamp(x, min=-1.0, max=1.0),
                                                    b.clamp(x, min=-1.0, max=1.0))))
    try:
        f = torch.compile(lambda a: apply_op(name, (a,)) + 1)
        x = torch.randn(6)
        np.testing.assert_allclose(f(x).numpy(), np.clip(x.numpy(), -1, 1) ** 2 + 1,
                                   rtol=1e-6)
        ops = [n.op for n in f.entries[-1].executable.compiled.graph.nodes]
        assert name not in ops and "clamp" in ops
    finally:
        REGISTRY.pop(name, None)  # the coverage tests see only the built-in ops
