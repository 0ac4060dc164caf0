"""autocast per device type, as torch: autocast("cuda") casts matrix products over CUDA
tensors (float16 by default) and leaves CPU ops alone; autocast("cpu") the reverse."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F

if not torch.cuda.is_available():
    pytest.skip(f"CUDA unavailable: {torch.cuda.unavailable_reason()}", allow_module_level=True)


def test_cuda_autocast_casts_cuda_ops_only():
    a = torch.randn(4, 8)
    w = torch.randn(3, 8)
    ac, wc = a.cuda(), w.cuda()
    with torch.autocast("cuda"):
        assert torch.is_autocast_enabled("cuda") and not torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cuda") == torch.float16
        y = F.linear(ac, wc)
        z = ac @ wc.T
        cpu = a @ w.T
        loss = F.mse_loss(y, torch.zeros(4, 3, device="cuda", dtype=torch.float16))
    assert y.dtype == z.dtype == torch.float16 and y.is_cuda
    assert cpu.dtype == torch.float32
    assert loss.dtype == torch.float32  # on the float32 list
    np.testing.assert_allclose(y.float().cpu().numpy(), (a @ w.T).numpy(), rtol=2e-3,
                               atol=2e-3)
    assert not torch.is_autocast_enabled("cuda")


def test_cpu_autocast_leaves_cuda_ops_alone():
    ac = torch.randn(4, 8, device="cuda")
    with torch.autocast("cpu"):
        assert (ac @ ac.T).dtype == torch.float32
        assert (ac.cpu() @ ac.cpu().T).dtype == torch.bfloat16


def test_cuda_amp_spellings_and_grad_scaler():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 2).cuda()
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    scaler = torch.cuda.amp.GradScaler()
    x = torch.randn(5, 8, device="cuda")
    with torch.cuda.amp.autocast():
        out = lin(x)
        assert out.dtype == torch.float16
        loss = out.float().pow(2).mean()
    before = lin.weight.detach().cpu().numpy().copy()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert lin.weight.grad is not None and lin.weight.grad.is_cuda
    assert not np.allclose(before, lin.weight.detach().cpu().numpy())


def test_unsupported_cuda_autocast_dtype_warns_and_disables():
    with pytest.warns(UserWarning, match="CUDA Autocast only supports"):
        ac = torch.autocast("cuda", dtype=torch.float64)
    with ac:
        assert not torch.is_autocast_enabled("cuda")
