"""OpenBLAS's GEMM called from native kernels (kernels/cpu/blas_calls.py): its symbols
resolve for kernel objects, and ``one_thread`` sets OpenBLAS to one thread and gives
back the caller's count, however its users nest and overlap."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from kernels.cpu import blas_calls, native

threadpoolctl = pytest.importorskip("threadpoolctl")


def _openblas_threads() -> int:
    """NumPy's OpenBLAS's thread count (SciPy's, when loaded, is another library)."""
    info = [d for d in threadpoolctl.threadpool_info() if d.get("internal_api") == "openblas"
            and "scipy_openblas64_" in d.get("filepath", "")
            and "numpy.libs" in d.get("filepath", "")]
    if not info:
        pytest.skip("NumPy does not use its bundled OpenBLAS here")
    return info[0]["num_threads"]


@pytest.fixture
def provided():
    if not blas_calls.provide():
        pytest.skip("NumPy's bundled OpenBLAS (scipy_openblas64_) is not loaded")


def test_provided_names_resolve_for_kernel_objects(provided):
    assert native.unresolved([blas_calls.SGEMM, blas_calls.DGEMM]) == []
    assert native.unresolved(["gc_no_such_function"]) == ["gc_no_such_function"]


def test_one_thread_nests_and_restores(provided):
    with threadpoolctl.threadpool_limits(2, "blas"):
        before = _openblas_threads()
        with blas_calls.one_thread():
            assert _openblas_threads() == 1
            with blas_calls.one_thread():
                assert _openblas_threads() == 1
            assert _openblas_threads() == 1
        assert _openblas_threads() == before == 2


def test_one_thread_overlapping_users_restore_the_count(provided):
    """Two threads whose scopes overlap in both orders: the count is back at the end
    (saving and restoring it per thread left it at 1)."""
    with threadpoolctl.threadpool_limits(2, "blas"):
        first_in, second_in, first_out = (threading.Event() for _ in range(3))
        seen = []

        def first():
            with blas_calls.one_thread():
                first_in.set()
                second_in.wait(5)
            first_out.set()

        def second():
            first_in.wait(5)
            with blas_calls.one_thread():
                second_in.set()
                first_out.wait(5)
                seen.append(_openblas_threads())  # still inside: still one thread
        ts = [threading.Thread(target=f) for f in (first, second)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        assert seen == [1]
        assert _openblas_threads() == 2


def test_a_gemm_is_right_inside_one_thread(provided):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((33, 65)).astype(np.float32)
    b = rng.standard_normal((65, 17)).astype(np.float32)
    with blas_calls.one_thread():
        np.testing.assert_allclose(a @ b, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_small_matrix_limit_follows_the_openblas_core(provided):
    """The row-block limit of ``gemm_rows`` is OpenBLAS's small-matrix size on cores that
    have those kernels (threadpoolctl names the core too), else 0 (one call), and it is
    what kernel sources are built with."""
    core = next(d.get("architecture", "") for d in threadpoolctl.threadpool_info()
                if "scipy_openblas64_" in d.get("filepath", ""))
    want = blas_calls.SMALL_GEMM_MACS if core.lower() in blas_calls._SMALL_CORES else 0
    assert blas_calls._STATE["small"] == want
    assert blas_calls._core(blas_calls._openblas()) == core.lower()
    assert f"SMALL = {want}\n" in blas_calls.kernel_head("float32")


def test_a_bound_task_shares_the_one_thread_count(provided):
    """A bound kernel's ``one_blas`` task enters the same scope in native code: inside a
    Python scope it leaves the count at 1, alone it sets 1 while it runs and restores
    the caller's count after; its GEMM is right either way."""
    from kernels.cpu import handwritten as hw
    from kernels.cpu import native_pool
    if not native_pool.available():
        pytest.skip("the native pool is not available here (GCOMPILE_NATIVE_POOL=0?)")
    src = blas_calls.kernel_head("float64") + '''
@njit(nogil=True, inline="always")
def body(a, b, c, m, lo, hi):
    GEMM(ROW_MAJOR, NO_TRANS, NO_TRANS, m, m, m, ONE, address(a, 0), m, address(b, 0), m,
         ZERO, address(c, 0), m)
'''
    k = hw.kernel("test_one_blas_gemm", (("a", "in", "float64"), ("b", "in", "float64"),
                                         ("c", "out", "float64"), ("m", "int", None)), src)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 40, 40))
    c = np.zeros((40, 40))
    k.load()
    call = k.bind(a, b, c, 40, n=1, parallel=False, one_blas=True)
    assert call is not None
    with threadpoolctl.threadpool_limits(2, "blas"):
        with blas_calls.one_thread():
            call()
            assert _openblas_threads() == 1
        assert _openblas_threads() == 2
        c[...] = 0
        call()
        assert _openblas_threads() == 2
    np.testing.assert_allclose(c, a @ b, rtol=1e-12)
