"""Row reductions of the generated kernels. Float max/min run as integer reductions over
order keys (``fastmath.float_key``): every float, signed zeros, infinities and NaNs of
either sign must give what the compare-and-select loop gave (NumPy's nan-propagating
max/min). Float sums run in vector lanes (``fastmath.vsum``): exact up to rounding, NaN
and inf as any sum, and one fixed order whatever the thread split."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as gc
import gcompile.nn.functional as F
from kernels.cpu.codegen import KEY_NEG_INF, KEY_POS_INF
from kernels.cpu.fastmath import float_key, key_float, vsum


def _neg_nan(dtype):
    bits = {np.float32: (np.uint32, 0xFFC00000), np.float64: (np.uint64, 0xFFF8000000000000)}
    u, v = bits[dtype]
    return np.array([v], u).view(dtype)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keys_order_as_floats(dtype):
    from numba import njit

    @njit
    def keys(a):
        out = np.empty(a.size, np.int64)
        for i in range(a.size):
            out[i] = float_key(a[i])
        return out

    @njit
    def back(a):
        out = np.empty_like(a)
        for i in range(a.size):
            out[i] = key_float(float_key(a[i]), a[i])
        return out

    fin = np.finfo(dtype)
    vals = np.array([-np.inf, -fin.max, -1.5, -fin.tiny, -fin.smallest_subnormal, 0.0,
                     fin.smallest_subnormal, fin.tiny, 1.0, fin.max, np.inf], dtype)
    k = keys(vals)
    assert (np.diff(k) > 0).all()
    assert k[0] == KEY_NEG_INF[np.dtype(dtype).name] and k[-1] == KEY_POS_INF[
        np.dtype(dtype).name]
    np.testing.assert_array_equal(back(vals).view(np.uint8), vals.view(np.uint8))
    nans = keys(np.array([np.nan, _neg_nan(dtype)], dtype))
    assert nans[0] > k[-1] and nans[1] < k[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_min_and_softmax_match_numpy(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 37)).astype(dtype)
    x[1, 5] = np.nan
    x[2, 30] = _neg_nan(dtype)
    x[3, :] = -np.inf
    x[4, :] = np.inf
    x[5, 7] = np.inf
    x[6, 0] = -np.inf
    x[7, :] = -rng.random(37).astype(dtype) * 1e-40  # negative subnormals / tiny
    def fn(t):
        return t.amax(-1), t.amin(-1), F.softmax(t, -1), F.log_softmax(t, -1)

    got = [r.numpy() for r in gc.compile(fn)(gc.tensor(x))]
    np.testing.assert_array_equal(got[0], x.max(-1))
    np.testing.assert_array_equal(got[1], x.min(-1))
    want = [r.numpy() for r in fn(gc.tensor(x))]  # eager: the ops' NumPy implementations
    for g, w in zip(got[2:], want[2:]):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("compiled", [False, True])
def test_empty_reduced_dim_is_refused_as_torch(compiled):
    fn = (lambda t: t.amax(-1), lambda t: t.amin(1))
    for f in fn:
        f = gc.compile(f) if compiled else f
        with pytest.raises(IndexError, match="Expected reduction dim 1 to have non-zero size"):
            f(gc.zeros(3, 0))
    assert tuple(gc.zeros(0, 3).amax(-1).shape) == (0,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vsum_every_length(dtype):
    from numba import njit

    @njit
    def total(a, n):
        return vsum(a, n)

    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1023, 1024, 1025):
        a = rng.standard_normal(n + 3).astype(dtype)
        got = total(a, n)
        want = float(np.sum(a[:n], dtype=np.float64))
        assert type(got) is float or got.dtype == dtype
        assert abs(got - want) <= 4 * np.finfo(dtype).eps * max(1.0, np.abs(a[:n]).sum())
    a = np.ones(40, dtype)
    a[37] = np.nan
    assert np.isnan(total(a, 40)) and total(a, 37) == 37
    a[37] = np.inf
    assert total(a, 40) == np.inf


def test_row_sums_do_not_depend_on_threads():
    import kernels.cpu as cpu

    x = gc.tensor(np.random.default_rng(2).standard_normal((300, 257)).astype(np.float32))

    def fn(t):
        return t.sum(-1), F.layer_norm(t, (257,)), F.softmax(t, -1)

    one = [r.numpy() for r in gc.compile(fn)(x)]
    old = cpu.set_parallel_threshold(1)
    try:
        cpu.set_num_threads(2)
        two = [r.numpy() for r in gc.compile(fn)(x)]
    finally:
        cpu.set_parallel_threshold(old)
        cpu.set_num_threads(None)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    eager = [r.numpy() for r in fn(x)]
    for a, b in zip(one, eager):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
