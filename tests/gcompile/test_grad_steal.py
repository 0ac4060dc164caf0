"""A leaf's first gradient is the backward's own array when nothing else holds it (as
torch's AccumulateGrad steals it: no copy per parameter per step), and a copy whenever
anything else could see it: a tensor or hook that kept it, a retained ``.grad``, the
same gradient reaching two leaves, a view, a user's ``gradient=`` or a custom
Function returning a tensor it keeps. Each case checks that no two of the results share
memory and that an in-place write to ``.grad`` reaches nothing else."""
import tracemalloc

import numpy as np

import gcompile as torch
from gcompile.autograd import Function


class _Kept(Function):
    """Backward returns a tensor it also keeps."""
    kept: list = []

    @staticmethod
    def forward(ctx, x):
        return x * 1.0

    @staticmethod
    def backward(ctx, g):
        out = g * 3.0
        _Kept.kept.append(out)
        return out


def test_unshared_gradient_becomes_grad_without_a_copy():
    m = torch.nn.Linear(512, 512)
    x = torch.randn(64, 512)
    m(x).sum().backward()  # a first backward: one-time set-up
    m.zero_grad()
    loss = m(x).sum()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    nbytes = m.weight._data.nbytes
    assert peak < 1.5 * nbytes, (peak, nbytes)  # the GEMM's result, not it and a copy
    want = np.broadcast_to(x.numpy().sum(0), (512, 512))
    np.testing.assert_allclose(m.weight.grad.numpy(), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m.bias.grad.numpy(), np.full(512, 64.0), rtol=1e-6)


def test_kept_gradient_is_copied():
    _Kept.kept.clear()
    w = torch.randn(5, 4, requires_grad=True)
    _Kept.apply(w).sum().backward()
    assert not np.shares_memory(w.grad._data, _Kept.kept[0]._data)
    w.grad.zero_()
    np.testing.assert_array_equal(_Kept.kept[0].numpy(), 3.0)


def _no_sharing(*arrays):
    for i, a in enumerate(arrays):
        for b in arrays[i + 1:]:
            assert not np.shares_memory(a, b)


def test_shared_gradients_are_copied():
    a = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(3, 2, requires_grad=True)
    r = torch.randn(3, 2)
    ((a * 1.0 + b) * r).sum().backward()          # one gradient, two leaves
    _no_sharing(a.grad._data, b.grad._data, r._data)
    a.grad = b.grad = None
    h = a * 1.0 + 0.0
    h.retain_grad()
    (h * r).sum().backward()                     # retained by a non-leaf too
    _no_sharing(a.grad._data, h.grad._data)
    a.grad = None
    store = []
    hook = a.register_hook(lambda g: store.append(g))
    (a * r).sum().backward()                     # kept by a hook
    hook.remove()
    _no_sharing(a.grad._data, store[0]._data)
    a.grad = None
    user = torch.ones(3, 2)
    a.backward(user)                             # the caller's gradient
    _no_sharing(a.grad._data, user._data)
    a.grad.add_(1.0)
    np.testing.assert_array_equal(user.numpy(), 1.0)


def test_linear_layer_gradients_are_its_own_and_correct():
    torch.manual_seed(0)
    m = torch.nn.Linear(6, 4)
    x = torch.randn(8, 6)
    m(x).pow(2).sum().backward()
    out = m(x).detach().numpy()
    gy = 2 * out
    np.testing.assert_allclose(m.weight.grad.numpy(), gy.T @ x.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.bias.grad.numpy(), gy.sum(0), rtol=1e-5, atol=1e-5)
    _no_sharing(m.weight.grad._data, m.bias.grad._data, m.weight._data, x._data)
    assert m.weight.grad.is_contiguous()
