"""A small CNN and an LSTM classifier learn synthetic tasks (above chance, seconds)."""
import numpy as np

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F


def _adam(params, state, lr=0.01, b1=0.9, b2=0.999, eps=1e-8):
    """A minimal Adam so these tests depend only on nn and autograd."""
    state["t"] = state.get("t", 0) + 1
    t = state["t"]
    with torch.no_grad():
        for i, p in enumerate(params):
            if p.grad is None:
                continue
            g = p.grad.numpy()
            m, v = state.setdefault(("m", i), np.zeros_like(g)), state.setdefault(
                ("v", i), np.zeros_like(g))
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            step = lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
            p.sub_(torch.from_numpy(step.astype(g.dtype)))


def _bars(n, rng):
    """8x8 images with a horizontal (class 0) or vertical (class 1) bar, plus noise."""
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, n)
    pos = rng.integers(1, 7, n)
    for i in range(n):
        if y[i] == 0:
            x[i, 0, pos[i], :] += 1.0
        else:
            x[i, 0, :, pos[i]] += 1.0
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def test_small_cnn_learns_bars():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.1), nn.Linear(8, 2))
    params = list(model.parameters())
    state = {}
    for _ in range(60):
        x, y = _bars(32, rng)
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        _adam(params, state, lr=0.02)
    model.eval()
    x, y = _bars(200, rng)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.8, acc


class SeqClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, tokens):
        out, (h, c) = self.lstm(self.emb(tokens))
        return self.head(h[-1])


def _sequences(n, rng):
    """Class 1 when token 3 occurs before token 4 in the sequence."""
    x = rng.integers(1, 3, (n, 10))
    y = rng.integers(0, 2, n)
    for i in range(n):
        a, b = sorted(rng.choice(10, 2, replace=False))
        x[i, a], x[i, b] = (3, 4) if y[i] else (4, 3)
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


def test_lstm_classifier_learns_order():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    model = SeqClassifier()
    params = list(model.parameters())
    state = {}
    for _ in range(120):
        x, y = _sequences(32, rng)
        loss = nn.CrossEntropyLoss()(model(x), y)
        model.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        _adam(params, state, lr=0.02)
    x, y = _sequences(300, rng)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.75, acc
