"""Fusion groups and kernel counts (the plan's structure, independent of codegen)."""
import numpy as np
import pytest

from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes.fusion import decompose, fuse
from ir.verify import verify
from runtime.lower import compile_graph, set_kernel_factory
from runtime.plan import Executor
from runtime.reference import ReferenceKernel

F32 = dt.float32


@pytest.fixture(autouse=True)
def _reference():
    from runtime import lower
    old = lower._KERNEL_FACTORY
    set_kernel_factory(ReferenceKernel)
    yield
    set_kernel_factory(old)


def run_both(g, inputs):
    want = interpret(g, inputs)
    comp = compile_graph(g.copy())
    verify(comp.graph)
    got = Executor(comp.plan)(inputs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    return comp


def rand(*shape):
    return np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)


def test_ten_op_elementwise_chain_is_one_kernel():
    g = Graph()
    x = g.add_input((64, 32), F32, "x")
    b = g.add_input((32,), F32, "b")
    v = x
    for op, arg in [("mul", 2.0), ("add", b), ("tanh", None), ("sub", 0.5), ("exp", None),
                    ("mul", x), ("relu", None), ("add", 1.0), ("sqrt", None), ("neg", None)]:
        v = g.add_node(op, [v] if arg is None else [v, arg])
    g.set_outputs([v])
    comp = run_both(g, [rand(64, 32), rand(32)])
    assert comp.plan.num_kernels == 1 and len(comp.plan.steps) == 1


def test_multi_output_group():
    g = Graph()
    x = g.add_input((8, 8), F32, "x")
    a = g.add_node("exp", [x])
    b = g.add_node("mul", [a, 2.0])
    c = g.add_node("sum", [a], {"dims": (0,), "keepdim": False})
    g.set_outputs([b, c])
    comp = run_both(g, [rand(8, 8)])
    assert comp.plan.num_kernels == 1


def _softmax_graph(rows, cols):
    g = Graph()
    x = g.add_input((rows, cols), F32, "x")
    s = g.add_node("softmax", [x], {"dim": 1})
    g.set_outputs([s])
    return g


def test_softmax_is_one_rows_kernel():
    g = _softmax_graph(16, 33)
    comp = run_both(g, [rand(16, 33)])
    assert comp.plan.num_kernels == 1
    assert comp.fusion.groups[0].kind == "rows"
    g2 = _softmax_graph(16, 33)
    assert decompose(g2) == 1


def test_layernorm_is_one_rows_kernel():
    g = Graph()
    x = g.add_input((8, 20), F32, "x")
    w = g.add_input((20,), F32, "w")
    b = g.add_input((20,), F32, "b")
    mu = g.add_node("mean", [x], {"dims": (1,), "keepdim": True})
    xc = g.add_node("sub", [x, mu])
    var = g.add_node("mean", [g.add_node("mul", [xc, xc])], {"dims": (1,), "keepdim": True})
    rstd = g.add_node("rsqrt", [g.add_node("add", [var, 1e-5])])
    y = g.add_node("add", [g.add_node("mul", [g.add_node("mul", [xc, rstd]), w]), b])
    g.set_outputs([y])
    comp = run_both(g, [rand(8, 20), rand(20), rand(20)])
    assert comp.plan.num_kernels == 1


def test_matmul_epilogue_runs_in_place():
    g = Graph()
    x = g.add_input((32, 16), F32, "x")
    w = g.add_input((16, 24), F32, "w")
    b = g.add_input((24,), F32, "b")
    y = g.add_node("relu", [g.add_node("add", [g.add_node("matmul", [x, w]), b])])
    z = g.add_node("sum", [y], {"dims": (1,), "keepdim": False})
    g.set_outputs([z])
    comp = run_both(g, [rand(32, 16), rand(16, 24), rand(24)])
    kinds = [s.kind for s in comp.plan.steps]
    assert kinds == ["matmul", "kernel"]
    # relu(x @ w + b) alone: one matmul + one epilogue pass writing over the BLAS output
    g2 = Graph()
    x = g2.add_input((32, 16), F32, "x")
    w = g2.add_input((16, 24), F32, "w")
    b = g2.add_input((24,), F32, "b")
    mm = g2.add_node("matmul", [x, w])
    y = g2.add_node("relu", [g2.add_node("add", [mm, b])])
    t = g2.add_node("mul", [y, 2.0])
    u = g2.add_node("matmul", [t, g2.add_input((24, 4), F32, "w2")])
    g2.set_outputs([u])
    comp = run_both(g2, [rand(32, 16), rand(16, 24), rand(24), rand(24, 4)])
    steps = comp.plan.steps
    assert [s.kind for s in steps] == ["matmul", "kernel", "matmul"]
    assert steps[1].inplace  # the epilogue overwrites the matmul output
    assert comp.plan.arena_bytes < comp.plan.unplanned_bytes


def test_no_cycle_between_groups():
    # a -> matmul -> c and a -> c: c must not join a's group (a cycle through the matmul)
    g = Graph()
    x = g.add_input((8, 8), F32, "x")
    a = g.add_node("exp", [x])
    m = g.add_node("matmul", [a, a])
    c = g.add_node("add", [a, m])
    g.set_outputs([c])
    comp = run_both(g, [rand(8, 8)])
    fus = fuse(comp.graph)
    ga = fus.group_of(comp.graph.nodes[0])
    gc = fus.group_of(comp.graph.nodes[-1])
    assert ga is not gc
    assert "cycle" in fus.reasons.get(comp.graph.nodes[-1].out.name, "")


def test_views_are_absorbed_not_copied():
    g = Graph()
    x = g.add_input((8, 6), F32, "x")
    t = g.add_node("permute", [x], {"dims": (1, 0)})
    e = g.add_node("expand", [g.add_node("reshape", [t], {"shape": (1, 6, 8)})],
                   {"shape": (3, 6, 8)})
    y = g.add_node("mul", [e, 2.0])
    g.set_outputs([y])
    comp = run_both(g, [rand(8, 6)])
    assert [s.kind for s in comp.plan.steps] == ["view", "view", "view", "kernel"]
    assert comp.plan.arena_bytes == 0


def test_sibling_reductions_and_standardize_share_one_kernel():
    g = Graph()
    x = g.add_input((8, 20), F32, "x")
    mu = g.add_node("mean", [x], {"dims": (1,), "keepdim": True})
    sd = g.add_node("std", [x], {"dims": (1,), "keepdim": True})
    y = g.add_node("div", [g.add_node("sub", [x, mu]), g.add_node("add", [sd, 1e-3])])
    lse = g.add_node("logsumexp", [x], {"dims": (1,), "keepdim": False})
    g.set_outputs([y, lse])
    comp = run_both(g, [rand(8, 20)])
    assert comp.plan.num_kernels <= 2


def _per_parameter_scalars(n_params: int) -> Graph:
    """An optimizer's per-parameter step math: one copy of a recipe per parameter
    (``step + 1``, ``1 - beta ** step``), plus two tiny groups of their own structure."""
    g = Graph()
    beta = g.add_input((), F32, "beta")
    outs = []
    for i in range(n_params):
        s = g.add_input((), F32, f"step{i}")
        t = g.add_node("add", [s, 1.0])
        outs += [t, g.add_node("rsub", [g.add_node("pow", [beta, t]), 1.0])]
    a = g.add_input((), F32, "a")
    c = g.add_input((), F32, "c")
    outs += [g.add_node("exp", [a]), g.add_node("neg", [g.add_node("sqrt", [c])])]
    g.set_outputs(outs)
    return g


def test_tiny_groups_of_one_structure_stay_apart_and_share_a_source():
    """Copies of one recipe are not merged into one kernel (its body, and compile
    time, would grow with the copies): each is its own kernel of one source, compiled
    once; tiny groups of their own structure still merge."""
    from kernels.spec import canonical
    from runtime.specs import lower_elementwise
    g = _per_parameter_scalars(5)
    steps = [np.float32(0.9)] + [np.float32(i) for i in range(5)] + [np.float32(0.3)] * 2
    comp = run_both(g, [np.asarray(v) for v in steps])
    groups = [gr for gr in comp.fusion.groups if gr.kind == "elementwise"]
    copies = [gr for gr in groups if any(m.op == "pow" for m in gr.nodes)]
    assert [len(gr.nodes) for gr in copies] == [3] * 5
    assert len(groups) == len(copies) + 1  # exp(a) and -sqrt(c): one kernel
    assert len({canonical(lower_elementwise(gr).spec) for gr in copies}) == 1
