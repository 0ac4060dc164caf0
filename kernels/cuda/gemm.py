"""Matrix products on the device: cuBLAS when a binding is there, else a tiled GEMM.

``matmul_into(a, b, out)`` computes ``out[z] = a[z] @ b[z]`` for 3-D operands (2-D ones
are batch 1; a broadcast batch is a zero stride), each with any non-negative strides, so
a transposed operand is a view, never a copy.

- With CuPy importable and a real GPU, the product runs in cuBLAS through
  ``cupy.matmul`` on the arrays' ``__cuda_array_interface__`` (zero copy). CuPy is an
  optional extra, never a requirement.
- Otherwise (and always under the CUDA simulator) a tiled shared-memory numba.cuda
  kernel runs it: each block computes one ``TILE x TILE`` tile of ``out[z]`` from
  ``TILE``-wide slabs of ``a[z]`` and ``b[z]`` staged in shared memory, accumulating in
  the operands' dtype (float32 or float64), as cuBLAS's default float32 GEMM does.
"""
from __future__ import annotations

import functools

import numpy as np

from .views import cuda_module, elem_strides, simulator, strided

__all__ = ["matmul_into", "tiled_gemm", "cublas_available", "TILE"]

TILE = 16
cuda = cuda_module()  # a module global: the simulator swaps it for its fake module


@functools.cache
def _kernel(dtype: str, tile: int):
    from numba import types as nt
    nty = {"float32": nt.float32, "float64": nt.float64}[dtype]
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def gemm(a, b, c, M, N, K):
        sa = cuda.shared.array((tile, tile), nty)
        sb = cuda.shared.array((tile, tile), nty)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * tile + ty
        col = cuda.blockIdx.x * tile + tx
        z = cuda.blockIdx.z
        acc = zero
        for k0 in range(0, K, tile):
            ka = k0 + tx
            kb = k0 + ty
            sa[ty, tx] = a[z, row, ka] if (row < M and ka < K) else zero
            sb[ty, tx] = b[z, kb, col] if (kb < K and col < N) else zero
            cuda.syncthreads()
            for kk in range(tile):
                acc += sa[ty, kk] * sb[kk, tx]
            cuda.syncthreads()
        if row < M and col < N:
            c[z, row, col] = acc
    return gemm


def _as3(x):
    if x.ndim == 3:
        return x
    if x.ndim == 2:
        st = elem_strides(x)
        return strided(x, (1,) + tuple(x.shape), (0,) + st)
    raise NotImplementedError(f"kernels.cuda: GEMM of a {x.ndim}-d operand")


def tiled_gemm(a, b, out) -> None:
    """``out[z] = a[z] @ b[z]`` by the shared-memory kernel (2-D or 3-D operands)."""
    dt = np.dtype(out.dtype).name
    if dt not in ("float32", "float64") or np.dtype(a.dtype) != np.dtype(out.dtype) or \
            np.dtype(b.dtype) != np.dtype(out.dtype):
        raise NotImplementedError(f"kernels.cuda: tiled GEMM computes float32 or float64, "
                                  f"not {a.dtype} @ {b.dtype} -> {out.dtype}")
    a3, b3, c3 = _as3(a), _as3(b), _as3(out)
    Z, M, K = c3.shape[0], a3.shape[1], a3.shape[2]
    N = b3.shape[2]
    if M == 0 or N == 0 or Z == 0:
        return
    if K == 0:
        _zero(c3)
        return
    tile = 4 if simulator() else TILE
    grid = ((N + tile - 1) // tile, (M + tile - 1) // tile, Z)
    _kernel(dt, tile)[grid, (tile, tile)](a3, b3, c3, M, N, K)


def _zero(c3) -> None:
    from . import fill
    fill(c3, 0)


@functools.lru_cache(maxsize=1)
def cublas_available() -> bool:
    """CuPy importable and a real GPU present (never under the simulator)."""
    if simulator():
        return False
    try:
        import cupy  # noqa: F401
        return bool(cuda_module().is_available())
    except Exception:  # noqa: BLE001 - no CuPy, or no usable driver
        return False


def matmul_into(a, b, out) -> None:
    """``out = a @ b`` for 2-D or 3-D (batched, broadcast batch) device operands."""
    if a.ndim != b.ndim or a.ndim != out.ndim or a.ndim not in (2, 3):
        raise NotImplementedError("kernels.cuda: matmul_into takes 2-D or 3-D operands "
                                  "of equal rank")
    if cublas_available() and np.dtype(out.dtype).name in ("float32", "float64", "float16"):
        import cupy
        ca, cb, co = cupy.asarray(a), cupy.asarray(b), cupy.asarray(out)
        cupy.matmul(ca, cb, out=co)
        return
    tiled_gemm(a, b, out)
