"""One GEMM with its arguments built once, for a plan's matmul step.

A plan's matmul step took 1.7-1.9 us around a 2 x 2 product: NumPy's ``matmul(a, b,
out=o)`` (1.0 us: argument parsing, the ufunc's loop selection) and the step's layout
keys and reshapes. ``bind`` takes the operands of one call and returns a ``BoundGemm``:
the CBLAS arguments NumPy's matmul loop would pass for exactly that layout
(``numpy_gemm_args``) in a row of int64 that a tiny hand-written kernel forwards to
``cblas_?gemm`` through the native pool's trampoline (``native_pool.serial_task``), on
the calling thread; the step then takes 0.86 us. OpenBLAS runs as under NumPy (its own
thread count, its jobs on the native pool), with the same transposes and leading
dimensions, so the result is NumPy's bit for bit.

Only the layouts where NumPy itself makes one plain GEMM call are bound: float32 or
float64 matrices of at least 2 x 2 x 2, each operand a view BLAS can read (one unit
stride), the output C-ordered, no overlap between output and inputs, and not ``a @
a.T`` (NumPy runs SYRK there). Everything else stays with NumPy.

``bind_pair`` makes two independent products one task of two chunks on the native
pool, each chunk one of the GEMMs with OpenBLAS on one thread: a Linear layer's two
gradient products side by side instead of one after the other, each on both threads.
The products of a training step are mostly too small for OpenBLAS to keep two threads
busy (GPT's head gradients: 208 us one after the other, 188 us side by side; the LSTM
decoder's: 408 against 374 us). Each element is the same dot product, in the same
order, on one thread as on two (OpenBLAS splits M and N over its threads, never K), so
the results are bit for bit those of the GEMMs one after the other.

A large float32 product of the layouts and sizes ``tiled_gemm.tiling`` names runs
instead as tiles for OpenBLAS's small-matrix kernels on the pool's threads, in ``bind``
(a ``tiled_gemm.TiledGemm``) and in ``bind_pair`` (both products' tiles in one task):
faster for a training step's skinny products, but not NumPy's bits (``exact`` False).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import blas_calls, tiled_gemm
from . import handwritten as hw

__all__ = ["numpy_gemm_args", "bind", "bind_pair", "layout_of", "pointers", "BoundGemm",
           "Deferred"]

Deferred = hw.Deferred  # raised by ``bind`` while the kernel compiles for a plan's first run

_MAXDIM = (1 << 31) - 1
_PARAMS = tuple((p, "int", None) for p in
                ("ta", "tb", "m", "n", "k", "a", "lda", "b", "ldb", "c", "ldc"))
_BODY = '''
@njit(nogil=True, inline="always")
def body(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, lo, hi):
    GEMM(ROW_MAJOR, np.int32(ta), np.int32(tb), m, n, k, ONE, np.uintp(a), lda,
         np.uintp(b), ldb, ZERO, np.uintp(c), ldc)
'''
_A, _B, _C = 5, 7, 9  # the pointers' places in the argument row


def _blasable(s1: int, s2: int, d2: int, sz: int) -> bool:
    """NumPy's ``is_blasable2d``: unit stride along the second axis, the first a whole
    number of items at least ``d2``."""
    return s2 == sz and s1 % sz == 0 and d2 <= s1 // sz <= _MAXDIM


def numpy_gemm_args(x: np.ndarray, y: np.ndarray, o: np.ndarray) -> tuple | None:
    """``(trans_a, trans_b, m, n, k, lda, ldb, ldc)`` of the one ``cblas_?gemm`` call
    NumPy's matmul makes for ``matmul(x, y, out=o)``, or None where it would do
    anything else (a vector product, a copy into a buffer, SYRK, the loop without
    BLAS, a copy for overlapping memory)."""
    if x.ndim != 2 or y.ndim != 2 or o.ndim != 2:
        return None
    dt = x.dtype
    if hw.dtype_name(dt) not in ("float32", "float64") or y.dtype != dt or o.dtype != dt:
        return None
    m, k = x.shape
    n = y.shape[1]
    if y.shape[0] != k or o.shape != (m, n) or min(m, n, k) < 2 or max(m, n, k) > _MAXDIM:
        return None
    sz = dt.itemsize
    if not _blasable(o.strides[0], o.strides[1], n, sz):
        return None
    xa, ya = _operand(x, sz), _operand(y, sz)
    if xa is None or ya is None:
        return None
    (ta, lda), (tb, ldb) = xa, ya
    if not _apart(x, y, o, pointers(x, y, o)):
        return None
    return (ta, tb, m, n, k, lda, ldb, o.strides[0] // sz)


def _operand(a: np.ndarray, sz: int) -> tuple | None:
    """``(transpose flag, leading dimension)`` NumPy's matmul passes for matrix ``a``:
    its rows as they lie, else its columns; None where neither is a BLAS matrix."""
    (r, c), (s0, s1) = a.shape, a.strides
    if _blasable(s0, s1, c, sz):
        return blas_calls.NO_TRANS, s0 // sz
    if _blasable(s1, s0, r, sz):
        return blas_calls.TRANS, s1 // sz
    return None


_PTR: list = []   # kernels.cpu._ptr, looked up once (an import inside a step's call
                  # took 12 us out of cache after a GEMM)


def pointers(x: np.ndarray, y: np.ndarray, o: np.ndarray) -> tuple[int, int, int]:
    """The three arrays' data pointers."""
    if not _PTR:
        _PTR.append(hw._cpu()._ptr)
    ptr = _PTR[0]
    return ptr(x), ptr(y), ptr(o)


def _apart(x: np.ndarray, y: np.ndarray, o: np.ndarray, p: tuple) -> bool:
    """No SYRK case (x and y the same data, transposed) and no overlap of ``o``'s span
    with an input's, at the data pointers ``p`` (``pointers``)."""
    px, py, po = p
    if px == py and x.shape[0] == y.shape[1] and x.strides == y.strides[::-1]:
        return False
    end = po + _extent(o)
    return (px + _extent(x) <= po or end <= px) and (py + _extent(y) <= po or end <= py)


def _extent(a: np.ndarray) -> int:
    """Bytes from ``a``'s first element past its last (non-negative strides)."""
    return a.itemsize + sum((d - 1) * s for d, s in zip(a.shape, a.strides))


class BoundGemm:
    """``o = x @ y`` for the layout it was bound on; ``repoint`` moves it to other
    arrays of that same layout (False where NumPy would not make the same call
    there: they overlap)."""

    __slots__ = ("row", "task", "layout", "at")
    exact = True   # NumPy's result bit for bit

    def __init__(self, row: np.ndarray, task, layout: tuple) -> None:
        self.row = row
        self.task = task
        self.layout = layout
        self.at = (int(row[_A]), int(row[_B]), int(row[_C]))

    def __call__(self) -> None:
        self.task()

    @property
    def native(self):
        """The task's native description (``native_pool.task_list``)."""
        return self.task.native

    def repoint(self, x: np.ndarray, y: np.ndarray, o: np.ndarray) -> bool:
        """Point the call at these arrays (of the bound layout); False where they
        overlap. The same memory again (a fresh view of a parameter, an output
        buffer the allocator handed back) changes nothing: inside a training step
        the checks and writes took 7-27 us a product, out of cache after a GEMM."""
        p = pointers(x, y, o)
        if p == self.at:
            return True
        if not _apart(x, y, o, p):
            return False
        row = self.row
        row[_A], row[_B], row[_C] = self.at = p
        return True


def layout_of(x: np.ndarray, y: np.ndarray, o: np.ndarray) -> tuple:
    """What a binding depends on besides the data pointers."""
    return (x.dtype, x.shape, x.strides, y.shape, y.strides, o.shape, o.strides)


def _kernel(dtype: str) -> hw.NativeKernel | None:
    if not blas_calls.provide():
        return None
    return hw.kernel(f"gemm_call_{dtype}", _PARAMS, blas_calls.kernel_head(dtype) + _BODY,
                     op="matmul")


def bind(x: np.ndarray, y: np.ndarray, o: np.ndarray) -> BoundGemm | tiled_gemm.TiledGemm | None:
    """``o = x @ y`` as one prepared call, or None where NumPy's matmul should run this
    layout (see the module's docstring; also where NumPy's OpenBLAS or the native pool
    is missing here). A large float32 product may be tiles for OpenBLAS's small kernels
    instead (``tiled_gemm``; its ``exact`` says whether the bits are NumPy's). Raises
    ``Deferred`` while a kernel compiles with a plan's first run (bind again later)."""
    cpu = hw._cpu()
    args = numpy_gemm_args(x, y, o)
    if args is None or not cpu.native_pool.available():
        return None  # (without the pool's trampoline the kernel is not worth compiling)
    k = _kernel(hw.dname(x))
    if k is None:
        return None
    ta, tb, m, n, kk, lda, ldb, ldc = args
    plan = _tiling(x, args)
    if plan is not None:
        kt = tiled_gemm.kernel(hw.dname(x))
        if kt._fn is None and cpu.defer_native(kt):
            raise Deferred(kt.name)
        bd = tiled_gemm.bind_tiles(x, y, o, args, plan, layout_of(x, y, o))
        if bd is not None:
            return bd
    if k._fn is None and cpu.defer_native(k):
        raise Deferred(k.name)
    fn = k.load()
    px, py, po = pointers(x, y, o)
    row = np.array([ta, tb, m, n, kk, px, lda, py, ldb, po, ldc, 0, 1], np.int64)
    task = cpu.native_pool.serial_task(fn, row)
    if task is None:
        return None
    return BoundGemm(row, task, layout_of(x, y, o))


def _tiling(x: np.ndarray, args: tuple) -> tuple | None:
    """``tiled_gemm.tiling``'s plan for a float32 product (None: one GEMM)."""
    if x.dtype != np.float32:
        return None
    ta, tb, m, n, k = args[:5]
    return tiled_gemm.tiling(ta, tb, m, n, k, blas_calls.small_gemm_macs())


def bind_pair(first: tuple, second: tuple) -> Callable[[], None] | None:
    """The products ``first`` and ``second`` (each ``(x, y, o)``: ``o = x @ y``) as one
    task whose two chunks run one GEMM each, OpenBLAS on one thread in each (see the
    module's docstring), valid while the arrays' memory, their layouts and the thread
    count are those it was bound on (a plan's pair step checks: ``runtime.steps._Binding``);
    or None where either is not one plain GEMM NumPy would make, their dtypes differ, an
    output overlaps the other product's memory, fewer than two kernel threads run, or the
    native pool is missing. Raises ``Deferred`` as ``bind`` does."""
    cpu = hw._cpu()
    args = [numpy_gemm_args(*first), numpy_gemm_args(*second)]
    if None in args or first[0].dtype != second[0].dtype or cpu._nthreads() < 2 or \
            not cpu.native_pool.available() or not cpu._native_threads(2):
        return None
    ptr = cpu._ptr
    for o, other in ((first[2], second), (second[2], first)):
        start = ptr(o)
        end = start + _extent(o)
        if any(ptr(a) < end and start < ptr(a) + _extent(a) for a in other):
            return None
    plans = [_tiling(first[0], args[0]), _tiling(second[0], args[1])]
    tiled = plans != [None, None]
    k = tiled_gemm.kernel(hw.dname(first[0])) if tiled else _kernel(hw.dname(first[0]))
    if k is None:
        return None
    if k._fn is None and cpu.defer_native(k):
        raise Deferred(k.name)
    fn = k.load()
    if tiled:
        rows = tiled_gemm.rows_of([(*p, a, plan) for p, a, plan
                                   in zip((first, second), args, plans)], first[0].itemsize)
        task = cpu.native_pool.rows_task(fn, rows, one_blas=True)
        task.keep = rows
        return task
    rows = np.array([[ta, tb, m, n, kk, ptr(x), lda, ptr(y), ldb, ptr(o), ldc, c, c + 1]
                     for c, ((ta, tb, m, n, kk, lda, ldb, ldc), (x, y, o))
                     in enumerate(zip(args, (first, second)))], np.int64)
    task = cpu.native_pool.rows_task(fn, rows, one_blas=True)
    task.keep = rows   # alive with the task
    return task
