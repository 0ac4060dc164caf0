"""CUDA tensors in the eager core (issue 17 items 1, 2, 4, 5), on the CUDA simulator
without a GPU: device moves, creation on a device, device checks, the allocator's
statistics, autograd, in-place writes through views, modules and optimizers on CUDA
matching the CPU run."""
from __future__ import annotations

import copy
import functools
import gc
import pickle
import sys

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn

CUDA = "cuda"


def _np(t):
    return t.detach().cpu().numpy()


# ---- devices and moves ------------------------------------------------------------------
def test_moves_both_ways_keep_values_and_devices():
    x = torch.arange(12.0).reshape(3, 4)
    c = x.cuda()
    assert c.is_cuda and c.device == torch.device("cuda:0") and str(c.device) == "cuda:0"
    assert not x.is_cuda and x.device == "cpu"
    assert c.shape == (3, 4) and c.dtype == torch.float32 and c.stride() == (4, 1)
    back = c.cpu()
    assert not back.is_cuda
    np.testing.assert_array_equal(back.numpy(), x.numpy())
    assert c.to("cuda") is c and c.to("cuda:0") is c and c.cuda() is c
    assert x.to(c).is_cuda and c.to(x).device == "cpu"
    assert c.to("cpu", torch.float64).dtype == torch.float64
    d = c.to(torch.int32)
    assert d.is_cuda and d.dtype == torch.int32 and d.cpu().tolist() == x.int().tolist()
    # a transposed (strided) view moves with its values; a dense layout keeps its strides
    # both ways (torch's preserve_format), anything else arrives in C order
    np.testing.assert_array_equal(x.t().cuda().cpu().numpy(), x.t().numpy())
    np.testing.assert_array_equal(c.t().cpu().numpy(), x.t().numpy())
    y = torch.arange(24.0).reshape(2, 3, 4)
    for v, want in [(y.permute(2, 0, 1), (1, 12, 4)), (y.transpose(1, 2), (12, 1, 4)),
                    (y[:, :, :2], (6, 2, 1)), (y.permute(0, 2, 1)[:, :1], (3, 3, 1))]:
        moved = v.cuda()
        assert moved.stride() == want
        back = moved.cpu()
        assert back.stride() == moved.stride()
        np.testing.assert_array_equal(back.numpy(), v.numpy())


def test_views_are_device_views_with_torchs_strides():
    x = torch.arange(24.0).reshape(2, 3, 4)
    c = x.cuda()
    cases = [lambda t: t.permute(2, 0, 1), lambda t: t.transpose(0, 2), lambda t: t[1],
             lambda t: t[:, 1:, ::2], lambda t: t.view(6, 4), lambda t: t.reshape(4, 6),
             lambda t: t[0, :, :1].expand(3, 4), lambda t: t.unsqueeze(1),
             lambda t: t.narrow(2, 1, 2)]
    for f in cases:
        v, ref = f(c), f(x)
        assert v.is_cuda
        assert v.shape == ref.shape and v.stride() == ref.stride(), (v.stride(), ref.stride())
        assert v.storage_offset() == ref.storage_offset()
        assert v._base is c  # a view, not a copy
        np.testing.assert_array_equal(_np(v), ref.numpy())
    # gathers through CPU index tensors (torch allows them on CUDA tensors)
    np.testing.assert_array_equal(_np(c.diagonal(0, 1, 2)), x.diagonal(0, 1, 2).numpy())
    np.testing.assert_array_equal(_np(c[torch.tensor([1, 0])]), x[torch.tensor([1, 0])].numpy())
    # a reshape no strides can express copies (as on the CPU)
    r = c.permute(2, 0, 1).reshape(-1)
    assert r._base is None
    np.testing.assert_array_equal(_np(r), x.permute(2, 0, 1).reshape(-1).numpy())


def test_item_tolist_repr_copy_pickle():
    c = torch.tensor([[1.5, -2.0]], device="cuda")
    assert c[0, 1].item() == -2.0 and c.tolist() == [[1.5, -2.0]]
    assert repr(c) == "tensor([[ 1.5000, -2.0000]], device='cuda:0')"
    assert repr(torch.tensor([1, 2], device="cuda", dtype=torch.int32)) == \
        "tensor([1, 2], device='cuda:0', dtype=torch.int32)"
    assert float(c.sum()) == -0.5 and bool(c[0, 0] > 0)
    d = copy.deepcopy(c)
    assert d.is_cuda and d.tolist() == c.tolist()
    e = pickle.loads(pickle.dumps(c))
    assert e.is_cuda and e.tolist() == c.tolist()
    assert c.__cuda_array_interface__["shape"] == (1, 2)


def test_creation_ops_take_device():
    for t in [torch.tensor([1.0, 2.0], device="cuda"), torch.zeros(2, 3, device="cuda"),
              torch.ones(2, device="cuda:0"), torch.empty(4, device=torch.device("cuda")),
              torch.full((2,), 7, device="cuda"), torch.arange(5, device="cuda"),
              torch.rand(3, device="cuda"), torch.randn(2, 2, device="cuda"),
              torch.eye(3, device="cuda"), torch.linspace(0, 1, 4, device="cuda"),
              torch.randint(0, 5, (3,), device="cuda")]:
        assert t.is_cuda, t
    assert torch.zeros(2, 3, device="cuda").cpu().tolist() == [[0.0] * 3] * 2
    assert torch.full((2,), 7, device="cuda").tolist() == [7, 7]
    assert torch.arange(5, device="cuda").dtype == torch.int64
    torch.manual_seed(3)
    a = torch.randn(2, 3)
    torch.manual_seed(3)
    b = torch.randn(2, 3, device="cuda")  # drawn on the host: the same values
    np.testing.assert_array_equal(a.numpy(), _np(b))
    c = torch.ones(2, device="cuda")
    for t in [torch.zeros_like(c), torch.ones_like(c), torch.empty_like(c),
              torch.full_like(c, 2.0), torch.rand_like(c), torch.randn_like(c),
              c.new_zeros(3), c.new_ones(1), c.new_full((2,), 1.0), c.new_tensor([1.0])]:
        assert t.is_cuda, t
    assert not torch.zeros_like(c, device="cpu").is_cuda
    assert torch.tensor(c).is_cuda and not torch.tensor(c, device="cpu").is_cuda


# ---- device checks and errors -----------------------------------------------------------
def test_mixing_devices_raises_torchs_error():
    c = torch.ones(3, device="cuda")
    x = torch.ones(3)
    msg = ("Expected all tensors to be on the same device, but found at least two devices, "
           "cuda:0 and cpu!")
    for f in [lambda: c + x, lambda: x + c, lambda: torch.matmul(c, x), lambda: c.add_(x),
              lambda: x.add_(c), lambda: x.mul_(c[0]), lambda: torch.cat([c, x])]:
        with pytest.raises(RuntimeError, match=msg):
            f()
    # Python numbers and 0-d CPU tensors join CUDA operands, as in torch
    assert (c * 2).tolist() == [2.0] * 3
    out = c * torch.tensor(3.0)
    assert out.is_cuda and out.tolist() == [3.0] * 3


def test_numpy_of_a_cuda_tensor_raises():
    c = torch.ones(2, device="cuda")
    msg = (r"can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu\(\) to copy the "
           r"tensor to host memory first.")
    with pytest.raises(TypeError, match=msg):
        c.numpy()
    with pytest.raises(TypeError, match=msg):
        np.asarray(c)


def test_cuda_errors_say_why(monkeypatch):
    import numba
    probe = torch.cuda._probe.__wrapped__
    monkeypatch.setattr(torch.cuda, "_probe", functools.lru_cache(maxsize=1)(probe))
    monkeypatch.setitem(sys.modules, "numba.cuda", None)
    monkeypatch.delattr(numba, "cuda", raising=False)
    assert not torch.cuda.is_available() and torch.cuda.device_count() == 0
    with pytest.raises(RuntimeError, match="numba-cuda is not installed"):
        torch.ones(2).cuda()
    with pytest.raises(RuntimeError, match="numba-cuda is not installed"):
        torch.zeros(2, device="cuda")
    with pytest.raises(RuntimeError, match="numba-cuda is not installed"):
        nn.Linear(2, 2).cuda()
    monkeypatch.setattr(torch.cuda, "_probe", lambda: (False, "No CUDA GPUs are available"))
    with pytest.raises(RuntimeError, match="No CUDA GPUs are available"):
        torch.ones(2).to("cuda")


def test_invalid_device_ordinal():
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.ones(2, device=f"cuda:{torch.cuda.device_count()}")


# ---- gcompile.cuda ----------------------------------------------------------------------
def test_cuda_namespace():
    assert torch.cuda.is_available() and torch.cuda.device_count() >= 1
    assert torch.cuda.current_device() == 0
    torch.cuda.set_device(0)
    torch.cuda.set_device("cuda:0")
    assert isinstance(torch.cuda.get_device_name(), str)
    torch.cuda.synchronize()
    s = torch.cuda.current_stream()
    s.synchronize()
    with torch.cuda.Stream() as st:
        assert st.query()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    (torch.ones(4, device="cuda") * 2).sum().item()
    end.record()
    end.synchronize()
    assert start.elapsed_time(end) >= 0.0
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        torch.cuda.Event().elapsed_time(end)
    props = torch.cuda.get_device_properties(0)
    assert props.name == torch.cuda.get_device_name() and props.major >= 1
    free, total = torch.cuda.mem_get_info()
    assert 0 <= free <= total
    with torch.cuda.device(0):
        assert torch.cuda.current_device() == 0


def test_allocator_statistics():
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    a = torch.empty(1000, device="cuda")  # 4000 bytes: one 4096-byte block
    assert torch.cuda.memory_allocated() == base + 4096
    v = a[10:20]  # a view holds the block, adds nothing
    assert torch.cuda.memory_allocated() == base + 4096
    del a
    gc.collect()
    assert torch.cuda.memory_allocated() == base + 4096  # the view still holds it
    del v
    gc.collect()
    assert torch.cuda.memory_allocated() == base
    assert torch.cuda.max_memory_allocated() >= base + 4096
    assert torch.cuda.memory_reserved() >= base + 4096  # cached for reuse
    b = torch.empty(1000, device="cuda")  # the cached block again
    assert torch.cuda.memory_reserved() >= torch.cuda.memory_allocated() == base + 4096
    del b
    gc.collect()
    torch.cuda.empty_cache()
    assert torch.cuda.memory_reserved() == torch.cuda.memory_allocated() == base
    torch.cuda.reset_peak_memory_stats()
    assert torch.cuda.max_memory_allocated() == base


def test_strided_copy_kernel():
    """The device copy kernel (NumPy copies under the simulator unless asked) on permuted,
    broadcast and offset operands, with a cast."""
    from kernels.cuda import memory
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    src = memory.from_host(host)
    perm = memory.view(src, (4, 2, 3), (4, 48, 16), 0, np.float32)
    dst = memory.empty((4, 2, 3), np.float64)
    memory.copy(dst, perm, kernel=True)
    np.testing.assert_array_equal(memory.to_host(dst), host.transpose(2, 0, 1))
    row = memory.view(src, (3, 4), (0, 4), 4 * 12, np.float32)  # host[1, 0] broadcast
    out = memory.empty((3, 4), np.int32)
    memory.copy(out, row, kernel=True)
    np.testing.assert_array_equal(memory.to_host(out), np.broadcast_to(host[1, 0], (3, 4)))


# ---- ops and autograd -------------------------------------------------------------------
def _check_grads(f, *shapes, seed=0):
    """f on CPU and on CUDA inputs: values and every input gradient agree."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    outs = []
    for dev in ("cpu", "cuda"):
        xs = [torch.tensor(a, device=dev, requires_grad=True) for a in arrays]
        y = f(*xs)
        assert y.device == torch.device(dev)
        y.backward(torch.ones_like(y))
        for x in xs:
            assert x.grad.device == x.device
        outs.append((_np(y), [_np(x.grad) for x in xs]))
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-6)
    for g1, g0 in zip(outs[1][1], outs[0][1]):
        np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-6)


def test_autograd_elementwise_reductions_matmul():
    _check_grads(lambda a, b: (a * b + a.exp()).tanh() / (1 + b * b), (3, 4), (4,))
    _check_grads(lambda a: a.sum(1) + a.mean(0).sum() + a.amax(1), (3, 5))
    _check_grads(lambda a: a.softmax(-1) * a.var(1, keepdim=True), (2, 6))
    _check_grads(lambda a, b: a @ b, (3, 4), (4, 2))
    _check_grads(lambda a, b: (a.t() @ b).relu(), (4, 3), (4, 2))
    _check_grads(lambda a: a.cumsum(1)[:, 1:].pow(2), (2, 4))  # host fallback ops


def test_gradient_accumulates_on_device():
    a = torch.ones(3, device="cuda", requires_grad=True)
    (a * 2).sum().backward()
    (a * 3).sum().backward()
    assert a.grad.is_cuda and a.grad.tolist() == [5.0, 5.0, 5.0]


def test_inplace_writes_through_views():
    x = torch.arange(12.0).reshape(3, 4)
    c = x.cuda()
    for t in (x, c):
        t[1].add_(10)
        t[0, 1:3] = 5
        t.t()[0].fill_(-1)
        t[2].mul_(torch.tensor(2.0))
        t[:, 3:].copy_(torch.tensor([[7.0], [8.0], [9.0]]))
        t[torch.tensor([0, 2]), 2] = 0.5
    np.testing.assert_array_equal(_np(c), x.numpy())
    y = torch.zeros(2, 3, device="cuda")
    y.copy_(torch.ones(3))  # a CPU source into a CUDA tensor, broadcast
    assert y.tolist() == [[1.0] * 3] * 2


def test_inplace_on_views_differentiates():
    def f(a):
        b = a * 1
        b[1] = 0
        b.t()[0] *= 3
        return b

    _check_grads(f, (3, 4))


def test_fallback_is_logged_once(monkeypatch, capsys):
    from gcompile import _dispatch
    monkeypatch.setenv("GCOMPILE_LOG", "cuda_fallback")
    monkeypatch.setattr(_dispatch, "_FALLBACK_LOGGED", set())
    c = torch.arange(4.0, device="cuda")
    assert c.flip(0).tolist() == [3.0, 2.0, 1.0, 0.0]
    c.flip(0)
    err = capsys.readouterr().err
    assert err.count("[gcompile:cuda_fallback] flip: no CUDA kernel") == 1


# ---- modules and optimizers ---------------------------------------------------------------
def _train(device, make_opt, steps=2):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    m.to(device)
    opt = make_opt(m.parameters())
    torch.manual_seed(1)
    x = torch.randn(5, 4).to(device)
    y = torch.tensor([0, 1, 2, 1, 0]).to(device)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, m, opt


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: torch.optim.Adam(ps, lr=0.01),
], ids=["sgd_momentum", "adam"])
def test_mlp_train_steps_match_cpu(make_opt):
    l0, m0, _ = _train("cpu", make_opt)
    l1, m1, opt = _train("cuda", make_opt)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for p0, p1 in zip(m0.parameters(), m1.parameters()):
        assert p1.is_cuda and p1.grad.is_cuda
        np.testing.assert_allclose(_np(p1), _np(p0), rtol=1e-5, atol=1e-6)
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                assert v.is_cuda, k


def test_module_to_and_back():
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    m(torch.randn(4, 3)).sum().backward()
    ref = {k: v.clone() for k, v in m.state_dict().items()}
    m.cuda()
    for k, v in m.state_dict().items():
        assert v.is_cuda, k
    assert all(p.grad.is_cuda for p in m.parameters())
    out = m(torch.randn(4, 3, device="cuda"))
    assert out.is_cuda
    m.eval().cpu()
    for k, v in m.state_dict().items():
        assert not v.is_cuda, k
    np.testing.assert_array_equal(m[0].weight.detach().numpy(), ref["0.weight"].numpy())
    assert m.to(torch.ones(1, device="cuda"))[0].weight.is_cuda


def test_cnn_train_steps_match_cpu():
    def run(dev):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Dropout(0.0), nn.Linear(2 * 3 * 3, 3)).to(dev)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        torch.manual_seed(1)
        x = torch.randn(2, 1, 8, 8).to(dev)
        y = torch.tensor([0, 2]).to(dev)
        losses = []
        for _ in range(2):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, [_np(p) for p in m.parameters()]

    l0, p0 = run("cpu")
    l1, p1 = run("cuda")
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for a, b in zip(p1, p0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_mask_is_drawn_for_the_device():
    torch.manual_seed(0)
    a = nn.functional.dropout(torch.ones(8), 0.5, True)
    torch.manual_seed(0)
    b = nn.functional.dropout(torch.ones(8, device="cuda"), 0.5, True)
    assert b.is_cuda and b.tolist() == a.tolist()


def test_save_load_and_optimizer_state_follow_devices(tmp_path):
    m = nn.Linear(3, 2).cuda()
    torch.save(m.state_dict(), tmp_path / "m.pt")
    sd = torch.load(tmp_path / "m.pt")  # gcompile loads on the CPU
    m2 = nn.Linear(3, 2).cuda()
    m2.load_state_dict(sd)  # copied into the CUDA parameters
    assert m2.weight.is_cuda and m2.weight.tolist() == m.weight.tolist()
    opt = torch.optim.Adam(m.parameters())
    m(torch.ones(1, 3, device="cuda")).sum().backward()
    opt.step()
    host_state = {"state": {k: {n: (v.cpu() if isinstance(v, torch.Tensor) else v)
                                for n, v in st.items()}
                            for k, st in opt.state_dict()["state"].items()},
                  "param_groups": opt.state_dict()["param_groups"]}
    opt2 = torch.optim.Adam(m2.parameters())
    opt2.load_state_dict(host_state)  # state goes to its parameter's device, as torch
    st = opt2.state[m2.weight]
    assert st["exp_avg"].is_cuda and st["exp_avg_sq"].is_cuda and not st["step"].is_cuda
    m2(torch.ones(1, 3, device="cuda")).sum().backward()
    opt2.step()
    assert m2.weight.is_cuda


def test_tensors_made_from_nothing_in_a_cuda_backward_go_to_the_device(monkeypatch):
    from gcompile import _dispatch
    torch.ones(1, device="cuda")  # (dispatch looks at devices once a CUDA tensor exists)
    monkeypatch.setattr(_dispatch._BACKWARD_DEVICE, "device", torch.device("cuda:0"))
    t = _dispatch.apply_op("full", (), {"shape": (2,), "value": 3.0, "dtype": torch.float32})
    assert t.is_cuda and t.tolist() == [3.0, 3.0]
    monkeypatch.setattr(_dispatch._BACKWARD_DEVICE, "device", None)
    assert not _dispatch.apply_op("full", (), {"shape": (2,), "value": 3.0,
                                               "dtype": torch.float32}).is_cuda


def test_device_moves_differentiate():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = x.cuda()
    assert y.grad_fn.name() == "ToCopyBackward0"
    z = (y * y).cpu()
    assert not z.is_cuda
    z.sum().backward()
    assert not x.grad.is_cuda and x.grad.tolist() == [2.0, -4.0]


def test_accelerator_is_cuda():
    assert torch.accelerator.is_available()
    assert torch.accelerator.current_accelerator() == torch.device("cuda")
    assert torch.accelerator.device_count() == torch.cuda.device_count()
    assert torch.accelerator.current_device_index() == 0
    torch.accelerator.synchronize()


def test_like_ops_fill_on_the_device():
    from gcompile._dispatch import apply_op
    c = torch.ones(2, 3, device="cuda")
    z = apply_op("zeros_like", (c,), {"dtype": None})
    f = apply_op("full_like", (c,), {"value": 2.5, "dtype": torch.float64})
    o = apply_op("ones_like", (c,), {"dtype": torch.int64})
    assert z.is_cuda and z.tolist() == [[0.0] * 3] * 2
    assert f.dtype == torch.float64 and f.tolist() == [[2.5] * 3] * 2
    assert o.dtype == torch.int64 and o.tolist() == [[1] * 3] * 2


def test_basic_index_writes_and_accumulation_stay_on_the_device(monkeypatch):
    from gcompile._device import CudaArray
    c = torch.zeros(3, 4, device="cuda")
    g = torch.ones(3, 4, device="cuda")

    def no_host(self):
        raise AssertionError("copied to the host")

    monkeypatch.setattr(CudaArray, "host", no_host)
    c[1, ::2] = 2.0          # a basic index: a device view, written on the device
    c[..., 3] = g[0, :3]
    c._data += g._data       # AccumulateGrad's in-place add
    monkeypatch.undo()
    assert c.tolist() == [[1.0, 1.0, 1.0, 2.0], [3.0, 1.0, 3.0, 2.0], [1.0, 1.0, 1.0, 2.0]]


def test_size_one_dims_nonzero_and_out_stay_on_the_device():
    x = torch.arange(6.0).reshape(2, 1, 3)
    c = x.cuda()
    for f in [lambda t: t.squeeze(1), lambda t: t.unsqueeze(0), lambda t: t[:, :, 1:2].squeeze(),
              lambda t: t.transpose(0, 2).unsqueeze(1)]:
        v, ref = f(c), f(x)
        assert v.is_cuda and v.stride() == ref.stride()
        np.testing.assert_array_equal(_np(v), ref.numpy())
    m = torch.tensor([[0.0, 1.0], [2.0, 0.0]], device="cuda")
    nz = m.nonzero()
    assert nz.is_cuda and nz.tolist() == [[0, 1], [1, 0]]
    assert all(i.is_cuda for i in m.nonzero(as_tuple=True))
    out = torch.empty(0, device="cuda")
    torch.exp(torch.zeros(3, device="cuda"), out=out)
    assert out.is_cuda and out.tolist() == [1.0] * 3


# ---- real GPU only (skipped under the simulator) ------------------------------------------
@pytest.mark.gpu
def test_gpu_mlp_steps_at_real_size_match_cpu_and_reuse_memory():
    def run(dev):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.LayerNorm(512),
                          nn.Linear(512, 10)).to(dev)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        torch.manual_seed(1)
        x = torch.randn(128, 256).to(dev)
        y = torch.randint(0, 10, (128,)).to(dev)
        reserved = []
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            if dev == "cuda":
                torch.cuda.synchronize()
                reserved.append(torch.cuda.memory_reserved())
        return loss.item(), [_np(p) for p in m.parameters()], reserved

    l0, p0, _ = run("cpu")
    l1, p1, reserved = run("cuda")
    np.testing.assert_allclose(l1, l0, rtol=1e-4)
    for a, b in zip(p1, p0):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert reserved[2] <= reserved[1]  # the caching allocator reuses the second step's blocks


def test_random_functions_of_cuda_tensors_stay_on_the_device():
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]], device="cuda")
    for t in [torch.bernoulli(p), torch.multinomial(p, 1), torch.poisson(p),
              torch.normal(p, torch.ones(2, 2, device="cuda")), torch.normal(p, 1.0)]:
        assert t.is_cuda, t
    assert torch.bernoulli(p).tolist() == p.tolist()
    assert torch.multinomial(p, 1).tolist() == [[1], [0]]
    c = torch.empty(3, device="cuda").uniform_(2.0, 3.0)
    assert c.is_cuda and all(2.0 <= v <= 3.0 for v in c.tolist())
