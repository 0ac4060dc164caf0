"""Independent matmul steps run side by side (runtime.matmul_pairs): which steps pair,
the steps a pair needs move up with it, and a paired plan computes NumPy's products bit
for bit, bound on two threads or one after the other on one."""
import numpy as np
import pytest

import gcompile
from ir import dtypes as dt
from ir.graph import Graph
from kernels.cpu import blas_calls, native_pool
from runtime.lower import compile_graph
from runtime.matmul_pairs import PAIR_OUT_MAX
from runtime.plan import Executor

rng = np.random.default_rng(3)


def _linear_backward(n: int = 96, i: int = 72, o: int = 40, dependent: bool = False,
                     half: bool = False):
    """A Linear layer's backward as a graph: dX = g @ W, relu(dX) (a kernel reading the
    first product), then dW = g^T @ x (its g^T a view step after the kernel). With
    ``dependent`` the second product reads relu(dX) instead of g (needs o == i); with
    ``half`` it reads only half of the rows (half the FLOPs)."""
    g = Graph()
    gr = g.add_input((n, o), dt.float32, "g")
    x = g.add_input((n // 2 if half else n, i), dt.float32, "x")
    w = g.add_input((o, i), dt.float32, "w")
    dx = g.add_node("matmul", [gr, w])
    r = g.add_node("relu", [dx])
    src = r if dependent else gr
    if half:
        src = g.add_input((n // 2, o), dt.float32, "g2")
    gt = g.add_node("permute", [src], {"dims": (1, 0)})
    dw = g.add_node("matmul", [gt, x])
    g.set_outputs([r, dw])
    return g


def _inputs(graph: Graph) -> list[np.ndarray]:
    return [rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs]


def _pairs(plan) -> list:
    return [st for st in plan.steps if st.kind == "matmul" and len(st.nodes) == 2]


def test_a_linear_layers_gradient_products_pair_and_equal_numpy(threads):
    plan = compile_graph(_linear_backward()).plan
    (pair,) = _pairs(plan)
    order = [st.kind for st in plan.steps]
    at = plan.steps.index(pair)
    # g^T (a view the second product needs) moved up before the pair; relu (which reads
    # the first product) stays after it
    assert order[at - 1] == "view" and order[at + 1] == "kernel", order
    ex = Executor(plan)
    arrays = [np.empty(s, np.float32) for s in ((96, 40), (96, 72), (40, 72))]
    for _ in range(5):   # new values in the same arrays, as a training step's weights
        for a in arrays:
            a[...] = rng.standard_normal(a.shape)
        G, X, W = arrays
        r, dw = ex(arrays)
        np.testing.assert_array_equal(r, np.maximum(G @ W, 0))
        np.testing.assert_array_equal(dw, G.T @ X)
        del r, dw   # the next call's fresh outputs take the same memory
    can_bind = blas_calls.provide() and native_pool.available()
    assert (pair.run.bound is not None) == (threads == 2 and can_bind)


@pytest.mark.parametrize("case", ["dependent", "unbalanced", "large outputs"])
def test_products_that_must_not_pair(case):
    g = {"dependent": lambda: _linear_backward(96, 64, 64, dependent=True),
         "unbalanced": lambda: _linear_backward(half=True),
         "large outputs": lambda: _linear_backward(1024, 768, 16)}[case]()
    if case == "large outputs":
        assert 1024 * 768 * 4 > PAIR_OUT_MAX
    plan = compile_graph(g).plan
    assert not _pairs(plan)
    outs = Executor(plan)(arrays := _inputs(g))
    G, X, W = arrays[:3]
    want = G @ W
    # (the large products run as tiles where OpenBLAS has small kernels: kernels.cpu.
    # tiled_gemm, which sums in another order than NumPy's packed GEMM)
    close = dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outs[0], np.maximum(want, 0), **close)
    left = np.maximum(want, 0) if case == "dependent" else (arrays[3] if case == "unbalanced"
                                                           else G)
    np.testing.assert_allclose(outs[1], left.T @ X, **close)


def test_a_training_step_with_pairs_trains_bit_for_bit_as_without(monkeypatch):
    """The benchmark LSTM (small): its decoder's two gradient products and its embedding
    fold's two run as pairs, and its losses and weights are those of the same step
    compiled without pairing, bit for bit."""
    import runtime.lower as lower
    from gcompile.bench_models import build, train_step

    def compiled(pairing: bool):
        model, opt, (x, y), loss_fn = build(gcompile, "lstm_lm_train", small=True)
        if not pairing:
            monkeypatch.setattr(lower, "pair_matmuls", lambda steps: steps)
        step = gcompile.compile(train_step(model, opt, loss_fn))
        losses = [step(x, y).item() for _ in range(5)]
        monkeypatch.undo()
        return model, losses, _pairs(step.entries[-1].executable.plan)

    # a cold kernel cache: a plan's first calls run library ops on their NumPy paths
    # while its kernels compile (kernels.cpu.defer_native), which sum in another order;
    # a first compile fills the cache, so both plans compared run their kernels alone
    compiled(True)
    (m1, l1, p1), (m2, l2, p2) = compiled(True), compiled(False)
    assert len(p1) == 2 and not p2, [st.name for st in p1]
    assert l1 == l2
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
