"""Layers under gcompile.compile: traced with registry ops only, compiled == eager."""
import warnings

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F

pytestmark = pytest.mark.skipif(not hasattr(torch, "compile"), reason="compile() not built")


def _cases():
    torch.manual_seed(0)
    return {
        "mlp": (nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3),
                              nn.LogSoftmax(-1)), (torch.randn(5, 6),)),
        "cnn": (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(),
                              nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, groups=2), nn.AvgPool2d(2),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                (torch.randn(2, 3, 10, 10),)),
        "conv1d": (nn.Sequential(nn.Conv1d(2, 3, 3, stride=2), nn.ELU(), nn.Softplus()),
                   (torch.randn(2, 2, 9),)),
        "lstm": (nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True),
                 (torch.randn(2, 5, 3),)),
        "gru": (nn.GRU(3, 4), (torch.randn(5, 2, 3),)),
        "rnn": (nn.RNN(3, 4, nonlinearity="relu"), (torch.randn(5, 2, 3),)),
        "embedding": (nn.Sequential(nn.Embedding(10, 4, padding_idx=0), nn.SiLU()),
                      (torch.tensor([[1, 0, 9], [3, 3, 2]]),)),
        "mha": (nn.MultiheadAttention(8, 2, batch_first=True),
                (torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8))),
    }


def _flat(out):
    if isinstance(out, (tuple, list)):
        res = []
        for o in out:
            res += _flat(o)
        return res
    return [] if out is None else [out.detach().numpy()]


@pytest.mark.parametrize("name", list(_cases()))
def test_compiled_forward_matches_eager(name):
    model, args = _cases()[name]
    model.eval()
    compiled = torch.compile(model, fullgraph=True)
    for _ in range(2):
        want = _flat(model(*args))
        got = _flat(compiled(*args))
        assert len(want) == len(got)
        for a, b in zip(want, got):
            assert np.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_compiled_losses_and_functional():
    x = torch.randn(6, 4)
    t = torch.tensor([0, 3, 1, 2, 2, 1])
    p = torch.rand(6, 4)

    def f(x, t, p):
        return (F.cross_entropy(x, t, label_smoothing=0.1) + F.mse_loss(x, p)
                + F.binary_cross_entropy_with_logits(x, p) + F.l1_loss(x, p)
                + F.nll_loss(F.log_softmax(x, 1), t, reduction="sum")
                + F.pad(x, (1, 1), mode="reflect").sum() * 0.01)

    cf = torch.compile(f, fullgraph=True)
    assert np.allclose(cf(x, t, p).item(), f(x, t, p).item(), rtol=1e-5)


def test_compiled_training_step_gradients_and_bn_stats():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 2))
    twin = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 2))
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(4, 2, 6, 6), torch.tensor([0, 1, 1, 0])

    def loss_fn(inp, target):
        return F.cross_entropy(model(inp), target)

    compiled = torch.compile(loss_fn)
    for _ in range(2):
        model.zero_grad()
        twin.zero_grad()
        compiled(x, y).backward()
        F.cross_entropy(twin(x), y).backward()
    for (n, a), b in zip(model.named_parameters(), twin.parameters()):
        assert np.allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5), n
    assert np.allclose(model[1].running_mean.numpy(), twin[1].running_mean.numpy(), atol=1e-6)
    assert np.allclose(model[1].running_var.numpy(), twin[1].running_var.numpy(), atol=1e-6)


def test_dropout_in_training_is_not_frozen_by_compile():
    drop = nn.Dropout(0.5)
    compiled = torch.compile(drop)
    x = torch.ones(200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = compiled(x), compiled(x)
    assert not np.array_equal(a.numpy(), b.numpy())
    drop.eval()
    assert np.array_equal(compiled(x).numpy(), x.numpy())


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_compiled_recurrent_training_gradients(kind):
    torch.manual_seed(2)
    rnn = getattr(nn, kind)(3, 4, batch_first=True)
    head = nn.Linear(4, 2)
    x, y = torch.randn(2, 5, 3), torch.tensor([1, 0])

    def loss_fn(inp, target):
        out, _ = rnn(inp)
        return F.cross_entropy(head(out[:, -1]), target)

    compiled = torch.compile(loss_fn)
    compiled(x, y).backward()
    got = [p.grad.numpy().copy() for p in list(rnn.parameters()) + list(head.parameters())]
    rnn.zero_grad()
    head.zero_grad()
    loss_fn(x, y).backward()
    want = [p.grad.numpy() for p in list(rnn.parameters()) + list(head.parameters())]
    for a, b in zip(got, want):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6)
