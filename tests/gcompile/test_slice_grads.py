"""Gradients of basic slicing added into one engine-owned buffer (autograd.graph._slice_grad):
the same numbers as the getitem rule's zero-filled index_put and the engine's sums, and
no write into a gradient something else holds."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
from gcompile.autograd import graph as engine


def _x(shape, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return torch.tensor(a, requires_grad=True)


CASES = {
    "split": lambda x: sum((p * (i + 1.5)).sin().sum() for i, p in
                           enumerate(x.split(3, dim=-1))),
    "chunk_dim0": lambda x: sum((p ** 2).sum() * (i + 1) for i, p in
                                enumerate(x.chunk(2, dim=0))),
    "ints_and_none": lambda x: (x[1] * 2).sum() + (x[0, None, 1::2] ** 3).sum() + x[2, 3] * 4,
    "stepped": lambda x: (x[::2, 1::3] * torch.arange(2.0)).sum() + x[1::2].cos().sum(),
    "with_direct_use": lambda x: (x * x).sum() + x[:, 2:5].exp().sum(),
    "overlapping": lambda x: x[:, :4].sum() * 3 + (x[:, 2:] * x[:, 2:]).sum(),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_slice_gradients_equal_the_rules(name, monkeypatch):
    calls = []
    real = engine._slice_grad
    monkeypatch.setattr(engine, "_slice_grad",
                        lambda *a: (lambda r: calls.append(r) or r)(real(*a)))
    x = _x((4, 7))
    CASES[name](x).backward()
    got = x.grad.numpy().copy()
    assert any(calls)
    monkeypatch.setattr(engine, "_slice_grad", lambda *a: False)
    x.grad = None
    CASES[name](x).backward()
    np.testing.assert_array_equal(got, x.grad.numpy())


def test_a_gradient_held_elsewhere_is_not_written():
    """The pending gradient a slice's part is added to came from another path (an add
    hands one gradient to both its inputs): it is copied, never written in place."""
    x, x2 = _x((3, 6)), _x((3, 6), seed=1)
    c = torch.tensor(np.arange(18, dtype=np.float32).reshape(3, 6))
    z = x * 1.0
    first = (z[:, :2] * 5).sum()  # older: its slice's gradient arrives second
    u = z + x2
    u.retain_grad()  # u.grad: the gradient the add hands to z
    loss = first + (u * c).sum()
    loss.backward()
    np.testing.assert_array_equal(u.grad.numpy(), c.numpy())
    np.testing.assert_array_equal(x2.grad.numpy(), c.numpy())
    want = c.numpy().copy()
    want[:, :2] += 5
    np.testing.assert_array_equal(x.grad.numpy(), want)


def test_double_backward_through_slices():
    x = _x((2, 6))
    a, b = x.split(3, dim=1)
    (g,) = torch.autograd.grad((a * b).sum(), x, create_graph=True)
    (g * g).sum().backward()
    xn = x.detach().numpy()
    # g = [b, a]: d/dx sum(g^2) = 2 [a, b]
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.concatenate([xn[:, :3], xn[:, 3:]], 1),
                               rtol=1e-6)
