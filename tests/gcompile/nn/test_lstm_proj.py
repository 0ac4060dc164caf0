"""LSTM with proj_size: h_t = W_hr (o_t * tanh(c_t)); checked against a NumPy loop and,
when installed, torch (weights copied), eager and compiled."""
import numpy as np
import pytest

import gcompile as torch
from gcompile import nn


def _sig(z):
    return 1 / (1 + np.exp(-z))


def _numpy_lstm_proj(x, w_ih, w_hh, b_ih, b_hh, w_hr):
    """One layer, one direction, zero initial state; x (T, B, I)."""
    t_len, bsz = x.shape[:2]
    h = np.zeros((bsz, w_hr.shape[0]))
    c = np.zeros((bsz, w_hh.shape[0] // 4))
    outs = []
    for t in range(t_len):
        i, f, g, o = np.split(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1)
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        h = (_sig(o) * np.tanh(c)) @ w_hr.T
        outs.append(h)
    return np.stack(outs), h, c


def test_lstm_proj_matches_a_numpy_loop_eager_and_compiled():
    torch.manual_seed(0)
    m = nn.LSTM(4, 6, proj_size=2, dtype=torch.float64)
    assert [n for n, _ in m.named_parameters()] == ["weight_ih_l0", "weight_hh_l0",
                                                   "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"]
    assert m.weight_hh_l0.shape == (24, 2) and m.weight_hr_l0.shape == (2, 6)
    x = np.random.default_rng(0).standard_normal((5, 3, 4))
    want, h_n, c_n = _numpy_lstm_proj(x, *(p.detach().numpy() for p in m.parameters()))
    for f in (m, torch.compile(m)):
        out, (h, c) = f(torch.tensor(x))
        out, (h, c) = f(torch.tensor(x))
        np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12)
        np.testing.assert_allclose(h[0].detach().numpy(), h_n, rtol=1e-12)
        np.testing.assert_allclose(c[0].detach().numpy(), c_n, rtol=1e-12)
    assert out.shape == (5, 3, 2) and h.shape == (1, 3, 2) and c.shape == (1, 3, 6)


def test_lstm_proj_against_torch_two_layers_bidirectional():
    t = pytest.importorskip("torch")
    t.manual_seed(0)
    ref = t.nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True,
                    proj_size=3).double()
    m = nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True, proj_size=3,
                dtype=torch.float64)
    m.load_state_dict({k: torch.tensor(v.detach().numpy()) for k, v in
                       ref.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((4, 6, 5))
    tx, gx = t.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    to, (th, tc) = ref(tx)
    go, (gh, gc) = m(gx)
    for a, b in ((to, go), (th, gh), (tc, gc)):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
    (to.sum() + th.sum()).backward()
    (go.sum() + gh.sum()).backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    for (name, p), q in zip(ref.named_parameters(), m.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_proj_size_errors_as_torch():
    with pytest.raises(ValueError, match="smaller than hidden_size"):
        nn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="only supported for LSTM"):
        nn.GRU(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="positive integer or zero"):
        nn.LSTM(3, 4, proj_size=-1)
