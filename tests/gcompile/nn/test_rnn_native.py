"""nn.LSTM/GRU/RNN on the native recurrent kernels (kernels/cpu/recurrent.py) match torch
(outputs and every gradient: input, initial states, parameters) for batch_first,
multi-layer, bidirectional and bias-free layers; a compiled char-LSTM training step
matches eager step by step."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import gcompile


def test_layers_run_on_the_native_kernels():
    import kernels.cpu.recurrent as rec
    from ir.registry import REGISTRY
    for name, fn in rec.NATIVE.items():
        assert REGISTRY[name].impl is fn, name

CONFIGS = [
    dict(num_layers=1, batch_first=False, bidirectional=False),
    dict(num_layers=2, batch_first=True, bidirectional=False),
    dict(num_layers=2, batch_first=False, bidirectional=True),
    dict(num_layers=1, batch_first=True, bidirectional=True, bias=False),
]


def _pair(torch, cls, kwargs, double=True):
    """The same layer in torch and in gcompile (torch's weights copied over)."""
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls)(6, 5, **kwargs)
    ours = getattr(gcompile.nn, cls)(6, 5, **kwargs)
    if double:
        ref, ours = ref.double(), ours.double()
    with gcompile.no_grad():
        for (n, p), (n2, q) in zip(ours.named_parameters(), ref.named_parameters()):
            assert n == n2
            p.copy_(gcompile.tensor(q.detach().numpy()))
    return ref, ours


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}{int(v)}"
                                                                 for k, v in c.items()))
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN", "RNN-relu"])
def test_layers_match_torch(cls, cfg):
    _compare(cls, cfg, np.float64, dict(rtol=1e-9, atol=1e-11))


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_float32_layers_match_torch(cls):
    """float32 runs the polynomial sigmoid/tanh (a few ulp): close to torch, not equal."""
    _compare(cls, CONFIGS[2], np.float32, dict(rtol=1e-4, atol=1e-5))


def _compare(cls, cfg, dtype, tol):
    torch = pytest.importorskip("torch")
    kwargs = dict(cfg)
    if cls == "RNN-relu":
        cls, kwargs["nonlinearity"] = "RNN", "relu"
    ref, ours = _pair(torch, cls, kwargs, dtype == np.float64)
    t, b = 4, 3
    d = 2 if kwargs["bidirectional"] else 1
    shape = (b, t, 6) if kwargs["batch_first"] else (t, b, 6)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    h0 = (rng.standard_normal((d * kwargs["num_layers"], b, 5)) * 0.5).astype(dtype)
    c0 = (rng.standard_normal(h0.shape) * 0.5).astype(dtype)
    gy = rng.standard_normal((*shape[:2], d * 5)).astype(dtype)
    gh = rng.standard_normal(h0.shape).astype(dtype)

    def run(lib, layer):
        xs = lib.tensor(x, requires_grad=True)
        hs = [lib.tensor(h0, requires_grad=True)]
        if cls == "LSTM":
            hs.append(lib.tensor(c0, requires_grad=True))
        y, hn = layer(xs, tuple(hs) if cls == "LSTM" else hs[0])
        hn = hn[0] if cls == "LSTM" else hn
        loss = (y * lib.tensor(gy)).sum() + (hn * lib.tensor(gh)).sum()
        loss.backward()
        grads = [xs.grad] + [h.grad for h in hs] + [p.grad for p in layer.parameters()]
        return [y, hn] + grads

    for a, b_ in zip(run(torch, ref), run(gcompile, ours)):
        assert b_.detach().numpy().dtype == dtype
        np.testing.assert_allclose(b_.detach().numpy(), a.detach().numpy(), **tol)


# ---- compiled char-LSTM training ------------------------------------------------------------
class _CharLSTM(gcompile.nn.Module):
    def __init__(self, vocab=13, emb=8, hidden=12):
        super().__init__()
        self.emb = gcompile.nn.Embedding(vocab, emb)
        self.rnn = gcompile.nn.LSTM(emb, hidden, num_layers=2, batch_first=True)
        self.head = gcompile.nn.Linear(hidden, vocab)

    def forward(self, x):
        return self.head(self.rnn(self.emb(x))[0])


def _train(compiled: bool, x, y, steps: int = 5):
    """Losses and final parameters of ``steps`` Adam steps, eager or compiled."""
    from gcompile.compiler.api import GraphBreakWarning
    gcompile.manual_seed(0)
    model = _CharLSTM()
    opt = gcompile.optim.Adam(model.parameters(), lr=1e-2)
    crit = gcompile.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = crit(model(x).reshape(-1, 13), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss
    fn = gcompile.compile(step) if compiled else step
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphBreakWarning)
        losses = [float(fn(x, y)) for _ in range(steps)]
    if compiled:
        assert fn.entries and not fn._eager and not fn.graph_breaks, "no compiled plan ran"
        assert fn.num_traces < steps
    return losses, {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


def test_compiled_char_lstm_training_matches_eager():
    g = gcompile.Generator().manual_seed(3)
    data = gcompile.randint(0, 13, (4, 10), generator=g)
    x, y = data[:, :-1], data[:, 1:]
    le, pe = _train(False, x, y)
    lc, pc = _train(True, x, y)
    np.testing.assert_allclose(lc, le, rtol=2e-4)
    assert le[-1] < le[0]
    for n in pe:
        np.testing.assert_allclose(pc[n], pe[n], rtol=2e-4, atol=1e-5, err_msg=n)
