"""rand_uniform's Philox4x32-10 stream: the cipher against Random123's known answers, the
native kernel against the NumPy reference for every size class and thread split, and the
samples' statistics."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile  # noqa: F401  (serves the ops natively)
import kernels.cpu as cpu
from ir import dtypes as dt
from ir.ops.random import philox_blocks
from ir.registry import REGISTRY


M = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    """The cipher per block with Python ints, written from the paper."""
    c, k = list(ctr), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & M, p1 & M, ((p0 >> 32) ^ c[3] ^ k[1]) & M, p0 & M]
        k = [(k[0] + 0x9E3779B9) & M, (k[1] + 0xBB67AE85) & M]
    return c


# Random123 kat_vectors: philox4x32 10 rounds (counter, key) -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M, M, M, M), (M, M), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_cipher_known_answers(ctr, key, want):
    assert tuple(philox4x32_10(ctr, key)) == want


def test_reference_blocks_are_the_cipher():
    seed = 2**40 + 12345
    w = philox_blocks(seed, 70)
    for b in (0, 1, 2, 69):
        got = tuple(int(x[b]) for x in w)
        assert got == tuple(philox4x32_10((b, 0, 0, 0), (seed & M, seed >> 32)))


OP = REGISTRY["rand_uniform"]


def test_samples_from_the_scalar_cipher():
    seed = 2**33 + 99
    key = (seed & M, seed >> 32)
    u32 = OP.impl(np.array(seed, np.int64), (11,), dt.float32)
    u64 = OP.impl(np.array(seed, np.int64), (5,), dt.float64)
    for i in range(11):
        w = philox4x32_10((i // 4, 0, 0, 0), key)[i % 4]
        assert u32[i] == np.float32((w >> 8) / 2**24)
    for i in range(5):
        w = philox4x32_10((i // 2, 0, 0, 0), key)
        hi, lo = w[2 * (i % 2)], w[2 * (i % 2) + 1]
        assert u64[i] == ((hi >> 5) * 2**26 + (lo >> 6)) / 2**53


@pytest.mark.parametrize("dtype", [dt.float32, dt.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 1001, 4099, 40003])
@pytest.mark.parametrize("seed", [0, 99, 2**63 - 2])
def test_native_equals_reference(dtype, n, seed):
    s = np.array(seed, np.int64)
    got = OP.impl(s, (n,), dtype)
    want = OP.reference(s, (n,), dtype)
    assert got.dtype == want.dtype == dtype.np
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [dt.float32, dt.float64])
def test_thread_split_does_not_change_samples(dtype):
    s = np.array(7, np.int64)
    old = cpu.set_parallel_threshold(1)
    try:
        cpu.set_num_threads(2)
        par = OP.impl(s, (3, 1001), dtype)
    finally:
        cpu.set_parallel_threshold(old)
        cpu.set_num_threads(None)
    np.testing.assert_array_equal(par, OP.reference(s, (3, 1001), dtype))


def test_out_buffer_and_half_dtypes():
    s = np.array(5, np.int64)
    out = np.full((4, 6), -1.0, np.float32)
    res = OP.impl(s, (4, 6), dt.float32, out=out)
    assert res is out and (out >= 0).all() and (out < 1).all()
    h = OP.impl(s, (4, 6), dt.float16)
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h, out.astype(np.float16))


def test_statistics():
    u = OP.impl(np.array(3, np.int64), (1 << 18,), dt.float32).astype(np.float64)
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u.size)
    assert abs(u.var() - 1 / 12) < 0.002
    assert u.min() >= 0 and u.max() < 1
    hist = np.bincount((u * 16).astype(int), minlength=16)
    exp = u.size / 16
    chi2 = ((hist - exp) ** 2 / exp).sum()
    assert chi2 < 45  # 15 degrees of freedom: p ~ 1e-4
    # neighbours and different seeds are uncorrelated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    v = OP.impl(np.array(4, np.int64), (1 << 18,), dt.float32).astype(np.float64)
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.01
