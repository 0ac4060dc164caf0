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


def _pool_out(spatial, kernel, stride, padding, dilation, ceil_mode: bool) -> tuple:
    from ir.ops.nn import _spatial_out
    return tuple(_spatial_out(spatial, kernel, stride, padding, dilation, ceil_mode))


def _max_pool_source(d: str, spatial, kernel, stride, padding, dilation, out) -> str:
    D = len(spatial)
    isf = np.dtype(d).kind == "f"
    fill = "-np.inf" if isf else str(int(np.iinfo(np.dtype(d)).min))
    plane = [int(np.prod(spatial[q + 1:])) for q in range(D)]
    lines = ["import numpy as np", "from numba import cuda", f"FILL = np.{d}({fill})", "",
             "", "@cuda.jit", "def entry(x, idx, n, C):", "    i = cuda.grid(1)",
             "    step = cuda.gridsize(1)", "    while i < n:"]
    lines += _split("i", ["b", "c"] + [f"o{q}" for q in range(D)], ["N", "C"] + list(out),
                    " " * 8)
    start = " + ".join(f"(o{q} * {stride[q]} - {padding[q]}) * {plane[q]}" for q in range(D))
    for j, offs in enumerate(itertools.product(*(range(k) for k in kernel))):
        inside = []
        for q in range(D):
            lines.append(f"        p{q} = o{q} * {stride[q]} - {padding[q]} + "
                         f"{offs[q] * dilation[q]}")
            inside.append(f"(p{q} >= 0) and (p{q} < {spatial[q]})")
        at = ", ".join(f"p{q}" for q in range(D))
        lines.append(f"        v = x[b, c, {at}] if {' and '.join(inside)} else FILL")
        flat = sum(o * dd * st for o, dd, st in zip(offs, dilation, plane))
        if j == 0:
            lines += ["        best = v", f"        arg = {flat}"]
        else:
            nan = " or (v != v)" if isf else ""
            lines += [f"        if (v > best){nan}:", "            best = v",
                      f"            arg = {flat}"]
    at = ", ".join(f"o{q}" for q in range(D))
    lines += [f"        idx[b, c, {at}] = arg + {start}", "        i += step"]
    return "\n".join(lines) + "\n"


def max_pool_indices(x, attrs: dict, out_shape: tuple, out_dtype) -> object | None:
    """The ``max_pool_indices`` op: each window's first maximum (NaN wins, as torch) as a
    flat index into its spatial plane; None for the host path."""
    d = np.dtype(x.dtype).name
    D = len(x.shape) - 2
    if D < 1 or np.dtype(out_dtype) != np.int64 or np.dtype(d).kind not in "fiu" or \
            d == "float16":
        return None
    vals = _attrs(attrs, D)
    if vals is None:
        return None
    kernel, stride, padding, dilation = vals
    spatial = tuple(x.shape[2:])
    out = _pool_out(spatial, kernel, stride, padding, dilation, bool(attrs.get("ceil_mode")))
    if tuple(out_shape) != tuple(x.shape[:2]) + out:
        return None
    res = empty(out_shape, np.int64)
    n = int(np.prod(out_shape))
    if n == 0:
        return res
    fn = _load(_max_pool_source(d, spatial, kernel, stride, padding, dilation, out))
    blocks, tpb = _threads(n)
    _launch(fn, blocks, tpb, (x, res, n, x.shape[1]))
    return res


def _planes(a, keep: int):
    """``a`` viewed as (N, C, prod(rest)) when its trailing dims collapse, else None."""
    sh, st = tuple(a.shape), elem_strides(a)
    rest, rst = sh[keep:], st[keep:]
    size = int(np.prod(rest)) if rest else 1
    want = 1
    for n_, s_ in zip(reversed(rest), reversed(rst)):
        if n_ != 1 and s_ != want * (rst[-1] if rst else 1):
            return None
        want *= n_
    inner = rst[-1] if rst else 1
    return strided(a, sh[:keep] + (size,), st[:keep] + (inner,))


def pool_gather(x, idx, out_shape: tuple, out_dtype) -> object | None:
    """``pool_gather``: the values at max pooling's flat indices."""
    from .indexing import gather
    xv, iv = _planes(x, 2), _planes(idx, 2)
    if xv is None or iv is None:
        return None
    out = empty(out_shape, out_dtype)
    ov = _planes(out, 2)
    res = gather(xv, iv, 2, tuple(iv.shape), out_dtype)
    if res is None:
        return None
    from . import copy_into
    copy_into(ov, res)
    return out


def pool_scatter(g, idx, shape: tuple, out_dtype) -> object | None:
    """``pool_scatter`` (max pooling's gradient): ``g`` summed into the flat positions
    ``idx`` of zero planes, in float64 as the host's bincount, then cast."""
    from . import copy_into, fill
    from .indexing import scatter
    gv, iv = _planes(g, 2), _planes(idx, 2)
    if gv is None or iv is None or len(shape) < 3:
        return None
    n, c = int(shape[0]), int(shape[1])
    plane = int(np.prod(shape[2:]))
    g64 = empty(tuple(gv.shape), np.float64)
    copy_into(g64, gv)
    z = empty((n, c, plane), np.float64)
    fill(z, 0)
    acc = scatter(z, iv, g64, 2, "add", (n, c, plane), np.float64)
    if acc is None:
        return None
    out = empty(tuple(shape), out_dtype)
    copy_into(_planes(out, 2), acc)
    return out
