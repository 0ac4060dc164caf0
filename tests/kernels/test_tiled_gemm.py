"""Large float32 products as tiles for OpenBLAS's small kernels (kernels.cpu.tiled_gemm):
which layouts and sizes tile, that the tiles cover each output element once, and that
the tiled result is the product (float64 reference) with the same bits on one thread
as on two, also after repointing and beside another product (``bind_pair``)."""
import numpy as np
import pytest

import gcompile
import kernels.cpu as cpu
from kernels.cpu import blas_calls, bound_gemm, native_pool, tiled_gemm

N_, T_ = blas_calls.NO_TRANS, blas_calls.TRANS
SMALL = 1_000_000
rng = np.random.default_rng(11)


@pytest.mark.parametrize("layout, m, n, k, want", [
    # the MNIST CNN's dense layer: g @ W, g^T @ x, and the forward W @ x^T (long K)
    ((N_, N_), 64, 9216, 128, ("tiles", 64, 64, 128)),
    ((T_, N_), 128, 9216, 64, ("tiles", 128, 64, 64)),
    ((N_, T_), 128, 64, 9216, ("tiles", 16, 64, 976)),
    # GPT's: input gradients, weight gradients (K = the batch's 1024 rows), fc2 forward
    ((N_, N_), 1024, 128, 384, ("tiles", 16, 128, 384)),
    ((N_, N_), 1024, 128, 512, ("tiles", 16, 64, 512)),
    ((T_, N_), 384, 128, 1024, ("tiles", 32, 32, 976)),
    # the LSTM's weight gradients (K = 2048 rows), and a long-K a @ b with a small output
    ((T_, N_), 65, 128, 2048, ("tiles", 32, 32, 976)),
    ((N_, N_), 64, 128, 2048, ("tiles", 32, 64, 480)),
    ((N_, T_), 1024, 128, 512, ("tiles", 16, 64, 512)),
    # where tiles ran slower or were not measured faster: one GEMM
    ((N_, T_), 1024, 384, 128, None),     # a @ b^T with a short K
    ((T_, N_), 512, 512, 512, None),      # a^T @ b in 16 x 64 tiles
    ((N_, N_), 256, 512, 1024, None),     # a @ b with K over 512 and a large output
    ((N_, N_), 1024, 1024, 1024, None),   # large: the packed path's blocking wins
    ((N_, T_), 1024, 64, 4096, None),     # long K, but an output over 16 K values
    ((T_, T_), 512, 512, 256, None),
    ((N_, N_), 64, 64, 64, None),         # small: fewer than MIN_TILES tiles' worth
])
def test_which_products_tile(layout, m, n, k, want):
    assert tiled_gemm.tiling(*layout, m, n, k, SMALL) == want
    assert tiled_gemm.tiling(*layout, m, n, k, 0) is None, "no small kernels: one GEMM"


@pytest.mark.parametrize("layout, m, n, k", [
    ((N_, N_), 64, 9216, 128), ((T_, N_), 128, 9216, 64), ((N_, T_), 128, 64, 9216),
    ((N_, N_), 1000, 130, 200), ((T_, N_), 300, 100, 1100), ((N_, T_), 40, 70, 9000),
    ((N_, N_), 70, 100, 3000), ((T_, N_), 65, 128, 2048)])
def test_tiles_cover_each_element_once(layout, m, n, k):
    plan = tiled_gemm.tiling(*layout, m, n, k, SMALL)
    assert plan is not None
    ldc = n + 5
    rows = tiled_gemm.tile_rows((*layout, m, n, k, 1, 1, ldc), plan, 4)
    seen = np.zeros((m, ldc), np.int64)
    for r in rows:
        start = r[12] // 4
        seen[start // ldc:start // ldc + r[2], start % ldc:start % ldc + r[3]] += 1
        assert r[2] * r[3] * min(r[4], r[5]) <= SMALL, "each call within the small kernels"
    assert (seen[:, :n] == 1).all() and not seen[:, n:].any()


needs_small = pytest.mark.skipif(
    not (blas_calls.provide() and native_pool.available() and blas_calls.small_gemm_macs()),
    reason="needs NumPy's OpenBLAS with small-matrix kernels and the native thread pool")


def _operand(shape, trans, pad):
    """A float32 (shape) matrix, stored transposed when ``trans``, inside a wider buffer."""
    r, c = shape[::-1] if trans else shape
    a = rng.standard_normal((r, c + pad)).astype(np.float32)[:, :c]
    return a.T if trans else a


def _bind(x, y, o):
    for _ in range(3):
        try:
            return bound_gemm.bind(x, y, o)
        except bound_gemm.Deferred:
            tiled_gemm.kernel("float32").load()
    raise AssertionError("kernel never loaded")


CASES = [("NN", 64, 9216, 128), ("TN", 128, 9216, 64), ("NT", 128, 64, 9216),
         ("NN", 1000, 130, 200), ("TN", 300, 100, 1100), ("NT", 40, 70, 9000),
         ("NN", 70, 100, 3000), ("TN", 65, 128, 2048)]


@needs_small
@pytest.mark.parametrize("lay, m, n, k", CASES)
@pytest.mark.parametrize("pad", [0, 3])
def test_tiled_product_is_the_product_on_one_and_two_threads(lay, m, n, k, pad):
    x = _operand((m, k), lay[0] == "T", pad)
    y = _operand((k, n), lay[1] == "T", pad)
    big = np.full((m, n + pad), np.nan, np.float32)
    o = big[:, :n]
    want = x.astype(np.float64) @ y.astype(np.float64)
    got = {}
    old = gcompile.get_num_threads()
    try:
        for threads in (2, 1):
            gcompile.set_num_threads(threads)
            o[...] = np.nan
            bd = _bind(x, y, o)
            assert isinstance(bd, tiled_gemm.TiledGemm) and not bd.exact
            bd()
            got[threads] = o.copy()
            np.testing.assert_allclose(o, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
            assert np.isnan(big[:, n:]).all(), "nothing written outside o"
    finally:
        gcompile.set_num_threads(old)
    np.testing.assert_array_equal(got[1], got[2])
    # other arrays of the layout: repointed, the same tiles
    x2, y2 = _operand((m, k), lay[0] == "T", pad), _operand((k, n), lay[1] == "T", pad)
    o2 = np.empty_like(big)[:, :n]
    assert bound_gemm.layout_of(x2, y2, o2) == bd.layout and bd.repoint(x2, y2, o2)
    bd()
    want2 = x2.astype(np.float64) @ y2.astype(np.float64)
    np.testing.assert_allclose(o2, want2, rtol=2e-5, atol=2e-5 * np.abs(want2).max())
    assert not bd.repoint(x2, y2, x2[:, :n] if k >= n else y2[:m]), "overlap: NumPy runs it"
    # one array moved (the others fresh views of the same memory): only its tiles'
    # pointers change, and the call reads or writes the new array
    for moved in range(3):
        arrays = [x2.view(), y2.view(), o2.view()]
        old = arrays[moved]
        arrays[moved] = np.empty_like(big)[:, :n] if moved == 2 else \
            _operand(old.shape, lay[moved] == "T", pad)
        keep = o2.copy()
        assert bound_gemm.layout_of(*arrays) == bd.layout and bd.repoint(*arrays)
        bd()
        want3 = arrays[0].astype(np.float64) @ arrays[1].astype(np.float64)
        np.testing.assert_allclose(arrays[2], want3, rtol=2e-5, atol=2e-5 * np.abs(want3).max())
        if moved == 2:
            np.testing.assert_array_equal(o2, keep)
        assert bd.repoint(x2, y2, o2)


@needs_small
def test_a_pair_of_tiled_products_gives_each_ones_bits():
    """A Linear layer's two gradient products side by side, both tiled: each result has
    the bits of its product bound alone."""
    if not cpu._native_threads(2) or cpu._nthreads() < 2:
        pytest.skip("needs two kernel threads")
    g, x, w = (rng.standard_normal(s).astype(np.float32)
               for s in ((64, 128), (64, 1152), (128, 1152)))
    dw, dx = np.empty((128, 1152), np.float32), np.empty((64, 1152), np.float32)
    alone = []
    for a, b, o in ((g.T, x, dw), (g, w, dx)):
        bd = _bind(a, b, o)
        assert isinstance(bd, tiled_gemm.TiledGemm)
        bd()
        alone.append(o.copy())
        o[...] = np.nan
    task = bound_gemm.bind_pair((g.T, x, dw), (g, w, dx))
    assert task is not None
    task()
    np.testing.assert_array_equal(dw, alone[0])
    np.testing.assert_array_equal(dx, alone[1])
