"""Regressions from PyTorch's module database (issue 23), against NumPy references:
each test names the behaviour that was wrong or refused before."""
import itertools
import math
import warnings

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F
from gcompile.autograd import gradcheck

D = torch.float64


def rnd(*shape, seed=0, grad=True):
    a = np.random.default_rng(seed).standard_normal(shape)
    return torch.tensor(a, dtype=D, requires_grad=grad)


def npy(t):
    return t.detach().numpy()


# (1) InstanceNorm on unbatched input normalises each channel over its own positions
@pytest.mark.parametrize("cls, shape", [(nn.InstanceNorm1d, (3, 7)),
                                        (nn.InstanceNorm2d, (3, 4, 5)),
                                        (nn.InstanceNorm3d, (2, 3, 3, 4))])
def test_instance_norm_unbatched(cls, shape):
    x = rnd(*shape)
    m = cls(shape[0], affine=True).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor(np.arange(1.0, shape[0] + 1)))
        m.bias.fill_(0.5)
    out = m(x)
    a = npy(x).reshape(shape[0], -1)
    ref = (a - a.mean(1, keepdims=True)) / np.sqrt(a.var(1, keepdims=True) + 1e-5)
    ref = ref * np.arange(1.0, shape[0] + 1)[:, None] + 0.5
    np.testing.assert_allclose(npy(out), ref.reshape(shape), rtol=1e-10, atol=1e-12)
    # unbatched == the same sample batched
    np.testing.assert_allclose(npy(out), npy(m(x.unsqueeze(0)))[0], rtol=1e-12)


# (2) kl_div: a negative or NaN target gives NaN (torch's xlogy), and so does its grad
def test_kl_div_negative_and_nan_targets():
    t = torch.tensor([-1.0, 0.0, 0.5, float("nan")], dtype=D, requires_grad=True)
    x = torch.tensor([0.3] * 4, dtype=D, requires_grad=True)
    loss = F.kl_div(x, t, reduction="none")
    got = npy(loss)
    assert np.isnan(got[0]) and got[1] == 0.0 and np.isnan(got[3])
    np.testing.assert_allclose(got[2], 0.5 * (math.log(0.5) - 0.3))
    loss.sum().backward()
    np.testing.assert_allclose(npy(x.grad)[:3], [1.0, -0.0, -0.5])
    assert np.isnan(npy(x.grad)[3])
    assert np.isnan(npy(t.grad)[0]) and np.isfinite(npy(t.grad)[2])
    assert np.isnan(npy(F.kl_div(x, t, reduction="sum")))


# (3) BatchNorm on an empty batch in training: empty output, running stats untouched
def test_batch_norm_empty_batch_training():
    m = nn.BatchNorm2d(3).double()
    x = torch.zeros(0, 3, 4, 4, dtype=D, requires_grad=True)
    out = m(x)
    assert tuple(out.shape) == (0, 3, 4, 4)
    np.testing.assert_array_equal(npy(m.running_mean), np.zeros(3))
    np.testing.assert_array_equal(npy(m.running_var), np.ones(3))
    out.sum().backward()
    assert tuple(x.grad.shape) == (0, 3, 4, 4)
    with pytest.raises(ValueError, match="more than 1 value"):
        m(torch.zeros(1, 3, 1, 1, dtype=D))


# (4) bias=False on the norm layers; InstanceNorm tracking running statistics
@pytest.mark.parametrize("make", [lambda: nn.BatchNorm1d(4, bias=False),
                                  lambda: nn.InstanceNorm1d(4, affine=True, bias=False),
                                  lambda: nn.GroupNorm(2, 4, bias=False)])
def test_norm_bias_false(make):
    m = make().double()
    assert m.bias is None and m.weight is not None
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    x = rnd(3, 4, 5)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    y = npy(m(x))
    a = npy(x)
    if isinstance(m, nn.GroupNorm):
        g, axes = a.reshape(3, 2, 10), (2,)
    else:
        g, axes = a, ((0, 2) if isinstance(m, nn.BatchNorm1d) else (2,))
    ref = (g - g.mean(axes, keepdims=True)) / np.sqrt(g.var(axes, keepdims=True) + 1e-5)
    ref = ref.reshape(a.shape) * np.array([1.0, 2.0, 3.0, 4.0])[None, :, None]
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-12)


def test_instance_norm_track_running_stats():
    m = nn.InstanceNorm1d(3, momentum=0.3, track_running_stats=True).double()
    x = rnd(4, 3, 6)
    m(x)
    a = npy(x)
    mean = a.mean(2).mean(0)
    var = a.var(2, ddof=1).mean(0)
    np.testing.assert_allclose(npy(m.running_mean), 0.3 * mean, rtol=1e-12)
    np.testing.assert_allclose(npy(m.running_var), 0.7 + 0.3 * var, rtol=1e-12)
    m.eval()
    ref = (a - npy(m.running_mean)[None, :, None]) / np.sqrt(
        npy(m.running_var)[None, :, None] + 1e-5)
    np.testing.assert_allclose(npy(m(x)), ref, rtol=1e-10)


# (5) AdaptiveMaxPool2d of sizes that do not divide, and None in output_size
def _adaptive_max_ref(a, out):
    n, c, h, w = a.shape
    oh, ow = out
    res = np.empty((n, c, oh, ow))
    idx = np.empty((n, c, oh, ow), np.int64)
    for i, j in itertools.product(range(oh), range(ow)):
        h0, h1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        w0, w1 = (j * w) // ow, -(-((j + 1) * w) // ow)
        win = a[:, :, h0:h1, w0:w1].reshape(n, c, -1)
        k = win.argmax(-1)
        res[:, :, i, j] = win.max(-1)
        idx[:, :, i, j] = (h0 + k // (w1 - w0)) * w + w0 + k % (w1 - w0)
    return res, idx


@pytest.mark.parametrize("out, want", [((3, 4), (3, 4)), ((3, None), (3, 6)), (4, (4, 4))])
def test_adaptive_max_pool2d_any_size(out, want):
    x = rnd(2, 3, 5, 6)
    y, i = nn.AdaptiveMaxPool2d(out, return_indices=True)(x)
    ref, ridx = _adaptive_max_ref(npy(x), want)
    np.testing.assert_allclose(npy(y), ref)
    np.testing.assert_array_equal(npy(i), ridx)
    assert gradcheck(lambda t: F.adaptive_max_pool2d(t, out), (rnd(1, 2, 5, 6, seed=3),))
    c = torch.compile(nn.AdaptiveMaxPool2d(out))
    with torch.no_grad():
        for _ in range(2):
            got = c(x)
    assert c._compiled.entries and not c._compiled.graph_breaks
    np.testing.assert_allclose(npy(got), ref)


# (6) BatchNorm momentum=None: the cumulative average, traced without a graph break
def test_batch_norm_cumulative_average_compiles():
    m = nn.BatchNorm1d(3, momentum=None).double()
    c = torch.compile(m, fullgraph=True)
    xs = [rnd(5, 3, seed=s, grad=False) for s in range(4)]
    for x in xs:
        c(x)
    assert c._compiled.entries
    means = [npy(x).mean(0) for x in xs]
    variances = [npy(x).var(0, ddof=1) for x in xs]
    np.testing.assert_allclose(npy(m.running_mean), np.mean(means, 0), rtol=1e-10)
    np.testing.assert_allclose(npy(m.running_var), np.mean(variances, 0), rtol=1e-10)
    assert int(m.num_batches_tracked) == 4


# (8) compile(module) under no_grad builds a plan and inference runs it
@pytest.mark.parametrize("make, inputs", [
    (lambda: nn.Conv2d(3, 4, 3), lambda: (rnd(2, 3, 6, 6),)),
    (lambda: nn.Conv1d(3, 4, 3, stride=2), lambda: (rnd(3, 9),)),
    (lambda: nn.MaxPool2d(2), lambda: (rnd(2, 3, 6, 6),)),
    (lambda: nn.AvgPool2d(2), lambda: (rnd(3, 6, 6),)),
    (lambda: nn.Bilinear(3, 3, 2), lambda: (rnd(2, 3), rnd(2, 3, seed=1))),
    (lambda: nn.GroupNorm(1, 3), lambda: (rnd(2, 3, 4),)),
    (lambda: nn.Softmax(1), lambda: (rnd(2, 3),)),
    (lambda: nn.RNN(3, 4), lambda: (rnd(5, 3),)),
    (lambda: nn.MultiheadAttention(4, 2), lambda: (rnd(3, 4),) * 3),
])
def test_compiled_inference_runs_its_plan(make, inputs):
    m = make().double()
    xs = inputs()
    want = m(*xs)
    c = torch.compile(m)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        c(*xs)
        entries = c._compiled.entries
        assert len(entries) == 1, "no plan was built"
        runs = []
        orig = entries[0].run
        entries[0].run = lambda *a, **k: runs.append(1) or orig(*a, **k)
        got = c(*xs)
    assert runs == [1] and len(c._compiled.entries) == 1
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        if g is not None:
            np.testing.assert_allclose(npy(g), npy(w), rtol=1e-10, atol=1e-12)


# ---- new layers against their formulas ----------------------------------------------
def test_shrinks():
    x = rnd(20)
    a = npy(x)
    np.testing.assert_array_equal(npy(nn.Hardshrink(0.5)(x)), np.where(np.abs(a) > 0.5, a, 0))
    ref = np.where(a > 0.5, a - 0.5, np.where(a < -0.5, a + 0.5, 0))
    np.testing.assert_allclose(npy(nn.Softshrink(0.5)(x)), ref)


def test_lp_pool_and_local_response_norm():
    x = rnd(1, 3, 6, 6)
    a = npy(x)
    y = npy(nn.LPPool2d(2, 2)(x))
    ref = np.sqrt((a.reshape(1, 3, 3, 2, 3, 2) ** 2).sum((3, 5)))
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    y = npy(nn.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0)(x))
    sq = np.pad(a ** 2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    div = (2.0 + 0.1 * (sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:]) / 3) ** 0.75
    np.testing.assert_allclose(y, a / div, rtol=1e-12)


def test_margin_losses():
    x = rnd(4, 5)
    a = npy(x)
    t = np.array([0, 3, 4, 1])
    got = npy(nn.MultiMarginLoss(reduction="none")(x, torch.tensor(t)))
    ref = [sum(max(0, 1 - a[n, t[n]] + a[n, i]) for i in range(5) if i != t[n]) / 5
           for n in range(4)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    tl = np.array([[3, 0, -1, 1, 2], [1, -1, 0, 0, 0], [4, 2, 1, 0, 3], [-1, 1, 2, 3, 4]])
    got = npy(nn.MultiLabelMarginLoss(reduction="none")(x, torch.tensor(tl)))
    ref = []
    for n in range(4):
        js = list(itertools.takewhile(lambda v: v >= 0, tl[n]))
        ref.append(sum(max(0, 1 - (a[n, j] - a[n, i])) for j in js for i in range(5)
                       if i not in js) / 5)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert gradcheck(lambda v: F.multilabel_margin_loss(v, torch.tensor(tl)), (rnd(4, 5),))


def test_gaussian_and_poisson_nll():
    x, t = rnd(4, 3), rnd(4, 3, seed=1, grad=False)
    var = torch.tensor(np.full((4, 1), 0.5), dtype=D)
    got = npy(F.gaussian_nll_loss(x, t, var, reduction="none"))
    np.testing.assert_allclose(got, 0.5 * (np.log(0.5) + (npy(x) - npy(t)) ** 2 / 0.5))
    with pytest.raises(ValueError, match="negative"):
        F.gaussian_nll_loss(x, t, -var)
    tp = torch.tensor(np.array([0.0, 1.0, 3.0]), dtype=D)
    xp = rnd(3)
    got = npy(F.poisson_nll_loss(xp, tp, full=True, reduction="none"))
    s = np.array([0, 0, 3 * math.log(3) - 3 + 0.5 * math.log(2 * math.pi * 3)])
    np.testing.assert_allclose(got, np.exp(npy(xp)) - npy(tp) * npy(xp) + s, rtol=1e-12)


def _ctc_brute(lp, target, blank=0):
    """-log of the summed probability of every alignment that collapses to target."""
    t_len, c = lp.shape
    total = 0.0
    for path in itertools.product(range(c), repeat=t_len):
        collapsed = [k for i, k in enumerate(path) if k != blank and (i == 0 or path[i - 1] != k)]
        if collapsed == list(target):
            total += math.exp(sum(lp[i, k] for i, k in enumerate(path)))
    return -math.log(total)


def test_ctc_loss_against_enumeration():
    logits = rnd(5, 2, 3)
    lp = F.log_softmax(logits, dim=2)
    targets = torch.tensor([[1, 2], [1, 1]])
    loss = F.ctc_loss(lp, targets, [5, 4], [2, 2], reduction="none")
    a = npy(lp)
    ref = [_ctc_brute(a[:5, 0], [1, 2]), _ctc_brute(a[:4, 1], [1, 1])]
    np.testing.assert_allclose(npy(loss), ref, rtol=1e-10)
    # through log_softmax, torch's gradient is the true gradient of the logits
    assert gradcheck(lambda v: F.ctc_loss(F.log_softmax(v, dim=2), targets, [5, 4], [2, 2]),
                     (logits,))
    c = torch.compile(lambda v: F.ctc_loss(v, targets, torch.tensor([5, 4]),
                                           torch.tensor([2, 2]), reduction="none"))
    with torch.no_grad():
        for _ in range(2):
            got = c(lp)
    assert c.entries and not c.graph_breaks
    np.testing.assert_allclose(npy(got), ref, rtol=1e-10)


def test_lazy_conv_infers_in_channels():
    m = nn.LazyConv2d(4, 3).double()
    x = rnd(2, 5, 6, 6)
    y = m(x)
    assert type(m) is nn.Conv2d and m.in_channels == 5 and tuple(m.weight.shape) == (4, 5, 3, 3)
    np.testing.assert_allclose(npy(y), npy(F.conv2d(x, m.weight, m.bias)))
    t = nn.LazyConvTranspose1d(3, 2)
    t.load_state_dict({"weight": torch.zeros(6, 3, 2), "bias": torch.zeros(3)})
    assert type(t) is nn.ConvTranspose1d and t.in_channels == 6


def test_fractional_max_pool_windows():
    x = rnd(1, 2, 7, 7)
    u = torch.tensor(np.array([[[0.3, 0.7], [0.9, 0.1]]]), dtype=D)
    y, idx = F.fractional_max_pool2d(x, 2, output_size=(3, 3), return_indices=True,
                                     _random_samples=u)
    a = npy(x)

    def seq(s, n_in, n_out, k):
        alpha = (n_in - k) / (n_out - 1)
        return [int((i + s) * alpha) - int(s * alpha) for i in range(n_out - 1)] + [n_in - k]
    for c in range(2):
        rows = seq(npy(u)[0, c, 1], 7, 3, 2)
        cols = seq(npy(u)[0, c, 0], 7, 3, 2)
        for i, j in itertools.product(range(3), range(3)):
            win = a[0, c, rows[i]:rows[i] + 2, cols[j]:cols[j] + 2]
            assert npy(y)[0, c, i, j] == win.max()
            k = win.argmax()
            assert npy(idx)[0, c, i, j] == (rows[i] + k // 2) * 7 + cols[j] + k % 2
