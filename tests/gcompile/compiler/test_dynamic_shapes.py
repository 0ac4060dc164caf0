"""Dynamic shapes: one symbolic trace serves every size of a dynamic dimension."""
import numpy as np
import pytest

import gcompile as tm
import gcompile.nn as nn
import gcompile.nn.functional as F
from gcompile.compiler.dynamic import DynamicEntry, mark_dynamic


def _f(x, w):
    b, t, _ = x.shape
    y = (x @ w).relu()
    return y.reshape(b * t, -1).sum(0) + x[:, : t - 1].mean() + tm.arange(t).float().mean()


def test_auto_traces_symbolically_after_a_second_size():
    cf = tm.compile(_f)
    w = tm.randn(8, 5)
    for t in (3, 4, 5, 6, 9, 17, 2):
        x = tm.randn(2, t, 8)
        np.testing.assert_allclose(cf(x, w).numpy(), _f(x, w).numpy(), rtol=1e-5, atol=1e-5)
    # a static trace, the symbolic trace, the check trace; every later size reuses it
    assert cf.num_traces == 3
    assert any(isinstance(e, DynamicEntry) and e.validated for e in cf.entries)
    dyn = next(e for e in cf.entries if isinstance(e, DynamicEntry))
    assert len(dyn.entries) >= 5  # one plan per size seen, from one graph


def test_dynamic_true_from_the_first_call_and_no_recompile_limit():
    cf = tm.compile(_f, dynamic=True)
    w = tm.randn(8, 5)
    for t in range(2, 2 + 12):  # more sizes than the recompile limit (8)
        x = tm.randn(3, t, 8)
        np.testing.assert_allclose(cf(x, w).numpy(), _f(x, w).numpy(), rtol=1e-5, atol=1e-5)
    assert cf.num_traces == 2
    assert not cf._eager


def test_dynamic_false_traces_per_size():
    cf = tm.compile(_f, dynamic=False)
    w = tm.randn(8, 5)
    for t in (3, 4, 5):
        cf(tm.randn(2, t, 8), w)
    assert cf.num_traces == 3
    assert not any(isinstance(e, DynamicEntry) for e in cf.entries)


def test_mark_dynamic():
    cf = tm.compile(_f)
    w = tm.randn(8, 5)
    x = tm.randn(2, 4, 8)
    mark_dynamic(x, 1)
    cf(x, w)
    assert isinstance(cf.entries[0], DynamicEntry)
    with pytest.raises(IndexError):
        mark_dynamic(x, 3)


def test_branch_on_a_size_is_guarded():
    def g(x):
        if x.shape[0] > 4:
            return x * 2
        return x - 1
    cf = tm.compile(g, dynamic=True)
    for n in (3, 6, 2, 4, 5, 9, 3):
        x = tm.randn(n, 3)
        np.testing.assert_allclose(cf(x).numpy(), g(x).numpy())
    assert cf.num_traces <= 4  # one symbolic trace (and its check) per branch


def test_size_used_as_a_number_is_read_at_run_time():
    def g(x):
        return x * x.shape[0] + x.sum() / x.shape[0] - x.shape[1] * x
    cf = tm.compile(g, dynamic=True)
    for n in (3, 4, 5, 9, 3):
        x = tm.randn(n, n + 1)
        np.testing.assert_allclose(cf(x).numpy(), g(x).numpy(), rtol=1e-5, atol=1e-5)
    assert cf.num_traces == 2
    xi = tm.randint(0, 5, (6, 7), dtype=tm.int32)
    assert cf(xi).dtype == g(xi).dtype and np.array_equal(cf(xi).numpy(), g(xi).numpy())


def test_size_made_a_float_is_specialised_not_stale():
    def g(x):
        return x * (1.0 / x.shape[0])  # a Python float: baked in under a guard
    cf = tm.compile(g, dynamic=True)
    for n in (3, 4, 5, 3):
        x = tm.randn(n, 2)
        np.testing.assert_allclose(cf(x).numpy(), g(x).numpy())


def test_sizes_baked_by_a_non_symbolic_path_fall_back_per_size():
    # a size that reaches the graph as a plain number (here read from the array, as
    # gcompile's own code might) differs between the symbolic trace and its check
    # trace: the signature goes back to one trace per size, never a stale graph
    def g(x):
        n = x._data.shape[0]
        return x[: n - 1] * 2
    cf = tm.compile(g, dynamic=True)
    for n in (3, 4, 5, 6, 4):
        x = tm.randn(n, 2)
        np.testing.assert_allclose(cf(x).numpy(), g(x).numpy())
    assert cf._static_only
    assert not any(isinstance(e, DynamicEntry) and e.validated for e in cf.entries)


class _GPT(nn.Module):
    def __init__(self, vocab=11, d=16, heads=2, block=32):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.h, self.d = heads, d

    def forward(self, idx):
        b, t = idx.shape
        x = self.tok(idx) + self.pos(tm.arange(t))
        q, k, v = self.qkv(self.ln(x)).split(self.d, dim=2)
        q = q.reshape(b, t, self.h, -1).transpose(1, 2)
        k = k.reshape(b, t, self.h, -1).transpose(1, 2)
        v = v.reshape(b, t, self.h, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(x + y.transpose(1, 2).reshape(b, t, self.d))


def test_generation_loop_with_growing_length():
    tm.manual_seed(0)
    model = _GPT().eval()
    cf = tm.compile(model)
    idx = tm.randint(0, 11, (1, 2))
    with tm.no_grad():
        for _ in range(14):
            logits = cf(idx)
            np.testing.assert_allclose(logits.numpy(), model(idx).numpy(), rtol=1e-4,
                                       atol=1e-5)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            idx = tm.cat([idx, nxt], dim=1)
    assert cf._orig_mod is model
    assert cf._compiled.num_traces == 3


def test_training_forward_last_smaller_batch():
    tm.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref.load_state_dict(model.state_dict())
    cm = tm.compile(model)
    for n in (16, 16, 7, 16, 5, 9):
        x, y = tm.randn(n, 6), tm.randint(0, 3, (n,))
        for m in (cm, ref):
            m.zero_grad()
            F.cross_entropy(m(x), y).backward()
        for p, q in zip(model.parameters(), ref.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
    # eager backward after the trace reads the tape's shapes: concrete, adding no guard
    assert cm._compiled.num_traces == 3
    assert any(isinstance(e, DynamicEntry) and e.validated and not e.env.guards
               for e in cm._compiled.entries)


class _Holder:
    size = None


def test_a_size_kept_after_the_trace_adds_no_guard():
    holder = _Holder()

    def g(x):
        holder.size = x.shape[0]
        return x * 2
    cf = tm.compile(g, dynamic=True)
    cf(tm.randn(3, 2))
    kept = holder.size
    assert kept == 3 and kept != 4  # used after the trace: its traced value
    for n in (4, 5, 6):
        np.testing.assert_allclose(cf(tm.randn(n, 2)).shape, (n, 2))
    assert cf.num_traces == 2


def _train_pair(opt_cls, **kw):
    tm.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref.load_state_dict(model.state_dict())
    return (model, opt_cls(model.parameters(), **kw)), (ref, opt_cls(ref.parameters(), **kw))


@pytest.mark.parametrize("opt_cls,kw", [(tm.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
                                        (tm.optim.Adam, {"lr": 1e-2})])
def test_whole_step_last_smaller_batch(opt_cls, kw):
    (model, opt), (ref, ref_opt) = _train_pair(opt_cls, **kw)

    def make_step(m, o):
        def step(x, y):
            o.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            o.step()
            return loss
        return step

    step = tm.compile(make_step(model, opt))
    eager = make_step(ref, ref_opt)
    tm.manual_seed(1)
    batches = [(tm.randn(n, 6), tm.randint(0, 3, (n,))) for n in (16, 16, 16, 7, 16, 5, 16, 9)]
    for x, y in batches:
        np.testing.assert_allclose(step(x, y).item(), eager(x, y).item(), rtol=1e-5)
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
    # the eager first step, the first plan, the symbolic trace and its check
    assert step.num_traces <= 4
    assert any(isinstance(e, DynamicEntry) and e.validated for e in step.entries)


def test_view_helpers_keep_sizes_symbolic():
    # unsqueeze/squeeze/flatten/narrow compute eager strides from the traced array and
    # sizes from the symbolic shape: no guard pins the dynamic size
    def g(x):
        y = x.unsqueeze(1).flatten(1).squeeze(0)
        return y.narrow(0, 1, y.shape[0] - 1).sum(0)
    cf = tm.compile(g, dynamic=True)
    for n in (3, 4, 7, 5):
        x = tm.randn(n, 4)
        np.testing.assert_allclose(cf(x).numpy(), g(x).numpy(), rtol=1e-6)
    dyn = [e for e in cf.entries if isinstance(e, DynamicEntry)]
    assert len(dyn) == 1 and dyn[0].validated and not dyn[0].env.guards


def test_random_ops_and_creation_take_symbolic_sizes():
    def g(x):
        return F.dropout(x, 0.5) + tm.randn(x.shape[0], x.shape[1]) * 0 + tm.zeros(x.shape[0], 1)
    cf = tm.compile(g, dynamic=True)
    for n in (3, 4, 5, 9, 3):
        out = cf(tm.ones(n, 4))
        assert tuple(out.shape) == (n, 4)
        assert set(np.unique(out.numpy())) <= {0.0, 2.0}
    assert cf.num_traces == 2


def test_a_dynamic_entry_answers_for_its_latest_plan():
    cf = tm.compile(lambda x: (x * 2).relu().sum(1), dynamic=True)
    for n in (3, 5, 6):
        cf(tm.randn(n, 4))
    e = cf.entries[-1]
    assert isinstance(e, DynamicEntry) and len(e.entries) == 3
    assert e.executable is e.entries[next(reversed(e.entries))].executable
    assert "dynamic sizes s0 = argument 0 dim 0" in e.describe()
