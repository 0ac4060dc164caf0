"""Layers against NumPy references of their formulas, forward and gradients."""
import pathlib
import sys

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F
from gcompile.autograd import gradcheck

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _nn_ref as R  # noqa: E402

D = torch.float64


def rnd(*shape, grad=True, seed=None):
    rng = np.random.default_rng(seed if seed is not None else sum(shape))
    return torch.tensor(rng.standard_normal(shape), dtype=D, requires_grad=grad)


def npy(t):
    return t.detach().numpy()


# ---- linear / activations ----------------------------------------------------------
def test_linear_forward_and_grad():
    lin = nn.Linear(4, 3).double()
    x = rnd(5, 4)
    out = lin(x)
    assert np.allclose(npy(out), npy(x) @ npy(lin.weight).T + npy(lin.bias))
    assert gradcheck(lambda x, w, b: F.linear(x, w, b), (x, lin.weight, lin.bias))
    x3 = rnd(2, 3, 4)
    assert lin(x3).shape == (2, 3, 3)
    with pytest.raises(RuntimeError, match=r"Linear expected input with 4 features.*\(5, 3\)"):
        lin(rnd(5, 3))
    assert nn.Linear(4, 3, bias=False).bias is None


ACTS = [
    (lambda x: F.relu(x), lambda a: np.maximum(a, 0)),
    (lambda x: F.leaky_relu(x, 0.2), lambda a: np.where(a > 0, a, 0.2 * a)),
    (lambda x: F.elu(x, 1.5), lambda a: np.where(a > 0, a, 1.5 * np.expm1(a))),
    (lambda x: F.gelu(x), lambda a: 0.5 * a * (1 + np.vectorize(__import__("math").erf)(
        a / np.sqrt(2)))),
    (lambda x: F.gelu(x, approximate="tanh"),
     lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))),
    (lambda x: F.silu(x), lambda a: a / (1 + np.exp(-a))),
    (lambda x: F.softplus(x, 2.0, 3.0),
     lambda a: np.where(2 * a > 3, a, np.log1p(np.exp(2 * a)) / 2)),
    (lambda x: F.sigmoid(x), lambda a: 1 / (1 + np.exp(-a))),
    (lambda x: F.tanh(x), np.tanh),
    (lambda x: F.softmax(x, 1), lambda a: R.softmax(a, 1)),
    (lambda x: F.log_softmax(x, 0), lambda a: R.log_softmax(a, 0)),
    (lambda x: F.logsigmoid(x), lambda a: -np.log1p(np.exp(-a))),
    (lambda x: F.hardtanh(x, -0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5)),
    (lambda x: F.selu(x), lambda a: 1.0507009873554805 * np.where(
        a > 0, a, 1.6732632423543772 * np.expm1(a))),
]


@pytest.mark.parametrize("i", range(len(ACTS)))
def test_activation_functions(i):
    fn, ref = ACTS[i]
    x = rnd(3, 4, seed=i) * 2
    x = x.detach().requires_grad_()
    assert np.allclose(npy(fn(x)), ref(npy(x)), atol=1e-10)
    assert gradcheck(fn, (x,))


def test_activation_modules_and_float32_gelu():
    x = torch.randn(6, 5)
    for mod, fn in ((nn.ReLU(), F.relu), (nn.GELU(), F.gelu), (nn.Tanh(), F.tanh),
                    (nn.Sigmoid(), F.sigmoid), (nn.LeakyReLU(0.1), lambda t: F.leaky_relu(t, .1)),
                    (nn.Softmax(dim=-1), lambda t: F.softmax(t, -1)),
                    (nn.LogSoftmax(dim=1), lambda t: F.log_softmax(t, 1)), (nn.ELU(), F.elu),
                    (nn.SiLU(), F.silu), (nn.Softplus(), F.softplus), (nn.Identity(), lambda t: t)):
        assert np.allclose(npy(mod(x)), npy(fn(x)))
    # float32 exact gelu uses a 1.5e-7 erf approximation
    import math
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in npy(x).ravel()])
    assert np.allclose(npy(F.gelu(x)).ravel(), ref, atol=1e-6)
    y = torch.tensor([-1.0, 2.0])
    nn.ReLU(inplace=True)(y)
    assert y.tolist() == [0.0, 2.0]
    # softmax is stable for huge logits
    big = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert np.allclose(npy(F.softmax(big, 1)), [[1, 0, 0]])
    assert np.allclose(npy(F.log_softmax(big, 1)), [[0, -1000, -2000]])


# ---- dropout -----------------------------------------------------------------------
def test_dropout_generator_scaling_and_eval():
    x = torch.ones(1000)
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    a = F.dropout(x, 0.3, True, generator=g1)
    b = F.dropout(x, 0.3, True, generator=g2)
    assert np.array_equal(npy(a), npy(b))
    kept = npy(a)[npy(a) != 0]
    assert np.allclose(kept, 1 / 0.7)
    assert 0.2 < (npy(a) == 0).mean() < 0.4
    torch.manual_seed(5)
    c = F.dropout(x, 0.3)
    torch.manual_seed(5)
    assert np.array_equal(npy(c), npy(F.dropout(x, 0.3)))
    d = nn.Dropout(0.5)
    d.eval()
    assert d(x) is x
    assert F.dropout(x, 0.5, training=False) is x
    xg = torch.ones(4, 5, requires_grad=True)
    y = F.dropout(xg, 0.5, generator=torch.Generator().manual_seed(0))
    y.sum().backward()
    assert np.array_equal(npy(xg.grad), npy(y))
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)
    assert (npy(F.dropout(x, 1.0)) == 0).all()


# ---- convolution ------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2),
])
def test_conv2d_reference_and_gradcheck(cfg):
    x = rnd(2, 4, 7, 6)
    w = rnd(6, 4 // cfg["groups"], 3, 2)
    b = rnd(6)
    out = F.conv2d(x, w, b, **cfg)
    t2 = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    ref = R.conv_ref(npy(x), npy(w), npy(b), t2(cfg["stride"]), t2(cfg["padding"]),
                     t2(cfg["dilation"]), cfg["groups"])
    assert np.allclose(npy(out), ref, atol=1e-10)
    xs, ws, bs = rnd(1, 4, 5, 4), rnd(2, 4 // cfg["groups"], 2, 2), rnd(2)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, **cfg), (xs, ws, bs))


def test_conv1d_conv3d_and_modules():
    x1, w1, b1 = rnd(2, 3, 9), rnd(4, 3, 3), rnd(4)
    ref = R.conv_ref(npy(x1), npy(w1), npy(b1), (2,), (1,), (1,), 1)
    assert np.allclose(npy(F.conv1d(x1, w1, b1, stride=2, padding=1)), ref)
    assert gradcheck(lambda x, w: F.conv1d(x, w, None, padding=1), (rnd(1, 2, 5), rnd(2, 2, 3)))
    x3, w3 = rnd(1, 2, 4, 5, 3), rnd(3, 2, 2, 3, 2)
    ref3 = R.conv_ref(npy(x3), npy(w3), None, (1, 1, 1), (1, 0, 1), (1, 1, 1), 1)
    assert np.allclose(npy(F.conv3d(x3, w3, padding=(1, 0, 1))), ref3)
    assert gradcheck(lambda x, w: F.conv3d(x, w), (rnd(1, 1, 3, 3, 3), rnd(1, 1, 2, 2, 2)))
    conv = nn.Conv2d(3, 5, 3, padding="same").double()
    x = rnd(2, 3, 6, 6)
    assert conv(x).shape == (2, 5, 6, 6)
    assert conv(rnd(3, 6, 6)).shape == (5, 6, 6)  # unbatched
    ref = R.conv_ref(npy(x), npy(conv.weight), npy(conv.bias), (1, 1), (1, 1), (1, 1), 1)
    assert np.allclose(npy(conv(x)), ref)
    refl = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect").double()
    xr = rnd(1, 1, 4, 4)
    padded = np.pad(npy(xr), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    assert np.allclose(npy(refl(xr)), R.conv_ref(padded, npy(refl.weight), npy(refl.bias),
                                                 (1, 1), (0, 0), (1, 1), 1))


def test_conv_errors_name_layer_and_shapes():
    conv = nn.Conv2d(3, 8, 3)
    with pytest.raises(RuntimeError,
                       match=r"Conv2d expected input with 3 channels, got shape \(8, 4, 32, 32\)"):
        conv(torch.randn(8, 4, 32, 32))
    with pytest.raises(RuntimeError, match=r"Conv2d expected 3D \(unbatched\) or 4D.*\(3, 32\)"):
        conv(torch.randn(3, 32))
    with pytest.raises(RuntimeError, match="smaller than the kernel"):
        conv(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)


def test_unfold_fold_are_adjoint():
    x = rnd(2, 3, 5, 4)
    cols = F.unfold(x, (2, 3), padding=1, stride=(2, 1))
    y = rnd(*cols.shape, grad=False)
    back = F.fold(y, (5, 4), (2, 3), padding=1, stride=(2, 1))
    # <unfold(x), y> == <x, fold(y)>
    assert np.isclose((npy(cols) * npy(y)).sum(), (npy(x) * npy(back)).sum())
    assert gradcheck(lambda x: F.unfold(x, 2), (rnd(1, 2, 3, 3),))


# ---- pooling ----------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [((2, 2), (2, 2), (0, 0), False), ((3, 3), (2, 2), (1, 1), False),
                                 ((3, 2), (2, 1), (1, 0), True)])
def test_max_and_avg_pool(cfg):
    k, s, p, ceil = cfg
    x = rnd(2, 3, 7, 6)
    mp = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
    assert np.allclose(npy(mp), R.pool_ref(npy(x), k, s, p, "max", ceil))
    for cip in (True, False):
        ap = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=cip)
        assert np.allclose(npy(ap), R.pool_ref(npy(x), k, s, p, "avg", ceil, cip))
    xs = rnd(1, 2, 5, 4)
    assert gradcheck(lambda x: F.max_pool2d(x, k, s, p, ceil_mode=ceil), (xs,))
    assert gradcheck(lambda x: F.avg_pool2d(x, k, s, p, ceil_mode=ceil,
                                            count_include_pad=False), (xs,))


def test_max_pool_ties_indices_and_modules():
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    # the whole gradient goes to the first maximum, like torch
    assert npy(x.grad).ravel().tolist() == [1.0, 0.0, 0.0, 0.0]
    y = torch.tensor([[[[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 9.0, 1.0]]]])
    out, idx = F.max_pool2d(y, 2, return_indices=True)
    assert out.tolist() == [[[[5.0, 9.0]]]] and idx.tolist() == [[[[1, 6]]]]
    assert nn.MaxPool2d(2)(rnd(3, 4, 4)).shape == (3, 2, 2)
    assert np.allclose(npy(nn.AvgPool2d(2)(y)), [[[[3.25, 3.0]]]])
    assert F.max_pool1d(rnd(1, 2, 7), 2).shape == (1, 2, 3)
    with pytest.raises(RuntimeError, match=r"MaxPool2d expected 3D or 4D input, got shape"):
        nn.MaxPool2d(2)(torch.randn(4, 4))


@pytest.mark.parametrize("out_size", [(1, 1), (2, 3), (3, 2), 4])
def test_adaptive_avg_pool2d(out_size):
    x = rnd(2, 2, 7, 6)
    o = (out_size, out_size) if isinstance(out_size, int) else out_size
    h, w = 7, 6
    ref = np.zeros((2, 2) + o)
    for i in range(o[0]):
        for j in range(o[1]):
            hs, he = (i * h) // o[0], -(-((i + 1) * h) // o[0])
            ws, we = (j * w) // o[1], -(-((j + 1) * w) // o[1])
            ref[:, :, i, j] = npy(x)[:, :, hs:he, ws:we].mean(axis=(2, 3))
    assert np.allclose(npy(F.adaptive_avg_pool2d(x, out_size)), ref)
    assert np.allclose(npy(nn.AdaptiveAvgPool2d(out_size)(x)), ref)
    assert gradcheck(lambda x: F.adaptive_avg_pool2d(x, out_size), (rnd(1, 1, 5, 4),))


# ---- normalisation ----------------------------------------------------------------------
def test_batchnorm_training_eval_and_running_stats():
    bn = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5], dtype=D))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0], dtype=D))
    x = rnd(4, 3, 2, 5)
    a = npy(x)
    mean = a.mean(axis=(0, 2, 3))
    var = a.var(axis=(0, 2, 3))
    ref = (a - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    ref = ref * npy(bn.weight)[None, :, None, None] + npy(bn.bias)[None, :, None, None]
    assert np.allclose(npy(bn(x)), ref)
    n = 4 * 2 * 5
    assert np.allclose(npy(bn.running_mean), 0.1 * mean)
    assert np.allclose(npy(bn.running_var), 0.9 + 0.1 * var * n / (n - 1))
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    ev = (a - npy(bn.running_mean)[None, :, None, None]) / np.sqrt(
        npy(bn.running_var)[None, :, None, None] + 1e-5)
    ev = ev * npy(bn.weight)[None, :, None, None] + npy(bn.bias)[None, :, None, None]
    assert np.allclose(npy(bn(x)), ev)
    assert bn.num_batches_tracked.item() == 1
    bn.train()
    assert gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, True),
                     (rnd(3, 2, 2), bn.weight[:2].detach().requires_grad_(),
                      bn.bias[:2].detach().requires_grad_()))
    bn1 = nn.BatchNorm1d(4)
    assert bn1(torch.randn(8, 4)).shape == (8, 4) and bn1(torch.randn(8, 4, 3)).shape == (8, 4, 3)
    with pytest.raises(ValueError, match=r"BatchNorm1d expected input with 4 channels"):
        bn1(torch.randn(8, 5))
    with pytest.raises(ValueError, match="BatchNorm2d expected 4D input"):
        nn.BatchNorm2d(3)(torch.randn(3, 4))
    cum = nn.BatchNorm1d(2, momentum=None)
    xs = [torch.randn(5, 2), torch.randn(5, 2)]
    for t in xs:
        cum(t)
    avg = (xs[0].numpy().mean(0) + xs[1].numpy().mean(0)) / 2
    assert np.allclose(npy(cum.running_mean), avg, atol=1e-6)


def test_layernorm_groupnorm():
    ln = nn.LayerNorm((3, 4)).double()
    with torch.no_grad():
        ln.weight.copy_(rnd(3, 4, grad=False))
        ln.bias.copy_(rnd(3, 4, grad=False, seed=1))
    x = rnd(2, 3, 4)
    a = npy(x)
    m = a.mean(axis=(1, 2), keepdims=True)
    v = a.var(axis=(1, 2), keepdims=True)
    ref = (a - m) / np.sqrt(v + 1e-5) * npy(ln.weight) + npy(ln.bias)
    assert np.allclose(npy(ln(x)), ref)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, (4,), w, b),
                     (rnd(2, 4), rnd(4, seed=2), rnd(4, seed=3)))
    with pytest.raises(RuntimeError, match=r"LayerNorm expected input with shape \[\*, 3, 4\]"):
        ln(rnd(2, 4, 3))
    gn = nn.GroupNorm(2, 4).double()
    xg = rnd(2, 4, 3)
    g = npy(xg).reshape(2, 2, -1)
    refg = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5))
    assert np.allclose(npy(gn(xg)), refg.reshape(2, 4, 3))


# ---- embedding ----------------------------------------------------------------------------
def test_embedding_lookup_padding_and_grad():
    emb = nn.Embedding(6, 3, padding_idx=2).double()
    assert np.all(npy(emb.weight)[2] == 0)
    idx = torch.tensor([[0, 2, 5], [2, 5, 5]])
    out = emb(idx)
    assert np.allclose(npy(out), npy(emb.weight)[npy(idx)])
    out.sum().backward()
    grad = npy(emb.weight.grad)
    assert grad[0].tolist() == [1, 1, 1] and grad[5].tolist() == [3, 3, 3]
    assert grad[2].tolist() == [0, 0, 0]
    w = rnd(5, 2)
    assert gradcheck(lambda w: F.embedding(torch.tensor([1, 1, 4]), w), (w,))
    with pytest.raises(IndexError, match="index out of range"):
        emb(torch.tensor([6]))
    with pytest.raises(RuntimeError, match="Long, Int"):
        emb(torch.tensor([1.0]))
    pre = nn.Embedding.from_pretrained(torch.eye(3))
    assert not pre.weight.requires_grad and pre(torch.tensor([1])).tolist() == [[0, 1, 0]]


# ---- recurrent ----------------------------------------------------------------------------
def _params(m, layer, d=""):
    s = f"_l{layer}{d}"
    return [npy(getattr(m, n + s)) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def test_lstm_reference_layers_bidirectional_batch_first():
    m = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    assert [n for n, _ in m.named_parameters()][:5] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse"]
    assert m.weight_ih_l1.shape == (16, 8) and m.weight_hh_l0.shape == (16, 4)
    x = rnd(2, 5, 3, grad=False)
    h0, c0 = rnd(4, 2, 4, grad=False, seed=1), rnd(4, 2, 4, grad=False, seed=2)
    out, (hn, cn) = m(x, (h0, c0))
    xs = npy(x).transpose(1, 0, 2)
    layer_in = xs
    hs, cs = [], []
    for layer in range(2):
        f, hf, cf = R.lstm_ref(layer_in, npy(h0)[2 * layer], npy(c0)[2 * layer],
                               *_params(m, layer))
        b, hb, cb = R.lstm_ref(layer_in[::-1], npy(h0)[2 * layer + 1], npy(c0)[2 * layer + 1],
                               *_params(m, layer, "_reverse"))
        layer_in = np.concatenate([f, b[::-1]], axis=2)
        hs += [hf, hb]
        cs += [cf, cb]
    assert np.allclose(npy(out), layer_in.transpose(1, 0, 2))
    assert np.allclose(npy(hn), np.stack(hs)) and np.allclose(npy(cn), np.stack(cs))
    assert out.shape == (2, 5, 8) and hn.shape == (4, 2, 4)


def test_gru_rnn_reference():
    g = nn.GRU(3, 4).double()
    x, h0 = rnd(5, 2, 3, grad=False), rnd(1, 2, 4, grad=False, seed=4)
    out, hn = g(x, h0)
    ref, href = R.gru_ref(npy(x), npy(h0)[0], *_params(g, 0))
    assert np.allclose(npy(out), ref) and np.allclose(npy(hn)[0], href)
    for nl, act in (("tanh", np.tanh), ("relu", lambda z: np.maximum(z, 0))):
        r = nn.RNN(3, 4, nonlinearity=nl).double()
        out, hn = r(x)
        ref, _ = R.rnn_ref(npy(x), np.zeros((2, 4)), *_params(r, 0), act=act)
        assert np.allclose(npy(out), ref)
    # unbatched input and no-bias GRU
    gnb = nn.GRU(3, 4, bias=False).double()
    out, hn = gnb(rnd(5, 3, grad=False))
    assert out.shape == (5, 4) and hn.shape == (1, 4)


@pytest.mark.parametrize("mod", ["LSTM", "GRU", "RNN"])
def test_recurrent_gradcheck(mod):
    torch.manual_seed(0)
    m = getattr(nn, mod)(2, 3, num_layers=2, bidirectional=True).double()
    x = rnd(3, 2, 2)
    h0 = rnd(4, 2, 3, seed=7)
    w_hh, b_ih = m.weight_hh_l0, m.bias_ih_l1_reverse
    if mod == "LSTM":
        c0 = rnd(4, 2, 3, seed=8)
        fn = lambda x, h0, c0, w, b: (lambda o: (o[0], o[1][1]))(m(x, (h0, c0)))  # noqa: E731
        assert gradcheck(fn, (x, h0, c0, w_hh, b_ih))
    else:
        fn = lambda x, h0, w, b: m(x, h0)  # noqa: E731
        assert gradcheck(fn, (x, h0, w_hh, b_ih))


def test_recurrent_errors_dropout_and_cells():
    m = nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    with pytest.raises(RuntimeError, match=r"LSTM expected input with 3 features.*\(5, 2, 2\)"):
        m(torch.randn(5, 2, 2))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(2, 2, 4\), got \[1, 2, 4\]"):
        m(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    x = torch.randn(5, 2, 3)
    m.eval()
    assert np.array_equal(npy(m(x)[0]), npy(m(x)[0]))
    cell = nn.LSTMCell(3, 4).double()
    xc = rnd(2, 3, grad=False)
    h, c = cell(xc)
    w_ih, w_hh, b_ih, b_hh = (npy(cell.weight_ih), npy(cell.weight_hh), npy(cell.bias_ih),
                              npy(cell.bias_hh))
    _, href, cref = R.lstm_ref(npy(xc)[None], np.zeros((2, 4)), np.zeros((2, 4)), w_ih, w_hh,
                               b_ih, b_hh)
    assert np.allclose(npy(h), href) and np.allclose(npy(c), cref)
    gc = nn.GRUCell(3, 4).double()
    _, gref = R.gru_ref(npy(xc)[None], np.zeros((2, 4)), npy(gc.weight_ih), npy(gc.weight_hh),
                        npy(gc.bias_ih), npy(gc.bias_hh))
    assert np.allclose(npy(gc(xc)), gref)
    assert nn.RNNCell(3, 4)(torch.randn(2, 3)).shape == (2, 4)


# ---- attention ------------------------------------------------------------------------------
def _mha_ref(m, q, k, v, attn_add=None, kpm=None):
    e, h = m.embed_dim, m.num_heads
    w, b = npy(m.in_proj_weight), npy(m.in_proj_bias)
    qp, kp, vp = q @ w[:e].T + b[:e], k @ w[e:2 * e].T + b[e:2 * e], v @ w[2 * e:].T + b[2 * e:]
    n, lq, _ = qp.shape
    d = e // h
    split = lambda t: t.reshape(n, t.shape[1], h, d).transpose(0, 2, 1, 3)  # noqa: E731
    s = split(qp) @ split(kp).transpose(0, 1, 3, 2) / np.sqrt(d)
    if attn_add is not None:
        s = s + attn_add
    if kpm is not None:
        s = np.where(kpm[:, None, None, :], -np.inf, s)
    a = R.softmax(s, -1)
    o = (a @ split(vp)).transpose(0, 2, 1, 3).reshape(n, lq, e)
    return o @ npy(m.out_proj.weight).T + npy(m.out_proj.bias), a


def test_multihead_attention_reference_and_masks():
    torch.manual_seed(1)
    m = nn.MultiheadAttention(8, 2, batch_first=True).double()
    with torch.no_grad():
        m.in_proj_bias.copy_(rnd(24, grad=False))
    assert m.in_proj_weight.shape == (24, 8)
    assert [n for n, _ in m.named_parameters()] == ["in_proj_weight", "in_proj_bias",
                                                    "out_proj.weight", "out_proj.bias"]
    q, k = rnd(2, 3, 8, grad=False), rnd(2, 4, 8, grad=False, seed=5)
    kpm = torch.tensor([[False, False, True, False], [False, False, False, True]])
    bool_mask = torch.tensor(np.triu(np.ones((3, 4), bool), 2))
    out, w = m(q, k, k, key_padding_mask=kpm, attn_mask=bool_mask)
    add = np.where(np.triu(np.ones((3, 4), bool), 2), -np.inf, 0.0)
    ref, a = _mha_ref(m, npy(q), npy(k), npy(k), add, npy(kpm))
    assert np.allclose(npy(out), ref) and np.allclose(npy(w), a.mean(1))
    out2, w2 = m(q, k, k, attn_mask=torch.tensor(add), average_attn_weights=False)
    ref2, a2 = _mha_ref(m, npy(q), npy(k), npy(k), add)
    assert np.allclose(npy(out2), ref2) and np.allclose(npy(w2), a2)
    _, none = m(q, k, k, need_weights=False)
    assert none is None
    seq_first = nn.MultiheadAttention(8, 2).double()
    seq_first.load_state_dict(m.state_dict())
    o3, _ = seq_first(q.transpose(0, 1), k.transpose(0, 1), k.transpose(0, 1))
    o4, _ = m(q, k, k)
    assert np.allclose(npy(o3).transpose(1, 0, 2), npy(o4))
    qg = rnd(1, 2, 8)
    assert gradcheck(lambda q: m(q, q, q)[0], (qg,))


def test_max_pool_nan_propagates_and_integer_input():
    x = torch.tensor([[[[1.0, float("nan")], [3.0, 2.0]]]])
    assert np.isnan(F.max_pool2d(x, 2).item())
    xi = torch.tensor([[[[1, 5], [3, 2]]]])
    assert F.max_pool2d(xi, 2).item() == 5
