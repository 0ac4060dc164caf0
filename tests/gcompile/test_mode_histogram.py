"""torch.mode and torch.histogram against torch."""
import numpy as np
import pytest

import gcompile as gc

torch = pytest.importorskip("torch", reason="the reference is torch")

X = np.array([1.0, 2, 1, 4, 2.5, 7], np.float32)


@pytest.mark.parametrize("kw", [{"bins": 4}, {"bins": 3, "range": (0.0, 4.0)},
                                {"bins": 5, "density": True}, {"bins": "edges", "weight": True,
                                                               "density": True}])
def test_histogram_matches_torch(kw):
    outs = []
    for m in (torch, gc):
        k = dict(kw)
        if k["bins"] == "edges":
            k["bins"] = m.tensor([0.0, 2, 3, 8])
        if k.get("weight"):
            k["weight"] = m.tensor([1.0, 2, 3, 4, 5, 6])
        r = m.histogram(m.tensor(X), **k)
        outs.append((r.hist.numpy(), r.bin_edges.numpy()))
    for a, b in zip(*outs):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    assert gc.tensor(X).histogram(bins=4)._fields == ("hist", "bin_edges")


def test_histogram_of_a_constant_and_errors():
    r = gc.histogram(gc.tensor([3.0, 3, 3]), bins=2)
    np.testing.assert_allclose(r.bin_edges.numpy(), [2.5, 3.0, 3.5])
    np.testing.assert_allclose(r.hist.numpy(), [0.0, 3.0])
    with pytest.raises(RuntimeError, match="not implemented for"):
        gc.histogram(gc.tensor([1, 2]), bins=2)


@pytest.mark.parametrize("arr,kw", [([[1, 2, 2, 3], [4, 4, 1, 1]], {"dim": 1}),
                                    ([[1.0, 2, 2, 3], [4, 4, 1, 1]], {"dim": 0}),
                                    ([5, 1, 5, 1, 2], {}), ([[3, 3, 1]], {"keepdim": True}),
                                    ("random", {"dim": 1})])
def test_mode_matches_torch(arr, kw):
    if arr == "random":
        arr = np.random.default_rng(0).integers(0, 5, (6, 40))
    t, g = torch.mode(torch.tensor(arr), **kw), gc.mode(gc.tensor(arr), **kw)
    np.testing.assert_array_equal(g.values.numpy(), t.values.numpy())
    # torch names no particular occurrence of the mode; ours is the last: it holds the mode
    a = np.asarray(arr)
    d = kw.get("dim", -1)
    idx = g.indices.numpy() if kw.get("keepdim") else np.expand_dims(g.indices.numpy(), d)
    vals = g.values.numpy() if kw.get("keepdim") else np.expand_dims(g.values.numpy(), d)
    np.testing.assert_array_equal(np.take_along_axis(a, idx, d), vals)


def test_mode_compiles():
    x = gc.tensor(np.random.default_rng(1).integers(0, 4, (5, 30)))
    f = gc.compile(lambda x: gc.mode(x, 1).values)
    for _ in range(2):
        np.testing.assert_array_equal(f(x).numpy(), gc.mode(x, 1).values.numpy())
    assert f.entries and not f.graph_breaks
