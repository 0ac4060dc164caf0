"""``matmul_into``'s cuBLAS path (nvmath-python) without a GPU: a fake ``cublas`` module
stands in for ``nvmath.bindings.cublas`` and runs real column-major GEMMs on the raw
pointers it is given (under the CUDA simulator a device array's memory is host memory),
so the row-major -> column-major mapping (operand swap, N/T flags, leading dimensions,
batch strides, host alpha/beta) is checked against NumPy, as are the layouts that must
fall back to the tiled kernel. One test needs a real GPU and compares with NumPy there."""
from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

cuda = pytest.importorskip("numba.cuda")

from kernels.cuda import gemm  # noqa: E402
from kernels.cuda.views import strided  # noqa: E402

RNG = np.random.default_rng(0)
N_, T_ = 0, 1  # cublasOperation_t


class FakeCublas:
    """The part of ``nvmath.bindings.cublas`` that gemm.py calls, with cuBLAS's argument
    rules checked and its column-major semantics computed in NumPy on the raw memory.
    Every byte touched must lie inside an array registered with ``allow``."""

    Operation = SimpleNamespace(N=N_, T=T_)
    PointerMode = SimpleNamespace(HOST=0, DEVICE=1)
    ComputeType = SimpleNamespace(COMPUTE_32F=68)
    GemmAlgo = SimpleNamespace(DFALT=-1)

    def __init__(self):
        self.calls: list[tuple] = []
        self.handles: dict[int, dict] = {}  # live ones
        self.created: list[tuple[int, int]] = []  # (handle, thread)
        self.destroyed: list[int] = []
        self.ranges: list[tuple[int, int]] = []

    def allow(self, d):
        ary = d._ary
        lo = ary.__array_interface__["data"][0]
        self.ranges.append((lo, lo + ary.nbytes))
        return d

    # handles
    def create(self):
        h = 0x1000 + len(self.created)
        self.handles[h] = {"stream": None, "mode": None, "thread": threading.get_ident()}
        self.created.append((h, threading.get_ident()))
        return h

    def destroy(self, h):
        self.destroyed.append(h)
        del self.handles[h]

    def set_stream(self, h, s):
        self.handles[h]["stream"] = s

    def set_pointer_mode(self, h, mode):
        self.handles[h]["mode"] = mode

    # GEMMs
    def sgemm(self, h, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc):
        self._gemm("sgemm", np.float32, np.float32, h, ta, tb, m, n, k, al, a, lda, 0, b,
                   ldb, 0, be, c, ldc, 0, 1)

    def dgemm(self, h, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc):
        self._gemm("dgemm", np.float64, np.float64, h, ta, tb, m, n, k, al, a, lda, 0, b,
                   ldb, 0, be, c, ldc, 0, 1)

    def sgemm_strided_batched(self, h, ta, tb, m, n, k, al, a, lda, sa, b, ldb, sb, be, c,
                              ldc, sc, count):
        self._gemm("sgemm_strided_batched", np.float32, np.float32, h, ta, tb, m, n, k, al,
                   a, lda, sa, b, ldb, sb, be, c, ldc, sc, count)

    def dgemm_strided_batched(self, h, ta, tb, m, n, k, al, a, lda, sa, b, ldb, sb, be, c,
                              ldc, sc, count):
        self._gemm("dgemm_strided_batched", np.float64, np.float64, h, ta, tb, m, n, k, al,
                   a, lda, sa, b, ldb, sb, be, c, ldc, sc, count)

    def _ex_types(self, atype, btype, ctype, compute, algo):
        assert atype == btype == ctype == 2  # CUDA_R_16F
        assert compute == 68 and algo == -1  # COMPUTE_32F, default algorithm

    def gemm_ex(self, h, ta, tb, m, n, k, al, a, atype, lda, b, btype, ldb, be, c, ctype,
                ldc, compute, algo):
        self._ex_types(atype, btype, ctype, compute, algo)
        self._gemm("gemm_ex", np.float16, np.float32, h, ta, tb, m, n, k, al, a, lda, 0, b,
                   ldb, 0, be, c, ldc, 0, 1)

    def gemm_strided_batched_ex(self, h, ta, tb, m, n, k, al, a, atype, lda, sa, b, btype,
                                ldb, sb, be, c, ctype, ldc, sc, count, compute, algo):
        self._ex_types(atype, btype, ctype, compute, algo)
        self._gemm("gemm_strided_batched_ex", np.float16, np.float32, h, ta, tb, m, n, k,
                   al, a, lda, sa, b, ldb, sb, be, c, ldc, sc, count)

    def _scalar(self, ptr, dt):
        return np.frombuffer((ctypes.c_char * np.dtype(dt).itemsize).from_address(ptr),
                             dtype=dt)[0]

    def _mat(self, ptr, rows, cols, ld, dt):
        """The column-major ``rows x cols`` matrix at ``ptr`` with leading dim ``ld``."""
        isz = np.dtype(dt).itemsize
        nbytes = ((cols - 1) * ld + rows) * isz
        assert any(lo <= ptr and ptr + nbytes <= hi for lo, hi in self.ranges), \
            "cuBLAS would touch memory outside the operands"
        buf = np.frombuffer((ctypes.c_char * nbytes).from_address(ptr), dtype=dt)
        return as_strided(buf, (rows, cols), (isz, ld * isz))

    def _gemm(self, name, dt, sdt, h, ta, tb, m, n, k, al, a, lda, sa, b, ldb, sb, be, c,
              ldc, sc, count):
        st = self.handles[h]
        assert st["mode"] == self.PointerMode.HOST and st["stream"] == gemm._stream()
        assert st["thread"] == threading.get_ident(), "a handle used by another thread"
        self.calls.append((name, ta, tb, m, n, k, lda, sa, ldb, sb, ldc, sc, count))
        assert ta in (N_, T_) and tb in (N_, T_) and min(m, n, k) >= 1 and count >= 1
        ar, ac = (m, k) if ta == N_ else (k, m)  # the stored A (column-major)
        br, bc = (k, n) if tb == N_ else (n, k)
        assert lda >= max(1, ar) and ldb >= max(1, br) and ldc >= max(1, m), "bad ld"
        alpha, beta = self._scalar(al, sdt), self._scalar(be, sdt)
        isz = np.dtype(dt).itemsize
        for z in range(count):
            A = self._mat(a + z * sa * isz, ar, ac, lda, dt)
            B = self._mat(b + z * sb * isz, br, bc, ldb, dt)
            C = self._mat(c + z * sc * isz, m, n, ldc, dt)
            opa = (A if ta == N_ else A.T).astype(sdt)
            opb = (B if tb == N_ else B.T).astype(sdt)
            r = alpha * (opa @ opb)
            if beta != 0:  # beta == 0: C is not read (NaN in it does not propagate)
                r = r + beta * C.astype(sdt)
            C[...] = r.astype(dt)


@pytest.fixture
def fake(monkeypatch):
    fk = FakeCublas()
    tiled = []
    real_tiled = gemm.tiled_gemm

    def spy(a, b, out):
        tiled.append(tuple(out.shape))
        real_tiled(a, b, out)

    monkeypatch.setattr(gemm, "_cublas", lambda: fk)
    monkeypatch.setattr(gemm, "cublas_available", lambda: True)
    monkeypatch.setattr(gemm, "_local", threading.local())
    monkeypatch.setattr(gemm, "tiled_gemm", spy)
    fk.tiled = tiled
    return fk


def dev(fk, x):
    return fk.allow(cuda.to_device(np.ascontiguousarray(x)))


def nan_out(fk, shape, dtype):
    return dev(fk, np.full(shape, np.nan, dtype))


def tview(fk, x):
    """A device view of ``x`` whose memory is ``x``'s transpose (unit row stride)."""
    d = dev(fk, np.ascontiguousarray(x.T))
    M, K = x.shape
    return strided(d, (M, K), (1, M))


def test_c_contiguous_2d_odd_sizes(fake):
    a = RNG.standard_normal((7, 5)).astype(np.float32)
    b = RNG.standard_normal((5, 3)).astype(np.float32)
    out = nan_out(fake, (7, 3), np.float32)
    gemm.matmul_into(dev(fake, a), dev(fake, b), out)
    np.testing.assert_allclose(out.copy_to_host(), a @ b, rtol=1e-5, atol=1e-6)
    # C^T (3x7) = B^T (3x5, b's memory, ld 3) @ A^T (5x7, a's memory, ld 5)
    assert fake.calls == [("sgemm", N_, N_, 3, 7, 5, 3, 0, 5, 0, 3, 0, 1)]
    assert fake.tiled == []


@pytest.mark.parametrize("ta,tb", [(True, False), (False, True), (True, True)])
def test_transposed_operands(fake, ta, tb):
    a = RNG.standard_normal((6, 4)).astype(np.float32)
    b = RNG.standard_normal((4, 5)).astype(np.float32)
    da = tview(fake, a) if ta else dev(fake, a)
    db = tview(fake, b) if tb else dev(fake, b)
    out = nan_out(fake, (6, 5), np.float32)
    gemm.matmul_into(da, db, out)
    np.testing.assert_allclose(out.copy_to_host(), a @ b, rtol=1e-5, atol=1e-6)
    (name, opa, opb, m, n, k, lda, _, ldb, _, ldc, _, _), = fake.calls
    assert (name, m, n, k, ldc) == ("sgemm", 5, 6, 4, 5)
    # cuBLAS's A is our b: stored as b (op T, ld = b's column stride 4) or b^T (op N, ld 5)
    assert (opa, lda) == ((T_, 4) if tb else (N_, 5))
    assert (opb, ldb) == ((T_, 6) if ta else (N_, 4))
    assert fake.tiled == []


def test_padded_leading_dims_leave_the_padding_alone(fake):
    """Sub-matrix views (row stride > row length) pass their row stride as ld; the
    output's padding columns are never written."""
    big_a = RNG.standard_normal((5, 9)).astype(np.float32)
    big_b = RNG.standard_normal((4, 8)).astype(np.float32)
    ba, bb = dev(fake, big_a), dev(fake, big_b)
    a = strided(ba, (5, 4), (9, 1), 2)  # big_a[:, 2:6]
    b = strided(bb, (4, 3), (8, 1), 1)  # big_b[:, 1:4]
    host_c = np.full((5, 7), -7.0, np.float32)
    bc = dev(fake, host_c)
    gemm.matmul_into(a, b, strided(bc, (5, 3), (7, 1), 2))  # into host_c[:, 2:5]
    ref = host_c.copy()
    ref[:, 2:5] = big_a[:, 2:6] @ big_b[:, 1:4]
    np.testing.assert_allclose(bc.copy_to_host(), ref, rtol=1e-5, atol=1e-6)
    assert fake.calls == [("sgemm", N_, N_, 3, 5, 4, 8, 0, 9, 0, 7, 0, 1)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_and_broadcast_batch(fake, dtype):
    p = "s" if dtype == "float32" else "d"
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12)
    a = RNG.standard_normal((3, 4, 5)).astype(dtype)
    b = RNG.standard_normal((3, 5, 2)).astype(dtype)
    out = nan_out(fake, (3, 4, 2), dtype)
    gemm.matmul_into(dev(fake, a), dev(fake, b), out)
    np.testing.assert_allclose(out.copy_to_host(), a @ b, **tol)
    assert fake.calls[-1] == (p + "gemm_strided_batched", N_, N_, 2, 4, 5, 2, 10, 5, 20,
                              2, 8, 3)
    # a broadcast batch on the left, then on the right (zero batch stride)
    a2 = RNG.standard_normal((4, 5)).astype(dtype)
    out = nan_out(fake, (3, 4, 2), dtype)
    gemm.matmul_into(strided(dev(fake, a2), (3, 4, 5), (0, 5, 1)), dev(fake, b), out)
    np.testing.assert_allclose(out.copy_to_host(), a2 @ b, **tol)
    assert fake.calls[-1][7] == 10 and fake.calls[-1][9] == 0  # our a is cuBLAS's B
    b2 = RNG.standard_normal((5, 2)).astype(dtype)
    out = nan_out(fake, (3, 4, 2), dtype)
    gemm.matmul_into(dev(fake, a), strided(tview(fake, b2), (3, 5, 2), (0, 1, 5)), out)
    np.testing.assert_allclose(out.copy_to_host(), a @ b2, **tol)
    assert fake.calls[-1][1:3] == (T_, N_) and fake.calls[-1][7] == 0
    assert fake.tiled == []


def test_float64_2d_uses_dgemm(fake):
    a, b = RNG.standard_normal((3, 8)), RNG.standard_normal((8, 6))
    out = nan_out(fake, (3, 6), np.float64)
    gemm.matmul_into(dev(fake, a), dev(fake, b), out)
    np.testing.assert_allclose(out.copy_to_host(), a @ b, rtol=1e-12)
    assert [c[0] for c in fake.calls] == ["dgemm"]


def test_float16_uses_gemm_ex_with_float32_compute(fake):
    a = RNG.standard_normal((2, 4, 6)).astype(np.float16)
    b = RNG.standard_normal((2, 6, 3)).astype(np.float16)
    out = nan_out(fake, (2, 4, 3), np.float16)
    gemm.matmul_into(dev(fake, a), dev(fake, b), out)
    ref = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    np.testing.assert_allclose(out.copy_to_host().astype(np.float32), ref, rtol=2e-3,
                               atol=2e-3)
    out = nan_out(fake, (4, 3), np.float16)
    gemm.matmul_into(dev(fake, a[0]), dev(fake, b[0]), out)
    np.testing.assert_allclose(out.copy_to_host().astype(np.float32), ref[0], rtol=2e-3,
                               atol=2e-3)
    assert [c[0] for c in fake.calls] == ["gemm_strided_batched_ex", "gemm_ex"]


@pytest.mark.parametrize("case", ["no_unit_stride", "zero_stride_row", "out_transposed"])
def test_layouts_cublas_cannot_take_fall_back_to_tiled(fake, case):
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    b = RNG.standard_normal((4, 2)).astype(np.float32)
    da, db = dev(fake, a), dev(fake, b)
    out = nan_out(fake, (3, 2), np.float32)
    ref = a @ b
    if case == "no_unit_stride":  # every other element of a 6x8 array: strides (16, 2)
        big = np.zeros((6, 8), np.float32)
        big[::2, ::2] = a
        da = strided(dev(fake, big), (3, 4), (16, 2))
    elif case == "zero_stride_row":  # a's first row repeated
        da = strided(da, (3, 4), (0, 1))
        ref = np.broadcast_to(a[:1], (3, 4)) @ b
    else:
        out = strided(nan_out(fake, (2, 3), np.float32), (3, 2), (1, 3))
    gemm.matmul_into(da, db, out)
    got = out.copy_to_host()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert fake.calls == [] and fake.tiled == [(3, 2)]


def test_empty_k_gives_zeros_and_empty_m_does_nothing(fake):
    a = dev(fake, np.zeros((3, 0), np.float32))
    b = dev(fake, np.zeros((0, 2), np.float32))
    out = nan_out(fake, (3, 2), np.float32)
    gemm.matmul_into(a, b, out)
    np.testing.assert_array_equal(out.copy_to_host(), np.zeros((3, 2), np.float32))
    gemm.matmul_into(dev(fake, np.zeros((0, 4), np.float32)), dev(fake, np.ones((4, 2),
                     np.float32)), dev(fake, np.zeros((0, 2), np.float32)))
    assert fake.calls == [] and fake.tiled == []


def test_one_handle_per_thread_bound_to_numba_default_stream(fake):
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    b = RNG.standard_normal((3, 2)).astype(np.float32)
    da, db = dev(fake, a), dev(fake, b)
    out = nan_out(fake, (2, 2), np.float32)
    for _ in range(3):
        gemm.matmul_into(da, db, out)
    assert len(fake.handles) == 1
    err = []

    def other():
        try:
            gemm.matmul_into(da, db, out)
        except BaseException as e:  # noqa: BLE001 - reported below
            err.append(e)
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert not err, err
    assert len(fake.calls) == 4 and len(fake.created) == 2
    (mine, me), (theirs, them) = fake.created
    assert me == threading.get_ident() != them
    for _ in range(100):  # the finished thread's handle goes with its thread-local state
        if fake.destroyed:
            break
        gc.collect()
        time.sleep(0.01)
    assert fake.destroyed == [theirs] and list(fake.handles) == [mine]
    assert fake.handles[mine]["stream"] == gemm._stream() in (0, 2)
    np.testing.assert_allclose(out.copy_to_host(), a @ b, rtol=1e-5, atol=1e-6)


def test_shape_mismatch_is_refused(fake):
    a = dev(fake, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError):
        gemm.matmul_into(a, dev(fake, np.ones((4, 2), np.float32)),
                         dev(fake, np.ones((2, 2), np.float32)))


@pytest.fixture
def fresh_cache():
    gemm.cublas_available.cache_clear()
    yield
    gemm.cublas_available.cache_clear()


def test_without_nvmath_cublas_is_unavailable_and_tiled_runs(monkeypatch, fresh_cache):
    for mod in ("nvmath", "nvmath.bindings", "nvmath.bindings.cublas"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails
    with monkeypatch.context() as m:  # as on a real GPU, so the import is what decides
        m.setattr(gemm, "simulator", lambda: False)
        assert gemm.cublas_available() is False
    ran = []
    real = gemm.tiled_gemm
    monkeypatch.setattr(gemm, "tiled_gemm", lambda a, b, o: (ran.append(1), real(a, b, o)))
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    b = RNG.standard_normal((4, 2)).astype(np.float32)
    out = cuda.device_array((3, 2), np.float32)
    gemm.matmul_into(cuda.to_device(a), cuda.to_device(b), out)
    np.testing.assert_allclose(out.copy_to_host(), a @ b, rtol=1e-5, atol=1e-6)
    assert ran == [1]


def test_libcublas_missing_warns_and_is_unavailable(monkeypatch, fresh_cache):
    fk = FakeCublas()

    def create():
        raise RuntimeError("libcublas.so.12: cannot open shared object file")
    fk.create = create
    monkeypatch.setattr(gemm, "_cublas", lambda: fk)
    monkeypatch.setattr(gemm, "_local", threading.local())
    monkeypatch.setattr(gemm, "simulator", lambda: False)
    with pytest.warns(RuntimeWarning, match="cuBLAS cannot be used"):
        assert gemm.cublas_available() is False


def test_simulator_never_uses_cublas(fresh_cache):
    assert gemm.cublas_available() is False


@pytest.mark.gpu
def test_cublas_matches_numpy_on_gpu(monkeypatch):
    pytest.importorskip("nvmath.bindings.cublas")
    if not cuda.is_available():
        pytest.skip("no CUDA GPU")
    gemm.cublas_available.cache_clear()
    assert gemm.cublas_available()
    monkeypatch.setattr(gemm, "tiled_gemm", lambda *a: pytest.fail("tiled GEMM ran"))
    a = RNG.standard_normal((300, 200)).astype(np.float32)
    b = RNG.standard_normal((200, 100)).astype(np.float32)
    out = cuda.device_array((300, 100), np.float32)
    gemm.matmul_into(cuda.to_device(a), cuda.to_device(b), out)
    np.testing.assert_allclose(out.copy_to_host(), a @ b, rtol=1e-4, atol=1e-4)
    # float64, batched, the right operand a transposed view with a broadcast batch
    x = RNG.standard_normal((4, 300, 200))
    y = RNG.standard_normal((200, 100))
    dy = cuda.to_device(np.ascontiguousarray(y.T))
    out = cuda.device_array((4, 300, 100), np.float64)
    gemm.matmul_into(cuda.to_device(x), strided(dy, (4, 200, 100), (0, 1, 200)), out)
    cuda.synchronize()
    np.testing.assert_allclose(out.copy_to_host(), x @ y, rtol=1e-10, atol=1e-10)
