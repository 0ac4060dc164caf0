"""Convolution by image blocks: im2col of a few images into a cache-sized buffer, then
their GEMM, each thread on its own images.

Done whole-batch, a convolution writes all its columns to memory (42 MB for the MNIST
example's second conv at batch 64), reads them back into a GEMM whose small M (the
output channels) makes OpenBLAS stream them (117 GFLOP/s there, against 160-170 when
they are in cache), and then transposes (Cout, N*L) into (N, Cout, L). Here a thread
takes a range of images and, a block of them at a time, writes their columns into its
own buffer of about ``BLOCK_BYTES`` and multiplies straight into the output's (N, Cout,
L) rows, with BLAS on one thread while the op's threads run (``blas_lanes``). The two
gradients work the same way: ``conv_input_grad`` multiplies then col2im's each block;
``conv_weight_grad`` im2col's each block again (cheaper than keeping the columns) and
accumulates g·colsᵀ. The im2col and col2im kernels are built for the layer's window,
strides and padding (``nn_native.fixed_args``), which halves their time.

Results do not depend on the thread count: each image's forward and input gradient are
computed alone, and the weight gradient sums ``WGRAD_PARTS`` fixed partial sums (over
fixed image ranges, in fixed blocks) in order, whichever thread computed them.

Serves ``conv``, ``conv_input_grad`` and ``conv_weight_grad`` for float32/float64;
``op.reference`` (NumPy) serves other dtypes and empty inputs.
"""
from __future__ import annotations

import threading

import numpy as np

from ir.ops.nn import _spatial_out
from ir.registry import REGISTRY

from . import blas_lanes
from . import handwritten as hw
from .nn_native import (_COL2IM_INTS, FLOATS, _geometry, _ready, col2im_kernel, fixed_args,
                        im2col_args, im2col_kernel)

BLOCK_BYTES = 2 << 20  # columns per block: about an L2's worth
WGRAD_PARTS = 8        # fixed partial sums of the weight gradient

_LOCAL = threading.local()


def _scratch(key: str, shape: tuple, dtype) -> np.ndarray:
    """A work array of ``shape``, kept by the calling thread for its next call when it is
    at most a few blocks (so a steady-state training step allocates nothing large). The
    caller takes one per lane (``key`` names the lane) and hands it to the lane's tasks,
    whichever pool thread runs them."""
    count = int(np.prod(shape))
    dtype = np.dtype(dtype)
    if count * dtype.itemsize > 4 * BLOCK_BYTES:
        return np.empty(shape, dtype)
    kept = getattr(_LOCAL, "arrays", None)
    if kept is None:
        kept = _LOCAL.arrays = {}
    a = kept.get((key, dtype))
    if a is None or a.size < count:
        a = kept[(key, dtype)] = np.empty(count, dtype)
    return a[:count].reshape(shape)


def _lane_scratch(key: str, k: int, shape: tuple, dtype) -> list[np.ndarray]:
    """One ``_scratch`` array per lane (task i of ``blas_lanes.run`` runs on lane i % k)."""
    return [_scratch(f"{key}{j}", shape, dtype) for j in range(k)]


def _block(rows: int, length: int, itemsize: int, n: int) -> int:
    return max(1, min(n, BLOCK_BYTES // max(1, rows * length * itemsize)))


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)
            if (i * n // parts) < ((i + 1) * n // parts)]


class _Im2col:
    """im2col of image blocks of ``x`` into (b, R, L) buffers, on the calling thread."""

    def __init__(self, x, kernel, stride, padding, dilation, ones_row, op):
        self.rows = x.shape[1] * int(np.prod(kernel)) + (1 if ones_row else 0)
        args, self.out_sp = im2col_args(x, kernel, stride, padding, dilation, ones_row, 0)
        self.length = int(np.prod(self.out_sp))
        self.k = im2col_kernel(x.dtype.name, op, fixed_args(args, ("s4", "ones", "NB")))
        self.args = list(args.values())

    def __call__(self, x, lo, hi, buf):
        self.k(x[lo:hi], buf, *self.args, n=(hi - lo) * self.rows, parallel=False)


def _columns(x, other, kernel, stride, padding, dilation, ones_row, op):
    """``x`` as a kernel operand and its column maker, or None where the NumPy reference
    serves ``op`` (another dtype, mixed dtypes, an empty operand, no kernel)."""
    if x.dtype.name not in FLOATS or other.dtype != x.dtype or x.size == 0 or other.size == 0:
        return None
    x = hw.operand(x)
    cols = _Im2col(x, kernel, stride, padding, dilation, ones_row, op)
    return (x, cols) if _ready(cols.k) else None


def _conv_native(x, w2, kernel, stride, padding, dilation, ones_row=False, out=None):
    ready = _columns(x, w2, kernel, stride, padding, dilation, ones_row, "conv")
    if ready is None:
        return hw.into(REGISTRY["conv"].reference(x, w2, kernel, stride, padding, dilation,
                                                  ones_row), out)
    x, cols = ready
    n, cout, length = x.shape[0], w2.shape[0], cols.length
    res = hw.result((n, cout) + cols.out_sp, x.dtype, out)
    y3 = res.reshape(n, cout, length)
    b = _block(cols.rows, length, x.itemsize, n)
    k = blas_lanes.lanes(n)

    bufs = _lane_scratch("cols", k, (b, cols.rows, length), x.dtype)

    def task(lo, hi, buf):
        def run():
            for i in range(lo, hi, b):
                j = min(i + b, hi)
                cols(x, i, j, buf[:j - i])
                np.matmul(w2, buf[:j - i], out=y3[i:j])
        return run
    blas_lanes.run([task(lo, hi, bufs[t % k]) for t, (lo, hi) in enumerate(_ranges(n, k))], k)
    return hw.into(res, out)


def _conv_input_grad_native(g, w2, spatial, kernel, stride, padding, dilation,
                            ones_row=False, out=None):
    ref = REGISTRY["conv_input_grad"].reference
    if g.dtype.name not in FLOATS or w2.dtype != g.dtype or g.size == 0 or w2.size == 0:
        return hw.into(ref(g, w2, spatial, kernel, stride, padding, dilation, ones_row), out)
    n, cout = g.shape[:2]
    rows = w2.shape[1]
    c = (rows - (1 if ones_row else 0)) // int(np.prod(kernel))
    out_sp = _spatial_out(spatial, kernel, stride, padding, dilation)
    length = int(np.prod(out_sp))
    # the block buffer (b, R, L) is C-contiguous: its strides are (R*L, L, 1) whatever b
    args = dict(zip(_COL2IM_INTS, [c, rows * length, length, 1, *_geometry(
        spatial, kernel, stride, padding, dilation, out_sp)]))
    kc = col2im_kernel(g.dtype.name, True, "conv_input_grad", fixed_args(args, ("c2",)))
    if not _ready(kc):
        return hw.into(ref(g, w2, spatial, kernel, stride, padding, dilation, ones_row), out)
    g3 = g.reshape(n, cout, length)
    res = hw.result((n, c) + tuple(int(s) for s in spatial), g.dtype, out)
    cargs = list(args.values())
    w2t = w2.T
    b = _block(rows, length, g.itemsize, n)
    k = blas_lanes.lanes(n)

    bufs = _lane_scratch("cols", k, (b, rows, length), g.dtype)

    def task(lo, hi, buf):
        def run():
            for i in range(lo, hi, b):
                j = min(i + b, hi)
                blk = buf[:j - i]
                np.matmul(w2t, g3[i:j], out=blk)
                kc(blk, res[i:j], *cargs, n=(j - i) * c, parallel=False)
        return run
    blas_lanes.run([task(lo, hi, bufs[t % k]) for t, (lo, hi) in enumerate(_ranges(n, k))], k)
    return hw.into(res, out)


def _conv_weight_grad_native(x, g, kernel, stride, padding, dilation, ones_row=False,
                             out=None):
    ready = _columns(x, g, kernel, stride, padding, dilation, ones_row, "conv_weight_grad")
    if ready is None:
        return hw.into(REGISTRY["conv_weight_grad"].reference(
            x, g, kernel, stride, padding, dilation, ones_row), out)
    x, cols = ready
    n, cout, length, rows = x.shape[0], g.shape[1], cols.length, cols.rows
    g3 = g.reshape(n, cout, length)
    b = _block(rows, length, x.itemsize, n)
    parts = _ranges(n, min(n, WGRAD_PARTS))
    # transposed, (R, Cout): cols @ gᵀ runs about 25% faster than g @ colsᵀ at conv shapes
    acc = _scratch("acc", (len(parts), rows, cout), x.dtype)
    acc.fill(0)

    k = blas_lanes.lanes(len(parts))
    bufs = _lane_scratch("cols", k, (b, rows, length), x.dtype)
    tmps = _lane_scratch("wgrad", k, (b, rows, cout), x.dtype)
    sums = _lane_scratch("wsum", k, (rows, cout), x.dtype)

    def task(p, lo, hi, buf, tmp, part):
        def run():
            for i in range(lo, hi, b):
                j = min(i + b, hi)
                cols(x, i, j, buf[:j - i])
                np.matmul(buf[:j - i], g3[i:j].transpose(0, 2, 1), out=tmp[:j - i])
                acc[p] += np.sum(tmp[:j - i], axis=0, out=part)
        return run
    blas_lanes.run([task(p, lo, hi, bufs[p % k], tmps[p % k], sums[p % k])
                    for p, (lo, hi) in enumerate(parts)], k)
    total = acc.sum(0) if len(parts) > 1 else acc[0]
    return hw.into(np.ascontiguousarray(total.T), out)


NATIVE = {
    "conv": _conv_native,
    "conv_input_grad": _conv_input_grad_native,
    "conv_weight_grad": _conv_weight_grad_native,
}


def register() -> None:
    """Serve the ops in ``NATIVE`` from these kernels (the NumPy implementations stay as
    ``op.reference``); each takes ``out=`` like ``nn_native``'s."""
    hw.serve(NATIVE)


register()
