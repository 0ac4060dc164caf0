"""The autodiff pass against the eager tape: same rules, same numbers."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gcompile as torch
from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes.autodiff import joint_graph, partition
from ir.verify import verify


def _run_both(build_graph, build_eager, arrays, recompute=True):
    """Gradients of sum(outputs * cotangents) from the partitioned graphs and the tape."""
    g = build_graph()
    joint = joint_graph(g)
    verify(joint.graph)
    part = partition(joint, recompute=recompute)
    verify(part.forward)
    verify(part.backward)
    fo = interpret(part.forward, arrays)
    user = fo[:part.num_user_outputs]
    rng = np.random.default_rng(1)
    cots = [rng.standard_normal(np.shape(u)) for u in user]
    grads = interpret(part.backward, fo[part.num_user_outputs:] +
                      [cots[k] for k in joint.differentiable_outputs])
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    outs = build_eager(*ts)
    outs = outs if isinstance(outs, tuple) else (outs,)
    torch.autograd.backward(list(outs), [torch.tensor(c) for c in cots])
    for u, o in zip(user, outs):
        np.testing.assert_allclose(u, o.detach().numpy(), rtol=1e-12, atol=1e-12)
    wrt_grads = iter(grads)
    for t, gv in zip(ts, joint.grads):
        if gv is None:
            assert t.grad is None or np.all(t.grad.numpy() == 0)
            continue
        np.testing.assert_allclose(next(wrt_grads), t.grad.numpy(), rtol=1e-10, atol=1e-12)
    return part


def test_mlp_layer_matches_tape():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 8)), rng.standard_normal((8, 3)), rng.standard_normal(3)]

    def graph():
        g = Graph("mlp")
        x = g.add_input((4, 8), dt.float64, "x")
        w = g.add_input((8, 3), dt.float64, "w")
        b = g.add_input((3,), dt.float64, "b")
        h = g.add_node("relu", [g.add_node("add", [g.add_node("matmul", [x, w]), b])])
        g.set_outputs([g.add_node("mean", [g.add_node("mul", [h, h])],
                                  {"dims": (0, 1), "keepdim": False})])
        return g

    _run_both(graph, lambda x, w, b: (torch.relu(x @ w + b) ** 2).mean(), arrays)


def test_recompute_saves_fewer_bytes_on_elementwise_chain():
    """A long elementwise chain before a reduction: recomputing beats saving every link."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((16, 32))]

    def graph():
        g = Graph("chain")
        x = g.add_input((16, 32), dt.float64, "x")
        a = g.add_node("sin", [x])
        b = g.add_node("exp", [a])
        c = g.add_node("tanh", [b])
        d = g.add_node("mul", [c, a])
        g.set_outputs([g.add_node("sum", [d], {"dims": (0, 1), "keepdim": False})])
        return g

    def eager(x):
        a = torch.sin(x)
        return (torch.tanh(torch.exp(a)) * a).sum()

    part = _run_both(graph, eager, arrays)
    assert part.saved_bytes < part.saved_bytes_no_recompute
    assert part.recomputed, "some elementwise values should be recomputed"
    plain = _run_both(graph, eager, arrays, recompute=False)
    assert plain.saved_bytes == plain.saved_bytes_no_recompute


def test_output_gradients_only_for_active_outputs_and_shared_inputs():
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((3, 5)), rng.standard_normal((5,))]

    def graph():
        g = Graph("two")
        x = g.add_input((3, 5), dt.float64, "x")
        v = g.add_input((5,), dt.float64, "v")
        y = g.add_node("mul", [x, v])
        z = g.add_node("logsumexp", [y], {"dims": (1,), "keepdim": False})
        m = g.add_node("amax", [x], {"dims": (0,), "keepdim": True})
        g.set_outputs([z, g.add_node("sub", [x, m])])
        return g

    def eager(x, v):
        return torch.logsumexp(x * v, 1), x - torch.amax(x, 0, keepdim=True)

    _run_both(graph, eager, arrays)


# ---- random graphs (hypothesis) --------------------------------------------------
UNARY = ["neg", "exp", "tanh", "sigmoid", "sin", "abs", "relu"]
BINARY = ["add", "sub", "mul", "maximum"]


def _apply(name, args, g=None):
    """Build one op either in a graph (g given) or eagerly."""
    if g is not None:
        if name in ("sum_rows", "mean_cols"):
            dims = (1,) if name == "sum_rows" else (0,)
            op = "sum" if name == "sum_rows" else "mean"
            return g.add_node(op, args, {"dims": dims, "keepdim": True})
        if name == "transpose_back":
            return g.add_node("permute", [g.add_node("permute", args, {"dims": (1, 0)})],
                              {"dims": (1, 0)})
        return g.add_node(name, args)
    if name == "sum_rows":
        return args[0].sum(1, keepdim=True)
    if name == "mean_cols":
        return args[0].mean(0, keepdim=True)
    if name == "transpose_back":
        return args[0].t().t()
    return getattr(torch, name)(*args)


@st.composite
def programs(draw):
    n_ops = draw(st.integers(2, 10))
    prog = []
    n_vals = 2
    for _ in range(n_ops):
        kind = draw(st.sampled_from(["u", "b", "r", "t"]))
        if kind == "u":
            prog.append((draw(st.sampled_from(UNARY)), (draw(st.integers(0, n_vals - 1)),)))
        elif kind == "b":
            prog.append((draw(st.sampled_from(BINARY)),
                         (draw(st.integers(0, n_vals - 1)), draw(st.integers(0, n_vals - 1)))))
        elif kind == "r":
            prog.append((draw(st.sampled_from(["sum_rows", "mean_cols"])),
                         (draw(st.integers(0, n_vals - 1)),)))
        else:
            prog.append(("transpose_back", (draw(st.integers(0, n_vals - 1)),)))
        n_vals += 1
    return prog


@settings(max_examples=40, deadline=None)
@given(programs(), st.booleans())
def test_random_graphs_match_tape(prog, recompute):
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))]

    def graph():
        g = Graph("rand")
        vals = [g.add_input((3, 4), dt.float64, "a"), g.add_input((3, 4), dt.float64, "b")]
        for name, idx in prog:
            vals.append(_apply(name, [vals[i] for i in idx], g))
        g.set_outputs([vals[-1]])
        return g

    def eager(a, b):
        vals = [a, b]
        for name, idx in prog:
            vals.append(_apply(name, [vals[i] for i in idx]))
        return vals[-1]

    _run_both(graph, eager, arrays, recompute=recompute)


def test_integer_inputs_get_no_gradient():
    g = Graph("idx")
    x = g.add_input((4, 3), dt.float64, "x")
    i = g.add_input((4, 1), dt.int64, "i")
    g.set_outputs([g.add_node("gather", [x, i], {"dim": 1})])
    joint = joint_graph(g)
    assert [v.name for v in joint.wrt] == ["x"]
    part = partition(joint)
    xs = np.arange(12.0).reshape(4, 3)
    idx = np.array([[0], [2], [1], [0]])
    fo = interpret(part.forward, [xs, idx])
    (gx,) = interpret(part.backward, fo[1:] + [np.ones((4, 1))])
    expect = np.zeros((4, 3))
    expect[np.arange(4), idx[:, 0]] = 1
    np.testing.assert_array_equal(gx, expect)


@pytest.mark.parametrize("recompute", [True, False])
def test_partition_graphs_are_self_contained(recompute):
    g = Graph("ln")
    x = g.add_input((2, 6), dt.float64, "x")
    mu = g.add_node("mean", [x], {"dims": (1,), "keepdim": True})
    xc = g.add_node("sub", [x, mu])
    var = g.add_node("mean", [g.add_node("mul", [xc, xc])], {"dims": (1,), "keepdim": True})
    y = g.add_node("mul", [xc, g.add_node("rsqrt", [g.add_node("add", [var, 1e-5])])])
    g.set_outputs([y])

    def eager(x):
        xc = x - x.mean(1, keepdim=True)
        return xc * torch.rsqrt((xc * xc).mean(1, keepdim=True) + 1e-5)

    arrays = [np.random.default_rng(5).standard_normal((2, 6))]
    part = _run_both(lambda: g, eager, arrays, recompute=recompute)
    tangents = [v for v in part.backward.inputs if v.meta.get("tangent")]
    assert len(part.backward.inputs) == len(part.saved) + len(tangents) == len(part.saved) + 1


def test_permuted_attention_output_gradient_matches_tape():
    """sdpa with ``perm`` (its output written permuted): the gradient rule permutes the
    output gradient back before ``sdpa_backward``; the same as eager attention followed
    by the permute."""
    import gcompile.nn.functional as F
    rng = np.random.default_rng(3)
    shape = (2, 3, 5, 4)
    arrays = [rng.standard_normal(shape) for _ in range(3)]

    def graph():
        g = Graph("attn")
        q, k, v = (g.add_input(shape, dt.float64, n) for n in "qkv")
        g.set_outputs([g.add_node("sdpa", [q, k, v], {"scale": 0.5, "causal": True,
                                                       "perm": (0, 2, 1, 3)})])
        return g

    _run_both(graph, lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, is_causal=True, scale=0.5).permute(0, 2, 1, 3), arrays)
