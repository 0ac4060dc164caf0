"""OpenBLAS's GEMM for native kernels: a kernel whose loop calls a small matmul per
iteration (a recurrent layer's ``h @ W_hh`` per time step) calls it directly, without
going back to Python between iterations.

NumPy's bundled OpenBLAS (``scipy_openblas64_``: 64-bit integers, prefixed names) is
loaded privately, so its functions are not process symbols a kernel object could link
against: ``provide`` hands their addresses to LLVM (``native.provide``) under names of
our own, in every process that compiles or loads such a kernel (a kernel module calls
it when it is compiled; its user before loading it).

Such a kernel's rows already run on the thread pool, so its GEMMs must run on their own
thread: a multi-threaded one would hand its jobs to the pool from inside a pool task.
``one_thread`` sets OpenBLAS to one thread around the kernel's call. That setting is
the library's, not the thread's (its ``openblas_set_num_threads_local`` changes the
same global in this build: two threads saving and restoring it left it at 1, and every
later GEMM on one thread), so its users share it: the first in saves and sets it, the
last out restores it, counted in the native pool's state (``native_pool.one_blas_thread``:
a bound kernel's task enters the same scope in native code, where Python's
``contextmanager`` and ctypes calls cost 2.5 us a call) or, without that pool, by a
``kernels.shared_setting``. Meanwhile the process's other GEMMs run on one thread too.

Where OpenBLAS has small-matrix kernels (``SMALL_GEMM_MACS``, found from its core name),
a product of at most 10^6 multiply-adds runs without packing its operands; a kernel's
``gemm_rows`` (in ``kernel_head``) cuts a slightly larger one (a recurrent step's 16
rows of 128 @ 128x512) into even blocks of rows that stay within it.
"""
from __future__ import annotations

import ctypes
import threading
from contextlib import AbstractContextManager

import numpy as np

from ..shared_setting import SharedSetting

__all__ = ["provide", "one_thread", "kernel_head", "small_gemm_macs", "SGEMM", "DGEMM",
           "ROW_MAJOR", "NO_TRANS", "TRANS"]

SGEMM, DGEMM = "gc_sgemm", "gc_dgemm"
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS_ORDER / CBLAS_TRANSPOSE values
_NAMES = {SGEMM: "scipy_cblas_sgemm64_", DGEMM: "scipy_cblas_dgemm64_"}
_THREADS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_")
_CORENAME = "scipy_openblas_get_corename64_"
# OpenBLAS cores with small-matrix GEMM kernels (SMALL_MATRIX_OPT: the SkylakeX kernels,
# which Cooper Lake and Sapphire Rapids use too), and the size up to which OpenBLAS runs
# a product M*N*K on them instead of packing its operands: measured here (0.3.31,
# SkylakeX on Zen 4, one thread), 16x128 @ 128x512 took 29-34 us packed and two 8-row
# halves 10 us each on the small kernels.
_SMALL_CORES = ("skylakex", "cooperlake", "sapphirerapids")
SMALL_GEMM_MACS = 1_000_000
_LOCK = threading.Lock()
_STATE: dict = {}


def _openblas() -> ctypes.CDLL | None:
    """NumPy's own OpenBLAS (the 64-bit-integer build with prefixed names that its
    matmul calls), among the loaded ones (``blas_spin.pthreads_openblas``), or None."""
    from .blas_spin import pthreads_openblas
    for path in pthreads_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, _NAMES[SGEMM]):
            return lib
    return None


def _one(get, put) -> int:
    """Set OpenBLAS to one thread; its count before."""
    saved = get()
    put(1)
    return saved


def _core(lib: ctypes.CDLL) -> str:
    """The name of the core OpenBLAS runs its kernels for, lower case ("" if unknown)."""
    try:
        fn = getattr(lib, _CORENAME)
    except AttributeError:
        return ""
    fn.restype = ctypes.c_char_p
    return (fn() or b"").decode(errors="replace").lower()


def provide() -> bool:
    """Make ``gc_sgemm`` and ``gc_dgemm`` resolvable (once per process); False where
    NumPy's OpenBLAS or one of the functions used is missing (then no kernel may call
    them)."""
    if "ok" in _STATE:
        return _STATE["ok"]
    with _LOCK:
        if "ok" not in _STATE:
            ok = False
            lib = _openblas()
            if lib is not None:
                try:
                    addr = {ours: ctypes.cast(getattr(lib, theirs), ctypes.c_void_p).value
                            for ours, theirs in _NAMES.items()}
                    get, put = (getattr(lib, name) for name in _THREADS)
                except AttributeError:
                    addr = {}
                if addr and all(addr.values()):
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    from . import native_pool
                    _STATE["one"] = native_pool.one_blas_thread(
                        *(ctypes.cast(f, ctypes.c_void_p).value for f in (get, put))) or \
                        SharedSetting(lambda: _one(get, put), put)
                    _STATE["small"] = SMALL_GEMM_MACS if _core(lib) in _SMALL_CORES else 0
                    from . import native
                    for ours, a in addr.items():
                        native.provide(ours, a)
                    ok = True
            _STATE["ok"] = ok
    return _STATE["ok"]


def small_gemm_macs() -> int:
    """The product size (M*N*K) up to which OpenBLAS runs its small-matrix kernels, 0
    where it has none; ``provide`` first."""
    return _STATE.get("small", 0)


# The lines a kernel's source starts with to call ``GEMM(order, trans_a, trans_b, m, n,
# k, alpha, a, lda, b, ldb, beta, c, ldc)`` (CBLAS's argument order; the matrices are
# ``fastmath.address`` pointers) for one dtype.
_HEAD = """
from numba import types as _types
from kernels.cpu import blas_calls as _blas
from kernels.cpu.fastmath import address
_blas.provide()  # the GEMM's address, for this compile (and a later load: the caller)
_P = _types.uintp
GEMM = _types.ExternalFunction(_blas.{gemm}, _types.void(
    _types.int32, _types.int32, _types.int32, _types.int64, _types.int64, _types.int64,
    _types.{dtype}, _P, _types.int64, _P, _types.int64, _types.{dtype}, _P, _types.int64))
ROW_MAJOR = np.int32(_blas.ROW_MAJOR)
NO_TRANS = np.int32(_blas.NO_TRANS)
TRANS = np.int32(_blas.TRANS)
ONE = {scalar}(1.0)
ZERO = {scalar}(0.0)
SMALL = {small}
_ITEM = {item}


@njit(nogil=True, inline="always")
def gemm_rows(ta, m, n, k, a, lda, b, ldb, beta, c, ldc):
    # C = op(A) @ B + beta C (alpha 1, B not transposed) in as few even blocks of rows
    # as keep each product's m*n*k within SMALL, which OpenBLAS runs on its small-matrix
    # kernels without packing B (SMALL 0: one call)
    parts = 1
    if SMALL > 0 and m > 1:
        parts = min(m, (m * n * k + SMALL - 1) // SMALL)
    rows = (m + parts - 1) // parts
    step = (1 if ta == TRANS else lda) * _ITEM
    r0 = 0
    while r0 < m:  # (a range with a run-time step would need Numba's error helpers)
        mr = min(rows, m - r0)
        GEMM(ROW_MAJOR, ta, NO_TRANS, mr, n, k, ONE, a + np.uintp(r0 * step), lda,
             b, ldb, beta, c + np.uintp(r0 * ldc * _ITEM), ldc)
        r0 += rows
"""
_GEMMS = {"float32": "SGEMM", "float64": "DGEMM"}


def kernel_head(dtype: str) -> str:
    """The source lines that give a hand-written kernel ``GEMM`` for ``dtype`` (float32
    or float64), ``gemm_rows`` (a GEMM in blocks of rows OpenBLAS runs unpacked),
    ``address``, the CBLAS flags and ``ONE``/``ZERO`` of the dtype (alpha and beta);
    ``provide`` must have succeeded."""
    return _HEAD.format(gemm=_GEMMS[dtype], dtype=dtype, scalar=f"np.{dtype}",
                        item=np.dtype(dtype).itemsize, small=_STATE.get("small", 0))


def one_thread() -> AbstractContextManager[None]:
    """A context in which OpenBLAS runs on one thread (see the module's docstring);
    ``provide`` first. Where the native pool runs, its count is the pool's, which a
    bound kernel's ``one_blas`` task enters without Python."""
    one = _STATE["one"]
    return one.scope() if isinstance(one, SharedSetting) else one
