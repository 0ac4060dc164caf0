"""Bound row copies for ``cat`` and ``select_block_backward`` in a plan's steps, and
a transposed copy (``transpose_task``) for the kernels that want W^T.

Both ops copy blocks of rows into the plan's buffer for their output (``cat``: each
input into its columns of every row; ``select_block_backward``: the gradient into its
block, zeros around it). Called directly (eagerly) they stay NumPy's
``np.concatenate`` and slice assignments, faster there than a kernel's dispatch; a
plan's step binds them (``bind``, ``runtime.steps._IntoRun``) to one native row-copy
or row-fill task per block, prepared once: the CNN's two ``cat`` steps (weights and
bias into the convolution's GEMM operand) and the LSTM LM's ``cat`` and
``select_block_backward`` took 10-30 us of Python a step each through NumPy, most of it
out of cache inside the training step. A plan's call (``out=`` given) asks for the
kernels, so they compile with the plan's batch.
"""
from __future__ import annotations

import numpy as np

from ir.registry import REGISTRY

from . import handwritten as hw
from .nn_native import _ready

__all__ = ["cat", "select_block_backward", "transpose_task", "register"]

_DTYPES = ("float32", "float64", "int64", "int32")

_COPY = '''
@njit(nogil=True, inline="always")
def body(src, s0, s1, n1, dst, d0, width, lo, hi):
    # dst row r (at r * d0) = src row (r // n1, r % n1) (at their strides s0, s1), for
    # rows [lo, hi): a source whose rows need two strides (a transposed gradient)
    for r in range(lo, hi):
        at = (r // n1) * s0 + (r % n1) * s1
        a = src[at:at + width]
        b = dst[r * d0:r * d0 + width]
        for j in range(width):
            b[j] = a[j]
'''

_FILL = '''
@njit(nogil=True, inline="always")
def body(dst, d0, width, lo, hi):
    # dst rows [lo, hi) (r * d0, width elements each) = 0
    for r in range(lo, hi):
        b = dst[r * d0:r * d0 + width]
        for j in range(width):
            b[j] = 0
'''


# W^T (nc, nr) from a C-contiguous W (nr, nc), a block of 16 rows of W per work unit:
# NumPy's transposed copy of the benchmark LSTM's 512x128 W_hh took 42 us
_TRANSPOSE = '''
@njit(nogil=True, inline="always")
def body(w, wt, nr, nc, lo, hi):
    for rb in range(lo, hi):
        r0 = rb * 16
        r1 = min(nr, r0 + 16)
        for c0 in range(0, nc, 16):
            for c in range(c0, min(nc, c0 + 16)):
                for r in range(r0, r1):
                    wt[c * nr + r] = w[r * nc + c]
'''


def transpose_task(w: np.ndarray, wt: np.ndarray, op: str) -> hw.Task:
    """The task writing ``w.T`` into ``wt`` (both C-contiguous, 2-D), for the registry
    op ``op`` (an exported program whose steps run it ships the kernel)."""
    d = hw.dname(w)
    k = hw.kernel(f"transpose_{d}", (("w", "in", d), ("wt", "out", d), ("nr", "int", None),
                                     ("nc", "int", None)), _TRANSPOSE, op=op)
    return hw.Task(k, (w, wt, w.shape[0], w.shape[1]), -(-w.shape[0] // 16), parallel=False)


def _kernels(d: str, op: str) -> tuple[hw.NativeKernel, hw.NativeKernel]:
    copy = hw.kernel(f"rows_copy_{d}", (("src", "in", d), ("s0", "int", None),
                                        ("s1", "int", None), ("n1", "int", None),
                                        ("dst", "out", d), ("d0", "int", None),
                                        ("width", "int", None)), _COPY, op=op)
    fill = hw.kernel(f"rows_fill_{d}", (("dst", "out", d), ("d0", "int", None),
                                        ("width", "int", None)), _FILL, op=op)
    return copy, fill


def _rows(a: np.ndarray, lead: int) -> tuple | None:
    """``a`` as rows: its first ``lead`` axes index the rows, the others (C-contiguous
    within a row) give a row's elements. Returns (rows, width, (s0, s1, n1)): row r
    starts at element (r // n1) * s0 + (r % n1) * s1; None where the leading axes do
    not merge into two, or a row is not contiguous."""
    isz = a.itemsize
    rows = int(np.prod(a.shape[:lead], dtype=np.int64))
    if a.size == 0:
        return rows, 0, (0, 0, 1)
    if any(st < 0 or st % isz for st in a.strides):
        return None
    width, want = 1, 1
    for n, st in zip(a.shape[lead:][::-1], a.strides[lead:][::-1]):
        if n != 1 and st != want * isz:
            return None
        width *= n
        want *= n
    dims: list[list[int]] = []   # [size, element stride], outermost first, merged
    for n, st in zip(a.shape[:lead], a.strides[:lead]):
        if n == 1:
            continue
        if dims and dims[-1][1] == n * (st // isz):
            dims[-1] = [dims[-1][0] * n, st // isz]
        else:
            dims.append([n, st // isz])
    if len(dims) > 2:
        return None
    if len(dims) < 2:
        return rows, width, (dims[0][1] if dims else 0, 0, 1)
    (_, s0), (n1, s1) = dims
    return rows, width, (s0, s1, n1)


def _copy_task(copy: hw.NativeKernel, src: np.ndarray, layout: tuple, dst: np.ndarray):
    """A bound copy of ``src``'s rows (``_rows``' layout) into the (rows, width) view
    ``dst``."""
    rows, width, (s0, s1, n1) = layout
    return copy.bind(src, s0, s1, n1, dst, dst.strides[0] // dst.itemsize, width, n=rows,
                     work=rows * width)


def _fill_task(fill: hw.NativeKernel, dst: np.ndarray):
    rows, width = dst.shape
    return fill.bind(dst, dst.strides[0] // dst.itemsize, width, n=rows, work=rows * width)


def _loaded(d: str, op: str) -> bool:
    """Whether the row kernels for ``d`` are loaded; a plan's call asks for them (they
    compile with its batch, or defer: ``nn_native._ready``)."""
    try:
        return _ready(*_kernels(d, op))
    except hw.Deferred:
        return False


def cat(*xs: np.ndarray, dim: int, out: np.ndarray | None = None) -> np.ndarray:
    """``cat`` by NumPy (its reference); a plan's call loads the kernels its binding
    uses."""
    if out is not None and hw.dname(out) in _DTYPES:
        _loaded(hw.dname(out), "cat")
    return REGISTRY["cat"].reference(*xs, dim=dim, out=out)


def _bind_cat(*xs: np.ndarray, dim: int, out: np.ndarray | None = None):
    """``cat(*xs, dim=dim, out=out)`` as bound row copies (one per input), or None: each
    input of ``out``'s dtype and viewed as (rows before ``dim``, its columns) without a
    copy, ``out`` C-contiguous."""
    if out is None or not out.flags.c_contiguous or not out.flags.writeable or \
            hw.dname(out) not in _DTYPES or not _loaded(hw.dname(out), "cat"):
        return None
    d = out.ndim
    dim = dim + d if dim < 0 else dim
    rows = int(np.prod(out.shape[:dim], dtype=np.int64))
    if rows == 0:
        return None
    o2 = out.reshape(rows, out.size // rows)
    copy, _ = _kernels(hw.dname(out), "cat")
    tasks, at = [], 0
    for x in xs:
        if not isinstance(x, np.ndarray) or x.dtype != out.dtype or x.ndim != d:
            return None
        layout = _rows(x, dim)
        if layout is None or layout[0] != rows:
            return None
        width = layout[1]
        if width:
            tasks.append(_copy_task(copy, x, layout, o2[:, at:at + width]))
        at += width
    return hw.chain(tasks) if at == o2.shape[1] else None


cat.bind = _bind_cat


def select_block_backward(g: np.ndarray, shape, index: int,
                          out: np.ndarray | None = None) -> np.ndarray:
    """``select_block_backward`` into ``out`` (zeros around block ``index``, ``g`` in
    it) where it is a usable result, else NumPy's fresh array."""
    shape = tuple(shape)
    if out is None or hw.result(shape, g.dtype, out) is not out:
        return hw.into(REGISTRY["select_block_backward"].reference(g, shape, index), out)
    if hw.dname(out) in _DTYPES:
        _loaded(hw.dname(out), "select_block_backward")
    out[:index] = 0
    out[index] = g
    out[index + 1:] = 0
    return out


def _bind_select_block_backward(g, shape, index: int, out: np.ndarray | None = None):
    """``select_block_backward(..., out=out)`` as bound row fills and a row copy, or
    None."""
    shape = tuple(shape)
    if out is None or hw.result(shape, g.dtype, out) is not out or \
            hw.dname(out) not in _DTYPES or not _loaded(hw.dname(out), "select_block_backward") \
            or out.ndim < 2 or g.shape != shape[1:] or g.size == 0:
        return None
    layout = _rows(g, g.ndim - 1)
    if layout is None:
        return None
    per, width, _ = layout          # rows of one block
    o2 = out.reshape(shape[0] * per, width)
    copy, fill = _kernels(hw.dname(out), "select_block_backward")
    tasks = [_copy_task(copy, g, layout, o2[index * per:(index + 1) * per])]
    if index > 0:
        tasks.append(_fill_task(fill, o2[:index * per]))
    if index + 1 < shape[0]:
        tasks.append(_fill_task(fill, o2[(index + 1) * per:]))
    return hw.chain(tasks)


select_block_backward.bind = _bind_select_block_backward

NATIVE = {"cat": cat, "select_block_backward": select_block_backward}


def register() -> None:
    """Serve ``cat`` and ``select_block_backward`` from here (the NumPy implementations
    stay as ``op.reference``); both take ``out=`` and offer ``bind``."""
    hw.serve(NATIVE)


register()
