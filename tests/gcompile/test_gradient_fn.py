"""torch.gradient: central differences with one-sided ends, uniform and coordinate spacing."""
import numpy as np
import pytest

import gcompile as gc

torch = pytest.importorskip("torch", reason="the reference is torch.gradient")

X = np.array([[1.0, 2, 4, 8, 3], [10, 20, 40, 80, 5], [3, 1, 4, 1, 5]], np.float32)
COORDS = np.array([0.0, 1, 3, 4, 7], np.float32)


@pytest.mark.parametrize("kw", [{}, {"spacing": 2.0, "dim": 1, "edge_order": 2},
                                {"spacing": [2.0, 0.5]}, {"dim": 0, "edge_order": 2},
                                {"spacing": "coords", "dim": 1},
                                {"spacing": "coords", "dim": 1, "edge_order": 2}])
def test_gradient_matches_torch(kw):
    outs = []
    for m in (torch, gc):
        k = dict(kw)
        if k.get("spacing") == "coords":
            k["spacing"] = (m.tensor(COORDS),)
        outs.append(m.gradient(m.tensor(X), **k))
    assert len(outs[0]) == len(outs[1])
    for a, b in zip(*outs):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-5)


def test_gradient_of_ints_errors_and_compiled():
    np.testing.assert_allclose(gc.gradient(gc.tensor([1, 4, 9, 16]))[0].numpy(), [3, 4, 6, 7])
    with pytest.raises(RuntimeError, match="at least edge_order\\+1"):
        gc.gradient(gc.tensor([1.0, 2.0]), edge_order=2)
    with pytest.raises(RuntimeError, match="only supports edge_order=1 and edge_order=2"):
        gc.gradient(gc.tensor(X), edge_order=3)
    x = gc.tensor(X, requires_grad=True)
    f = gc.compile(lambda x: gc.gradient(x, dim=1, edge_order=2)[0].sum())
    for _ in range(2):
        np.testing.assert_allclose(f(x).item(),
                                   gc.gradient(x, dim=1, edge_order=2)[0].sum().item(), rtol=1e-6)
    f(x).backward()
    assert x.grad is not None and f.entries and not f.graph_breaks
