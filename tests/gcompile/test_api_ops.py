"""The wider torch op surface (issue 13 ops group; issue 12 item 5): each function against an
independent NumPy computation, gradients by finite differences, and compile without graph
breaks where the op is a graph op."""
from __future__ import annotations

import math

import numpy as np
import pytest

import gcompile as torch
from gcompile.autograd import gradcheck

RNG = np.random.default_rng(0)


def T(a, **kw):
    return torch.tensor(np.asarray(a), **kw)


def f64(*shape, lo=-2.0, hi=2.0):
    return torch.tensor(RNG.uniform(lo, hi, shape), dtype=torch.float64, requires_grad=True)


def _no_break(fn, *args):
    cf = torch.compile(fn)
    got = cf(*args)
    if not cf.entries:  # a first call whose result views a temporary runs eagerly, retraces
        got = cf(*args)
    assert cf.entries and not cf.graph_breaks, cf.graph_breaks
    return got


# ---- issue 12 item 5: these trace without a graph break ------------------------------------
@pytest.mark.parametrize("name", ["sort", "topk", "median", "median_dim", "kthvalue", "isclose",
                                  "masked_fill_0d", "argsort", "cummax", "msort"])
def test_ordering_ops_compile_without_graph_break(name):
    x = torch.randn(5, 6)
    fns = {
        "sort": lambda x: torch.sort(x, dim=1, descending=True).values * 2,
        "topk": lambda x: torch.topk(x, 3, dim=0).values + 1,
        "median": lambda x: torch.median(x) * 3,
        "median_dim": lambda x: torch.median(x, 1).values - 1,
        "kthvalue": lambda x: torch.kthvalue(x, 2, 1).values,
        "isclose": lambda x: torch.isclose(x, x + 1e-7).float() + x,
        "masked_fill_0d": lambda x: x.masked_fill(x > 0, torch.tensor(0.5)) * 2,
        "argsort": lambda x: torch.argsort(x, 1).float() + x,
        "cummax": lambda x: torch.cummax(x, 1).values * 2,
        "msort": lambda x: torch.sort(x, 0).values + torch.sort(x, 0).indices.float(),
    }
    fn = fns[name]
    got = _no_break(fn, x)
    np.testing.assert_allclose(got.numpy(), fn(x).numpy(), rtol=1e-6, atol=1e-6)


def test_sort_values_indices_and_gradient():
    a = RNG.standard_normal((4, 7))
    x = torch.tensor(a, requires_grad=True)
    s = torch.sort(x, 1, descending=True)
    np.testing.assert_array_equal(s.indices.numpy(), np.argsort(-a, axis=1, kind="stable"))
    np.testing.assert_allclose(s.values.detach().numpy(), -np.sort(-a, axis=1))
    assert gradcheck(lambda t: torch.sort(t, 0).values, (f64(5, 3),))
    assert gradcheck(lambda t: torch.topk(t, 2, 1).values, (f64(3, 5),))
    assert gradcheck(lambda t: torch.median(t, 1).values, (f64(3, 5),))


def test_isclose_matches_numpy():
    a = np.array([1.0, np.inf, -np.inf, np.nan, 1e-9, 100.0, 0.0])
    b = np.array([1.0 + 1e-6, np.inf, np.inf, np.nan, 0.0, 100.001, -0.0])
    for equal_nan in (False, True):
        got = torch.isclose(T(a), T(b), equal_nan=equal_nan).numpy()
        np.testing.assert_array_equal(got, np.isclose(a, b, equal_nan=equal_nan))
    assert torch.isclose(T([1, 2]), T([1, 3])).tolist() == [True, False]


def test_masked_fill_zero_d_value_keeps_dtype_and_gradient():
    x = torch.arange(5)
    out = x.masked_fill(x > 2, torch.tensor(7.9))
    assert out.dtype == torch.int64 and out.tolist() == [0, 1, 2, 7, 7]
    v = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t, v: t.masked_fill(t > 0, v), (f64(3, 4), v))


# ---- 0-d tensors with dim=0 ----------------------------------------------------------------
def test_zero_d_with_dim():
    s = torch.tensor(3.0)
    for fn in (lambda: torch.max(s, 0), lambda: torch.min(s, -1), lambda: torch.topk(s, 1, 0),
               lambda: torch.kthvalue(s, 1, 0), lambda: torch.median(s, 0),
               lambda: torch.sort(s, 0), lambda: torch.cummax(s, 0)):
        v, i = fn()
        assert v.shape == () and v.item() == 3.0 and i.shape == () and i.item() == 0
    assert torch.cumsum(s, 0).shape == () and torch.cumprod(s, 0).item() == 3.0
    assert torch.gather(s, 0, torch.tensor(0)).item() == 3.0
    assert s.scatter(0, torch.tensor(0), 5.0).item() == 5.0
    assert s.index_select(0, torch.tensor([0])).shape == ()
    assert tuple(torch.nonzero(s).shape) == (1, 0)
    assert tuple(torch.nonzero(torch.tensor(0.0)).shape) == (0, 0)
    with pytest.raises(IndexError):
        torch.max(s, 1)


# ---- elementwise special functions --------------------------------------------------------
_SPECIAL = {
    "asin": (math.asin, (-0.9, 0.9)), "acos": (math.acos, (-0.9, 0.9)),
    "atan": (math.atan, (-3, 3)), "sinh": (math.sinh, (-3, 3)), "cosh": (math.cosh, (-3, 3)),
    "asinh": (math.asinh, (-3, 3)), "acosh": (math.acosh, (1.1, 4)),
    "atanh": (math.atanh, (-0.9, 0.9)), "erfc": (math.erfc, (-3, 3)),
    "lgamma": (math.lgamma, (0.1, 6)), "exp2": (lambda v: 2.0 ** v, (-3, 3)),
    "logit": (lambda v: math.log(v / (1 - v)), (0.05, 0.95)),
    "sinc": (lambda v: math.sin(math.pi * v) / (math.pi * v), (0.1, 2)),
    "digamma": (lambda v: (math.lgamma(v + 1e-6) - math.lgamma(v - 1e-6)) / 2e-6, (0.3, 5)),
}


@pytest.mark.parametrize("name", sorted(_SPECIAL))
def test_special_unary(name):
    ref, (lo, hi) = _SPECIAL[name]
    a = RNG.uniform(lo, hi, (3, 4))
    got = getattr(torch, name)(T(a)).numpy()
    np.testing.assert_allclose(got, np.vectorize(ref)(a), rtol=1e-6, atol=1e-8)
    assert gradcheck(getattr(torch, name), (f64(2, 3, lo=lo, hi=hi),))
    assert getattr(T(a), name)().shape == (3, 4)


def test_erfinv_inverts_erf_and_aliases():
    y = RNG.uniform(-0.999, 0.999, 50)
    x = torch.erfinv(T(y)).numpy()
    np.testing.assert_allclose([math.erf(v) for v in x], y, rtol=1e-12, atol=1e-14)
    assert torch.erfinv(T([1.0, -1.0, 2.0])).tolist()[:2] == [math.inf, -math.inf]
    assert math.isnan(torch.erfinv(T([2.0])).item())
    assert torch.special.erfinv is torch.erfinv and torch.arcsin is torch.asin
    assert gradcheck(torch.erfinv, (f64(4, lo=-0.9, hi=0.9),))


def test_polygamma_and_digamma_poles():
    x = T([1.0, 2.0, 0.5])
    np.testing.assert_allclose(torch.polygamma(1, x).numpy(),
                               [math.pi ** 2 / 6, math.pi ** 2 / 6 - 1, math.pi ** 2 / 2])
    np.testing.assert_allclose(torch.digamma(T([1.0])).numpy(), [-0.5772156649015329])
    d = torch.digamma(T([0.0, -1.0, -0.5])).numpy()
    assert d[0] == -math.inf and math.isnan(d[1])
    np.testing.assert_allclose(d[2], 0.03648997397857652)
    assert gradcheck(lambda t: torch.polygamma(2, t), (f64(3, lo=0.5, hi=3),))


@pytest.mark.parametrize("name", ["hypot", "logaddexp", "logaddexp2", "xlogy", "fmax", "fmin",
                                  "atan2"])
def test_special_binary(name):
    a, b = RNG.uniform(0.1, 3, (3, 4)), RNG.uniform(0.1, 3, (4,))
    ref = {"hypot": np.hypot, "logaddexp": np.logaddexp, "logaddexp2": np.logaddexp2,
           "xlogy": lambda x, y: x * np.log(y), "fmax": np.fmax, "fmin": np.fmin,
           "atan2": np.arctan2}[name]
    np.testing.assert_allclose(getattr(torch, name)(T(a), T(b)).numpy(), ref(a, b), rtol=1e-12)
    assert gradcheck(getattr(torch, name), (f64(2, 3, lo=0.2, hi=2), f64(3, lo=0.2, hi=2)))


def test_nan_aware_functions():
    a = np.array([[np.nan, 1.0, np.inf], [2.0, -np.inf, np.nan]])
    np.testing.assert_array_equal(torch.nan_to_num(T(a)).numpy(), np.nan_to_num(a))
    np.testing.assert_array_equal(torch.nan_to_num(T(a), nan=1.5, posinf=9.0, neginf=-9.0)
                                  .numpy(), np.nan_to_num(a, nan=1.5, posinf=9.0, neginf=-9.0))
    b = np.array([[np.nan, 1.0, 3.0], [2.0, 4.0, np.nan]])
    np.testing.assert_allclose(torch.nansum(T(b), 1).numpy(), np.nansum(b, 1))
    np.testing.assert_allclose(torch.nanmean(T(b)).numpy(), np.nanmean(b))
    np.testing.assert_array_equal(torch.fmax(T([np.nan, 1.0]), T([2.0, np.nan])).numpy(),
                                  [2.0, 1.0])
    assert torch.xlogy(T([0.0]), T([0.0])).item() == 0.0
    assert math.isnan(torch.xlogy(T([0.0]), T([np.nan])).item())
    assert torch.logaddexp(T([np.inf]), T([np.inf])).item() == np.inf
    assert torch.hypot(T([1e300]), T([1e300])).item() == pytest.approx(math.sqrt(2) * 1e300)


# ---- products --------------------------------------------------------------------------------
def test_fused_products():
    i, b1, b2 = RNG.standard_normal((2, 3, 5)), RNG.standard_normal((2, 3, 4)), \
        RNG.standard_normal((2, 4, 5))
    np.testing.assert_allclose(torch.baddbmm(T(i), T(b1), T(b2), beta=0.5, alpha=2).numpy(),
                               0.5 * i + 2 * b1 @ b2)
    np.testing.assert_allclose(torch.addbmm(T(i[0]), T(b1), T(b2)).numpy(),
                               i[0] + (b1 @ b2).sum(0))
    m, v = RNG.standard_normal((3, 4)), RNG.standard_normal(4)
    np.testing.assert_allclose(torch.addmv(T(np.ones(3)), T(m), T(v), alpha=3).numpy(),
                               1 + 3 * m @ v)
    np.testing.assert_allclose(torch.addr(T(np.ones((3, 4))), T(m[:, 0]), T(v)).numpy(),
                               1 + np.outer(m[:, 0], v))
    nan_in = T(np.full((2, 3, 5), np.nan))
    assert not torch.baddbmm(nan_in, T(b1), T(b2), beta=0).isnan().any()
    assert gradcheck(lambda a, b, c: torch.baddbmm(a, b, c, beta=0.5),
                     (f64(2, 3, 5), f64(2, 3, 4), f64(2, 4, 5)))


def test_kron_block_diag_cdist_cross():
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal((3, 2))
    np.testing.assert_allclose(torch.kron(T(a), T(b)).numpy(), np.kron(a, b))
    bd = torch.block_diag(T(a), T(b), T([7.0])).numpy()
    want = np.zeros((6, 6))
    want[:2, :3], want[2:5, 3:5], want[5, 5] = a, b, 7.0
    np.testing.assert_array_equal(bd, want)
    x1, x2 = RNG.standard_normal((4, 3)), RNG.standard_normal((5, 3))
    want = np.sqrt(((x1[:, None] - x2[None]) ** 2).sum(-1))
    np.testing.assert_allclose(torch.cdist(T(x1), T(x2)).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(torch.cdist(T(x1), T(x2), p=1).numpy(),
                               np.abs(x1[:, None] - x2[None]).sum(-1), rtol=1e-12)
    u, w = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))
    np.testing.assert_allclose(torch.cross(T(u), T(w), dim=1).numpy(), np.cross(u, w))
    np.testing.assert_allclose(torch.linalg.cross(T(u), T(w)).numpy(), np.cross(u, w))
    assert gradcheck(lambda p, q: torch.cross(p, q, dim=-1), (f64(2, 3), f64(2, 3)))
    assert gradcheck(torch.kron, (f64(2, 2), f64(2, 3)))


# ---- shapes and indices ------------------------------------------------------------------
def test_shape_functions():
    a = RNG.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(torch.movedim(T(a), 0, -1).numpy(), np.moveaxis(a, 0, -1))
    np.testing.assert_array_equal(torch.moveaxis(T(a), (0, 1), (2, 0)).numpy(),
                                  np.moveaxis(a, (0, 1), (2, 0)))
    np.testing.assert_array_equal(torch.tile(T(a), (2,)).numpy(), np.tile(a, (2,)))
    np.testing.assert_array_equal(torch.tile(T(a[0]), (2, 1, 3)).numpy(), np.tile(a[0], (2, 1, 3)))
    for off in (-2, -1, 0, 1, 3):
        np.testing.assert_array_equal(torch.diagonal(T(a), off, 1, 2).numpy(),
                                      np.diagonal(a, off, 1, 2))
    np.testing.assert_array_equal(T(a).diagonal(0, 0, 2).numpy(), np.diagonal(a, 0, 0, 2))
    m = RNG.standard_normal((3, 3))
    for k in (-1, 0, 1, 2, 5):
        np.testing.assert_array_equal(torch.rot90(T(m), k).numpy(), np.rot90(m, k))
    np.testing.assert_array_equal(torch.rot90(T(a), 1, (2, 0)).numpy(), np.rot90(a, 1, (2, 0)))
    np.testing.assert_array_equal(torch.diff(T(a), 2, 1).numpy(), np.diff(a, 2, 1))
    np.testing.assert_array_equal(torch.diff(T([1, 3, 6]), prepend=T([0])).numpy(),
                                  np.diff([1, 3, 6], prepend=0))
    r, c = torch.tril_indices(4, 3, -1)
    np.testing.assert_array_equal(np.stack([r.numpy(), c.numpy()]),
                                  np.stack(np.tril_indices(4, -1, 3)))
    np.testing.assert_array_equal(torch.triu_indices(3, 5, 1).numpy(),
                                  np.stack(np.triu_indices(3, 1, 5)))
    for idx in ("ij", "xy"):
        g = torch.meshgrid(T([1, 2, 3]), T([4, 5]), indexing=idx)
        w = np.meshgrid([1, 2, 3], [4, 5], indexing=idx)
        for gg, ww in zip(g, w):
            np.testing.assert_array_equal(gg.numpy(), ww)
    assert gradcheck(lambda t: torch.diagonal(t, 1), (f64(3, 4),))
    assert gradcheck(lambda t: torch.diag_embed(t, 1), (f64(2, 3),))
    np.testing.assert_array_equal(torch.diag_embed(T(m)).numpy(),
                                  np.stack([np.diag(r) for r in m]))


def test_repeat_interleave_and_take_along_dim():
    a = RNG.standard_normal((2, 3))
    np.testing.assert_array_equal(torch.repeat_interleave(T(a), 2).numpy(), np.repeat(a, 2))
    np.testing.assert_array_equal(torch.repeat_interleave(T(a), 2, dim=1).numpy(),
                                  np.repeat(a, 2, 1))
    np.testing.assert_array_equal(T(a).repeat_interleave(T([1, 3]), dim=0).numpy(),
                                  np.repeat(a, [1, 3], 0))
    assert torch.repeat_interleave(T([2, 0, 1])).tolist() == [0, 0, 2]
    idx = np.argsort(a, 1)
    np.testing.assert_array_equal(torch.take_along_dim(T(a), T(idx), 1).numpy(),
                                  np.take_along_axis(a, idx, 1))
    np.testing.assert_array_equal(torch.take_along_dim(T(a), T(np.array([[0], [2]])), 1)
                                  .numpy(), np.take_along_axis(a, np.array([[0], [2]]), 1))
    assert gradcheck(lambda t: torch.repeat_interleave(t, 3, 0), (f64(2, 2),))


def test_scatter_reduce_and_index_family():
    x = np.arange(6.0)
    idx = np.array([0, 1, 0, 1, 2, 1])
    src = np.array([5.0, 1.0, 7.0, 2.0, -3.0, 4.0])
    for reduce, include_self in itertools_product(("sum", "prod", "mean", "amax", "amin"),
                                                  (True, False)):
        want = x.copy()
        groups = {}
        for i, v in zip(idx, src):
            groups.setdefault(i, []).append(v)
        for i, vs in groups.items():
            vals = ([x[i]] if include_self else []) + vs
            want[i] = {"sum": np.sum, "prod": np.prod, "mean": np.mean, "amax": np.max,
                       "amin": np.min}[reduce](vals)
        got = T(x).scatter_reduce(0, T(idx), T(src), reduce, include_self=include_self)
        np.testing.assert_allclose(got.numpy(), want, err_msg=f"{reduce} {include_self}")
    a = np.zeros((3, 2))
    got = T(a).index_copy(0, T([2, 0]), T(np.array([[1.0, 2.0], [3.0, 4.0]])))
    np.testing.assert_array_equal(got.numpy(), [[3, 4], [0, 0], [1, 2]])
    np.testing.assert_array_equal(T(a).index_fill(1, T([1]), -1.0).numpy(),
                                  [[0, -1], [0, -1], [0, -1]])
    np.testing.assert_array_equal(torch.index_add(T(a), 0, T([0, 0]), T(np.ones((2, 2))))
                                  .numpy(), [[2, 2], [0, 0], [0, 0]])
    m = np.array([[True, False], [False, True], [True, True]])
    got = T(a).masked_scatter(T(m), T(np.arange(10.0)))
    want = a.copy()
    want[m] = np.arange(m.sum())
    np.testing.assert_array_equal(got.numpy(), want)
    assert gradcheck(lambda t, s: t.masked_scatter(T(m), s), (f64(3, 2), f64(5)))
    assert gradcheck(lambda t, s: t.scatter_reduce(0, T(idx), s, "amax"),
                     (f64(6), torch.tensor(src, requires_grad=True)))


def itertools_product(*its):
    import itertools
    return itertools.product(*its)


def test_counting_and_searching():
    a = np.array([3, 1, 1, 0, 7, 3])
    np.testing.assert_array_equal(torch.bincount(T(a)).numpy(), np.bincount(a))
    w = RNG.standard_normal(6)
    np.testing.assert_allclose(torch.bincount(T(a), T(w), minlength=10).numpy(),
                               np.bincount(a, w, minlength=10))
    with pytest.raises(RuntimeError):
        torch.bincount(T([-1, 2]))
    u, inv, cnt = torch.unique(T(a), return_inverse=True, return_counts=True)
    wu, winv, wcnt = np.unique(a, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(u.numpy(), wu)
    np.testing.assert_array_equal(inv.numpy(), winv)
    np.testing.assert_array_equal(cnt.numpy(), wcnt)
    assert torch.unique_consecutive(T([1, 1, 2, 2, 1])).tolist() == [1, 2, 1]
    seq = np.array([1.0, 2.0, 2.0, 5.0])
    v = np.array([[0.5, 2.0], [5.0, 9.0]])
    for right in (False, True):
        np.testing.assert_array_equal(torch.searchsorted(T(seq), T(v), right=right).numpy(),
                                      np.searchsorted(seq, v, "right" if right else "left"))
        np.testing.assert_array_equal(torch.bucketize(T(v), T(seq), right=right).numpy(),
                                      np.searchsorted(seq, v, "right" if right else "left"))
    assert torch.searchsorted(T(seq), T(v), side="right", out_int32=True).dtype == torch.int32
    cm = torch.cummin(T([3.0, 1.0, 2.0, 1.0, 0.5]), 0)
    assert cm.values.tolist() == [3.0, 1.0, 1.0, 1.0, 0.5] and cm.indices.tolist() == [0, 1, 1,
                                                                                       3, 4]
    lse = RNG.standard_normal((3, 5))
    np.testing.assert_allclose(torch.logcumsumexp(T(lse), 1).numpy(),
                               np.log(np.cumsum(np.exp(lse), 1)), rtol=1e-12)
    assert gradcheck(lambda t: torch.logcumsumexp(t, 0), (f64(4, 2),))
    assert gradcheck(lambda t: torch.cummax(t, 1).values, (f64(2, 5),))


def test_einsum_ellipsis():
    a, b = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 4, 5))
    for eq in ("...ij,...jk->...ik", "...ij,...jk", "i...->..."):
        ops = (a, b) if "," in eq else (a,)
        np.testing.assert_allclose(torch.einsum(eq, *[T(o) for o in ops]).numpy(),
                                   np.einsum(eq, *ops), rtol=1e-12)
    got = _no_break(lambda p, q: torch.einsum("...ij,...jk->...ik", p, q), T(a), T(b))
    np.testing.assert_allclose(got.numpy(), a @ b, rtol=1e-12)


# ---- keyword arguments ---------------------------------------------------------------------
def test_keyword_arguments():
    assert torch.div(T([-7, 7]), 2, rounding_mode="trunc").tolist() == [-3, 3]
    assert torch.div(T([-7, 7]), T([2, -2]), rounding_mode="floor").tolist() == [-4, -4]
    assert torch.div(T([-7.5, 7.5]), 2, rounding_mode="trunc").tolist() == [-3.0, 3.0]
    x = T([-7, 9])
    x.div_(4, rounding_mode="trunc")
    assert x.tolist() == [-1, 2]
    with pytest.raises(RuntimeError, match="rounding_mode"):
        torch.div(T([1.0]), 2, rounding_mode="round")
    a = RNG.standard_normal((3, 4))
    np.testing.assert_array_equal(T(a).flip(dims=(0,)).numpy(), a[::-1])
    np.testing.assert_array_equal(torch.flip(T(a), dims=[1]).numpy(), a[:, ::-1])
    np.testing.assert_allclose(T(a).std(False).item(), a.std())
    np.testing.assert_allclose(torch.var(T(a), True).item(), a.var(ddof=1))
    np.testing.assert_allclose(T(a).var(1, False).numpy(), a.var(1))
    z = T(a).new_zeros(2, 3, device="cpu", requires_grad=True)
    assert z.shape == (2, 3) and z.requires_grad and z.dtype == torch.float64
    assert T(a).new_full((2,), 3.0, device="cpu").tolist() == [3.0, 3.0]
    assert T(a).new_tensor([1, 2], device="cpu").dtype == torch.float64
    assert T(a).contiguous(memory_format=torch.contiguous_format).shape == (3, 4)
    assert T(a).to(memory_format=torch.channels_last).shape == (3, 4)
    assert torch.zeros_like(T(a), memory_format=torch.preserve_format).shape == (3, 4)
    assert torch.empty(size=(4, 3)).shape == (4, 3)
    assert torch.zeros(size=(2,)).tolist() == [0.0, 0.0]
    assert torch.ones(size=[2, 1]).shape == (2, 1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        torch.ones(2, foo=1)
    with pytest.raises(TypeError, match="multiple values"):
        torch.empty(2, size=(3,))
    with pytest.raises(TypeError):
        torch.zeros_like(T(a), memory_format="channels_last")


# ---- more documented functions ---------------------------------------------------------------
def test_more_documented_functions():
    a = np.array([-1.5, -0.0, 0.0, 2.0, np.inf, -np.inf])
    np.testing.assert_array_equal(torch.signbit(T(a)).numpy(), np.signbit(a))
    np.testing.assert_array_equal(torch.isposinf(T(a)).numpy(), np.isposinf(a))
    np.testing.assert_array_equal(torch.isneginf(T(a)).numpy(), np.isneginf(a))
    np.testing.assert_array_equal(torch.heaviside(T(a), T(0.5)).numpy(),
                                  np.heaviside(a, 0.5))
    np.testing.assert_array_equal(torch.isin(T([1, 2, 3, 4]), T([2, 4])).numpy(),
                                  [False, True, False, True])
    np.testing.assert_array_equal(torch.isin(T([1, 2]), T([2]), invert=True).numpy(),
                                  [True, False])
    m = RNG.standard_normal((3, 4))
    assert torch.count_nonzero(T(np.array([[0, 1], [2, 0]]))).item() == 2
    np.testing.assert_array_equal(torch.msort(T(m)).numpy(), np.sort(m, 0))
    assert torch.atleast_3d(T([1.0, 2.0])).shape == (1, 2, 1)
    np.testing.assert_array_equal(torch.diagflat(T([1.0, 2.0]), 1).numpy(),
                                  np.diagflat([1.0, 2.0], 1))
    np.testing.assert_array_equal(torch.take(T(m), T(np.array([[0, 5], [11, 3]]))).numpy(),
                                  np.take(m, [[0, 5], [11, 3]]))
    assert [t.shape[1] for t in torch.hsplit(T(m), 2)] == [2, 2]
    y, x = RNG.standard_normal((2, 5)), np.sort(RNG.standard_normal(5))
    np.testing.assert_allclose(torch.trapezoid(T(y), T(x)).numpy(),
                               ((y[:, 1:] + y[:, :-1]) / 2 * np.diff(x)).sum(-1))
    np.testing.assert_allclose(torch.trapz(T(y), dx=0.5).numpy(),
                               ((y[:, 1:] + y[:, :-1]) / 2 * 0.5).sum(-1))
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(torch.vander(T(v)).numpy(), np.vander(v))
    np.testing.assert_array_equal(torch.vander(T(v), 4, increasing=True).numpy(),
                                  np.vander(v, 4, increasing=True))
    import itertools
    np.testing.assert_array_equal(torch.cartesian_prod(T([1, 2]), T([3, 4, 5])).numpy(),
                                  list(itertools.product([1, 2], [3, 4, 5])))
    np.testing.assert_array_equal(torch.combinations(T([1, 2, 3]), 2).numpy(),
                                  list(itertools.combinations([1, 2, 3], 2)))
    np.testing.assert_array_equal(torch.combinations(T([1, 2]), 2, with_replacement=True)
                                  .numpy(), [[1, 1], [1, 2], [2, 2]])
    np.testing.assert_allclose(torch.cov(T(m)).numpy(), np.cov(m))
    fw = np.array([1, 2, 1, 3])
    aw = RNG.uniform(0.5, 1.5, 4)
    np.testing.assert_allclose(torch.cov(T(m), fweights=T(fw), aweights=T(aw)).numpy(),
                               np.cov(m, fweights=fw, aweights=aw))
    np.testing.assert_allclose(torch.corrcoef(T(m)).numpy(), np.corrcoef(m))
    np.testing.assert_allclose(torch.ldexp(T([1.0, 3.0]), T([2, -1])).numpy(), [4.0, 1.5])
    assert torch.bitwise_left_shift(T([1, -3]), 2).tolist() == [4, -12]
    assert torch.bitwise_right_shift(T([16, -7]), 2).tolist() == [4, -2]
    for name, ref in (("hann_window", np.hanning), ("hamming_window", np.hamming),
                      ("blackman_window", np.blackman), ("bartlett_window", np.bartlett)):
        np.testing.assert_allclose(getattr(torch, name)(6, periodic=False).numpy(), ref(6),
                                   atol=1e-6, err_msg=name)
        np.testing.assert_allclose(getattr(torch, name)(6).numpy(), ref(7)[:6], atol=1e-6)
    np.testing.assert_allclose(torch.kaiser_window(5, False, 8.0).numpy(), np.kaiser(5, 8.0),
                               rtol=1e-5)
    assert torch.positive(T([1])).tolist() == [1] and torch.sgn(T([-2.0])).tolist() == [-1.0]
    assert torch.isreal(T([1.0])).tolist() == [True] and not torch.is_complex(T([1.0]))
    torch.use_deterministic_algorithms(True)
    assert torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)


def test_torch_namespace_linear_algebra():
    a = RNG.uniform(-0.4, 0.4, (3, 3)) + 2 * np.eye(3)
    np.testing.assert_allclose(torch.inverse(T(a)).numpy(), np.linalg.inv(a))
    np.testing.assert_allclose(torch.det(T(a)).item(), np.linalg.det(a))
    np.testing.assert_allclose(torch.logdet(T(a)).item(), np.log(np.linalg.det(a)))
    assert math.isnan(torch.logdet(T(-a)).item()) == (np.linalg.det(-a) < 0)
    spd = a @ a.T
    L = torch.cholesky(T(spd))
    b = RNG.standard_normal((3, 2))
    np.testing.assert_allclose(torch.cholesky_solve(T(b), L).numpy(), np.linalg.solve(spd, b))
    np.testing.assert_allclose(torch.cholesky_inverse(L).numpy(), np.linalg.inv(spd))
    up = np.triu(a)
    sol = torch.triangular_solve(T(b), T(up)).solution
    np.testing.assert_allclose(up @ sol.numpy(), b, atol=1e-12)
    U, S, V = torch.svd(T(a))
    np.testing.assert_allclose((U * S @ V.T).numpy(), a, atol=1e-12)
    np.testing.assert_allclose(torch.pinverse(T(a)).numpy(), np.linalg.pinv(a), atol=1e-12)
    np.testing.assert_allclose(torch.matrix_power(T(a), 2).numpy(), a @ a)
    np.testing.assert_allclose(torch.chain_matmul(T(a), T(a), T(a)).numpy(), a @ a @ a)
    # matrix_exp of a skew-symmetric 2x2 is a rotation
    th = 0.7
    r = torch.matrix_exp(T([[0.0, -th], [th, 0.0]])).numpy()
    np.testing.assert_allclose(r, [[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]],
                               atol=1e-12)
    big = RNG.standard_normal((3, 3)) * 3
    w, vecs = np.linalg.eig(big)
    want = (vecs * np.exp(w)) @ np.linalg.inv(vecs)
    np.testing.assert_allclose(torch.matrix_exp(T(big)).numpy(), want.real, rtol=1e-9)
    assert gradcheck(torch.matrix_exp, (f64(2, 2, lo=-0.5, hi=0.5),))
    np.testing.assert_allclose(torch.mvlgamma(T([2.5]), 2).numpy(),
                               [math.log(math.pi) / 2 + math.lgamma(2.5) + math.lgamma(2.0)])


def test_nanmedian_histc_renorm_frexp():
    a = np.array([[np.nan, 3.0, 1.0, 2.0], [5.0, np.nan, np.nan, 4.0], [np.nan] * 4])
    r = torch.nanmedian(T(a), 1)
    got = r.values.numpy()
    np.testing.assert_array_equal(got[:2], [2.0, 4.0])
    assert math.isnan(got[2])
    assert a[0, r.indices[0].item()] == 2.0
    assert torch.nanmedian(T(a[:2])).item() == 3.0
    v = RNG.standard_normal(50)
    np.testing.assert_array_equal(torch.histc(T(v), bins=7, min=-1, max=1).numpy(),
                                  np.histogram(v[(v >= -1) & (v <= 1)], 7, (-1, 1))[0])
    np.testing.assert_array_equal(torch.histc(T(v), bins=5).numpy(), np.histogram(v, 5)[0])
    m = RNG.standard_normal((3, 4)) * 3
    got = torch.renorm(T(m), 2, 0, 1.0).numpy()
    nrm = np.linalg.norm(m, axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.where(nrm > 1, m / (nrm + 1e-7), m))
    x = np.array([0.0, 1.0, -3.5, 1e-310, 8.0, 0.75])
    mant, ex = torch.frexp(T(x))
    wm, we = np.frexp(x)
    np.testing.assert_array_equal(mant.numpy(), wm)
    np.testing.assert_array_equal(ex.numpy(), we)
    got = _no_break(lambda t: torch.nanmedian(t, 1).values * 2, T(a[:2]))
    np.testing.assert_array_equal(got.numpy(), [4.0, 8.0])


def test_random_creation_size_keyword_and_out():
    assert torch.rand(size=(2, 3)).shape == (2, 3)
    assert torch.randn(size=[4]).shape == (4,)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, generator=g)
    g.manual_seed(3)
    np.testing.assert_array_equal(torch.randn(size=(3,), generator=g).numpy(), a.numpy())
    out = torch.empty(1)
    assert torch.rand(2, 2, out=out) is out and out.shape == (2, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sizes'"):
        torch.randn(2, sizes=3)
    with pytest.raises(TypeError, match="multiple values"):
        torch.rand(2, size=(2,))


def test_thread_count_settings():
    before = torch.get_num_threads()
    assert before >= 1
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1
    from threadpoolctl import threadpool_info
    assert all(info["num_threads"] == 1 for info in threadpool_info()
               if info.get("user_api") == "blas")
    from kernels import cpu
    assert cpu._nthreads() == 1  # the generated kernels' parallel path too
    torch.set_num_threads(3)
    assert cpu._nthreads() == 3
    torch.set_num_threads(before)
    with pytest.raises(RuntimeError, match="positive integer"):
        torch.set_num_threads(0)
    torch.set_num_interop_threads(2)
    assert torch.get_num_interop_threads() == 2


def test_new_functions_are_tensor_methods_too():
    a = T(np.array([[3.0, 1.0], [1.0, 2.0]]))
    np.testing.assert_allclose(a.inverse().numpy(), np.linalg.inv(a.numpy()))
    assert a.det().item() == pytest.approx(5.0)
    assert a.ravel().shape == (4,) and a.msort().shape == (2, 2)
    np.testing.assert_allclose(a.cholesky().numpy(), np.linalg.cholesky(a.numpy()))
    assert a.count_nonzero().item() == 4 and not a.is_complex()
    assert a.asinh().shape == (2, 2) and a.digamma().shape == (2, 2)
    assert a.movedim(0, 1).shape == (2, 2) and a.logcumsumexp(0).shape == (2, 2)


def test_nanquantile_and_isclose_dtype_message():
    a = RNG.standard_normal((3, 6))
    a[0, 2] = a[1, 0] = a[1, 4] = np.nan
    for interp in ("linear", "lower", "higher", "midpoint", "nearest"):
        np.testing.assert_allclose(
            torch.nanquantile(T(a), 0.3, dim=1, interpolation=interp).numpy(),
            np.nanquantile(a, 0.3, axis=1, method=interp), err_msg=interp)
    np.testing.assert_allclose(torch.nanquantile(T(a), T([0.1, 0.9])).numpy(),
                               np.nanquantile(a, [0.1, 0.9]))
    np.testing.assert_allclose(torch.nanquantile(T(a), 0.5, dim=0, keepdim=True).numpy(),
                               np.nanquantile(a, 0.5, axis=0, keepdims=True))
    assert math.isnan(torch.nanquantile(T([np.nan, np.nan]), 0.5).item())
    with pytest.raises(RuntimeError, match="Float did not match Double"):
        torch.isclose(torch.ones(2), torch.ones(2, dtype=torch.float64))
