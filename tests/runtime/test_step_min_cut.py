"""A whole compiled training step keeps only its min-cut for the backward
(ir.passes.partition): same numbers as without it, and as eager."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
import ir.passes.fusion as fusion
from gcompile import nn
from gcompile.bench_models import build, train_step


def _gpt(compiled: bool, dropout: float = 0.0, steps: int = 3):
    model, opt, (x, y), loss_fn = build(torch, "gpt_train", dropout=dropout, small=True)
    model.train()
    torch.manual_seed(123)  # dropout draws from the global generator, in program order

    step = train_step(model, opt, loss_fn)
    fn = torch.compile(step) if compiled else step
    losses = [float(fn(x, y)) for _ in range(steps)]
    params = [p.detach().numpy().copy() for p in model.parameters()]
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    return fn, losses, params, grads


def _assert_trains_like(params, want, names, lr=1e-3, steps=3):
    """Parameters after the same steps agree, except attention's key bias: its gradient
    is zero in exact arithmetic (softmax ignores a shift shared by all keys), so it is
    rounding noise whose sign any change of summation order flips, and Adam turns noise
    into steps of about ``lr``: there, only Adam's bound holds."""
    d = 128
    for name, a, b in zip(names, params, want):
        if name.endswith("attn.qkv.bias"):
            np.testing.assert_allclose(a[d:2 * d], b[d:2 * d], atol=2 * lr * steps)
            a, b = np.delete(a, np.s_[d:2 * d]), np.delete(b, np.s_[d:2 * d])
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=name)


def _no_cut(monkeypatch):
    monkeypatch.setattr(fusion, "recompute_for_backward", lambda g: None)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gpt_step_with_min_cut_equals_without_and_eager(monkeypatch, dropout):
    fn, losses, params, grads = _gpt(True, dropout)
    entry = fn.entries[-1]
    cut = entry.executable.compiled.graph.meta["step_cut"]
    assert cut.recomputed and cut.saved_bytes < cut.saved_bytes_no_recompute
    # a dropout mask is drawn once, in the forward: random draws are never recomputed
    g = entry.executable.compiled.graph
    assert not any(n.meta.get("recomputed") and n.op.startswith("rand") for n in g.nodes)
    _, e_losses, e_params, e_grads = _gpt(False, dropout)
    np.testing.assert_allclose(losses, e_losses, rtol=2e-5)
    names = [n for n, _ in build(torch, "gpt_train", 0.0, small=True)[0].named_parameters()]
    _assert_trains_like(params, e_params, names)
    for a, b in zip(grads, e_grads):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    # the recomputed ops are the same ops on the same operands: the plan without the
    # min-cut gives the same numbers, up to rounding (a recomputed chain may land in
    # another kernel, where a multiply and an add contract into one FMA differently)
    _no_cut(monkeypatch)
    fn2, losses2, params2, grads2 = _gpt(True, dropout)
    assert "step_cut" not in fn2.entries[-1].executable.compiled.graph.meta
    assert fn2.entries[-1].saved_bytes > entry.saved_bytes
    np.testing.assert_allclose(losses, losses2, rtol=1e-6)
    _assert_trains_like(params, params2, names)
    for a, b in zip(grads, grads2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _mlp(compiled: bool, steps: int = 4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                          nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 20), torch.randint(0, 10, (32,))

    step = train_step(model, opt, F.cross_entropy)
    fn = torch.compile(step) if compiled else step
    per_step = []
    for _ in range(steps):
        loss = float(fn(x, y))
        per_step.append((loss, [p.grad.numpy().copy() for p in model.parameters()],
                         [p.detach().numpy().copy() for p in model.parameters()]))
    return fn, per_step


def test_mlp_step_by_step_equals_eager_and_saves_less(monkeypatch):
    fn, got = _mlp(True)
    _, want = _mlp(False)
    for (lc, gc, pc), (le, ge, pe) in zip(got, want):
        np.testing.assert_allclose(lc, le, rtol=1e-5)
        for a, b in zip(gc + pc, ge + pe):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    saved = fn.entries[-1].saved_bytes
    _no_cut(monkeypatch)
    fn2, got2 = _mlp(True)
    assert saved < fn2.entries[-1].saved_bytes
    for (lc, gc, pc), (l2, g2, p2) in zip(got, got2):
        assert lc == l2
        for a, b in zip(gc + pc, g2 + p2):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_step_gradients_match_finite_differences():
    # float64: LayerNorm, GELU and tanh chains the min-cut recomputes in the backward
    torch.manual_seed(1)
    ln = nn.LayerNorm(8).double()
    lin = nn.Linear(8, 8).double()
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)

    def loss_of(x):
        h = F.gelu(lin(ln(x)))
        return (torch.tanh(h) * h).sum()

    def step(x):
        loss = loss_of(x)
        loss.backward()
        return loss
    f = torch.compile(step)
    for _ in range(3):
        x.grad = None
        ln.zero_grad()
        lin.zero_grad()
        f(x)
    assert f.entries[-1].executable.compiled.graph.meta["step_cut"].recomputed
    gx, gw = x.grad.numpy().copy(), lin.weight.grad.numpy().copy()
    eps = 1e-6
    with torch.no_grad():
        xa = x.detach().numpy()
        for idx in [(0, 0), (2, 5), (4, 7)]:
            up, dn = xa.copy(), xa.copy()
            up[idx] += eps
            dn[idx] -= eps
            num = (float(loss_of(torch.tensor(up))) - float(loss_of(torch.tensor(dn)))) / (2 * eps)
            assert abs(num - gx[idx]) < 1e-6 * max(1.0, abs(num))
        w = lin.weight
        for idx in [(0, 1), (7, 3)]:
            w0 = float(w[idx])
            w[idx] = w0 + eps
            lu = float(loss_of(x.detach()))
            w[idx] = w0 - eps
            ld = float(loss_of(x.detach()))
            w[idx] = w0
            num = (lu - ld) / (2 * eps)
            assert abs(num - gw[idx]) < 1e-6 * max(1.0, abs(num))


def test_explain_names_what_a_step_keeps_and_recomputes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 20), torch.randint(0, 10, (32,))

    step = train_step(model, opt, F.cross_entropy)
    e = torch.explain(step, x, y)
    text = str(e)
    assert e.saved and e.recomputed
    assert 0 < e.min_cut_bytes < e.saved_bytes_no_recompute
    assert "min-cut: the backward reads %" in text and "recomputed in the backward: %" in text
    # the 32 x 48 hidden activation is on the cut, and its bytes show
    assert 32 * 48 * 4 in [n for _, n, _ in e.saved_detail]
