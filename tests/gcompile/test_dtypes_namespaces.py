"""dtypes and namespaces group of issue 13: legacy typed constructors, torch.amp autocast
(float16 on the CPU) and GradScaler."""
from __future__ import annotations

import math

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn


def test_legacy_constructors():
    a = torch.FloatTensor(2, 3)
    assert a.shape == (2, 3) and a.dtype == torch.float32
    b = torch.LongTensor([1, 2, 3])
    assert b.dtype == torch.int64 and b.tolist() == [1, 2, 3]
    assert torch.DoubleTensor([[1.5]]).dtype == torch.float64
    assert torch.BoolTensor([True, False]).tolist() == [True, False]
    assert torch.ByteTensor(4).dtype == torch.uint8 and torch.IntTensor([1]).dtype == torch.int32
    assert torch.FloatTensor(torch.Size([3])).shape == (3,)
    assert torch.FloatTensor().shape == (0,)
    assert torch.HalfTensor(torch.tensor([1, 2])).dtype == torch.float16
    assert isinstance(b, torch.LongTensor) and not isinstance(b, torch.FloatTensor)
    assert isinstance(b, torch.Tensor)
    assert torch.tensor([1.7]).type(torch.LongTensor).tolist() == [1]
    with pytest.raises(TypeError):
        torch.FloatTensor([1.0], [2.0])


def test_autocast_runs_matrix_products_in_float16():
    lin = nn.Linear(4, 3)
    conv = nn.Conv2d(2, 2, 3)
    deconv = nn.ConvTranspose2d(2, 2, 3)
    x = torch.randn(2, 4)
    img = torch.randn(1, 2, 5, 5)
    with torch.autocast("cpu", dtype=torch.float16):
        y = lin(x)
        assert y.dtype == torch.float16
        assert (x @ x.T).dtype == torch.float16 and torch.mm(x, x.T).dtype == torch.float16
        assert conv(img).dtype == torch.float16 and deconv(img).dtype == torch.float16
        assert (x + 1).dtype == torch.float32 and x.sum().dtype == torch.float32
        with torch.autocast("cpu", enabled=False):
            assert lin(x).dtype == torch.float32
        assert lin(x).dtype == torch.float16
    np.testing.assert_allclose(y.float().detach().numpy(), lin(x).detach().numpy(), rtol=1e-2,
                               atol=1e-2)
    assert lin(x).dtype == torch.float32
    y.float().sum().backward()
    assert lin.weight.grad.dtype == torch.float32

    @torch.amp.autocast("cpu", dtype=torch.float16)
    def f(t):
        return t @ t.T
    assert f(x).dtype == torch.float16


def test_autocast_errors_and_cuda_disabled(monkeypatch):
    # the suite may run on the CUDA simulator (tests/conftest.py): make CUDA absent
    monkeypatch.setattr(torch.cuda, "_probe", lambda: (False, "No CUDA GPUs are available"))
    assert torch.autocast("cpu").fast_dtype is torch.bfloat16  # torch's CPU default
    with pytest.warns(UserWarning, match="target dtype is not supported"):
        torch.autocast("cpu", dtype=torch.float64)
    with pytest.raises(RuntimeError, match="unsupported autocast device_type"):
        torch.autocast("tpu", dtype=torch.float16)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        ac = torch.autocast("cuda")
    with ac:
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.float32
    assert torch.amp.is_autocast_available("cpu")


def test_grad_scaler_scales_unscales_skips_and_updates(monkeypatch):
    monkeypatch.setattr(torch.cuda, "_probe", lambda: (False, "No CUDA GPUs are available"))
    p = nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=2)
    loss = (p * p).sum()
    scaled = scaler.scale(loss)
    assert scaled.item() == pytest.approx(8.0 * loss.item())
    scaled.backward()
    assert p.grad.tolist() == [16.0, 32.0]
    scaler.step(opt)
    assert p.grad.tolist() == [2.0, 4.0]
    np.testing.assert_allclose(p.detach().numpy(), [0.8, 1.6], rtol=1e-6)
    scaler.update()
    assert scaler.get_scale() == 8.0
    for _ in range(1):
        opt.zero_grad()
        scaler.scale((p * p).sum()).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 16.0  # two clean steps: grown
    before = p.detach().clone()
    opt.zero_grad()
    scaler.scale((p * math.inf).sum()).backward()
    scaler.step(opt)
    np.testing.assert_array_equal(p.detach().numpy(), before.numpy())  # skipped
    scaler.update()
    assert scaler.get_scale() == 8.0  # backed off
    sd = scaler.state_dict()
    other = torch.amp.GradScaler("cpu")
    other.load_state_dict(sd)
    assert other.get_scale() == 8.0
    with pytest.raises(RuntimeError, match="already been called"):
        opt.zero_grad()
        scaler.scale((p * p).sum()).backward()
        scaler.unscale_(opt)
        scaler.unscale_(opt)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        off = torch.amp.GradScaler("cuda")
    assert not off.is_enabled() and off.scale(loss) is loss
