"""Matrix products on the device: cuBLAS through nvmath-python, else a tiled GEMM.

``matmul_into(a, b, out)`` computes ``out[z] = a[z] @ b[z]`` for 3-D operands (2-D ones
are batch 1; a broadcast batch is a zero stride), each with any non-negative strides, so
a transposed operand is a view, never a copy.

- With nvmath-python installed, a real GPU and libcublas loadable, the product runs in
  cuBLAS through ``nvmath.bindings.cublas``: NVIDIA's maintained low-level binding, which
  takes the arrays' raw device pointers, so no array library (CuPy) is needed and nothing
  is copied. Each (device, thread) gets one handle, made on first use, on the stream
  numba launches on (the legacy default stream, or the per-thread one when numba is set
  to it) so cuBLAS and our kernels stay ordered; alpha and beta are host scalars.
- cuBLAS is column-major and our arrays row-major, so ``C = A @ B`` is handed over as
  ``C^T = B^T @ A^T``, operands swapped. A row-major matrix with a unit column stride is,
  read column-major, its own transpose (op N, ld = row stride); one with a unit row
  stride (a transposed view) is itself (op T, ld = column stride). A batch runs as one
  strided-batched call with the batch stride in elements (0 broadcasts). float32 and
  float64 use ``sgemm``/``dgemm`` in cuBLAS's default math mode (full FP32/FP64, no
  TF32); float16 uses ``gemm_ex`` accumulating in float32. An empty sum (K = 0) is a
  fill with zeros, never a cuBLAS call.
- Anything cuBLAS cannot express without a copy (no unit stride in a matrix's last two
  dims, a leading dimension shorter than the rows it spans, a zero or negative stride
  inside a matrix, an output that is not row-contiguous) and every other case (no
  nvmath, no GPU, no libcublas, always under the CUDA simulator) goes to a tiled
  shared-memory numba.cuda kernel: each block computes one ``TILE x TILE`` tile of
  ``out[z]`` from ``TILE``-wide slabs of ``a[z]`` and ``b[z]`` staged in shared memory,
  accumulating in the operands' dtype (float32 or float64; it refuses float16), as
  cuBLAS's default float32 GEMM does.
"""
from __future__ import annotations

import functools
import threading
import warnings
import weakref

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
    from .disk_cache import attach
    attach(gemm)  # signed on-disk cache per GPU architecture (not under the simulator)
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


# --- cuBLAS through nvmath-python ---------------------------------------------------------

_INT_MAX = 2**31 - 1  # cuBLAS's m, n, k, ld and batch count are C ints
_CUDA_R_16F = 2  # cudaDataType_t's CUDA_R_16F (the float16 A/B/C type of gemm_ex)
# alpha = 1, beta = 0 as host scalars (pointer mode host; cuBLAS reads them during the
# call). Module constants, so they outlive every call; float16 computes in float32, whose
# gemm_ex scalars are float32.
_ONE = {d: np.ones(1, d) for d in ("float32", "float64")}
_ZERO = {d: np.zeros(1, d) for d in ("float32", "float64")}
_SCALAR = {"float32": "float32", "float64": "float64", "float16": "float32"}
_local = threading.local()  # per thread: {device id: cuBLAS handle}


def _cublas():
    """``nvmath.bindings.cublas`` (ImportError without nvmath-python). Importing it needs
    no GPU; its calls load the driver and libcublas. Tests swap this for a fake."""
    from nvmath.bindings import cublas
    return cublas


def _stream() -> int:
    """The cudaStream_t numba launches on when given no stream: the per-thread default
    stream (``cudaStreamPerThread``, 2) under ``NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM``,
    else the legacy default stream (0)."""
    try:
        from numba.cuda import config
    except ImportError:  # pragma: no cover - older numba-cuda
        from numba import config
    return 2 if getattr(config, "CUDA_PER_THREAD_DEFAULT_STREAM", 0) else 0


class _Handles(dict):
    """One thread's {device id: handle}; a dict subclass so it can carry a finalizer."""


def _destroy(cb, made: list) -> None:
    """Destroy a finished thread's handles, each with its device's context current."""
    for dev, h in made:
        try:
            with cuda.gpus[dev]:
                cb.destroy(h)
        except Exception:  # noqa: BLE001 - best effort: the context may be gone already
            pass


def _handle(cb) -> int:
    """This thread's cuBLAS handle for the current device, made on first use (pointer
    mode host, bound to numba's default stream)."""
    ctx = cuda.current_context()  # numba's primary context, current: cuBLAS shares it
    dev = int(getattr(ctx.device, "id", 0))
    handles = getattr(_local, "handles", None)
    if handles is None:
        handles = _local.handles = _Handles()
        handles.made = []
        # at thread exit, not at interpreter exit (the driver may be torn down by then)
        weakref.finalize(handles, _destroy, cb, handles.made).atexit = False
    h = handles.get(dev)
    if h is None:
        h = cb.create()
        try:
            cb.set_stream(h, _stream())
            cb.set_pointer_mode(h, cb.PointerMode.HOST)
        except BaseException:
            cb.destroy(h)
            raise
        handles[dev] = h
        handles.made.append((dev, h))
    return h


@functools.lru_cache(maxsize=1)
def cublas_available() -> bool:
    """Whether GEMMs can run in cuBLAS: not the CUDA simulator, nvmath-python importable,
    a GPU present and a cuBLAS handle creatable (libcublas found). Cached; a failure
    warns once and leaves the tiled kernel in charge, never raises."""
    if simulator():
        return False
    try:
        cb = _cublas()
    except Exception:  # noqa: BLE001 - nvmath-python is optional
        return False
    try:
        if not cuda.is_available():
            return False
        _handle(cb)
    except Exception as e:  # noqa: BLE001 - no driver, or libcublas not found
        warnings.warn(f"gcompile: cuBLAS cannot be used ({type(e).__name__}: {e}); device "
                      f"matrix products run in the tiled numba.cuda kernel (install the CUDA "
                      f"toolkit or the nvidia-cublas-cu12 wheel)", RuntimeWarning)
        return False
    return True


def _layout(x) -> tuple[int, tuple[int, ...], tuple[int, ...]] | None:
    """(data pointer, shape, element strides) from ``x``'s ``__cuda_array_interface__``
    (the simulator's fake arrays have none: their host NumPy array's interface stands in,
    its pointer a host address); None when a stride is not whole elements or a mask is
    set."""
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        ary = getattr(x, "_ary", None)
        if ary is None:
            return None
        cai = ary.__array_interface__
    if cai.get("mask") is not None:
        return None
    shape = tuple(int(n) for n in cai["shape"])
    isz = np.dtype(x.dtype).itemsize
    st = cai.get("strides")
    if st is None:  # C-contiguous
        out, acc = [], 1
        for n in reversed(shape):
            out.append(acc)
            acc *= n
        return int(cai["data"][0]), shape, tuple(reversed(out))
    if any(int(s) % isz for s in st):
        return None
    return int(cai["data"][0]), shape, tuple(int(s) // isz for s in st)


def _op(cb, rows: int, cols: int, rs: int, cs: int) -> tuple[int, int] | None:
    """(op, ld) that hands cuBLAS the row-major ``rows x cols`` matrix with element strides
    ``rs, cs`` read column-major: a unit column stride stores its transpose (op N,
    ld = rs >= cols), a unit row stride stores it (op T, ld = cs >= rows). A stride along
    a dim of size 1 is never used, so it does not count. None: cuBLAS cannot take it."""
    if (cs == 1 or cols == 1) and (rows == 1 or rs >= cols):
        ld = rs if rows > 1 else cols
        return (int(cb.Operation.N), ld) if ld <= _INT_MAX else None
    if (rs == 1 or rows == 1) and (cols == 1 or cs >= rows):
        ld = cs if cols > 1 else rows
        return (int(cb.Operation.T), ld) if ld <= _INT_MAX else None
    return None


def _cublas_gemm(a, b, out) -> bool:
    """``out = a @ b`` in cuBLAS; False (nothing written) when cuBLAS cannot take the
    layouts or dtypes, so the caller falls back to the tiled kernel."""
    dt = np.dtype(out.dtype).name
    if dt not in _SCALAR or np.dtype(a.dtype).name != dt or np.dtype(b.dtype).name != dt:
        return False
    la, lb, lc = _layout(a), _layout(b), _layout(out)
    if la is None or lb is None or lc is None:
        return False
    (pa, sha, sta), (pb, shb, stb), (pc, shc, stc) = la, lb, lc
    if len(shc) == 2:
        sha, sta, shb, stb = (1,) + sha, (0,) + sta, (1,) + shb, (0,) + stb
        shc, stc = (1,) + shc, (0,) + stc
    Z, M, N = shc
    K = sha[2]
    if Z == 0 or M == 0 or N == 0:
        return True
    if K == 0:  # an empty sum: zeros, whatever cuBLAS would make of k = 0
        _zero(out)
        return True
    if max(M, N, K, Z) > _INT_MAX or any(s < 0 for s in sta + stb + stc):
        return False
    cb = _cublas()
    # C^T (N x M, column-major) = op(B^T) (N x K) @ op(A^T) (K x M): B is cuBLAS's A.
    opb = _op(cb, K, N, stb[1], stb[2])
    opa = _op(cb, M, K, sta[1], sta[2])
    opc = _op(cb, M, N, stc[1], stc[2])
    if opb is None or opa is None or opc is None or opc[0] != int(cb.Operation.N):
        return False
    (tb, ldb), (ta, lda), (_, ldc) = opb, opa, opc
    h = _handle(cb)
    sd = _SCALAR[dt]
    alpha, beta = _ONE[sd].ctypes.data, _ZERO[sd].ctypes.data
    if dt == "float16":
        f16, ct, algo = _CUDA_R_16F, int(cb.ComputeType.COMPUTE_32F), int(cb.GemmAlgo.DFALT)
        if Z == 1:
            cb.gemm_ex(h, tb, ta, N, M, K, alpha, pb, f16, ldb, pa, f16, lda, beta,
                       pc, f16, ldc, ct, algo)
        else:
            cb.gemm_strided_batched_ex(h, tb, ta, N, M, K, alpha, pb, f16, ldb, stb[0],
                                       pa, f16, lda, sta[0], beta, pc, f16, ldc, stc[0],
                                       Z, ct, algo)
        return True
    p = "s" if dt == "float32" else "d"
    if Z == 1:
        getattr(cb, p + "gemm")(h, tb, ta, N, M, K, alpha, pb, ldb, pa, lda, beta, pc, ldc)
    else:
        getattr(cb, p + "gemm_strided_batched")(h, tb, ta, N, M, K, alpha, pb, ldb, stb[0],
                                                pa, lda, sta[0], beta, pc, ldc, stc[0], Z)
    return True


def _check_shapes(a, b, out) -> None:
    sa, sb, so = tuple(a.shape), tuple(b.shape), tuple(out.shape)
    if sa[-1] != sb[-2] or so[-2:] != (sa[-2], sb[-1]) or \
            (len(so) == 3 and not so[0] == sa[0] == sb[0]):
        raise ValueError(f"kernels.cuda: matmul_into of shapes {sa} @ {sb} into {so} "
                         f"(a broadcast batch is a zero stride, not a size-1 dim)")


def matmul_into(a, b, out) -> None:
    """``out = a @ b`` for 2-D or 3-D (batched, broadcast batch) device operands."""
    if a.ndim != b.ndim or a.ndim != out.ndim or a.ndim not in (2, 3):
        raise NotImplementedError("kernels.cuda: matmul_into takes 2-D or 3-D operands "
                                  "of equal rank")
    _check_shapes(a, b, out)
    if cublas_available() and _cublas_gemm(a, b, out):
        return
    tiled_gemm(a, b, out)
