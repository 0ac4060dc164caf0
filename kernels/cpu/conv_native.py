"""Convolution as one native kernel per op: each thread takes a lane of images and, an
image at a time, writes its columns (im2col) into its own buffer and calls OpenBLAS's
GEMM on them from the kernel (``blas_calls``), with no Python between images.

Done whole-batch, a convolution writes all its columns to memory (42 MB for the MNIST
example's second conv at batch 64) and reads them back into a GEMM whose small M (the
output channels) makes OpenBLAS stream them. Here one image's columns (663 KB there)
stay in the core's L2 between the im2col that writes them and the GEMM that packs them,
and each image's product goes straight into its (Cout, L) rows of the output. The two
gradients work the same way: ``conv_input_grad`` multiplies then col2im's each image;
``conv_weight_grad`` im2col's each image again (cheaper than keeping the columns) and
accumulates cols·gᵀ into its part's sum (GEMM with beta 1). The im2col and col2im
bodies are built for the layer's window, strides and padding (``nn_native.fixed_args``),
which halves their time, for convolutions of at least ``FIXED_MIN_COLUMNS`` column
values; smaller ones share one kernel per op and dtype (a kernel per geometry costs a
compile each: the test suite's many small layers took 16% longer from a cold cache).

Before, the lanes were Python threads calling a column kernel and NumPy's matmul a few
images at a time: at MNIST's conv2 (batch 64, 32->64 channels, 3x3 over 26x26) each op
took 8.9-10.1 ms against 7.4 ms for its GEMMs alone, the rest in the column kernels'
Python calls and the lanes' hand-offs of the GIL.

Results do not depend on the thread count: each image's forward and input gradient are
computed alone, and the weight gradient sums ``WGRAD_PARTS`` fixed partial sums (over
fixed image ranges, each accumulated image by image) in order, whichever thread
computed them.

Serves ``conv``, ``conv_input_grad`` and ``conv_weight_grad`` for float32/float64 where
NumPy's OpenBLAS can be called from kernels (``blas_calls.provide``); ``op.reference``
(NumPy) serves other dtypes, empty inputs and processes without it. The forward and
input gradient of a 3x3 stride-1 convolution of at least 8 channels go to Winograd's
F(2x2, 3x3) instead (``conv_winograd``: 2.25x fewer multiplies), and the weight
gradient of a 1-D or 2-D stride-1 one of at least 8 channels to one GEMM per window
offset over channels-last copies, without columns (``conv_shifted``).

Each op's work is described once as native calls (``handwritten.Task``: the lanes, the
partial sums, Winograd's filter transform and finiteness checks), which a call runs and
a plan's step binds (``bind``, ``runtime.steps._Binding``): bound, a step is its
prepared calls alone, where the call's Python (path choice, geometry, kernel lookup,
NumPy's filter transform and sums) took 10-30 us inside a training step. A binding
owns its work buffers; a call uses the calling thread's (``_scratch``).
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from ir.ops.nn import _spatial_out
from ir.registry import REGISTRY

from . import blas_calls, conv_shifted, conv_winograd
from . import handwritten as hw
from .nn_native import (_COL2IM_INTS, _COL2IM_PLANES, _IM2COL, _IM2COL_INTS, FLOATS, _fixed,
                        _geometry, _ints, _ready, fixed_args, im2col_args)

KEEP_BYTES = 8 << 20  # work buffers up to this size are kept between calls
WGRAD_PARTS = 8       # fixed partial sums of the weight gradient
FIXED_MIN_COLUMNS = 1 << 18  # column values from which a kernel is built per geometry

_LOCAL = threading.local()

# The work units are lanes: lane j of NL takes images [j*N//NL, (j+1)*N//NL) (the
# weight gradient: parts) and the j-th (R*L) block of ``buf`` for their columns. The
# column helper's int arguments come in one int64 array, ``geo``, unpacked where
# GEOMETRY stands: CPython passes a call of more than 30 arguments as *args, which
# Numba cannot inline.
_FWD = '''
@njit(nogil=True, inline="always")
def body(x, w, y, buf, geo, N, NL, cout, wt, lo, hi):
GEOMETRY
    R = C * KD * KH * KW + ones
    L = OD * OH * OW
    wp = address(w, 0)
    ta = TRANS if wt else NO_TRANS
    lda = cout if wt else R
    for j in range(lo, hi):
        cols = buf[j * R * L:(j + 1) * R * L]
        cp = address(cols, 0)
        for i in range(j * N // NL, (j + 1) * N // NL):
            im2col(x[i * s0:], cols, C, s0, s1, s2, s3, s4, D, H, W, KD, KH, KW, SD, SH, SW,
                   PD, PH, PW, DD, DH, DW, OD, OH, OW, ones, NB, 0, R)
            GEMM(ROW_MAJOR, ta, NO_TRANS, cout, L, R, ONE, wp, lda, cp, L, ZERO,
                 address(y, i * cout * L), L)
'''

_INPUT_GRAD = '''
@njit(nogil=True, inline="always")
def body(g, w, res, buf, geo, N, NL, cout, R, wt, lo, hi):
GEOMETRY
    L = OD * OH * OW
    P = D * H * W
    wp = address(w, 0)
    ta = NO_TRANS if wt else TRANS
    lda = cout if wt else R
    for j in range(lo, hi):
        cols = buf[j * R * L:(j + 1) * R * L]
        cp = address(cols, 0)
        for i in range(j * N // NL, (j + 1) * N // NL):
            GEMM(ROW_MAJOR, ta, NO_TRANS, R, L, cout, ONE, wp, lda, address(g, i * cout * L), L,
                 ZERO, cp, L)
            col2im(cols, res[i * C * P:], C, c0, c1, c2, D, H, W, KD, KH, KW, SD, SH, SW, PD,
                   PH, PW, DD, DH, DW, OD, OH, OW, 0, C)
'''

_WEIGHT_GRAD = '''
@njit(nogil=True, inline="always")
def body(x, g, acc, buf, geo, N, NL, NP, cout, lo, hi):
GEOMETRY
    R = C * KD * KH * KW + ones
    L = OD * OH * OW
    for j in range(lo, hi):
        cols = buf[j * R * L:(j + 1) * R * L]
        cp = address(cols, 0)
        for p in range(j * NP // NL, (j + 1) * NP // NL):
            ap = address(acc, p * R * cout)
            first = p * N // NP
            for i in range(first, (p + 1) * N // NP):
                im2col(x[i * s0:], cols, C, s0, s1, s2, s3, s4, D, H, W, KD, KH, KW, SD, SH,
                       SW, PD, PH, PW, DD, DH, DW, OD, OH, OW, ones, NB, 0, R)
                beta = ZERO if i == first else ONE
                GEMM(ROW_MAJOR, NO_TRANS, TRANS, R, cout, L, ONE, cp, L,
                     address(g, i * cout * L), L, beta, ap, cout)
'''

_KERNELS = {  # op: (body, the helper it calls, its source and ints, arrays, more ints)
    "conv": (_FWD, "im2col", _IM2COL, _IM2COL_INTS, (("x", "in"), ("w", "in"), ("y", "out")),
             ("N", "NL", "cout", "wt")),
    "conv_input_grad": (_INPUT_GRAD, "col2im", _COL2IM_PLANES, _COL2IM_INTS,
                        (("g", "in"), ("w", "in"), ("res", "out")), ("N", "NL", "cout", "R", "wt")),
    "conv_weight_grad": (_WEIGHT_GRAD, "im2col", _IM2COL, _IM2COL_INTS,
                         (("x", "in"), ("g", "in"), ("acc", "out")), ("N", "NL", "NP", "cout")),
}


def _fixed_for(args: dict[str, int], inner: tuple[str, ...], n: int) -> dict | None:
    """The geometry to bake into a convolution's kernel (``nn_native.fixed_args``), for
    one whose columns are at least ``FIXED_MIN_COLUMNS`` values; None (one kernel per op
    and dtype for every geometry) below that, where the column loops cost little and a
    kernel per geometry would cost a compile each (the test suite's many small layers)."""
    rows = args["C"] * args["KD"] * args["KH"] * args["KW"] + args.get("ones", 0)
    length = args["OD"] * args["OH"] * args["OW"]
    return fixed_args(args, inner) if n * rows * length >= FIXED_MIN_COLUMNS else None


def conv_kernel(op: str, dtype: str, fixed: dict[str, int] | None) -> hw.NativeKernel | None:
    """The kernel serving ``op`` for ``dtype`` with the geometry ``fixed`` baked into its
    column helper (None: generic), or None where OpenBLAS's GEMM cannot be called from a
    kernel."""
    if not blas_calls.provide():
        return None
    return _lanes_kernel(op, dtype, None if fixed is None else tuple(sorted(fixed.items())))


@functools.lru_cache(maxsize=256)
def _lanes_kernel(op: str, dtype: str, fixed: tuple | None) -> hw.NativeKernel:
    """``conv_kernel``'s kernel, its source built once per op, dtype and geometry (every
    conv call asks)."""
    body, helper, helper_src, geo, arrays, ints = _KERNELS[op]
    unpack = f"    {', '.join(geo)} = {', '.join(f'geo[{i}]' for i in range(len(geo)))}"
    src = (blas_calls.kernel_head(dtype)
           + _fixed(helper_src, dict(fixed) if fixed else None)
           .replace("def body(", f"def {helper}(")
           + body.replace("GEOMETRY", unpack))
    params = tuple((n, kind, dtype) for n, kind in arrays) + (
        ("buf", "out", dtype), ("geo", "in", "int64")) + _ints(*ints)
    return hw.kernel(f"{op}_lanes", params, src, op=op)


def _scratch(key: str, shape: tuple, dtype) -> np.ndarray:
    """A work array of ``shape``, kept by the calling thread for its next call when it is
    at most ``KEEP_BYTES`` (so a steady-state training step allocates nothing large)."""
    count = int(np.prod(shape))
    dtype = np.dtype(dtype)
    if count * dtype.itemsize > KEEP_BYTES:
        return np.empty(shape, dtype)
    kept = getattr(_LOCAL, "arrays", None)
    if kept is None:
        kept = _LOCAL.arrays = {}
    a = kept.get((key, dtype))
    if a is None or a.size < count:
        a = kept[(key, dtype)] = np.empty(count, dtype)
    return a[:count].reshape(shape)


def _lanes(units: int) -> int:
    import kernels.cpu as cpu
    return max(1, min(cpu._nthreads(), units))


def _weights(w2: np.ndarray) -> tuple[np.ndarray, int]:
    """The weights as the kernels take them, as stored, with a flag that says whether
    they are transposed (the GEMM then runs as NumPy's matmul would run it on them, to
    the same bits)."""
    wt = w2.flags.f_contiguous and not w2.flags.c_contiguous
    return (w2.T if wt else np.ascontiguousarray(w2)), int(wt)


def _lanes_task(k: hw.NativeKernel, args: list, lanes: int) -> hw.Task:
    """``k`` over its lanes, OpenBLAS on one thread meanwhile."""
    return hw.Task(k, tuple(args), lanes, parallel=lanes >= 2, one_blas=True)


# the weight gradient's partial sums (parts, R, Cout) summed in order into (Cout, R)
_SUM_PARTS = '''
@njit(nogil=True, inline="always")
def body(acc, out, parts, nr, cout, lo, hi):
    for co in range(lo, hi):
        row = out[co * nr:(co + 1) * nr]
        for r in range(nr):
            s = acc[r * cout + co]
            for p in range(1, parts):
                s += acc[(p * nr + r) * cout + co]
            row[r] = s
'''


def _sum_parts_task(acc: np.ndarray, res: np.ndarray) -> hw.Task:
    d = hw.dname(acc)
    k = hw.kernel(f"conv_wgrad_parts_{d}", (("acc", "in", d), ("out", "out", d))
                  + _ints("parts", "nr", "cout"), _SUM_PARTS, op="conv_weight_grad")
    parts, nr, cout = acc.shape
    return hw.Task(k, (acc, res, parts, nr, cout), cout, work=acc.size)


def _geo(args: dict[str, int]) -> np.ndarray:
    return np.fromiter(args.values(), np.int64, len(args))


def _owned(key: str, shape: tuple, dtype) -> np.ndarray:
    """A binding's own work array (``_scratch``'s arrays are the calling thread's)."""
    return np.empty(shape, dtype)


def _usable(a: np.ndarray, b: np.ndarray) -> bool:
    return hw.dname(a) in FLOATS and b.dtype == a.dtype and a.size > 0 and b.size > 0


def _conv_plans(x, w2, kernel, stride, padding, dilation, ones_row, out, scratch):
    """conv's native calls: (the result, Winograd's checked plan where it applies or
    None, a function giving the im2col lanes' tasks, or None where the reference must
    serve it: built only where needed, its kernel compiled only then)."""
    n, cout = x.shape[0], w2.shape[0]
    res = hw.result((n, cout) + _spatial_out(x.shape[2:], kernel, stride, padding, dilation),
                    x.dtype, out)
    wino = None
    if conv_winograd.applies(x, cout, kernel, stride, padding, dilation):
        wino = conv_winograd.plan(np.ascontiguousarray(x), np.ascontiguousarray(w2), padding,
                                  ones_row, res, _lanes(n), scratch)

    def lanes_tasks():
        xo = hw.operand(x)
        args, out_sp = im2col_args(xo, kernel, stride, padding, dilation, ones_row, 0)
        k = conv_kernel("conv", hw.dname(xo), _fixed_for(args, ("s4", "ones", "NB"), n))
        if k is None or not _ready(k):
            return None
        rows, length = w2.shape[1], int(np.prod(out_sp))
        lanes = _lanes(n)
        buf = scratch("cols", (lanes * rows * length,), xo.dtype)
        w, wt = _weights(w2)
        return [_lanes_task(k, [xo, w, res, buf, _geo(args), n, lanes, cout, wt], lanes)]
    return res, wino, lanes_tasks


def _conv_input_grad_plans(g, w2, spatial, kernel, stride, padding, dilation, ones_row, out,
                           scratch):
    """As ``_conv_plans``, for conv_input_grad (Winograd's: by the turned filters)."""
    n, cout = g.shape[:2]
    rows = w2.shape[1]
    c = (rows - (1 if ones_row else 0)) // int(np.prod(kernel))
    res = hw.result((n, c) + tuple(int(s) for s in spatial), g.dtype, out)
    # stride 1, 3x3: the convolution of g, padded by 2 - P, by the turned filters
    pads = tuple(2 - int(p) for p in padding)
    wino = None
    if conv_winograd.applies(g, c, kernel, stride, pads, dilation):
        wino = conv_winograd.plan(np.ascontiguousarray(g), np.ascontiguousarray(w2), pads,
                                  False, res, _lanes(n), scratch, op="conv_input_grad",
                                  flip=True)

    def lanes_tasks():
        out_sp = _spatial_out(spatial, kernel, stride, padding, dilation)
        length = int(np.prod(out_sp))
        # one image's columns: (R, L), C-contiguous
        args = dict(zip(_COL2IM_INTS, [c, rows * length, length, 1, *_geometry(
            spatial, kernel, stride, padding, dilation, out_sp)]))
        k = conv_kernel("conv_input_grad", hw.dname(g), _fixed_for(args, ("c2",), n))
        if k is None or not _ready(k):
            return None
        lanes = _lanes(n)
        buf = scratch("cols", (lanes * rows * length,), g.dtype)
        w, wt = _weights(w2)
        return [_lanes_task(k, [np.ascontiguousarray(g), w, res, buf, _geo(args), n, lanes,
                                cout, rows, wt], lanes)]
    return res, wino, lanes_tasks


def _conv_weight_grad_plans(x, g, kernel, stride, padding, dilation, ones_row, out, scratch):
    """As ``_conv_plans``, for conv_weight_grad: the shifted GEMMs' checked plan where
    they apply; im2col's lanes, then their partial sums."""
    n, cout = x.shape[0], g.shape[1]
    rows = x.shape[1] * int(np.prod(kernel)) + (1 if ones_row else 0)
    parts = min(n, WGRAD_PARTS)
    res = hw.result((cout, rows), x.dtype, out)
    shifted = None
    if conv_shifted.applies(x, cout, kernel, stride, padding, dilation):
        shifted = conv_shifted.plan(np.ascontiguousarray(x), np.ascontiguousarray(g), kernel,
                                    padding, dilation, ones_row, res, _lanes(parts), parts,
                                    scratch)

    def lanes_tasks():
        xo = hw.operand(x)
        args, out_sp = im2col_args(xo, kernel, stride, padding, dilation, ones_row, 0)
        k = conv_kernel("conv_weight_grad", hw.dname(xo),
                        _fixed_for(args, ("s4", "ones", "NB"), n))
        if k is None or not _ready(k):
            return None
        length = int(np.prod(out_sp))
        # transposed, (R, Cout): cols @ gᵀ runs ~25% faster than g @ colsᵀ at conv shapes
        acc = scratch("acc", (parts, rows, cout), xo.dtype)
        lanes = _lanes(parts)
        buf = scratch("cols", (lanes * rows * length,), xo.dtype)
        sums = _sum_parts_task(acc, res)
        if not _ready(sums.kernel):
            return None
        return [_lanes_task(k, [xo, np.ascontiguousarray(g), acc, buf, _geo(args), n, lanes,
                                parts, cout], lanes), sums]
    return res, shifted, lanes_tasks


def _run_plans(plans, out, reference):
    """The checked plan's result unless it flags its operands, else the im2col lanes',
    else ``reference()``'s."""
    res, checked, lanes_tasks = plans
    if checked is not None and hw.run_checked(checked):
        return hw.into(res, out)
    lanes = lanes_tasks()
    if lanes is None:
        return hw.into(reference(), out)
    hw.run_tasks(lanes)
    return hw.into(res, out)


def _bind_plans(plans, out, operands, again):
    """A prepared call of the plan a direct call would run (the checked plan, or the
    lanes'), writing into ``out``; where the checked plan flags its operands, ``again()``
    (the direct call, which then takes im2col). None where the calls would not read
    ``operands`` (all C-contiguous) themselves or cannot be bound."""
    res, checked, lanes_tasks = plans
    if res is not out or not all(a.flags.c_contiguous for a in operands):
        return None
    if checked is None:
        lanes = lanes_tasks()
        return hw.bind_tasks(lanes) if lanes is not None else None
    return hw.then_flagged(hw.bind_tasks(checked.checks + checked.tasks), checked.flag, again)


def _conv_native(x, w2, kernel, stride, padding, dilation, ones_row=False, out=None):
    ref = REGISTRY["conv"].reference
    if not _usable(x, w2):
        return hw.into(ref(x, w2, kernel, stride, padding, dilation, ones_row), out)
    plans = _conv_plans(x, w2, kernel, stride, padding, dilation, ones_row, out, _scratch)
    return _run_plans(plans, out, lambda: ref(x, w2, kernel, stride, padding, dilation,
                                              ones_row))


def _bind_conv(x, w2, kernel, stride, padding, dilation, ones_row=False, out=None):
    """``conv(..., out=out)`` as a prepared call for these arrays (a plan's step), or
    None."""
    if out is None or not _usable(x, w2):
        return None
    plans = _conv_plans(x, w2, kernel, stride, padding, dilation, ones_row, out, _owned)
    return _bind_plans(plans, out, (x, w2), lambda: _conv_native(
        x, w2, kernel, stride, padding, dilation, ones_row, out=out))


def _conv_input_grad_native(g, w2, spatial, kernel, stride, padding, dilation,
                            ones_row=False, out=None):
    ref = REGISTRY["conv_input_grad"].reference
    if not _usable(g, w2):
        return hw.into(ref(g, w2, spatial, kernel, stride, padding, dilation, ones_row), out)
    plans = _conv_input_grad_plans(g, w2, spatial, kernel, stride, padding, dilation,
                                   ones_row, out, _scratch)
    return _run_plans(plans, out, lambda: ref(g, w2, spatial, kernel, stride, padding,
                                              dilation, ones_row))


def _bind_conv_input_grad(g, w2, spatial, kernel, stride, padding, dilation, ones_row=False,
                          out=None):
    """``conv_input_grad(..., out=out)`` as a prepared call for these arrays, or None."""
    if out is None or not _usable(g, w2):
        return None
    plans = _conv_input_grad_plans(g, w2, spatial, kernel, stride, padding, dilation,
                                   ones_row, out, _owned)
    return _bind_plans(plans, out, (g, w2), lambda: _conv_input_grad_native(
        g, w2, spatial, kernel, stride, padding, dilation, ones_row, out=out))


def _conv_weight_grad_native(x, g, kernel, stride, padding, dilation, ones_row=False,
                             out=None):
    ref = REGISTRY["conv_weight_grad"].reference
    if not _usable(x, g):
        return hw.into(ref(x, g, kernel, stride, padding, dilation, ones_row), out)
    plans = _conv_weight_grad_plans(x, g, kernel, stride, padding, dilation, ones_row, out,
                                    _scratch)
    return _run_plans(plans, out, lambda: ref(x, g, kernel, stride, padding, dilation,
                                              ones_row))


def _bind_conv_weight_grad(x, g, kernel, stride, padding, dilation, ones_row=False, out=None):
    """``conv_weight_grad(..., out=out)`` as a prepared call for these arrays, or None."""
    if out is None or not _usable(x, g):
        return None
    plans = _conv_weight_grad_plans(x, g, kernel, stride, padding, dilation, ones_row, out,
                                    _owned)
    return _bind_plans(plans, out, (x, g), lambda: _conv_weight_grad_native(
        x, g, kernel, stride, padding, dilation, ones_row, out=out))


_conv_native.bind = _bind_conv
_conv_input_grad_native.bind = _bind_conv_input_grad
_conv_weight_grad_native.bind = _bind_conv_weight_grad


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
