"""Eager matmul/linear without extra work: an N-D @ 2-D product is one GEMM, the weight
gradient of a Linear on N-D input one GEMM of the stacked rows, no GEMM for an input
that needs no gradient, and leaf gradients land C-contiguous. Values against torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch as real_torch

import gcompile as torch
from ir.ops import linalg
from ir.registry import REGISTRY

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("ashape,bshape", [((3, 5, 4), (4, 6)), ((2, 3, 5, 4), (4, 6)),
                                           ((0, 5, 4), (4, 6)), ((3, 5, 0), (0, 6)),
                                           ((5, 4), (4, 6)), ((4,), (4, 6)), ((3, 5, 4), (4,)),
                                           ((2, 5, 4), (2, 4, 6)), ((2, 5, 4), (1, 4, 6))])
def test_impl_matches_numpy(ashape, bshape):
    a = RNG.standard_normal(ashape).astype(np.float32)
    b = RNG.standard_normal(bshape).astype(np.float32)
    got = linalg._matmul_impl(a, b)
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-6, atol=1e-6)
    assert got.shape == np.matmul(a, b).shape
    # a transposed 2-D operand and a non-collapsible N-D one
    bt = np.ascontiguousarray(b.T).T if b.ndim == 2 else b
    np.testing.assert_allclose(linalg._matmul_impl(a, bt), np.matmul(a, b), rtol=1e-6,
                               atol=1e-6)
    if a.ndim == 3 and a.size:
        at = np.ascontiguousarray(a.transpose(1, 0, 2)).transpose(1, 0, 2)
        np.testing.assert_allclose(linalg._matmul_impl(at, b), np.matmul(a, b), rtol=1e-6,
                                   atol=1e-6)


@pytest.mark.parametrize("ashape,bshape", [((3, 5, 4), (4, 6)), ((2, 3, 5, 4), (4, 6)),
                                           ((5, 4), (4, 6)), ((4,), (4, 6)), ((5, 4), (4,)),
                                           ((3, 5, 4), (4,)), ((2, 5, 4), (2, 4, 6)),
                                           ((2, 5, 4), (1, 4, 6)), ((5, 4), (2, 4, 6))])
@pytest.mark.parametrize("need", ["both", "a", "b"])
def test_gradients_match_torch(ashape, bshape, need):
    a0 = RNG.standard_normal(ashape)
    b0 = RNG.standard_normal(bshape)
    res = []
    for lib in (torch, real_torch):
        a = lib.tensor(a0, requires_grad=need in ("both", "a"))
        b = lib.tensor(b0, requires_grad=need in ("both", "b"))
        out = lib.matmul(a, b)
        (out * lib.tensor(np.cos(np.arange(out.numel())).reshape(tuple(out.shape)))).sum() \
            .backward()
        res.append([None if t.grad is None else t.grad.numpy() for t in (a, b)])
    for x, y in zip(*res):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)


def _count_matmuls(monkeypatch):
    op = REGISTRY["matmul"]
    n = {"k": 0}
    real = op.impl

    def counted(*a, **k):
        n["k"] += 1
        return real(*a, **k)
    monkeypatch.setattr(op, "impl", counted)
    return n


def test_no_gemm_for_an_input_without_grad_and_dense_weight_grads(monkeypatch):
    lin = torch.nn.Linear(6, 4)
    x = torch.randn(3, 7, 6)
    n = _count_matmuls(monkeypatch)
    lin(x).sum().backward()
    assert n["k"] == 2  # forward, weight gradient (none for x)
    g = lin.weight.grad
    assert g.is_contiguous() and lin.bias.grad.is_contiguous()
    ref = np.einsum("btn,btk->nk", np.ones((3, 7, 4)), x.numpy())
    np.testing.assert_allclose(g.numpy(), ref, rtol=1e-5)
    # the gradient is a copy: a second backward accumulates without touching the first
    before = g.numpy().copy()
    lin(x).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), 2 * before, rtol=1e-5)


def test_double_backward_through_matmul_still_works():
    a = torch.tensor(RNG.standard_normal((3, 5, 4)), requires_grad=True)
    b = torch.tensor(RNG.standard_normal((4, 6)), requires_grad=True)
    (ga, gb) = torch.autograd.grad((a @ b).pow(2).sum(), (a, b), create_graph=True)
    (ga.sum() + gb.sum()).backward()
    ra = real_torch.tensor(a.detach().numpy(), requires_grad=True)
    rb = real_torch.tensor(b.detach().numpy(), requires_grad=True)
    (rga, rgb) = real_torch.autograd.grad((ra @ rb).pow(2).sum(), (ra, rb), create_graph=True)
    (rga.sum() + rgb.sum()).backward()
    np.testing.assert_allclose(a.grad.numpy(), ra.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(b.grad.numpy(), rb.grad.numpy(), rtol=1e-10)
