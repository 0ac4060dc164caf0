"""``F.scaled_dot_product_attention`` through the ``sdpa`` op (ir/ops/attention.py): which
calls take it, that they agree with the matmul/softmax composite (and PyTorch when
installed) forward, backward and double backward, and that compiled plans keep the op
whole on the CPU and decompose it for back ends without its kernels."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
from ir.passes.fusion import decompose


def _qkv(*shape, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return [torch.randn(*shape, dtype=dtype, requires_grad=True) for _ in range(3)]


def _composite(q, k, v, is_causal=False, scale=None, monkeypatch=None):
    monkeypatch.setattr(F, "_one_attention_op", lambda *a: False)
    try:
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_op_matches_the_composite_forward_and_backward(dtype, causal, monkeypatch):
    q, k, v = _qkv(2, 3, 7, 5, dtype=dtype)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert out.grad_fn.name() == "ScaledDotProductFlashAttentionForCpuBackward0"
    g = torch.randn(*out.shape, dtype=dtype)
    got = torch.autograd.grad(out, (q, k, v), g)
    want_out = _composite(q, k, v, causal, monkeypatch=monkeypatch)
    want = torch.autograd.grad(want_out, (q, k, v), g)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype is torch.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(out.detach().numpy(), want_out.detach().numpy(), **tol)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **tol)


def test_calls_the_op_does_not_cover_keep_the_composite():
    q, k, v = _qkv(2, 4, 3)
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    assert F.scaled_dot_product_attention(q, k, v, attn_mask=mask).grad_fn.name() != \
        "ScaledDotProductFlashAttentionForCpuBackward0"
    k2 = torch.randn(2, 6, 3)   # cross-attention: keys of another length
    out = F.scaled_dot_product_attention(q, k2, torch.randn(2, 6, 3))
    assert out.shape == (2, 4, 3)
    half = [t.detach().to(torch.float16) for t in (q, k, v)]
    assert F.scaled_dot_product_attention(*half).dtype is torch.float16
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as torch's autocast
        assert F.scaled_dot_product_attention(q, k, v).dtype is torch.bfloat16


def test_gradients_and_second_derivatives_by_finite_differences():
    q, k, v = _qkv(2, 4, 3, dtype=torch.float64)
    f = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    assert torch.autograd.gradcheck(f, (q, k, v))
    assert torch.autograd.gradgradcheck(f, (q, k, v))


def test_agrees_with_torch():
    real = pytest.importorskip("torch", reason="PyTorch is not installed")
    q, k, v = _qkv(2, 2, 9, 4)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    out.sum().backward()
    rq, rk, rv = (real.tensor(t.detach().numpy(), requires_grad=True) for t in (q, k, v))
    ref = real.nn.functional.scaled_dot_product_attention(rq, rk, rv, is_causal=True, scale=0.3)
    ref.sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    for a, b in ((q, rq), (k, rk), (v, rv)):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5)


class _Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (a.reshape(b, t, 2, 4).transpose(1, 2) for a in self.qkv(x).split(8, dim=2))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)


def test_compiled_training_step_equals_eager_and_keeps_the_op():
    torch.manual_seed(0)
    models = [_Attn(), _Attn()]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]

    def step(model, opt):
        def run(x):
            opt.zero_grad()
            loss = model(x).square().mean()
            loss.backward()
            opt.step()
            return loss
        return run
    eager, compiled = step(models[0], opts[0]), torch.compile(step(models[1], opts[1]))
    x = torch.randn(3, 6, 8)
    for _ in range(3):
        np.testing.assert_allclose(compiled(x).item(), eager(x).item(), rtol=1e-5)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    names = {s.name.split()[0] for s in compiled.entries[-1].executable.plan.steps}
    assert {"sdpa", "sdpa_backward"} <= names


def test_decompose_keeps_the_op_whole_only_where_asked():
    """A back end without attention kernels (the CUDA plan) decomposes it into matmuls
    and softmax rows."""
    q, k, v = (t.detach() for t in _qkv(2, 5, 4))
    fn = torch.compile(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True))
    fn(q, k, v)
    for keep in (True, False):
        graph = fn.graph.copy()
        decompose(graph, keep_whole=keep)
        ops = {n.op for n in graph.nodes}
        assert ("sdpa" in ops) is keep
        assert keep or "matmul" in ops


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_attention_without_weights_uses_the_op(causal):
    """nn.MultiheadAttention with need_weights=False and nothing but the attention (a
    Transformer layer in eval mode) runs it as the sdpa op: same outputs and gradients
    as the path that returns the weights."""
    torch.manual_seed(0)
    m = torch.nn.MultiheadAttention(16, 4, dropout=0.1).eval()
    x = torch.randn(7, 3, 16, requires_grad=True)
    outs, grads = [], []
    for need in (False, True):
        out, w = m(x, x, x, need_weights=need, is_causal=causal)
        assert (w is None) is not need
        g, = torch.autograd.grad(out.square().sum(), (x,))
        outs.append(out.detach().numpy())
        grads.append(g.numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    fn = torch.compile(lambda a: m(a, a, a, need_weights=False, is_causal=causal)[0])
    fn(x.detach())
    assert "sdpa" in {n.op for n in fn.graph.nodes}
