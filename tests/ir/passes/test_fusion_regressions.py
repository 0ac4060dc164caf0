"""Fusion never closes a cycle between groups (issue 10, item 8).

A group runs as one step, so a path between steps that enters a group at one node
leaves it from any of its nodes: reachability must be checked between groups, not
between nodes. The reported failures ("fusion produced a cycle between groups") were
backward graphs where two elementwise groups each fed the other through a
permute/matmul/reshape chain that entered one group at a late node and left it from
an early one.
"""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gcompile as torch
import gcompile.nn.functional as F
from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes.fusion import fuse
from ir.verify import verify
from runtime import lower
from runtime.lower import compile_graph, set_kernel_factory
from runtime.plan import Executor
from runtime.reference import ReferenceKernel

F32 = dt.float32


@pytest.fixture
def reference_kernels():
    old = lower._KERNEL_FACTORY
    set_kernel_factory(ReferenceKernel)
    yield
    set_kernel_factory(old)


def assert_groups_acyclic(graph, fusion):
    """Independent of ``order_groups``: every node in exactly one group, and the
    step-level dependency graph has no cycle (Kahn's algorithm)."""
    gof = {}
    for i, g in enumerate(fusion.groups):
        for m in g.nodes:
            assert id(m) not in gof, f"%{m.out.name} in two groups"
            gof[id(m)] = i
    assert set(gof) == {id(n) for n in graph.nodes}
    deps = {i: set() for i in range(len(fusion.groups))}
    for i, g in enumerate(fusion.groups):
        for m in g.nodes:
            for a in m.value_inputs:
                j = gof.get(id(a.producer)) if a.producer is not None else None
                if j is not None and j != i:
                    deps[i].add(j)
    done: set = set()
    while len(done) < len(deps):
        ready = [i for i in deps if i not in done and deps[i] <= done]
        assert ready, "groups form a cycle: " + "; ".join(
            fusion.groups[i].describe() for i in deps if i not in done)
        done.update(ready)
    # and the fusion's group order (the order steps run in) is a topological one
    for i, ds in deps.items():
        assert all(j < i for j in ds), fusion.groups[i].describe()


def run_both(g, inputs, rtol=1e-5):
    want = interpret(g, inputs)
    comp = compile_graph(g.copy())
    verify(comp.graph)
    assert_groups_acyclic(comp.graph, comp.fusion)
    got = Executor(comp.plan)(inputs)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    return comp


def test_path_entering_a_group_late_and_leaving_early_is_a_cycle(reference_kernels):
    # groups as the fuser forms them: A = {%s, %t, amax %m, %d, relu}, B = {neg %n, %u}.
    # %w = %n - %m may join neither: B -> A through %u -> %d, and A -> %w through %m,
    # though no node path leads from %d to %m.
    g = Graph("late_entry")
    x = g.add_input((4, 3), F32, "x")
    y = g.add_input((3,), F32, "y")
    g.add_node("sub", [x, y])
    n = g.add_node("neg", [y])
    t = g.add_node("add", [x, x])
    m = g.add_node("amax", [t], {"dims": (0,), "keepdim": False})
    u = g.add_node("sub", [y, n])
    d = g.add_node("sub", [u, t])
    g.add_node("relu", [d])
    w = g.add_node("sub", [n, m])
    g.set_outputs([w, d, u])
    assert_groups_acyclic(g, fuse(g))
    rng = np.random.default_rng(0)
    run_both(g, [rng.standard_normal((4, 3)).astype(np.float32),
                 rng.standard_normal(3).astype(np.float32)])


def test_backward_of_two_clamped_matmul_operands(reference_kernels):
    # the backward graph of (x.reshape(4, 6).clamp(min=0) @ w.clamp(min=0)): each
    # operand's elementwise group feeds the other's through permute -> matmul -> reshape
    g = Graph("joint_bw")
    a0 = g.add_input((24,), F32, "a0")
    a1 = g.add_input((6, 3), F32, "a1")
    gr = g.add_input((4, 3), F32, "gr")
    r = g.add_node("reshape", [a0], {"shape": (4, 6)})
    c4 = g.add_node("clamp", [r], {"min": 0, "max": None})
    c5 = g.add_node("clamp", [a1], {"min": 0, "max": None})
    m7 = g.add_node("matmul", [gr, g.add_node("permute", [c5], {"dims": (1, 0)})])
    m9 = g.add_node("matmul", [g.add_node("permute", [c4], {"dims": (1, 0)}), gr])
    r10 = g.add_node("reshape", [m7], {"shape": (4, 6)})
    r11 = g.add_node("reshape", [m9], {"shape": (6, 3)})
    w13 = g.add_node("where", [g.add_node("ge", [a1, 0]), r11, 0.0])
    w15 = g.add_node("where", [g.add_node("ge", [r, 0]), r10, 0.0])
    g.set_outputs([g.add_node("reshape", [w15], {"shape": (24,)}), w13])
    assert_groups_acyclic(g, fuse(g))
    rng = np.random.default_rng(1)
    run_both(g, [rng.standard_normal(s).astype(np.float32) for s in ((24,), (6, 3), (4, 3))])


def _eager_and_compiled_grads(fn, make_inputs, calls=2):
    """(output, grads) of eager ``fn`` and of ``gcompile.compile(fn)`` (training: a
    forward and a backward graph), the compiled one on its ``calls``-th call."""
    def run(f):
        xs = make_inputs()
        out = f(*xs)
        (out * out).sum().backward()
        return out.detach().numpy().copy(), [x.grad.numpy().copy() for x in xs]
    want = run(fn)
    cf = torch.compile(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(calls):
            got = run(cf)
    assert cf.entries and type(cf.entries[0]).__name__ == "TrainingEntry"
    return want, got


def _assert_close(want, got):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_reshape_clamp_clamp_matmul_training():
    def f(x, w):
        return x.reshape(4, 6).clamp(-1, 1) @ w.clamp(-0.5, 0.5)

    def make():
        g = torch.Generator().manual_seed(0)
        return (torch.randn(24, generator=g, requires_grad=True),
                torch.randn(6, 3, generator=g, requires_grad=True))
    _assert_close(*_eager_and_compiled_grads(f, make))


@pytest.mark.parametrize("shape,groups", [((2, 4, 3), 2), ((3, 6, 2, 2), 3)])
def test_compiled_group_norm_backward(shape, groups):
    def f(x, w, b):
        return F.group_norm(x, groups, w, b)

    def make():
        g = torch.Generator().manual_seed(1)
        return (torch.randn(*shape, generator=g, requires_grad=True),
                torch.randn(shape[1], generator=g, requires_grad=True),
                torch.randn(shape[1], generator=g, requires_grad=True))
    _assert_close(*_eager_and_compiled_grads(f, make))


# ---- random small DAGs ------------------------------------------------------------------
N = 4  # values are mostly N x N, so most pairs combine and matmuls link any two values


@st.composite
def dags(draw, max_ops=64):
    """Random DAGs whose operands come from every earlier value, so elementwise groups
    (joined through producers and horizontally through shared inputs) get linked through
    non-fusible steps in both directions: matmuls (optionally of a permuted operand),
    reshape round trips, reductions broadcast back, a library op (cumsum), comparisons
    feeding where, and row vectors that broadcast."""
    g = Graph("dag")
    vals = [g.add_input((N, N), F32, f"x{i}") for i in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        vals.append(g.add_input((N,), F32, "row"))
    for _ in range(draw(st.integers(2, max_ops))):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "where", "matmul", "matmul",
                                     "reduce", "view", "library"]))
        a = draw(st.sampled_from(vals))
        if kind == "unary":
            v = g.add_node(draw(st.sampled_from(["exp", "neg", "tanh", "relu", "abs"])), [a])
        elif kind in ("binary", "where"):
            b = draw(st.sampled_from(vals))
            v = (g.add_node(draw(st.sampled_from(["add", "sub", "mul", "maximum"])), [a, b])
                 if kind == "binary" else
                 g.add_node("where", [g.add_node("ge", [a, 0.0]), b, 0.0]))
        elif kind == "matmul":
            if a.ndim != 2:
                continue
            b = draw(st.sampled_from([b for b in vals if b.ndim == 2]))
            if draw(st.booleans()):
                b = g.add_node("permute", [b], {"dims": (1, 0)})
            v = g.add_node("matmul", [a, b])
        elif kind == "reduce":
            r = g.add_node(draw(st.sampled_from(["sum", "amax", "mean"])), [a],
                           {"dims": (draw(st.integers(0, a.ndim - 1)),), "keepdim": True})
            v = g.add_node("sub", [a, r])
        elif kind == "view":
            flat = g.add_node("reshape", [a], {"shape": (a.numel,)})
            v = g.add_node("reshape", [g.add_node("neg", [flat])], {"shape": a.shape})
        else:
            v = g.add_node("cumsum", [a], {"dim": 0})
        vals.append(v)
    g.set_outputs([vals[-1]] + draw(st.lists(st.sampled_from(vals), max_size=3)))
    return g


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_fusion_never_cycles(g):
    # cheap (fusion only), so many and larger graphs: with the node-level check about
    # one graph in twelve here closed a cycle
    verify(g)
    assert_groups_acyclic(g, fuse(g))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(max_ops=24), st.integers(0, 2**16))
def test_fused_plan_matches_interpreter(g, seed):
    verify(g)
    old = lower._KERNEL_FACTORY
    set_kernel_factory(ReferenceKernel)
    try:
        rng = np.random.default_rng(seed)
        run_both(g, [rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs],
                 rtol=1e-4)
    finally:
        set_kernel_factory(old)
