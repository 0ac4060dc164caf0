"""Optimizers added for PyTorch's optimizer database (issue 23), against NumPy
transcriptions of their update rules."""
import math

import numpy as np
import pytest

import gcompile as torch
import gcompile.optim as optim

D = torch.float64
RNG = np.random.default_rng(0)
P0 = RNG.standard_normal((3, 4))
GRADS = [RNG.standard_normal((3, 4)) for _ in range(5)]


def run(cls, steps=5, grads=GRADS, **kw):
    p = torch.tensor(P0.copy(), dtype=D, requires_grad=True)
    opt = cls([p], **kw)
    for g in grads[:steps]:
        p.grad = torch.tensor(g, dtype=D)
        opt.step()
    return p.detach().numpy(), opt


def test_rprop():
    got, _ = run(optim.Rprop, lr=0.01)
    p, prev, size = P0.copy(), np.zeros_like(P0), np.full_like(P0, 0.01)
    for g in GRADS:
        s = np.sign(g * prev)
        size = np.clip(size * np.where(s > 0, 1.2, np.where(s < 0, 0.5, 1.0)), 1e-6, 50)
        g = np.where(s < 0, 0.0, g)
        p = p - np.sign(g) * size
        prev = g
    np.testing.assert_allclose(got, p, rtol=1e-12)


def test_asgd():
    got, opt = run(optim.ASGD, lr=0.05, lambd=0.1, t0=2)
    p, eta, mu, ax = P0.copy(), 0.05, 1.0, np.zeros_like(P0)
    for k, g in enumerate(GRADS, 1):
        p = p * (1 - 0.1 * eta) - eta * g
        ax = ax + (p - ax) * mu if mu != 1 else p.copy()
        eta = 0.05 / (1 + 0.1 * 0.05 * k) ** 0.75
        mu = 1 / max(1, k - 2)
    np.testing.assert_allclose(got, p, rtol=1e-6)
    np.testing.assert_allclose(opt.state[opt.param_groups[0]["params"][0]]["ax"].numpy(), ax,
                               rtol=1e-6)


def test_adafactor_matrix():
    got, _ = run(optim.Adafactor, lr=0.01)
    p, r, c = P0.copy(), np.zeros((3, 1)), np.zeros((1, 4))
    eps1, eps2 = np.finfo(np.float64).eps, 1e-3
    for k, g in enumerate(GRADS, 1):
        beta = k ** -0.8
        rho = min(0.01, 1 / math.sqrt(k))
        alpha = max(eps2, np.linalg.norm(p) / math.sqrt(p.size)) * rho
        r = r + beta * ((g * g).mean(1, keepdims=True) - r)
        c = c + beta * ((g * g).mean(0, keepdims=True) - c)
        v = (r @ c) / max(r.mean(), eps1)
        u = g / np.sqrt(np.maximum(v, eps1 * eps1))
        p = p - alpha / max(1.0, np.linalg.norm(u) / math.sqrt(u.size)) * u
    np.testing.assert_allclose(got, p, rtol=1e-10)


def test_muon_orthogonalises():
    got, _ = run(optim.Muon, steps=1, lr=0.1, weight_decay=0.0, nesterov=False,
                 ns_steps=30, ns_coefficients=(1.5, -0.5, 0.0))
    # the classic cubic iteration converges to U V^T of the SVD (in bfloat16, as torch)
    u, _, vt = np.linalg.svd(0.05 * GRADS[0], full_matrices=False)
    ref = P0 - 0.1 * math.sqrt(max(1, 3 / 4)) * (u @ vt)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    with pytest.raises(ValueError, match="2D"):
        optim.Muon([torch.zeros(3, requires_grad=True)])


def test_sparse_adam_moves_only_touched_rows():
    g = [np.where(np.arange(3)[:, None] == 1, 0.0, x) for x in GRADS[:3]]
    got, _ = run(optim.SparseAdam, steps=3, grads=g, lr=0.1)
    np.testing.assert_array_equal(got[1], P0[1])
    p, m, v = P0.copy(), np.zeros_like(P0), np.zeros_like(P0)
    for k, x in enumerate(g, 1):  # torch's sparse_adam on the touched entries
        m = m + (x - m) * 0.1
        v = v + (x * x - v) * 0.001
        size = 0.1 * math.sqrt(1 - 0.999 ** k) / (1 - 0.9 ** k)
        p = p - size * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(got[[0, 2]], p[[0, 2]], rtol=1e-12)


def test_adam_decoupled_weight_decay_is_adamw():
    a, opt = run(optim.Adam, lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)
    w, _ = run(optim.AdamW, lr=0.1, weight_decay=0.1)
    np.testing.assert_array_equal(a, w)
    assert opt.state_dict()["param_groups"][0]["decoupled_weight_decay"] is True
    b, _ = run(optim.Adam, lr=0.1, weight_decay=0.1)
    assert not np.allclose(a, b)
