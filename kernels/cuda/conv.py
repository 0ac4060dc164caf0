"""im2col / col2im on the device: the column matrices convolutions are GEMMs over.

Like ``kernels.cuda.indexing``, small generated kernels of their own (one per layer
configuration: spatial rank, kernel, stride, padding and dilation are literals in the
source). Both layouts of the column matrix, ``(N, C*K [+1], L)`` and the batch-last
``(C*K [+1], N*L)``, are one strided ``(N, C*K [+1], L)`` view, so one kernel serves both.

- ``im2col``: a thread per column element reads the input pixel its kernel offset and
  output position address (zero in the padding; the optional ones row is 1);
- ``col2im``: a thread per image element sums, over the kernel offsets in the order the
  host implementation adds them, the column elements that land on it: a gather, so no
  atomics and the same rounding as the host.
"""
from __future__ import annotations

import itertools

import numpy as np

from . import _launch, _load, _threads, empty
from .views import elem_strides, strided

__all__ = ["im2col", "col2im"]

_NP = {"float16": "np.float16", "float32": "np.float32", "float64": "np.float64"}


def _out_sizes(spatial, kernel, stride, padding, dilation) -> tuple[int, ...]:
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation))


def _split(index: str, names: list[str], sizes: list, ind: str) -> list[str]:
    out = [f"{ind}rr = {index}"]
    for k in range(len(names) - 1, 0, -1):
        out += [f"{ind}{names[k]} = rr % {sizes[k]}", f"{ind}rr = rr // {sizes[k]}"]
    return out + [f"{ind}{names[0]} = rr"]


def _im2col_source(d: str, spatial, kernel, stride, padding, dilation, ones: bool) -> str:
    D = len(spatial)
    out = _out_sizes(spatial, kernel, stride, padding, dilation)
    K = int(np.prod(kernel))
    L = int(np.prod(out))
    lines = ["import numpy as np", "from numba import cuda", f"ZERO = {_NP[d]}(0)",
             f"ONE = {_NP[d]}(1)", "", "", "@cuda.jit", "def entry(x, cols, n, CKp):",
             "    i = cuda.grid(1)", "    step = cuda.gridsize(1)", "    while i < n:",
             f"        l = i % {L}", f"        t = i // {L}", "        r = t % CKp",
             "        b = t // CKp"]
    ck = f"(CKp - {1 if ones else 0})"
    lines += [f"        if r >= {ck}:", "            cols[b, r, l] = ONE",
              "        else:", f"            c = r // {K}", f"            kr = r % {K}"]
    lines += _split("kr", [f"k{q}" for q in range(D)], list(kernel), " " * 12)
    lines += _split("l", [f"o{q}" for q in range(D)], list(out), " " * 12)
    inside = []
    for q in range(D):
        lines.append(f"            p{q} = o{q} * {stride[q]} - {padding[q]} + "
                     f"k{q} * {dilation[q]}")
        inside.append(f"(p{q} >= 0) and (p{q} < {spatial[q]})")
    at = ", ".join(f"p{q}" for q in range(D))
    lines += [f"            if {' and '.join(inside)}:",
              f"                cols[b, r, l] = x[b, c, {at}]",
              "            else:", "                cols[b, r, l] = ZERO",
              "        i += step"]
    return "\n".join(lines) + "\n"


def _col2im_source(d: str, spatial, kernel, stride, padding, dilation) -> str:
    D = len(spatial)
    out = _out_sizes(spatial, kernel, stride, padding, dilation)
    K = int(np.prod(kernel))
    lines = ["import numpy as np", "from numba import cuda", f"ZERO = {_NP[d]}(0)", "", "",
             "@cuda.jit", "def entry(cols, img, n, C):", "    i = cuda.grid(1)",
             "    step = cuda.gridsize(1)", "    while i < n:"]
    lines += _split("i", ["b", "c"] + [f"p{q}" for q in range(D)],
                    ["N", "C"] + list(spatial), " " * 8)
    lines.append("        acc = ZERO")
    for offs in itertools.product(*(range(k) for k in kernel)):
        conds, os_ = [], []
        for q in range(D):
            qv = f"(p{q} + {padding[q] - offs[q] * dilation[q]})"
            conds += [f"{qv} >= 0", f"{qv} % {stride[q]} == 0",
                      f"{qv} // {stride[q]} < {out[q]}"]
            os_.append(f"({qv} // {stride[q]})")
        kflat = int(np.ravel_multi_index(offs, kernel))
        lflat = os_[0]
        for q in range(1, D):
            lflat = f"({lflat} * {out[q]} + {os_[q]})"
        lines += [f"        if {' and '.join(conds)}:",
                  f"            acc += cols[b, c * {K} + {kflat}, {lflat}]"]
    at = ", ".join(f"p{q}" for q in range(D))
    lines += [f"        img[b, c, {at}] = acc", "        i += step"]
    return "\n".join(lines) + "\n"


def _cols3(cols, N: int, L: int, batch_last: bool):
    """The ``(N, C*K [+1], L)`` view of a column matrix in either layout."""
    st = elem_strides(cols)
    if batch_last:  # (CKp, N*L): column n*L + l
        return strided(cols, (N, cols.shape[0], L), (L * st[1], st[0], st[1]))
    return cols


def _attrs(attrs: dict, D: int):
    vals = [tuple(int(v) for v in attrs[k]) for k in ("kernel", "stride", "padding",
                                                     "dilation")]
    if any(len(v) != D for v in vals):
        return None
    return vals


def im2col(x, attrs: dict, out_shape: tuple, out_dtype) -> object | None:
    """The ``im2col`` op into a fresh array, or None (host path)."""
    d = np.dtype(x.dtype).name
    D = len(x.shape) - 2
    if d not in _NP or D < 1 or np.dtype(out_dtype) != np.dtype(x.dtype):
        return None
    vals = _attrs(attrs, D)
    if vals is None:
        return None
    kernel, stride, padding, dilation = vals
    spatial = tuple(x.shape[2:])
    N = x.shape[0]
    L = int(np.prod(_out_sizes(spatial, kernel, stride, padding, dilation)))
    out = empty(out_shape, out_dtype)
    c3 = _cols3(out, N, L, bool(attrs.get("batch_last")))
    n = int(np.prod(c3.shape))
    if n == 0:
        return out
    fn = _load(_im2col_source(d, spatial, kernel, stride, padding, dilation,
                              bool(attrs.get("ones_row"))))
    blocks, tpb = _threads(n)
    _launch(fn, blocks, tpb, (x, c3, n, c3.shape[1]))
    return out


def col2im(cols, attrs: dict, out_shape: tuple, out_dtype) -> object | None:
    """The ``col2im`` op (the image gradient of ``im2col``) into a fresh array, or None."""
    d = np.dtype(cols.dtype).name
    spatial = tuple(int(s) for s in attrs["spatial"])
    D = len(spatial)
    if d not in _NP or np.dtype(out_dtype) != np.dtype(cols.dtype) or \
            len(out_shape) != D + 2:
        return None
    vals = _attrs(attrs, D)
    if vals is None:
        return None
    kernel, stride, padding, dilation = vals
    N, C = int(out_shape[0]), int(out_shape[1])
    L = int(np.prod(_out_sizes(spatial, kernel, stride, padding, dilation)))
    c3 = _cols3(cols, N, L, bool(attrs.get("batch_last")))
    out = empty(out_shape, out_dtype)
    n = int(np.prod(out_shape))
    if n == 0:
        return out
    fn = _load(_col2im_source(d, spatial, kernel, stride, padding, dilation))
    blocks, tpb = _threads(n)
    _launch(fn, blocks, tpb, (c3, out, n, C))
    return out
