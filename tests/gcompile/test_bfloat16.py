"""bfloat16: storage as ml_dtypes arrays, float32 compute rounded per op, promotion,
autocast, compiled plans and checkpoints. Checked against torch where it is installed and
against NumPy float32 rounded with ml_dtypes everywhere."""
from __future__ import annotations

import pickle
import warnings

import ml_dtypes
import numpy as np
import pytest

import gcompile as g
from gcompile import nn
from gcompile.nn import functional as F
from ir import dtypes as dt

BF = ml_dtypes.bfloat16
EPS = 2.0 ** -7  # bfloat16's eps: one unit in the last place at 1.0


def bf(a) -> np.ndarray:
    """float32 values rounded to bfloat16 (round to nearest even), as float32."""
    return np.asarray(a, np.float32).astype(BF).astype(np.float32)


def f32(t) -> np.ndarray:
    return t.detach().float().numpy()


def close(got, want, ulps: float = 1.0, atol: float = 1e-6) -> None:
    """Equal within ``ulps`` bfloat16 units of the larger magnitude."""
    np.testing.assert_allclose(f32(got) if isinstance(got, g.Tensor) else got, want,
                               rtol=ulps * EPS, atol=atol)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def to_torch(torch, t):
    return torch.from_numpy(f32(t).copy()).to(torch.bfloat16)


# ---------------------------------------------------------------------------
# the dtype
# ---------------------------------------------------------------------------
def test_dtype_object_and_conversions():
    assert g.bfloat16 is dt.bfloat16 and repr(g.bfloat16) == "torch.bfloat16"
    assert g.bfloat16.is_floating_point and g.bfloat16.itemsize == 2
    assert dt.as_dtype("bfloat16") is g.bfloat16 and dt.as_dtype("torch.bfloat16") is g.bfloat16
    assert dt.from_numpy(np.dtype(BF)) is g.bfloat16
    assert pickle.loads(pickle.dumps(g.bfloat16)) is g.bfloat16
    x = g.tensor([1.0, 2.5, 3.14159], dtype=g.bfloat16)
    assert x.dtype is g.bfloat16 and x._data.dtype == np.dtype(BF)
    assert x.element_size() == 2 and x.is_floating_point()
    assert x.tolist() == [1.0, 2.5, 3.140625] and isinstance(x[0].item(), float)
    assert x.float().dtype is g.float32 and x.float().tolist() == [1.0, 2.5, 3.140625]
    assert g.tensor([1.5]).bfloat16().dtype is g.bfloat16
    assert g.tensor([1.5]).to("bfloat16").dtype is g.bfloat16
    assert g.tensor([1, 2]).to(g.bfloat16).tolist() == [1.0, 2.0]
    assert x.type() == "torch.BFloat16Tensor" and isinstance(x, g.BFloat16Tensor)
    assert g.BFloat16Tensor([1, 2]).dtype is g.bfloat16
    assert x.to(g.int64).tolist() == [1, 2, 3]
    # round to nearest even, as torch
    assert g.tensor([1.00390625, 1.01171875]).bfloat16().tolist() == [1.0, 1.015625]


def test_creation_functions_take_bfloat16():
    for t in (g.zeros(2, 3, dtype=g.bfloat16), g.ones(4, dtype=g.bfloat16),
              g.full((2,), 1.1, dtype=g.bfloat16), g.empty(3, dtype=g.bfloat16),
              g.arange(5, dtype=g.bfloat16), g.linspace(0, 1, 5, dtype=g.bfloat16),
              g.eye(3, dtype=g.bfloat16), g.rand(3, dtype=g.bfloat16),
              g.randn(3, dtype=g.bfloat16), g.zeros_like(g.ones(2, dtype=g.bfloat16))):
        assert t.dtype is g.bfloat16
    assert g.full((1,), 1.1, dtype=g.bfloat16).item() == 1.1015625
    assert g.linspace(0, 1, 5, dtype=g.bfloat16).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_printing_matches_torch_format():
    assert repr(g.tensor([1.0, 2.0], dtype=g.bfloat16)) == \
        "tensor([1., 2.], dtype=torch.bfloat16)"
    assert repr(g.tensor(3.14159, dtype=g.bfloat16)) == "tensor(3.1406, dtype=torch.bfloat16)"
    p = nn.Parameter(g.ones(1, dtype=g.bfloat16))
    assert repr(p * 2).endswith("dtype=torch.bfloat16, grad_fn=<MulBackward0>)")


def test_finfo_and_iinfo():
    fi = g.finfo(g.bfloat16)
    assert fi.eps == 0.0078125 and fi.bits == 16 and fi.resolution == 0.01
    assert fi.max == pytest.approx(3.3895313892515355e+38) and fi.min == -fi.max
    assert fi.tiny == fi.smallest_normal == pytest.approx(1.1754943508222875e-38)
    assert fi.dtype == "bfloat16"
    assert g.finfo().dtype == "float32" and g.iinfo(g.int8).max == 127
    with pytest.raises(TypeError, match="floating point"):
        g.finfo(g.int64)
    with pytest.raises(TypeError, match="integer"):
        g.iinfo(g.bfloat16)


def test_finfo_against_torch(torch):
    for name in ("bfloat16", "float16", "float32", "float64"):
        a, b = g.finfo(getattr(g, name)), torch.finfo(getattr(torch, name))
        for k in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution"):
            assert getattr(a, k) == getattr(b, k), (name, k)
        assert repr(a) == repr(b)
    for name in ("uint8", "int8", "int16", "int32", "int64"):
        a, b = g.iinfo(getattr(g, name)), torch.iinfo(getattr(torch, name))
        assert (a.bits, a.max, a.min) == (b.bits, b.max, b.min)


def test_default_dtype_bfloat16_as_torch():
    try:
        g.set_default_dtype(g.bfloat16)
        assert g.get_default_dtype() is g.bfloat16
        assert g.tensor([1.5]).dtype is g.bfloat16
        assert (g.tensor([1, 2]) * 1.5).dtype is g.bfloat16
        assert g.tensor([1, 2]).exp().tolist() == [2.71875, 7.375]
        assert g.tensor([1, 2]).float().dtype is g.float32
    finally:
        g.set_default_dtype(g.float32)
    assert g.tensor([1.5]).dtype is g.float32


# ---------------------------------------------------------------------------
# promotion
# ---------------------------------------------------------------------------
_NAMES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32",
          "float64")


def test_promotion_rules():
    p = dt.promote_types
    assert p(g.bfloat16, g.bfloat16) is g.bfloat16
    assert p(g.bfloat16, g.float16) is g.float32 and p(g.float16, g.bfloat16) is g.float32
    assert p(g.bfloat16, g.float32) is g.float32 and p(g.float64, g.bfloat16) is g.float64
    for d in (g.bool, g.uint8, g.int8, g.int64):
        assert p(d, g.bfloat16) is g.bfloat16 and p(g.bfloat16, d) is g.bfloat16
    x = g.ones(2, dtype=g.bfloat16)
    assert (x + 1.5).dtype is g.bfloat16 and (x * 2).dtype is g.bfloat16
    assert (x + g.tensor([1, 2])).dtype is g.bfloat16
    assert (x + g.tensor(1.0, dtype=g.float64)).dtype is g.bfloat16  # 0-d loses to dims
    assert (g.tensor(1.0, dtype=g.bfloat16) + g.ones(1, dtype=g.float16)).dtype is g.float16
    assert (x > 1).dtype is g.bool


def test_promotion_table_against_torch(torch):
    def val(lib, name, zero_d):
        d = getattr(lib, name)
        return lib.ones(() if zero_d else (2,), dtype=d)

    for a in _NAMES:
        for b in _NAMES:
            if "bfloat16" not in (a, b):
                continue
            want = torch.promote_types(getattr(torch, a), getattr(torch, b))
            assert repr(g.promote_types(getattr(g, a), getattr(g, b))) == repr(want), (a, b)
            for za in (False, True):
                for zb in (False, True):
                    want = torch.result_type(val(torch, a, za), val(torch, b, zb))
                    got = g.result_type(val(g, a, za), val(g, b, zb))
                    assert repr(got) == repr(want), (a, za, b, zb)
                    if a != "bool" or b != "bool":
                        assert repr((val(g, a, za) * val(g, b, zb)).dtype) == repr(want)
        for s in (1.5, 2, True):
            want = torch.result_type(val(torch, "bfloat16", False), s)
            assert repr(g.result_type(val(g, "bfloat16", False), s)) == repr(want)
    assert g.can_cast(g.bfloat16, g.float16) == torch.can_cast(torch.bfloat16, torch.float16)


# ---------------------------------------------------------------------------
# eager math (NumPy float32 reference rounded to bfloat16)
# ---------------------------------------------------------------------------
def _data(*shape, seed=0):
    return bf(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_elementwise_round_once_from_float32():
    a, b = _data(50), _data(50, seed=1)
    x, y = g.tensor(a).bfloat16(), g.tensor(b).bfloat16()
    cases = [(x + y, a + b), (x * y, a * b), (x / y, a / b), (x - 0.1, a - np.float32(0.1)),
             (g.exp(x), np.exp(a)), (g.tanh(x), np.tanh(a)),
             (g.abs(x).sqrt(), np.sqrt(np.abs(a))), (x.clamp(-0.5, 0.5), np.clip(a, -0.5, 0.5)),
             (g.maximum(x, y), np.maximum(a, b)), (x ** 2, a * a)]
    for got, want in cases:
        assert got.dtype is g.bfloat16
        close(got, bf(want), ulps=0.5)


def test_reductions_accumulate_in_float32():
    x = g.full((1000,), 1.01, dtype=g.bfloat16)  # 1.0078125 each
    assert x.sum().dtype is g.bfloat16 and x.sum().item() == 1008.0  # float32 sum, rounded
    assert x.mean().item() == 1.0078125
    assert x.cumsum(0)[-1].item() == 1008.0
    assert x.sum(dtype=g.float32).dtype is g.float32
    assert x.sum(dtype=g.float32).item() == pytest.approx(1007.8125)
    a = _data(7, 9)
    t = g.tensor(a).bfloat16()
    close(t.sum(1), bf(a.sum(1, dtype=np.float32)), ulps=0.5)
    close(t.mean(0), bf(a.mean(0, dtype=np.float32)), ulps=0.5)
    close(t.amax(1), a.max(1), ulps=0)
    assert t.argmax().item() == int(a.argmax())


def test_matmul_linear_conv_compute_in_float32():
    a, w, b = _data(6, 8), _data(5, 8, seed=1), _data(5, seed=2)
    x, wt, bt = (g.tensor(v).bfloat16() for v in (a, w, b))
    y = x @ wt.T
    assert y.dtype is g.bfloat16
    close(y, bf(a @ w.T), ulps=1)
    close(F.linear(x, wt, bt), bf(bf(a @ w.T) + b), ulps=1)
    img, k = _data(2, 3, 5, 5), _data(4, 3, 3, 3, seed=3)
    out = F.conv2d(g.tensor(img).bfloat16(), g.tensor(k).bfloat16())
    want = F.conv2d(g.tensor(img), g.tensor(k)).numpy()
    assert out.dtype is g.bfloat16
    close(out, bf(want), ulps=1, atol=1e-5)


def test_softmax_layer_norm_and_grad_dtypes():
    a = _data(4, 6)
    x = g.tensor(a).bfloat16().requires_grad_()
    s = F.softmax(x, -1)
    assert s.dtype is g.bfloat16 and F.log_softmax(x, -1).dtype is g.bfloat16
    close(s, F.softmax(g.tensor(a), -1).numpy(), ulps=2, atol=1e-3)
    ln = F.layer_norm(x, (6,))
    assert ln.dtype is g.bfloat16
    close(ln, F.layer_norm(g.tensor(a), (6,)).numpy(), ulps=4, atol=2e-2)
    lin = nn.Linear(6, 3).bfloat16()
    assert lin.weight.dtype is g.bfloat16 and lin.weight.requires_grad
    loss = F.cross_entropy(lin(x), g.tensor([0, 1, 2, 0]))
    assert loss.dtype is g.bfloat16
    loss.backward()
    assert lin.weight.grad.dtype is g.bfloat16 and lin.bias.grad.dtype is g.bfloat16
    assert x.grad.dtype is g.bfloat16


def test_in_place_indexing_and_optimizer_keep_bfloat16():
    x = g.zeros(3, 4, dtype=g.bfloat16)
    x[0] = 1.1
    x[1:] += 2
    x.mul_(3).add_(g.ones(4))
    assert x.dtype is g.bfloat16
    assert x[0].tolist() == [bf(bf(1.1) * 3 + 1)[()]] * 4
    assert g.cat([x, x]).dtype is g.bfloat16 and x.view(12).dtype is g.bfloat16
    v = x.view(12)
    v[0] = 5.0
    assert x[0, 0].item() == 5.0  # views share bfloat16 storage
    m = nn.Linear(4, 2).bfloat16()
    opt = g.optim.AdamW(m.parameters(), lr=1e-2)
    before = f32(m.weight).copy()
    m(x).float().sum().backward()
    opt.step()
    assert m.weight.dtype is g.bfloat16 and not np.array_equal(f32(m.weight), before)
    assert opt.state[m.weight]["exp_avg"].dtype is g.bfloat16


# ---------------------------------------------------------------------------
# against torch
# ---------------------------------------------------------------------------
def test_values_against_torch(torch):
    a, b = _data(64), _data(64, seed=1)
    x, y = g.tensor(a).bfloat16(), g.tensor(b).bfloat16()
    tx, ty = to_torch(torch, x), to_torch(torch, y)
    pairs = [(x + y, tx + ty), (x * y, tx * ty), (x / y, tx / ty), (x * 1.7, tx * 1.7),
             (g.exp(x), torch.exp(tx)), (g.sigmoid(x), torch.sigmoid(tx)),
             (g.tanh(x), torch.tanh(tx)), (x.sum(), tx.sum()), (x.mean(), tx.mean()),
             (x.cumsum(0), tx.cumsum(0)), (x.amax(), tx.amax()), (F.relu(x), torch.relu(tx)),
             (F.gelu(x), torch.nn.functional.gelu(tx))]
    for got, want in pairs:
        assert repr(got.dtype) == repr(want.dtype)
        close(got, want.float().numpy(), ulps=1, atol=1e-6)


def test_matmul_softmax_norm_and_grads_against_torch(torch):
    a, w = _data(8, 16), _data(4, 16, seed=1)
    x = g.tensor(a).bfloat16().requires_grad_()
    wt = g.tensor(w).bfloat16().requires_grad_()
    tx = to_torch(torch, x).requires_grad_()
    tw = to_torch(torch, wt).requires_grad_()
    y, ty = F.linear(x, wt), torch.nn.functional.linear(tx, tw)
    assert repr(y.dtype) == repr(ty.dtype)
    close(y, ty.detach().float().numpy(), ulps=1, atol=1e-5)
    for got, want in [(F.softmax(y, -1), torch.softmax(ty, -1)),
                      (F.log_softmax(y, -1), torch.log_softmax(ty, -1)),
                      (F.layer_norm(y, (4,)), torch.nn.functional.layer_norm(ty, (4,)))]:
        assert repr(got.dtype) == repr(want.dtype)
        close(got, want.detach().float().numpy(), ulps=2, atol=2e-2)
    F.log_softmax(y, -1).float().sum().backward()
    torch.log_softmax(ty, -1).float().sum().backward()
    assert repr(x.grad.dtype) == repr(tx.grad.dtype) == "torch.bfloat16"
    assert repr(wt.grad.dtype) == "torch.bfloat16"
    close(wt.grad, tw.grad.float().numpy(), ulps=4, atol=5e-2)


def test_autocast_against_torch(torch):
    a, w = _data(3, 4), _data(5, 4, seed=1)
    gx, gw = g.tensor(a), g.tensor(w)
    tx, tw = torch.from_numpy(a), torch.from_numpy(w)
    target = g.tensor(_data(3, 5, seed=2))
    with g.autocast("cpu"), torch.autocast("cpu"):
        y, ty = F.linear(gx, gw), torch.nn.functional.linear(tx, tw)
        assert repr(y.dtype) == repr(ty.dtype) == "torch.bfloat16"
        close(y, ty.float().numpy(), ulps=1, atol=1e-5)
        checks = [
            (F.mse_loss(y, target), torch.nn.functional.mse_loss(ty, torch.from_numpy(
                target.numpy()))),
            (F.cross_entropy(y, g.tensor([0, 1, 2])),
             torch.nn.functional.cross_entropy(ty, torch.tensor([0, 1, 2]))),
            (y + 1, ty + 1), (y.sum(), ty.sum()), (F.softmax(y, -1), torch.softmax(ty, -1)),
            (gx.double() @ gx.double().T, tx.double() @ tx.double().T),
            (gx.half() @ gx.half().T, tx.half() @ tx.half().T), (y.prod(), ty.prod())]
        for got, want in checks:
            assert repr(got.dtype) == repr(want.dtype)
    assert repr(F.linear(gx, gw).dtype) == "torch.float32"
    assert g.amp.get_autocast_dtype("cpu") is g.bfloat16


# ---------------------------------------------------------------------------
# autocast and GradScaler (no torch needed)
# ---------------------------------------------------------------------------
def test_autocast_bfloat16_runs_products_in_bfloat16():
    lin = nn.Linear(4, 5)
    conv = nn.Conv2d(2, 3, 3)
    x = g.tensor(_data(3, 4))
    with g.amp.autocast("cpu", dtype=g.bfloat16):
        y = lin(x)
        assert y.dtype is g.bfloat16 and conv(g.randn(1, 2, 5, 5)).dtype is g.bfloat16
        assert (x @ x.T).dtype is g.bfloat16 and g.mm(x, x.T).dtype is g.bfloat16
        loss = F.mse_loss(y, g.zeros(3, 5))
        assert loss.dtype is g.float32  # torch's CPU autocast float32 list
        assert (y * 2).dtype is g.bfloat16 and g.prod(y).dtype is g.float32
    want = bf(bf(x.numpy()) @ bf(lin.weight.detach().numpy()).T)
    close(y, bf(want + bf(lin.bias.detach().numpy())), ulps=1, atol=1e-5)
    loss.backward()
    assert lin.weight.grad.dtype is g.float32  # the cast's gradient returns to float32
    with pytest.warns(UserWarning, match="target dtype is not supported"):
        ac = g.autocast("cpu", dtype=g.float64)
    with ac:
        assert lin(x).dtype is g.float32


def test_grad_scaler_cpu_with_bfloat16_model():
    m = nn.Linear(4, 2).bfloat16()
    opt = g.optim.SGD(m.parameters(), lr=0.1)
    scaler = g.amp.GradScaler("cpu", init_scale=4.0)
    before = f32(m.weight).copy()
    x = g.randn(3, 4).bfloat16()
    with g.autocast("cpu"):
        loss = m(x).float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert m.weight.dtype is g.bfloat16 and not np.array_equal(f32(m.weight), before)
    assert scaler.get_scale() == 4.0


# ---------------------------------------------------------------------------
# compiled
# ---------------------------------------------------------------------------
def test_compiled_forward_equals_eager():
    def f(x, w, b):
        y = F.linear(x, w, b)
        y = g.tanh(y) * 1.5 + x.sum(-1, keepdim=True)
        return F.softmax(y, -1), y.mean(), F.layer_norm(y, (5,)), (y > 0).sum()

    x, w, b = (g.tensor(_data(*s, seed=i)).bfloat16() for i, s in
               enumerate([(4, 5), (5, 5), (5,)]))
    eager = f(x, w, b)
    cf = g.compile(f, fullgraph=True)
    for _ in range(2):
        comp = cf(x, w, b)
    for e, c in zip(eager, comp):
        assert c.dtype is e.dtype
        close(c, f32(e), ulps=1, atol=1e-6)
    info = g.explain(f, x, w, b)
    assert "bfloat16" in str(info)


def test_compiled_training_step_matches_eager():
    def run(compiled):
        g.manual_seed(0)
        m = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)).bfloat16()
        opt = g.optim.AdamW(m.parameters(), lr=1e-2)
        x, y = g.randn(5, 6).bfloat16(), g.tensor([0, 1, 2, 0, 1])

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(m(x).float(), y)
            loss.backward()
            opt.step()
            return loss

        f = g.compile(step) if compiled else step
        losses = [f(x, y).item() for _ in range(3)]
        return losses, [p for p in m.parameters()]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no graph break, no fallback warning
        (le, pe), (lc, pc) = run(False), run(True)
    np.testing.assert_allclose(lc, le, rtol=1e-2)
    for a, b in zip(pe, pc):
        assert b.dtype is g.bfloat16
        close(b, f32(a), ulps=2, atol=1e-2)


def test_generated_kernels_refuse_bfloat16():
    from kernels.cpu import compile_kernel
    from kernels.spec import KernelSpec, Phase, Stmt
    spec = KernelSpec(inputs=("bfloat16",), outputs=(("float32", "full"),), kind="elementwise",
                      phases=(Phase("map", (Stmt("a", "cast", (("in", 0),),
                                                     (("dtype", "float32"),), "float32"),),
                                    stores=((0, ("v", "a")),)),))
    with pytest.raises(NotImplementedError, match="bfloat16"):
        compile_kernel(spec)


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    x = g.tensor(_data(3, 4)).bfloat16()
    p = nn.Parameter(g.randn(2).bfloat16())
    g.save({"x": x, "p": p, "dtype": g.bfloat16, "arr": x.numpy()}, tmp_path / "ck.pt")
    r = g.load(tmp_path / "ck.pt")
    assert r["x"].dtype is g.bfloat16 and np.array_equal(f32(r["x"]), f32(x))
    assert isinstance(r["p"], nn.Parameter) and r["p"].dtype is g.bfloat16
    assert r["dtype"] is g.bfloat16 and r["arr"].dtype == np.dtype(BF)
    m = nn.Linear(3, 2).bfloat16()
    g.save(m.state_dict(), tmp_path / "m.pt")
    m2 = nn.Linear(3, 2).bfloat16()
    m2.load_state_dict(g.load(tmp_path / "m.pt"))
    assert np.array_equal(f32(m2.weight), f32(m.weight))


def test_safetensors_interchange_with_torch(torch, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    w = torch.randn(3, 2).bfloat16()
    st.save_file({"w": w, "b": torch.arange(3.0)}, str(tmp_path / "t.safetensors"))
    r = g.load(tmp_path / "t.safetensors")
    assert r["w"].dtype is g.bfloat16 and np.array_equal(f32(r["w"]), w.float().numpy())
    x = g.tensor(_data(2, 5)).bfloat16()
    g.save({"x": x}, tmp_path / "g.pt")
    back = st.load_file(str(tmp_path / "g.pt"))["x"]
    assert back.dtype == torch.bfloat16 and np.array_equal(back.float().numpy(), f32(x))
