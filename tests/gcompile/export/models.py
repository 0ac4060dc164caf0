"""Small models shared by the export and ONNX tests (eval mode, seeded)."""
from __future__ import annotations

import gcompile as torch
import gcompile.nn.functional as F
from gcompile import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(),
                                 nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(8, 8, 3, stride=1, padding=1)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.c1(x))))
        x = self.avg(F.relu(self.c2(x)))
        return self.fc(x.reshape(x.shape[0], -1))


class LSTMNet(nn.Module):
    def __init__(self, cell: str = "lstm") -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(6, 10, batch_first=True)
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class AttentionBlock(nn.Module):
    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.heads = heads

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q = q.reshape(b, t, h, d // h).transpose(1, 2)
        k = k.reshape(b, t, h, d // h).transpose(1, 2)
        v = v.reshape(b, t, h, d // h).transpose(1, 2)
        att = F.softmax(q @ k.transpose(-2, -1) / (d // h) ** 0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.ff(self.ln2(x))


def make(name: str):
    """(model in eval mode, example input) for one of the test models."""
    torch.manual_seed(0)
    if name == "mlp":
        return MLP().eval(), torch.randn(5, 12)
    if name == "cnn":
        m = CNN()
        with torch.no_grad():  # non-trivial running statistics
            m.bn.running_mean.copy_(torch.randn(8) * 0.1)
            m.bn.running_var.copy_(torch.rand(8) + 0.5)
        return m.eval(), torch.randn(2, 3, 8, 8)
    if name in ("lstm", "gru"):
        return LSTMNet(name).eval(), torch.randn(3, 7, 6)
    if name == "attention":
        return AttentionBlock().eval(), torch.randn(2, 5, 16)
    raise KeyError(name)


NAMES = ("mlp", "cnn", "lstm", "gru", "attention")
