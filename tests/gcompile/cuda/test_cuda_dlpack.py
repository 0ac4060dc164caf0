"""DLPack for CUDA tensors (``gcompile._dlpack``): export as a ``dltensor`` capsule with
the CUDA device type, import of such capsules and producers without copying, and the
deleter protocol (nothing leaks, nothing is freed early). Under the simulator device
memory is host memory, so sharing is checked by writing through one side."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import gcompile as torch
from gcompile import _dlpack


def _settle():
    gc.collect()
    return _dlpack.exported()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64,
                                   torch.int32, torch.int8, torch.uint8, torch.bool])
def test_round_trip_shares_memory(dtype):
    base = _settle()
    x = torch.arange(12).reshape(3, 4).to(dtype).cuda()
    assert x.__dlpack_device__() == (2, 0)
    y = torch.from_dlpack(x.__dlpack__())
    assert y.is_cuda and y.device == "cuda:0" and y.dtype == dtype and y.shape == (3, 4)
    assert y.stride() == x.stride()
    np.testing.assert_array_equal(y.cpu().numpy(), x.cpu().numpy())
    assert y.data_ptr() == x.data_ptr()
    if dtype != torch.bool:
        x[1, 2] = 7
        assert y[1, 2].item() == 7
    assert _dlpack.exported() == base + 1  # the consumer holds it
    del x, y
    assert _settle() == base  # the consumer's last view went: the deleter ran


def test_strided_views_and_producers():
    base = _settle()
    x = torch.arange(24.0).reshape(2, 3, 4).cuda()
    v = x.permute(2, 0, 1)[:, 1:]
    y = torch.from_dlpack(v)  # a producer: __dlpack_device__ then __dlpack__(stream=...)
    assert y.stride() == v.stride() and y.shape == v.shape
    np.testing.assert_array_equal(y.cpu().numpy(), v.cpu().numpy())
    assert torch.from_dlpack(x) is not x and torch.from_dlpack(x).data_ptr() == x.data_ptr()
    y.add_(1)  # ops on the imported tensor run on the device and write the shared memory
    np.testing.assert_array_equal(v.cpu().numpy(), x.permute(2, 0, 1)[:, 1:].cpu().numpy())
    assert x[1, 0, 0].item() == 13.0
    z = torch.empty(0, 3, device="cuda")
    assert torch.from_dlpack(z.__dlpack__()).shape == (0, 3)
    del y, v, z
    assert _settle() == base


def test_an_unconsumed_capsule_releases_on_garbage():
    base = _settle()
    x = torch.ones(5, device="cuda")
    cap = x.__dlpack__()
    assert _dlpack.exported() == base + 1
    del cap
    assert _settle() == base
    cap = x.__dlpack__()
    torch.from_dlpack(cap)
    with pytest.raises(BufferError, match="already consumed"):
        torch.from_dlpack(cap)  # a capsule is consumed once


def test_export_rules():
    w = torch.ones(3, device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match="require gradient"):
        w.__dlpack__()
    assert torch.from_dlpack(w.detach().__dlpack__(stream=-1)).is_cuda
    with pytest.raises((RuntimeError, BufferError, TypeError)):
        np.from_dlpack(torch.ones(2, device="cuda"))  # NumPy cannot read device memory
