"""Losses against NumPy formulas: reductions, weights, ignore_index, smoothing, stability."""
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


def rnd(*shape, seed=0, grad=True):
    return torch.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=D,
                        requires_grad=grad)


def npy(t):
    return t.detach().numpy()


def _red(v, reduction):
    return {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_l1_smooth(reduction):
    x, y = rnd(3, 4), rnd(3, 4, seed=1, grad=False)
    d = npy(x) - npy(y)
    assert np.allclose(npy(F.mse_loss(x, y, reduction=reduction)), _red(d * d, reduction))
    assert np.allclose(npy(nn.L1Loss(reduction=reduction)(x, y)), _red(np.abs(d), reduction))
    ad = np.abs(d)
    sl1 = np.where(ad < 0.5, 0.5 * d * d / 0.5, ad - 0.25)
    assert np.allclose(npy(F.smooth_l1_loss(x, y, reduction=reduction, beta=0.5)),
                       _red(sl1, reduction))
    assert gradcheck(lambda x: F.mse_loss(x, y, reduction=reduction), (x,))
    assert gradcheck(lambda x: F.l1_loss(x, y, reduction=reduction), (x,))
    assert np.allclose(npy(nn.MSELoss()(x, y)), (d * d).mean())


def _nll_ref(logp, t, w=None, ignore=-100, reduction="mean"):
    n = logp.shape[0]
    w = np.ones(logp.shape[1]) if w is None else w
    losses, weights = np.zeros(n), np.zeros(n)
    for i in range(n):
        if t[i] == ignore:
            continue
        weights[i] = w[t[i]]
        losses[i] = -logp[i, t[i]] * w[t[i]]
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / weights.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_indices(reduction, weighted):
    x = rnd(6, 4)
    t = torch.tensor([0, 3, 1, -100, 2, 3])
    w = torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=D) if weighted else None
    out = F.cross_entropy(x, t, weight=w, reduction=reduction)
    ref = _nll_ref(R.log_softmax(npy(x), 1), npy(t), None if w is None else npy(w),
                   reduction=reduction)
    assert np.allclose(npy(out), ref)
    assert gradcheck(lambda x: F.cross_entropy(x, t, weight=w, reduction=reduction), (x,))
    mod = nn.CrossEntropyLoss(weight=w, reduction=reduction)
    assert np.allclose(npy(mod(x, t)), ref)
    assert np.allclose(npy(F.nll_loss(F.log_softmax(x, 1), t, weight=w, reduction=reduction)),
                       ref)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_label_smoothing(reduction, weighted):
    x = rnd(5, 3, seed=2)
    t = torch.tensor([0, 2, 1, 7, 2])
    ls = 0.2
    w = torch.tensor([0.3, 1.0, 2.0], dtype=D) if weighted else None
    out = F.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=ls,
                          ignore_index=7)
    logp = R.log_softmax(npy(x), 1)
    wn = np.ones(3) if w is None else npy(w)
    nll = _nll_ref(logp, npy(t), wn, ignore=7, reduction=reduction)
    keep = npy(t) != 7
    smooth = -(logp * wn).sum(1) * keep
    if reduction == "mean":
        sm = smooth.sum() / (wn[np.where(keep, npy(t), 0)] * keep).sum()
    else:
        sm = _red(smooth, reduction)
    ref = (1 - ls) * nll + ls / 3 * sm
    assert np.allclose(npy(out), ref)
    assert gradcheck(lambda x: F.cross_entropy(x, t, weight=w, reduction=reduction,
                                               label_smoothing=ls, ignore_index=7), (x,))


def test_cross_entropy_probabilities_and_spatial():
    x = rnd(4, 3, seed=3)
    p = torch.tensor(R.softmax(np.random.default_rng(9).standard_normal((4, 3)), 1), dtype=D)
    logp = R.log_softmax(npy(x), 1)
    assert np.allclose(npy(F.cross_entropy(x, p)), -(npy(p) * logp).sum() / 4)
    assert np.allclose(npy(F.cross_entropy(x, p, reduction="none")), -(npy(p) * logp).sum(1))
    sm = npy(p) * 0.9 + 0.1 / 3
    assert np.allclose(npy(F.cross_entropy(x, p, label_smoothing=0.1)), -(sm * logp).sum() / 4)
    w = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    assert np.allclose(npy(F.cross_entropy(x, p, weight=w, reduction="sum")),
                       -(npy(p) * logp * npy(w)).sum())
    assert gradcheck(lambda x: F.cross_entropy(x, p, label_smoothing=0.1), (x,))
    # (N, C, d) logits with (N, d) targets
    xs = rnd(2, 3, 4, seed=4)
    ts = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]])
    flat = npy(xs).transpose(0, 2, 1).reshape(-1, 3)
    ref = _nll_ref(R.log_softmax(flat, 1), npy(ts).ravel())
    assert np.allclose(npy(F.cross_entropy(xs, ts)), ref)
    # a single unbatched sample
    assert np.allclose(npy(F.cross_entropy(x[0], torch.tensor(1))),
                       -R.log_softmax(npy(x)[0], 0)[1])


def test_cross_entropy_bad_input():
    with pytest.raises(IndexError, match="Target 5 is out of bounds"):
        F.cross_entropy(torch.randn(3, 4), torch.tensor([0, 5, 1]))
    with pytest.raises(IndexError, match="Target -2 is out of bounds"):
        nn.NLLLoss()(torch.randn(3, 4), torch.tensor([0, -2, 1]))
    with pytest.raises(ValueError, match="batch_size"):
        F.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 1]), reduction="avg")
    # all targets ignored: mean is nan, like torch
    r = F.cross_entropy(torch.randn(2, 3), torch.tensor([-100, -100]))
    assert np.isnan(r.item())


def test_bce_clamps_log():
    x = torch.tensor([0.0, 1.0, 0.3, 0.9], dtype=D, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=D)
    out = F.binary_cross_entropy(x, y, reduction="none")
    with np.errstate(divide="ignore"):
        ref = -(npy(y) * np.maximum(np.log(npy(x)), -100)
                + (1 - npy(y)) * np.maximum(np.log(1 - npy(x)), -100))
    assert np.allclose(npy(out), ref) and npy(out)[0] == 100.0
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D)
    assert np.allclose(npy(nn.BCELoss(weight=w)(x, y)), (ref * npy(w)).mean())
    xi = torch.tensor([0.2, 0.7, 0.5], dtype=D, requires_grad=True)
    assert gradcheck(lambda x: F.binary_cross_entropy(x, torch.tensor([1.0, 0.0, 1.0],
                                                                       dtype=D)), (xi,))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(torch.tensor([1.5]), torch.tensor([1.0]))


def test_bce_with_logits_stable_and_pos_weight():
    x = torch.tensor([[-200.0, 0.5], [3.0, 200.0]], dtype=D, requires_grad=True)
    y = torch.tensor([[1.0, 0.0], [0.5, 0.0]], dtype=D)
    out = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    a = npy(x)
    ref = (1 - npy(y)) * a + np.logaddexp(0, -a)
    assert np.all(np.isfinite(npy(out))) and np.allclose(npy(out), ref)
    assert np.isclose(npy(out)[0, 0], 200.0) and np.isclose(npy(out)[1, 1], 200.0)
    pw = torch.tensor([2.0, 0.5], dtype=D)
    out2 = nn.BCEWithLogitsLoss(pos_weight=pw)(x, y)
    lw = 1 + (npy(pw) - 1) * npy(y)
    ref2 = ((1 - npy(y)) * a + lw * np.logaddexp(0, -a)).mean()
    assert np.allclose(npy(out2), ref2)
    xs = rnd(2, 3)
    ys = torch.tensor(np.random.default_rng(1).random((2, 3)), dtype=D)
    assert gradcheck(lambda x: F.binary_cross_entropy_with_logits(x, ys, pos_weight=pw[:1]),
                     (xs,))
    # matches BCE on sigmoid in the normal range
    s = torch.tensor([0.3, -1.2], dtype=D)
    t = torch.tensor([1.0, 0.0], dtype=D)
    assert np.isclose(F.binary_cross_entropy_with_logits(s, t).item(),
                      F.binary_cross_entropy(s.sigmoid(), t).item())


def test_kl_div_huber():
    inp = torch.tensor(R.log_softmax(np.random.default_rng(0).standard_normal((3, 4)), 1),
                       dtype=D)
    tgt = torch.tensor(R.softmax(np.random.default_rng(1).standard_normal((3, 4)), 1), dtype=D)
    ref = (npy(tgt) * (np.log(npy(tgt)) - npy(inp)))
    assert np.isclose(F.kl_div(inp, tgt, reduction="batchmean").item(), ref.sum() / 3)
    assert np.isclose(F.kl_div(inp, tgt.log(), reduction="sum", log_target=True).item(),
                      ref.sum())
    x, y = rnd(5), rnd(5, seed=1, grad=False)
    d = np.abs(npy(x) - npy(y))
    hub = np.where(d < 0.7, 0.5 * d * d, 0.7 * (d - 0.35))
    assert np.isclose(nn.HuberLoss(delta=0.7)(x, y).item(), hub.mean())
