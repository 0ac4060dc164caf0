"""Tensors on a device other than the current one (``cuda:N``), as torch allows: each
op runs with its operands' device current (a device guard), allocations are pooled and
counted per device, and compiled plans follow their inputs' device. The simulator has
one device; these tests make it report two (device 1 is then host memory too, but the
pools, statistics, guards and device checks are gcompile's own and fully exercised)."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn
from kernels.cuda import memory


@pytest.fixture
def two_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    yield
    memory.select(0)


def test_creation_and_ops_on_a_non_current_device(two_devices):
    gc.collect()
    base0, base1 = torch.cuda.memory_allocated(0), torch.cuda.memory_allocated(1)
    x = torch.arange(6.0, device="cuda:1").reshape(2, 3)
    assert x.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
    assert torch.cuda.memory_allocated(1) == base1 + 512
    assert torch.cuda.memory_allocated(0) == base0
    y = (x * 2 + 1).sum(1)  # kernels run with cuda:1 current, outputs allocated there
    assert y.device == "cuda:1" and torch.cuda.current_device() == 0
    assert torch.cuda.memory_allocated(0) == base0
    np.testing.assert_array_equal(y.cpu().numpy(), [9.0, 27.0])
    z = torch.zeros_like(x)
    assert z.device == "cuda:1"
    del x, y, z
    gc.collect()
    assert torch.cuda.memory_allocated(1) == base1
    assert torch.cuda.memory_reserved(1) >= 512  # cached for device 1, not device 0's pool


def test_mixing_devices_raises_torchs_message(two_devices):
    a = torch.ones(3, device="cuda:0")
    b = torch.ones(3, device="cuda:1")
    with pytest.raises(RuntimeError, match="found at least two devices, cuda:0 and cuda:1"):
        a + b
    with pytest.raises(RuntimeError, match="found at least two devices"):
        a += b
    np.testing.assert_array_equal((a + b.to("cuda:0")).cpu().numpy(), [2.0, 2.0, 2.0])
    moved = b.to(a.device)
    assert moved.device == "cuda:0" and b.device == "cuda:1"
    c = a.clone()
    c.copy_(b)  # copy_ across devices goes through the host, as torch copies peer to peer
    assert c.device == "cuda:0"
    np.testing.assert_array_equal(c.cpu().numpy(), [1.0, 1.0, 1.0])


def test_current_device_and_the_device_context(two_devices):
    with torch.cuda.device(1):
        assert torch.cuda.current_device() == 1
        t = torch.ones(2, device="cuda")
        assert t.device == "cuda:1"
    assert torch.cuda.current_device() == 0
    torch.cuda.set_device("cuda:1")
    assert torch.cuda.current_device() == 1 and torch.zeros(1, device="cuda").device == "cuda:1"
    torch.cuda.set_device(0)
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.ones(1, device="cuda:2")
    torch.cuda.reset_peak_memory_stats("cuda:1")
    assert torch.cuda.max_memory_allocated(1) == torch.cuda.memory_allocated(1)


def test_training_on_a_non_current_device_matches_the_cpu(two_devices):
    torch.manual_seed(0)
    cpu = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    dev = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    dev.load_state_dict(cpu.state_dict())
    dev.to("cuda:1")
    assert all(p.device == "cuda:1" for p in dev.parameters())
    x, y = torch.randn(3, 4), torch.randn(3, 2)
    for model, xs, ys in [(cpu, x, y), (dev, x.to("cuda:1"), y.to("cuda:1"))]:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(xs), ys).backward()
            opt.step()
    assert torch.cuda.current_device() == 0
    for p, q in zip(cpu.parameters(), dev.parameters()):
        assert q.device == "cuda:1" and q.grad.device == "cuda:1"
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_a_compiled_function_runs_on_its_inputs_device(two_devices):
    def f(a, b):
        return (a * b + a).relu().sum(0)

    fast = torch.compile(f)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    want = f(a, b).numpy()
    for d in ("cuda:1", "cuda:0", "cuda:1"):
        out = fast(a.to(d), b.to(d))
        assert out.device == d and torch.cuda.current_device() == 0
        np.testing.assert_allclose(out.cpu().numpy(), want, rtol=1e-6)
    with pytest.raises(RuntimeError, match="found at least two devices"):
        fast(a.to("cuda:0"), b.to("cuda:1"))
