"""Every eager op against a NumPy reference: dtypes, broadcasting, non-contiguous inputs."""
import math

import numpy as np
import pytest

import gcompile as torch

RNG = np.random.default_rng(0)
FLOATS = [torch.float32, torch.float64]
INTS = [torch.int64, torch.int32, torch.int8, torch.uint8]


def arr(shape, dtype, lo=-3.0, hi=3.0):
    npd = dtype.np
    if dtype is torch.bool:
        return RNG.random(shape) > 0.5
    if npd.kind in "iu":
        lo = max(lo, 0) if npd.kind == "u" else lo
        return RNG.integers(int(lo), int(hi) + 1, shape).astype(npd)
    return RNG.uniform(lo, hi, shape).astype(npd)


def layouts(a):
    """The same values as a contiguous, a transposed and a sliced tensor."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    yield "contig", t, a
    if a.ndim >= 2:
        tt = torch.from_numpy(np.ascontiguousarray(a.T)).permute(*reversed(range(a.ndim)))
        assert not tt.is_contiguous()
        yield "transposed", tt, a
    big = np.repeat(a[..., None], 2, axis=-1)
    ts = torch.from_numpy(np.ascontiguousarray(big))[..., 0]
    yield "sliced", ts, a


def check(got, want, rtol=1e-6, atol=1e-6):
    want = np.asarray(want)
    assert tuple(got.shape) == want.shape, (got.shape, want.shape)
    g = got.numpy()
    if want.dtype.kind == "f":
        np.testing.assert_allclose(g, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(g, want)


UNARY = {
    "neg": (np.negative, None), "abs": (np.abs, None), "exp": (np.exp, None),
    "log": (np.log, "pos"), "log2": (np.log2, "pos"), "log10": (np.log10, "pos"),
    "log1p": (np.log1p, "pos"), "expm1": (np.expm1, None), "sqrt": (np.sqrt, "pos"),
    "rsqrt": (lambda x: 1 / np.sqrt(x), "pos"), "reciprocal": (np.reciprocal, "pos"),
    "sin": (np.sin, None), "cos": (np.cos, None), "tan": (np.tan, None),
    "tanh": (np.tanh, None), "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), None),
    "relu": (lambda x: np.maximum(x, 0), None), "sign": (np.sign, None),
    "floor": (np.floor, None), "ceil": (np.ceil, None), "round": (np.round, None),
    "trunc": (np.trunc, None),
    "erf": (np.vectorize(math.erf), None),
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_float(name, dtype):
    ref, dom = UNARY[name]
    a = arr((3, 4), dtype, 0.1 if dom else -3, 3)
    tol = 1e-5 if dtype is torch.float32 else 1e-12
    for _, t, an in layouts(a):
        got = getattr(torch, name)(t)
        assert got.dtype is dtype
        check(got, ref(an.astype(np.float64)).astype(dtype.np), rtol=tol, atol=tol)
        check(getattr(t, name)(), ref(an.astype(np.float64)).astype(dtype.np), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "tanh", "sigmoid"])
def test_unary_int_promotes_to_default_float(name):
    t = torch.tensor([1, 2, 3])
    got = getattr(torch, name)(t)
    assert got.dtype is torch.float32
    check(got, UNARY[name][0](np.array([1.0, 2.0, 3.0])).astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize("dtype", INTS)
def test_unary_int_keep_dtype(dtype):
    a = arr((5,), dtype)
    t = torch.from_numpy(a)
    for name, ref in (("abs", np.abs), ("neg", np.negative), ("sign", np.sign)):
        if dtype is torch.uint8 and name == "neg":
            continue
        got = getattr(torch, name)(t)
        assert got.dtype is dtype
        check(got, ref(a))


def test_erf_accuracy_float64():
    x = np.linspace(-7, 7, 4001)
    got = torch.erf(torch.from_numpy(x)).numpy()
    want = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(got - want)) < 2e-15
    assert torch.isnan(torch.erf(torch.tensor(float("nan")))).item()
    assert torch.erf(torch.tensor([float("inf"), -float("inf")])).tolist() == [1.0, -1.0]


BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
    "maximum": np.maximum, "minimum": np.minimum, "atan2": np.arctan2,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal, "remainder": np.remainder,
    "floor_divide": np.floor_divide, "pow": np.power,
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcast_noncontig(name, dtype):
    ref = BINARY[name]
    lo = 0.5 if name in ("pow", "remainder", "floor_divide", "div") else -3
    a = arr((3, 4), dtype, lo, 3)
    b = arr((4,), dtype, lo, 3)
    want = ref(a, b)
    for _, ta, _an in layouts(a):
        got = getattr(torch, name)(ta, torch.from_numpy(b))
        check(got, want, rtol=1e-5)
    # (3, 1) against (1, 4)
    c = arr((3, 1), dtype, lo, 3)
    d = arr((1, 4), dtype, lo, 3)
    check(getattr(torch, name)(torch.from_numpy(c), torch.from_numpy(d)), ref(c, d), rtol=1e-5)


@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("op", ["+", "-", "*", "//", "%", "==", "<"])
def test_binary_int_ops(dtype, op):
    a = arr((2, 3), dtype, 1, 9)
    b = arr((3,), dtype, 1, 9)
    got = eval(f"ta {op} tb", {"ta": torch.from_numpy(a), "tb": torch.from_numpy(b)})
    want = eval(f"a {op} b", {"a": a, "b": b})
    check(got, want)
    if op not in ("==", "<"):
        assert got.dtype is dtype


def test_operators_and_scalars():
    a = np.array([[1.5, -2.0], [3.0, 0.25]], np.float32)
    t = torch.from_numpy(a)
    check(t + 1, a + 1)
    check(1 - t, 1 - a)
    check(2 * t, 2 * a)
    check(1 / t, 1 / a)
    check(t ** 2, a ** 2)
    check(2 ** t, 2 ** a, rtol=1e-6)
    check(-t, -a)
    check(abs(t), np.abs(a))
    check(t // 1.0, a // 1.0)
    check(t % 2, a % 2)
    check((t > 0) & (t < 2), (a > 0) & (a < 2))
    check((t > 0) | (t < -1), (a > 0) | (a < -1))
    check(~(t > 0), ~(a > 0))
    check(t.clamp(-1, 1), np.clip(a, -1, 1))
    check(torch.clip(t, min=0), np.maximum(a, 0))
    check(t.clamp(max=0.5), np.minimum(a, 0.5))
    check(torch.where(t > 0, t, torch.zeros_like(t)), np.where(a > 0, a, 0))
    check(t.where(t > 0, 5.0), np.where(a > 0, a, 5.0))
    check(torch.logical_xor(t > 0, t > 1), np.logical_xor(a > 0, a > 1))
    assert torch.allclose(t, t + 1e-9)
    assert not torch.allclose(t, t + 1)
    check(torch.isnan(torch.tensor([1.0, float("nan")])), [False, True])
    check(torch.isinf(torch.tensor([1.0, float("-inf")])), [False, True])


def test_bitwise_int():
    a = np.array([12, 5, 7], np.int32)
    b = np.array([10, 3, 1], np.int32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    check(ta & tb, a & b)
    check(ta | tb, a | b)
    check(ta ^ tb, a ^ b)
    check(~ta, ~a)


@pytest.mark.parametrize("dtype", FLOATS)
def test_reductions(dtype):
    a = arr((3, 4, 5), dtype)
    tol = 1e-5 if dtype is torch.float32 else 1e-12
    for _, t, an in layouts(a):
        check(t.sum(), an.sum(), rtol=tol)
        check(t.sum(1), an.sum(1), rtol=tol, atol=tol)
        check(t.sum((0, 2), keepdim=True), an.sum((0, 2), keepdims=True), rtol=tol, atol=tol)
        check(t.mean(-1), an.mean(-1), rtol=tol, atol=tol)
        check(t.prod(0), an.prod(0), rtol=tol, atol=tol)
        check(t.var(1), an.var(1, ddof=1), rtol=tol, atol=tol)
        check(t.var(1, unbiased=False), an.var(1), rtol=tol, atol=tol)
        check(t.std(), an.std(ddof=1), rtol=tol, atol=tol)
        check(t.std(2, keepdim=True), an.std(2, ddof=1, keepdims=True), rtol=tol, atol=tol)
        check(t.amax(1), an.max(1))
        check(t.amin((0, 1)), an.min((0, 1)))
        check(t.max(), an.max())
        v, i = t.max(1)
        check(v, an.max(1))
        check(i, an.argmax(1))
        v, i = t.min(dim=2, keepdim=True)
        check(v, an.min(2, keepdims=True))
        check(i, an.argmin(2)[..., None])
        check(t.argmax(), an.argmax())
        check(t.argmin(1), an.argmin(1))
        m = an.max(1, keepdims=True)
        check(t.logsumexp(1), (np.log(np.exp(an - m).sum(1, keepdims=True)) + m)[:, 0],
              rtol=tol, atol=tol)
        check(t.cumsum(1), an.cumsum(1), rtol=tol, atol=tol)
        check(t.cumprod(2), an.cumprod(2), rtol=tol, atol=tol)
        check(t.norm(), np.sqrt((an.astype(np.float64) ** 2).sum()), rtol=tol)
        check(t.norm(p=1, dim=1), np.abs(an).sum(1), rtol=tol, atol=tol)
        check(t.norm(p=float("inf"), dim=0), np.abs(an).max(0), rtol=tol)
        check(t.norm(p=3, dim=2, keepdim=True),
              (np.abs(an) ** 3).sum(2, keepdims=True) ** (1 / 3), rtol=tol, atol=tol)
        check(torch.norm(t, p="fro"), np.sqrt((an ** 2).sum()), rtol=tol)
        check(torch.quantile(t, 0.3, dim=1), np.quantile(an, 0.3, axis=1), rtol=tol, atol=tol)
        check(torch.quantile(t, torch.tensor([0.25, 0.5], dtype=dtype)),
              np.quantile(an, [0.25, 0.5]), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_int_reductions(dtype):
    a = arr((3, 4), dtype, 0, 5)
    t = torch.from_numpy(a)
    s = t.sum()
    assert s.dtype is torch.int64
    check(s, a.sum())
    check(t.sum(0), a.sum(0, dtype=np.int64))
    assert t.cumsum(1).dtype is torch.int64
    check(t.prod(1), a.prod(1, dtype=np.int64))
    check(t.any(1), a.any(1))
    check(t.all(), a.all())
    if dtype is not torch.bool:
        check(t.max(), a.max())
        check(t.argmax(1), a.argmax(1))


def test_sort_topk_argsort():
    a = np.array([[3.0, 1.0, 2.0, 1.0], [0.0, -1.0, 5.0, 4.0]], np.float32)
    t = torch.from_numpy(a)
    v, i = torch.sort(t)
    check(v, np.sort(a, 1))
    check(i, np.argsort(a, 1, kind="stable"))
    v, i = t.sort(descending=True)
    check(v, -np.sort(-a, 1))
    check(i, np.array([[0, 2, 1, 3], [2, 3, 0, 1]]))
    check(t.argsort(dim=0), np.argsort(a, 0, kind="stable"))
    v, i = t.topk(2)
    check(v, np.array([[3.0, 2.0], [5.0, 4.0]]))
    check(i, np.array([[0, 2], [2, 3]]))
    v, i = torch.topk(t, 1, dim=0, largest=False)
    check(v, a.min(0, keepdims=True))
    v, i = torch.sort(torch.tensor([1.0, float("nan"), 3.0, 2.0]), descending=True)
    assert math.isnan(v[0].item()) and v[1:].tolist() == [3.0, 2.0, 1.0]
    assert i.tolist() == [1, 2, 3, 0]
    v, i = torch.sort(torch.tensor([1.0, float("nan"), 3.0, 2.0]))
    assert v[:3].tolist() == [1.0, 2.0, 3.0] and i.tolist() == [0, 3, 2, 1]
    v, _ = torch.sort(torch.tensor([5, -128, 7], dtype=torch.int8), descending=True)
    assert v.tolist() == [7, 5, -128]
    assert torch.median(torch.tensor([3.0, 1.0, 2.0, 4.0])).item() == 2.0


@pytest.mark.parametrize("dtype", FLOATS)
def test_linalg(dtype):
    tol = 1e-5 if dtype is torch.float32 else 1e-12
    a = arr((3, 4), dtype)
    b = arr((4, 5), dtype)
    v = arr((4,), dtype)
    ba = arr((2, 3, 4), dtype)
    bb = arr((2, 4, 5), dtype)
    for _, ta, an in layouts(a):
        check(ta @ torch.from_numpy(b), an @ b, rtol=tol, atol=tol)
        check(torch.mm(ta, torch.from_numpy(b)), an @ b, rtol=tol, atol=tol)
        check(torch.mv(ta, torch.from_numpy(v)), an @ v, rtol=tol, atol=tol)
        check(torch.matmul(ta.t().contiguous().t(), torch.from_numpy(v)), an @ v, rtol=tol,
              atol=tol)
    check(torch.bmm(torch.from_numpy(ba), torch.from_numpy(bb)), ba @ bb, rtol=tol, atol=tol)
    check(torch.matmul(torch.from_numpy(ba), torch.from_numpy(b)), ba @ b, rtol=tol, atol=tol)
    check(torch.dot(torch.from_numpy(v), torch.from_numpy(v)), v @ v, rtol=tol)
    check(torch.outer(torch.from_numpy(v), torch.from_numpy(v)), np.outer(v, v), rtol=tol)
    check(torch.einsum("ij,jk->ik", torch.from_numpy(a), torch.from_numpy(b)),
          np.einsum("ij,jk->ik", a, b), rtol=tol, atol=tol)
    check(torch.einsum("bij,bjk->bik", torch.from_numpy(ba), torch.from_numpy(bb)),
          ba @ bb, rtol=tol, atol=tol)
    check(torch.einsum("ij->j", torch.from_numpy(a)), a.sum(0), rtol=tol, atol=tol)


def test_joining_splitting():
    a = np.arange(12).reshape(3, 4)
    t = torch.from_numpy(a)
    check(torch.cat([t, t], 1), np.concatenate([a, a], 1))
    check(torch.stack([t, t], 2), np.stack([a, a], 2))
    check(torch.hstack([t, t]), np.hstack([a, a]))
    check(torch.vstack([t, t]), np.vstack([a, a]))
    check(torch.vstack([torch.arange(3), torch.arange(3)]), np.vstack([np.arange(3)] * 2))
    parts = t.split(2, dim=1)
    assert [p.shape[1] for p in parts] == [2, 2]
    parts = torch.split(t, [1, 2], dim=0)
    check(parts[1], a[1:])
    ch = t.chunk(3, 1)
    assert [c.shape[1] for c in ch] == [2, 2]
    ub = t.unbind(1)
    assert len(ub) == 4
    check(ub[2], a[:, 2])
    # views share memory
    parts[0][0, 0] = 100
    assert t[0, 0].item() == 100
    check(torch.cat([torch.ones(2, dtype=torch.int32), torch.ones(2, dtype=torch.float64)]),
          np.ones(4))
    assert torch.cat([torch.ones(2, dtype=torch.int32), torch.ones(2)]).dtype is torch.float32


def test_indexing():
    a = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4)
    t = torch.from_numpy(a)
    check(t[1], a[1])
    check(t[:, 1:3, ::2], a[:, 1:3, ::2])
    check(t[..., -1], a[..., -1])
    check(t[None, 0, :, None], a[None, 0, :, None])
    idx = np.array([2, 0, 2])
    check(t[:, torch.from_numpy(idx)], a[:, idx])
    check(t[t > 10], a[a > 10])
    check(t[[0, 1], [1, 2]], a[[0, 1], [1, 2]])
    check(t.index_select(2, torch.tensor([3, 0])), a[:, :, [3, 0]])
    g = np.array([[[0, 3], [1, 1], [2, 0]]] * 2)
    check(t.gather(2, torch.from_numpy(g)), np.take_along_axis(a, g, 2))
    check(t.masked_fill(t > 5, -1.0), np.where(a > 5, -1.0, a))
    check(t.masked_fill(torch.tensor([True, False, True, False]), 7.0),
          np.where(np.array([True, False, True, False]), 7.0, a))
    m = torch.tensor([True, False, True, False])
    assert t.masked_fill(m, torch.tensor(2.0)).dtype is torch.float32
    ti = torch.arange(4)
    assert ti.masked_fill(ti > 1, 9).tolist() == [0, 1, 9, 9]
    nz = torch.tensor([[0, 1], [2, 0]]).nonzero()
    assert nz.tolist() == [[0, 1], [1, 0]]
    rows, cols = torch.tensor([[0, 1], [2, 0]]).nonzero(as_tuple=True)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    s = torch.zeros(3, 4).scatter(1, torch.tensor([[1], [3], [0]]), 5.0)
    want = np.zeros((3, 4))
    want[[0, 1, 2], [1, 3, 0]] = 5.0
    check(s, want)
    s = torch.zeros(2, 3).scatter_add(1, torch.tensor([[0, 0], [2, 1]]),
                                      torch.ones(2, 2))
    check(s, [[2.0, 0, 0], [0, 1, 1]])


def test_index_assignment():
    t = torch.zeros(3, 4)
    t[0] = 1.0
    t[:, 1] = torch.tensor([1.0, 2.0, 3.0])
    t[2, 2:] = torch.tensor(9.0)
    t[torch.tensor([1, 2]), torch.tensor([3, 0])] = torch.tensor([5.0, 6.0])
    t[t > 8] = -1.0
    t[..., 0] += 10
    want = np.zeros((3, 4))
    want[0] = 1
    want[:, 1] = [1, 2, 3]
    want[2, 2:] = 9
    want[[1, 2], [3, 0]] = [5, 6]
    want[want > 8] = -1
    want[..., 0] += 10
    check(t, want)
    u = torch.zeros(2, 3)
    u[:, :] = torch.tensor([1.0, 2.0, 3.0])  # broadcast value
    check(u, np.tile([1.0, 2.0, 3.0], (2, 1)))
    u[0] = torch.tensor([7, 8, 9])  # int value into float tensor
    check(u[0], [7.0, 8.0, 9.0])
    v = torch.arange(6).view(2, 3)
    v.t()[1] = 0  # assignment through a transposed view writes the base
    assert v.tolist() == [[0, 0, 2], [3, 0, 5]]


def test_movement():
    a = np.arange(24).reshape(2, 3, 4)
    t = torch.from_numpy(a)
    check(t.flip(0), np.flip(a, 0))
    check(t.flip(0, 2), np.flip(a, (0, 2)))
    check(t.roll(1, 2), np.roll(a, 1, 2))
    check(t.roll(-2), np.roll(a, -2))
    check(t.roll((1, 1), (0, 1)), np.roll(a, (1, 1), (0, 1)))
    check(t.repeat(2, 1, 1), np.tile(a, (2, 1, 1)))
    check(t.permute(2, 0, 1), a.transpose(2, 0, 1))
    check(t.expand(3, 2, 3, 4), np.broadcast_to(a, (3, 2, 3, 4)))
    check(t[:, :1].expand(-1, 3, -1), np.broadcast_to(a[:, :1], (2, 3, 4)))
    check(torch.ones(3, 1).expand_as(torch.ones(3, 4)), np.ones((3, 4)))
    check(t.reshape(-1, 4).t(), a.reshape(-1, 4).T)
    check(t.T, a.transpose(2, 1, 0))
    check(torch.tril(torch.ones(3, 3)), np.tril(np.ones((3, 3))))
    check(torch.triu(torch.ones(3, 3), 1), np.triu(np.ones((3, 3)), 1))
    check(t.squeeze(), a)
    check(t[:, :1].squeeze(1), a[:, 0])
    check(t.unsqueeze(-1), a[..., None])
    check(t.narrow(2, 1, 2), a[:, :, 1:3])
    check(t.select(1, -1), a[:, -1])
    check(torch.diag(torch.tensor([1, 2])), np.diag([1, 2]))


INPLACE_UNARY = ["neg", "abs", "exp", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt",
                 "reciprocal", "sin", "cos", "tan", "tanh", "sigmoid", "erf", "relu", "sign",
                 "floor", "ceil", "round", "trunc", "square"]


@pytest.mark.parametrize("name", INPLACE_UNARY)
def test_inplace_unary_matches_out_of_place(name):
    a = torch.tensor([[0.5, 1.5, 2.0], [0.25, 3.0, 1.0]])
    want = getattr(a, name)()
    v = a.t()  # non-contiguous, written through to a
    out = getattr(v, name + "_")()
    assert out is v
    check(a, want.numpy())
    assert a._version == 1


@pytest.mark.parametrize("name,other", [
    ("add", 2.0), ("sub", torch.tensor([1.0, 2.0, 3.0])), ("mul", 3), ("div", 4.0),
    ("pow", 2), ("remainder", 0.7), ("floor_divide", 2.0), ("maximum", torch.ones(3)),
    ("minimum", torch.ones(1)), ("atan2", torch.ones(3)), ("clamp_min", 1.0),
    ("clamp_max", 1.0), ("lerp", None), ("fill", 7.0), ("zero", None), ("copy", None),
])
def test_inplace_binary_and_fills(name, other):
    a = torch.tensor([[0.5, 1.5, 2.0], [0.25, 3.0, 1.0]])
    b = a.clone()
    if name == "lerp":
        want = a.lerp(torch.zeros(3), 0.5)
        b.lerp_(torch.zeros(3), 0.5)
    elif name == "fill":
        want = torch.full((2, 3), 7.0)
        b.fill_(7.0)
    elif name == "zero":
        want = torch.zeros(2, 3)
        b.zero_()
    elif name == "copy":
        want = torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)
        b.copy_(torch.tensor([1, 2, 3]))
    else:
        want = getattr(a, name)(other)
        assert getattr(b, name + "_")(other) is b
    check(b, want.numpy())
    a.add_(torch.ones(3), alpha=2)
    check(a, np.array([[2.5, 3.5, 4.0], [2.25, 5.0, 3.0]], np.float32))
    a.clamp_(3, 4)
    assert a.min().item() == 3 and a.max().item() == 4
    i = torch.tensor([1, 2, 3])
    i.mul_(2).add_(1).clamp_(max=6)
    assert i.tolist() == [3, 5, 6] and i.dtype is torch.int64


@pytest.mark.parametrize("dtype", [torch.float16, torch.int16, torch.int8, torch.uint8,
                                   torch.bool])
def test_small_dtypes(dtype):
    a = arr((2, 3), dtype, 1, 4)
    b = arr((3,), dtype, 1, 4)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    if dtype is torch.bool:
        check(ta & tb, a & b)
        check(ta | tb, a | b)
        check(ta == tb, a == b)
        assert (ta + tb).dtype is torch.bool and (ta * tb).tolist() == (a & b).tolist()
        assert ta.sum().dtype is torch.int64
        return
    for op in ("add", "mul", "maximum", "minimum", "sub"):
        got = getattr(torch, op)(ta, tb)
        assert got.dtype is dtype
        check(got, getattr(np, {"add": "add", "mul": "multiply", "sub": "subtract"}.get(
            op, op))(a, b), rtol=1e-3)
    check(ta < tb, a < b)
    check(ta.abs(), np.abs(a))
    check(ta.amax(1), a.max(1))
    assert ta.sum().dtype is (torch.float16 if dtype is torch.float16 else torch.int64)
    d = ta / tb
    assert d.dtype is (torch.float16 if dtype is torch.float16 else torch.float32)
    check(d, (a.astype(np.float64) / b).astype(d.dtype.np), rtol=1e-3)
    if dtype is torch.float16:
        check(torch.exp(ta), np.exp(a), rtol=1e-3)
        check(ta.mean(0), a.mean(0), rtol=1e-3)
    else:
        assert torch.exp(ta).dtype is torch.float32
