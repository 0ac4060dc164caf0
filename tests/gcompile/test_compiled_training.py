"""Compiled modules in training mode: compiled forward + backward == eager."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 4))


class _Recurrent(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(5, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def _cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 3 * 3, 3))


@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam"])
@pytest.mark.parametrize("kind", ["cnn", "lstm", "gru"])
def test_compiled_cnn_and_rnn_train_like_eager(kind, opt_name):
    torch.manual_seed(0)
    eager = _cnn() if kind == "cnn" else _Recurrent(kind)
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 16, 16, generator=g) if kind == "cnn" else \
        torch.randn(4, 7, 5, generator=g)
    y = torch.randint(0, 3, (4,), generator=g)
    crit = nn.CrossEntropyLoss()
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) if opt_name == "adam" else
            torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (eager, twin)]
    for _ in range(20):
        for model, opt in zip((eager, compiled), opts):
            opt.zero_grad()
            crit(model(x), y).backward()
            opt.step()
    _assert_params_close(eager, twin)
    assert compiled.num_traces == 1
    assert type(compiled.entries[0]).__name__ == "TrainingEntry"
    if kind != "cnn":  # the scan's packed gradient holds only the blocks its backward reads
        blocks = [n.attrs["shape"][0] for ex in compiled.entries[0].executables()
                  for st in ex.plan.steps for n in st.nodes if n.op == "select_block_backward"]
        assert blocks and set(blocks) == {2 if kind == "lstm" else 1}


def _assert_params_close(m1, m2, rtol=1e-4, atol=1e-6):
    for (n, p), (_, q) in zip(m1.named_parameters(), m2.named_parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=n)


@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam"])
def test_compiled_module_trains_like_eager(opt_name):
    eager = _mlp()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 12, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    crit = nn.CrossEntropyLoss()

    def make(params):
        if opt_name == "adam":
            return torch.optim.Adam(params, lr=1e-2)
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)

    opts = [make(eager.parameters()), make(twin.parameters())]
    for _ in range(20):
        for model, opt in zip((eager, compiled), opts):
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
    _assert_params_close(eager, twin)
    assert compiled.num_traces == 1
    assert type(compiled.entries[0]).__name__ == "TrainingEntry"


def test_backward_is_one_tape_node_and_input_grads_flow():
    model = _mlp()
    compiled = torch.compile(model)
    x = torch.randn(8, 12, requires_grad=True)
    out = compiled(x)
    out.sum().backward()  # first call: traced eagerly
    gx_first = x.grad.clone()
    x.grad = None
    model.zero_grad()
    out = compiled(x)
    assert out.grad_fn.name() == "CompiledFunctionBackward"
    (out * out).sum().backward()
    xe = x.detach().clone().requires_grad_()
    ref = model(xe)
    (ref * ref).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xe.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert gx_first.shape == x.shape


def test_shared_and_frozen_parameters():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(6, 6)
            self.frozen = nn.Linear(6, 6)
            self.frozen.requires_grad_(False)

        def forward(self, x):
            return self.shared(torch.relu(self.frozen(self.shared(x))))

    torch.manual_seed(3)
    net = Net()
    twin = copy.deepcopy(net)
    compiled = torch.compile(twin)
    x = torch.randn(5, 6)
    for _ in range(2):  # second call runs the compiled plans
        twin.zero_grad()
        compiled(x).pow(2).mean().backward()
    net(x).pow(2).mean().backward()
    np.testing.assert_allclose(twin.shared.weight.grad.numpy(), net.shared.weight.grad.numpy(),
                               rtol=1e-4, atol=1e-6)
    assert twin.frozen.weight.grad is None


def test_no_grad_inference_saves_nothing():
    model = _mlp()
    compiled = torch.compile(model)
    x = torch.randn(4, 12)
    compiled(x).sum().backward()
    compiled(x)
    with torch.no_grad():
        y = compiled(x)
        y2 = compiled(x)
    assert not y2.requires_grad and y2.grad_fn is None
    np.testing.assert_allclose(y.numpy(), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    kinds = sorted(e.kind for e in compiled.entries)
    assert kinds == ["inference", "training"]


def test_second_backward_needs_retain_graph():
    model = _mlp()
    compiled = torch.compile(model)
    x = torch.randn(4, 12)
    compiled(x)  # trace
    loss = compiled(x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_recomputation_is_reported_and_saves_memory():
    def f(x, w):
        h = torch.sin(x @ w)
        return (torch.exp(h) * torch.tanh(h) + h).sum()

    compiled = torch.compile(f)
    x = torch.randn(16, 32, dtype=torch.float64)
    w = torch.randn(32, 32, dtype=torch.float64, requires_grad=True)
    compiled(x, w)
    loss = compiled(x, w)
    loss.backward()
    entry = compiled.entries[0]
    assert entry.saved_bytes < entry.saved_bytes_no_recompute
    we = w.detach().clone().requires_grad_()
    f(x, we).backward()
    np.testing.assert_allclose(w.grad.numpy(), we.grad.numpy(), rtol=1e-10)


def test_double_backward_through_compiled_function_is_refused():
    model = _mlp()
    compiled = torch.compile(model)
    x = torch.randn(3, 12, requires_grad=True)
    compiled(x)
    out = compiled(x).sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out, x, create_graph=True)


def test_explain_reports_saved_bytes_with_and_without_recomputation():
    w = torch.randn(32, 32, requires_grad=True)

    def f(x):
        h = torch.sin(x @ w)
        return (torch.exp(h) * torch.tanh(h) + h).sum()

    e = torch.explain(f, torch.randn(16, 32), train=True)
    assert e.backward_plan is not None
    assert 0 < e.saved_bytes < e.saved_bytes_no_recompute
    assert e.recomputed
    text = str(e)
    assert "forward saves" in text and "backward plan" in text
