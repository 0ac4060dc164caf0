"""gcompile.func (torch.func): vmap, grad, vjp, jacrev/jacfwd, hessian, functional_call,
against torch.func."""
import numpy as np
import pytest

import gcompile as gc

torch = pytest.importorskip("torch", reason="the reference is torch.func")

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3))
W = RNG.standard_normal(3)


def _both(build, *arrays):
    """build(m) -> a callable over m's tensors; its results for torch and gcompile."""
    out = []
    for m in (torch, gc):
        r = build(m)(*[m.tensor(a) for a in arrays])
        leaves = r if isinstance(r, tuple) else (r,)
        out.append([t.detach().numpy() for t in leaves])
    return out


def _close(pair, tol=1e-12):
    for a, b in zip(*pair):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, atol=tol)


def test_grad_and_per_sample_grads():
    _close(_both(lambda m: m.func.grad(lambda x, w: (m.sin(x) * w).sum(), argnums=(0, 1)), X, W))
    _close(_both(lambda m: m.func.vmap(m.func.grad(lambda w, xi: (xi @ w) ** 2),
                                       in_dims=(None, 0)), W, X))
    g, aux = gc.func.grad(lambda x: ((x ** 2).sum(), x.mean()), has_aux=True)(gc.tensor(W))
    np.testing.assert_allclose(g.numpy(), 2 * W)
    assert aux.item() == pytest.approx(W.mean())
    assert not g.requires_grad
    with pytest.raises(RuntimeError, match="scalar Tensor"):
        gc.func.grad(lambda x: x * 2)(gc.tensor(W))


def test_jacobians_and_hessian():
    _close(_both(lambda m: m.func.jacrev(lambda x: m.sin(x) * x), W))
    _close(_both(lambda m: m.func.jacfwd(lambda a, b: a @ b, argnums=(0, 1)), X, W))
    _close(_both(lambda m: m.func.hessian(lambda x: (x ** 3).sum() + (x[0] * x[1])), W))


def test_vjp():
    for m in (torch, gc):
        out, fn = m.func.vjp(lambda x: x.exp() * 2, m.tensor(W))
        (g,) = fn(m.ones(3))
        np.testing.assert_allclose(g.detach().numpy(), 2 * np.exp(W))
        assert not out.requires_grad


def test_vmap_dims_and_structures():
    _close(_both(lambda m: m.func.vmap(lambda x: (x.sum(), x * 2), out_dims=(0, 1)), X))
    _close(_both(lambda m: m.vmap(lambda a, b: a * b, in_dims=(1, None)), X, X[:, 0].copy()))
    with pytest.raises(ValueError, match="same size"):
        gc.vmap(lambda a, b: a + b)(gc.tensor(X), gc.tensor(W))


def test_vmap_randomness():
    x = gc.tensor(X)
    with pytest.raises(RuntimeError, match="randomness"):
        gc.vmap(lambda r: r + gc.randn(3))(x)
    same = gc.vmap(lambda r: r * 0 + gc.randn(()), randomness="same")(x).numpy()
    diff = gc.vmap(lambda r: r * 0 + gc.randn(()), randomness="different")(x).numpy()
    assert np.unique(same.round(6)).size == 1 and np.unique(diff.round(6)).size > 1


def test_functional_call_swaps_and_restores():
    m = gc.nn.Linear(3, 2)
    before = m.weight.detach().numpy().copy()
    params = {k: v.detach() * 0 for k, v in m.named_parameters()}
    x = gc.tensor(X.astype(np.float32))
    assert gc.func.functional_call(m, params, (x,)).abs().sum().item() == 0
    np.testing.assert_array_equal(m.weight.detach().numpy(), before)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        gc.func.functional_call(m, {"nope": gc.zeros(1)}, (x,))
    # per-sample gradients of a module's parameters, the torch.func recipe
    tm = torch.nn.Linear(3, 2).double()
    gm = gc.nn.Linear(3, 2).double()
    gm.load_state_dict({k: gc.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    outs = []
    for lib, mod in ((torch, tm), (gc, gm)):
        ps = {k: v.detach() for k, v in mod.named_parameters()}

        def loss(p, xi, mod=mod, lib=lib):
            return (lib.func.functional_call(mod, p, (xi.unsqueeze(0),)) ** 2).sum()
        g = lib.func.vmap(lib.func.grad(loss), in_dims=(None, 0))(ps, lib.tensor(X))
        outs.append([g[k].detach().numpy() for k in sorted(g)])
    _close(outs)
