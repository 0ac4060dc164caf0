"""A large float32 GEMM as tiles for OpenBLAS's small-matrix kernels, spread over the
native pool's threads (``bound_gemm.bind`` and ``bind_pair`` use it where ``tiling``
gives a plan).

Where OpenBLAS has small-matrix kernels (``blas_calls.small_gemm_macs``: the SkylakeX
ones), a product of at most 10^6 multiply-adds runs on them without packing its
operands. A training step's products are mostly skinny (a batch of 64 to 2048 rows, 64
to 512 features); for those OpenBLAS's packed path spends much of its time packing and,
on two threads, handing work between them at every block. Cut into output tiles each
within the small kernels' size and taken in turn by the pool's threads (OpenBLAS on one
thread in each), they ran faster inside the compiled training steps here (2 threads,
medians of profiled steps, one process alternating the plans with and without tiles):
the MNIST CNN's dense layer ``g @ W`` (64x128 @ 128x9216) 1.00-1.54 -> 0.89-1.01 ms,
``gᵀ @ x`` 1.16-1.70 -> 0.83-1.21 ms, its forward ``W @ xᵀ`` (128x9216 @ 9216x64)
1.28-1.33 -> 0.87-0.90 ms; GPT's products together 6.10 -> 5.94 ms.

``tiling`` keeps to the layouts and sizes where tiles were measured faster (float32
only; products of 8x10^6 to 10^8 multiply-adds: larger ones ran up to 2.5x slower
as tiles, the packed path's blocking reusing its operands from cache):
- ``a @ b`` with K up to 512: whole rows where 32 columns of them fit (in blocks of a
  power of two columns), else 16 rows by 128 or 64 columns (10-15% faster; K = 1024 in
  16 x 32 tiles ran slower); with a longer K and an output of at most
  ``MAX_LONG_K_OUT`` values, 32 x 64 tiles that run K in chunks (64x2048 @ 2048x128:
  153 against 210 us; 64x16384 @ 16384x64: 0.59 against 1.9 ms);
- ``aᵀ @ b`` in whole rows (the CNN's ``gᵀ @ x``, K = 64), or with K over 512 in 32 x 32
  tiles that run K in chunks of up to 976 (GPT's weight gradients, K = 1024: 5-25%
  faster; the LSTM's, K = 2048: 65x2048 @ 2048x128 169 against 241 us); with 16 x 64 or
  16 x 128 tiles at K = 256-512 it ran 1-20% slower;
- ``a @ bᵀ`` from K = 512 in 16 x 64 tiles (shorter dot products are too short for the
  small kernel: K = 64 ran 18% slower, and 16 x 128 tiles at K = 256 2.5x slower), and
  with a K too long for any whole tile and a small output, tiles of 16 x 64 that run K
  in chunks of up to ``small / 1024`` (the CNN's dense forward: each chunk reads 16 + 64
  rows of 3.9 KB, which the prefetchers follow from memory where the packed path, and
  shorter chunks over more rows, did not: 0.87 ms against 1.2-1.3 for chunks of 112
  over 128 rows, 1.28 packed).
Column tiles are multiples of 32: 16 or 48 ran 1.5-2x slower than 32 or 64.

Results: each element is computed by one tile, fixed by the shapes alone, so the bits
do not depend on the thread count or on which thread took a tile; they differ from
NumPy's packed GEMM in summation order (within float32 rounding, as the tests check).
"""
from __future__ import annotations

import numpy as np

from . import blas_calls, bound_gemm  # (bound_gemm imports this module: used at call time)
from . import handwritten as hw

__all__ = ["tiling", "TiledGemm", "bind_tiles", "tile_rows", "rows_of", "kernel", "MIN_TILES",
           "MAX_MACS"]

# Products below this many small-kernel sizes stay one GEMM (their tiles would be too
# few to share out, and the packed path's overhead is small there).
MIN_TILES = 8
# Larger products stay one GEMM: there the packed path's blocking wins (1024^3: 10.6 ms
# packed, 11-22 ms as tiles; 4096x256 @ 256x1024 a @ bᵀ: 11 against 28 ms), and with
# operands that come from memory inside a step, the LSTM's 512x2048 @ 2048x128 weight
# gradient (2^27) took 1.64 ms as tiles against 1.52 packed (1.31 against 1.40 alone).
MAX_MACS = 100_000_000
MAX_LONG_K_OUT = 1 << 14  # the largest output whose long K runs chunked inside tiles
_ROW = 16  # the row-tile multiple

_PARAMS = tuple((p, "int", None) for p in
                ("ta", "tb", "m", "n", "k", "kc", "a", "lda", "ak", "b", "ldb", "bk",
                 "c", "ldc"))
_A, _B, _C = 6, 9, 12   # the pointers' places in a tile's row
_BODY = '''
@njit(nogil=True, inline="always")
def body(ta, tb, m, n, k, kc, a, lda, ak, b, ldb, bk, c, ldc, lo, hi):
    # c = op(a) @ op(b) over K in chunks of kc (bytes ak, bk per K step), summed in order
    beta = ZERO
    k0 = 0
    while k0 < k:
        kk = min(kc, k - k0)
        GEMM(ROW_MAJOR, np.int32(ta), np.int32(tb), m, n, kk, ONE, np.uintp(a + k0 * ak),
             lda, np.uintp(b + k0 * bk), ldb, beta, np.uintp(c), ldc)
        beta = ONE
        k0 += kc
'''

_NT, _TR = blas_calls.NO_TRANS, blas_calls.TRANS


def tiling(ta: int, tb: int, m: int, n: int, k: int, small: int) -> tuple | None:
    """How ``bind`` runs the row-major product ``op(a) (m, k) @ op(b) (k, n)``: tiles
    ``("tiles", rows, columns, K chunk)``, or None (one GEMM): see the module's
    docstring for the layouts and sizes, each where it was measured faster."""
    macs = m * n * k
    if small <= 0 or not MIN_TILES * small <= macs <= MAX_MACS:
        return None
    if ta == _NT and tb == _NT:
        if k > 512:   # K in chunks inside 32 x 64 tiles, for a small output
            return _chunked(m, n, small, 32, 64) if m * n <= MAX_LONG_K_OUT else None
        if m * 32 * k <= small:
            return _whole_rows(m, n, k, small)
        return _rows_of(m, n, k, small, (128, 64))
    if ta == _TR and tb == _NT:
        if m * 32 * k <= small:
            return _whole_rows(m, n, k, small)
        return _chunked(m, n, small, 32, 32) if k > 512 else None
    if ta == _NT and tb == _TR and k >= 512:
        if _ROW * 64 * k <= small:
            return _rows_of(m, n, k, small, (64,))
        return _chunked(m, n, small, _ROW, 64) if m * n <= MAX_LONG_K_OUT else None
    return None


def _chunked(m: int, n: int, small: int, mt: int, nt: int) -> tuple:
    """Tiles of ``mt`` x ``nt`` that run K in chunks as long as ``small`` allows."""
    mt, nt = min(m, mt), min(n, nt)
    return "tiles", mt, nt, small // (mt * nt) // _ROW * _ROW


def _whole_rows(m: int, n: int, k: int, small: int) -> tuple:
    """Tiles of all ``m`` rows by the widest power of two (at least 32) of columns that
    fits ``small``: in the CNN's step, 64 columns took 0.89 ms where 96 took 0.96-0.98
    (``g @ W``, 64x128 @ 128x9216)."""
    nt = 1 << ((small // (m * k)).bit_length() - 1)
    return "tiles", m, min(n, nt), k


def _rows_of(m: int, n: int, k: int, small: int, widths: tuple) -> tuple | None:
    """Tiles of the first of ``widths`` columns with at least 16 rows fitting ``small``."""
    for nt in widths:
        mt = small // (nt * k) // _ROW * _ROW
        if mt >= _ROW:
            return "tiles", min(m, mt), min(n, nt), k
    return None


def tile_rows(args: tuple, plan: tuple, sz: int) -> np.ndarray:
    """The tiles kernel's rows for ``numpy_gemm_args``-style ``args`` under ``plan``,
    with the operands' pointers 0: columns ``_A, _B, _C`` hold byte offsets (``rows_of``
    and ``TiledGemm.repoint`` add the pointers)."""
    ta, tb, m, n, k, lda, ldb, ldc = args
    _, mt, nt, kc = plan
    ak, bk = (1 if ta == _NT else lda) * sz, (ldb if tb == _NT else 1) * sz
    rows = []
    for r0 in range(0, m, mt):
        for c0 in range(0, n, nt):
            a = r0 * lda if ta == _NT else r0
            b = c0 if tb == _NT else c0 * ldb
            rows.append([ta, tb, min(mt, m - r0), min(nt, n - c0), k, kc, a * sz, lda, ak,
                         b * sz, ldb, bk, (r0 * ldc + c0) * sz, ldc, len(rows), len(rows) + 1])
    return np.array(rows, np.int64)


def rows_of(products: list[tuple], sz: int) -> np.ndarray:
    """The tiles kernel's rows, pointers included, for products ``(x, y, o, args,
    plan)`` side by side: each tiled by its ``"tiles"`` plan, or one row (plan None)."""
    out = []
    for x, y, o, args, plan in products:
        m, n, k = args[2:5]
        r = tile_rows(args, plan or ("tiles", m, n, k), sz)   # (no plan: one tile)
        r[:, [_A, _B, _C]] += np.array(bound_gemm.pointers(x, y, o))
        out.append(r)
    rows = np.concatenate(out)
    # the largest GEMMs first: a lone product taken last would run on one thread alone
    # while the other has nothing left (the pool hands rows out in order)
    rows = rows[np.argsort(-(rows[:, 2] * rows[:, 3] * rows[:, 4]), kind="stable")]
    rows[:, -2] = np.arange(len(rows))
    rows[:, -1] = rows[:, -2] + 1
    return rows


def kernel(dtype: str) -> hw.NativeKernel | None:
    if not blas_calls.provide():
        return None
    return hw.kernel(f"gemm_tiles_{dtype}", _PARAMS, blas_calls.kernel_head(dtype) + _BODY,
                     op="matmul")


class TiledGemm:
    """``o = x @ y`` as tiles for the layout it was bound on; ``repoint`` moves it to
    other arrays of that layout (``bound_gemm.BoundGemm``'s interface)."""

    __slots__ = ("rows", "offsets", "task", "layout", "native", "at")
    exact = False   # not NumPy's bits (another summation order)

    def __init__(self, rows: np.ndarray, task, layout: tuple) -> None:
        self.rows = rows
        self.offsets = [rows[:, c].copy() for c in (_A, _B, _C)]
        self.task = task
        self.native = task.native
        self.layout = layout
        self.at = (0, 0, 0)

    def __call__(self) -> None:
        self.task()

    def repoint(self, x: np.ndarray, y: np.ndarray, o: np.ndarray) -> bool:
        """As ``BoundGemm.repoint``; only the pointers that moved are rewritten."""
        p = bound_gemm.pointers(x, y, o)
        if p == self.at:
            return True
        if not bound_gemm._apart(x, y, o, p):
            return False
        rows = self.rows
        for c, off, new, old in zip((_A, _B, _C), self.offsets, p, self.at):
            if new != old:
                np.add(off, new, out=rows[:, c])
        self.at = p
        return True


def bind_tiles(x: np.ndarray, y: np.ndarray, o: np.ndarray, args: tuple, plan: tuple,
               layout: tuple) -> TiledGemm | None:
    """``o = x @ y`` under ``plan`` (``tiling``) as one prepared task on the native pool,
    or None where the pool is missing. The kernel must be loaded (``bound_gemm.bind``
    defers its compile)."""
    cpu = hw._cpu()
    k = kernel(hw.dname(x))
    if k is None or not cpu.native_pool.available():
        return None
    rows = tile_rows(args, plan, o.itemsize)
    task = cpu.native_pool.rows_task(k.load(), rows, one_blas=True)
    task.keep = rows
    bd = TiledGemm(rows, task, layout)
    return bd if bd.repoint(x, y, o) else None
