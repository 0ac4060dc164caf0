"""Native kernels for scaled dot-product attention (``sdpa``, ``sdpa_backward`` in
``ir.ops.attention``).

Each thread takes a lane of (batch, head) items and, one block of query rows at a time,
computes the block's scores with OpenBLAS's GEMM called from the kernel (``blas_calls``),
its softmax rows while they are in cache, and the products that follow, straight
between the operands' own rows and the result: q, k, v and the output gradient are read
where they lie (a head of a fused qkv projection is a strided view, passed with its row
stride as the GEMM's leading dimension), nothing of size (L, S) goes to memory. The
backward recomputes the block's scores and softmax (as flash attention does) and makes
dv, dp, dq and dk from them; dk and dv sum over the blocks with GEMM's beta, the last
block first (under the causal mask its columns cover every key; the earlier blocks'
stop at their last row). k and v are copied transposed once per item, so that every
product takes its operands untransposed or with the first one transposed: OpenBLAS's
small-matrix kernels (an item's products are ~130k multiply-adds at 64 tokens and head
dim 32) ran q kᵀ with k transposed at 66 GFLOP/s against 111 for q (kᵀ copied).

Measured on the benchmark GPT's attention (16 x 4 items of 64 tokens, head dim 32, causal,
two threads, float32): forward 0.28-0.36 ms and backward 0.54-0.70 ms with the operands
in cache; inside the training step's plan, where they come from memory after the layer's
GEMMs, 0.44-0.48 and 1.0-1.1 ms per layer, against 0.70 and 1.09 ms for the matmul /
softmax composite's steps in the same process (plan steps timed with the executor's
``profile`` flag, as ``gcompile.bench_models`` splits a step). There the backward's
strided row reads missed the cache once per row (run twice in a row inside the plan, it
took 1.03 ms, then 0.64): it first sweeps each item's q, k, v and output-gradient rows
front to back (``touch``), which the prefetchers follow; paired with the plain kernel in
one process over 8-12 alternations, the two backward steps took 0.89-0.95x the time. The
same sweep made the forward slower, so it has none.

The backward writes dq, dk and dv at per-item offsets and a row stride it is given: the
stacked (3, ...) layout, or the permuted, concatenated one of its ``perm``/``cat_dim``
attributes (a fused q/k/v projection's gradient, ``ir.passes.rewrites.
attention_gradients_in_place``), where a copy into that layout used to follow it. The
forward writes its output the same way, permuted by its ``perm`` (the heads side by side
for the output projection, ``attention_output_in_place``), where a copy followed it.

Each item is computed whole by one thread, so results do not depend on the thread
count. ``op.reference`` (NumPy) serves other dtypes, empty shapes and processes without
NumPy's OpenBLAS.
"""
from __future__ import annotations

import functools

import numpy as np

import ir.ops  # noqa: F401  (registers the ops this module serves)
from ir.ops.attention import gradient_shape
from ir.registry import REGISTRY

from . import blas_calls
from . import handwritten as hw
from .codegen import KEY_NEG_INF, KEY_POS_INF
from .nn_native import FLOATS, _ready, _views_of

__all__ = ["sdpa", "sdpa_backward", "register", "BLOCK_VALUES"]

BLOCK_VALUES = 1 << 15  # scores per block of query rows (128 KB of float32: in L2)
# query rows per block under the causal mask: a block's products stop at its last row's
# key, so smaller blocks skip more of the masked half (at 64 tokens, head dim 32: 16-row
# blocks took the forward 0.36 -> 0.29 ms and the backward 0.74 -> 0.55, 64 items)
CAUSAL_BLOCK_ROWS = 16

# float32 exp: the vectorisable polynomial (kernels.cpu.fastmath); float64: libm. Row
# maxima are integer maxima over order keys (as the generated rows kernels take them,
# ``codegen._keyed_extremum``), which LLVM vectorises; a key past +inf's or -inf's is a
# NaN, and the row's max is then NaN, as NumPy's.
_MATH = {
    "float32": ("from kernels.cpu.fastmath import exp_f32 as EXP, float_key, key_float, vsum\n"
                "KPOS = np.int32({pos})\nKNEG = np.int32({neg})\nNAN = np.float32(np.nan)\n"),
    "float64": ("from kernels.cpu.fastmath import float_key, key_float, vsum\nEXP = math.exp\n"
                "KPOS = np.int64({pos})\nKNEG = np.int64({neg})\nNAN = np.float64(np.nan)\n"),
}

# s holds m rows of `cols` scores (row r is query row r0 + r); with the causal mask, row
# r sees keys [0, r0 + r] and the rest of its columns become 0.
_SOFTMAX = '''
@njit(nogil=True, inline="always")
def softmax_rows(s, m, cols, r0, causal):
    for r in range(m):
        row = s[r * cols:(r + 1) * cols]
        n = r0 + r + 1 if causal else cols
        kh, kl = KNEG, KPOS
        for j in range(n):
            e = float_key(row[j])
            kh = e if e > kh else kh
            kl = e if e < kl else kl
        mx = NAN if (kh > KPOS) | (kl < KNEG) else key_float(kh, NAN)
        for j in range(n):
            row[j] = EXP(row[j] - mx)
        inv = ONE / vsum(row, n)
        for j in range(n):
            row[j] = row[j] * inv
        for j in range(n, cols):
            row[j] = ZERO


@njit(nogil=True, inline="always")
def touch(x, xo, xs, rows, dim):
    # read the rows' whole span front to back: the strided row reads after it then hit
    # the cache instead of missing once per row (the prefetchers follow a sweep)
    n = (rows - 1) * xs + dim
    return vsum(x[xo:xo + n], n)


@njit(nogil=True, inline="always")
def transpose_into(t, x, xo, xs, rows, dim):
    # t (dim, rows) = the (rows, dim) matrix at x[xo:] with row stride xs: the products
    # then take both operands untransposed, which OpenBLAS's small-matrix kernels run
    # ~1.7x faster than with the second one transposed
    for r in range(rows):
        src = x[xo + r * xs:xo + r * xs + dim]
        for d in range(dim):
            t[d * rows + r] = src[d]
'''

# geo: L, D, the row strides of q, k, v (and g), the block rows BR, causal, the
# output's row stride OR; item i's output rows start at element oo[i] of o; buf: a
# block's scores (BR * L), then kᵀ (D * L)
_FWD = '''
@njit(nogil=True, inline="always")
def body(q, k, v, o, offs, oo, geo, sc, buf, N, lo, hi):
    L, D, qs, ks, vs, BR, causal, OR = (geo[0], geo[1], geo[2], geo[3], geo[4], geo[5],
                                        geo[6], geo[7])
    scale = sc[0]
    sp = address(buf, 0)
    kt = buf[BR * L:BR * L + D * L]
    ktp = address(buf, BR * L)
    for i in range(lo, hi):
        qo, ko, vo = offs[i], offs[N + i], offs[2 * N + i]
        transpose_into(kt, k, ko, ks, L, D)
        r0 = 0
        while r0 < L:
            m = min(BR, L - r0)
            cols = min(L, r0 + m) if causal else L
            GEMM(ROW_MAJOR, NO_TRANS, NO_TRANS, m, cols, D, scale, address(q, qo + r0 * qs), qs,
                 ktp, L, ZERO, sp, cols)
            softmax_rows(buf, m, cols, r0, causal)
            GEMM(ROW_MAJOR, NO_TRANS, NO_TRANS, m, D, cols, ONE, sp, cols, address(v, vo), vs,
                 ZERO, address(o, oo[i] + r0 * OR), OR)
            r0 += m
'''

# res holds dq, dk, dv: item i's rows of each start at element oo[i], oo[N + i] and
# oo[2N + i] of it, OR apart (the stacked (3, N, L, D) layout, or the rewrite's
# concatenated one); buf holds a block's probabilities (BR * L), its dp and then ds
# (BR * L), kᵀ and vᵀ (D * L each), and one element the operand sweep writes
_BWD = '''
@njit(nogil=True, inline="always")
def body(g, q, k, v, res, offs, oo, geo, sc, buf, N, lo, hi):
    L, D, qs, ks, vs, gs, BR, causal, OR = (geo[0], geo[1], geo[2], geo[3], geo[4], geo[5],
                                            geo[6], geo[7], geo[8])
    scale = sc[0]
    pp = address(buf, 0)
    dp = buf[BR * L:2 * BR * L]
    dpp = address(buf, BR * L)
    kt = buf[2 * BR * L:2 * BR * L + D * L]
    ktp = address(buf, 2 * BR * L)
    vt = buf[2 * BR * L + D * L:2 * BR * L + 2 * D * L]
    vtp = address(buf, 2 * BR * L + D * L)
    nb = (L + BR - 1) // BR
    for i in range(lo, hi):
        qo, ko, vo, go = offs[i], offs[N + i], offs[2 * N + i], offs[3 * N + i]
        # the operands' rows swept first (the last scratch element keeps the sweep)
        buf[2 * BR * L + 2 * D * L] = (touch(q, qo, qs, L, D) + touch(k, ko, ks, L, D)
                                       + touch(v, vo, vs, L, D) + touch(g, go, gs, L, D))
        dq = address(res, oo[i])
        dk = address(res, oo[N + i])
        dv = address(res, oo[2 * N + i])
        transpose_into(kt, k, ko, ks, L, D)
        transpose_into(vt, v, vo, vs, L, D)
        b = nb - 1
        while b >= 0:
            r0 = b * BR
            m = min(BR, L - r0)
            cols = min(L, r0 + m) if causal else L
            beta = ZERO if b == nb - 1 else ONE
            qb = address(q, qo + r0 * qs)
            gb = address(g, go + r0 * gs)
            GEMM(ROW_MAJOR, NO_TRANS, NO_TRANS, m, cols, D, scale, qb, qs, ktp, L, ZERO, pp,
                 cols)
            softmax_rows(buf, m, cols, r0, causal)
            GEMM(ROW_MAJOR, TRANS, NO_TRANS, cols, D, m, ONE, pp, cols, gb, gs, beta, dv, OR)
            GEMM(ROW_MAJOR, NO_TRANS, NO_TRANS, m, cols, D, ONE, gb, gs, vtp, L, ZERO, dpp,
                 cols)
            # ds = p dp - p rowsum(p dp)
            for r in range(m):
                p = buf[r * cols:(r + 1) * cols]
                d = dp[r * cols:(r + 1) * cols]
                n = r0 + r + 1 if causal else cols
                for j in range(n):
                    d[j] = p[j] * d[j]
                t = vsum(d, n)
                for j in range(n):
                    d[j] = d[j] - p[j] * t
                for j in range(n, cols):
                    d[j] = ZERO
            GEMM(ROW_MAJOR, NO_TRANS, NO_TRANS, m, D, cols, scale, dpp, cols, address(k, ko), ks,
                 ZERO, dq + np.uintp(r0 * OR * _ITEM), OR)
            GEMM(ROW_MAJOR, TRANS, NO_TRANS, cols, D, m, scale, dpp, cols, qb, qs, beta, dk, OR)
            b -= 1
'''

_PARAMS = {
    "fwd": (("q", "in"), ("k", "in"), ("v", "in"), ("o", "out"), ("offs", "in", "int64"),
            ("oo", "in", "int64"), ("geo", "in", "int64"), ("sc", "in"), ("buf", "scratch"),
            "N"),
    "bwd": (("g", "in"), ("q", "in"), ("k", "in"), ("v", "in"), ("res", "out"),
            ("offs", "in", "int64"), ("oo", "in", "int64"), ("geo", "in", "int64"),
            ("sc", "in"), ("buf", "scratch"), "N"),
}


@functools.lru_cache(maxsize=8)
def attention_kernel(way: str, dtype: str) -> hw.NativeKernel | None:
    """The ``way`` ("fwd" or "bwd") kernel for ``dtype``, or None where OpenBLAS's GEMM
    cannot be called from a kernel here."""
    if not blas_calls.provide():
        return None
    params = tuple((p, "int", None) if isinstance(p, str) else
                   (p[0], p[1], p[2] if len(p) > 2 else dtype) for p in _PARAMS[way])
    src = (_MATH[dtype].format(pos=KEY_POS_INF[dtype], neg=KEY_NEG_INF[dtype])
           + blas_calls.kernel_head(dtype) + _SOFTMAX
           + (_FWD if way == "fwd" else _BWD))
    return hw.kernel(f"sdpa_{way}", params, src, op="sdpa" if way == "fwd" else "sdpa_backward")


def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` with unit-stride rows at a stride GEMM takes as a leading dimension (at
    least the row length), a contiguous copy otherwise."""
    a = hw.operand(a)
    isz = a.itemsize
    if a.strides[-1] != isz or a.strides[-2] < a.shape[-1] * isz:
        a = np.ascontiguousarray(a)
    return a


@functools.lru_cache(maxsize=64)
def _offsets(batch: tuple, strides: tuple) -> np.ndarray:
    """The element offset of every batch item (row-major over ``batch``), one row per
    operand's ``strides``. Read-only, kept per layout (a training step asks for the same
    few on every call)."""
    if not strides:
        out = np.zeros(0, np.int64)
    else:
        out = np.concatenate([hw.index_offsets(batch, st) for st in strides])
    out.flags.writeable = False
    return out


def _layout(arrays) -> tuple[np.ndarray, list[int]]:
    """The per-item offsets of ``arrays`` and their row strides (elements)."""
    batch = tuple(arrays[0].shape[:-2])
    strides = [hw.strides(a) for a in arrays]
    return _offsets(batch, tuple(s[:-2] for s in strides)), [s[-2] for s in strides]


def _usable(*arrays: np.ndarray) -> bool:
    d = arrays[0].dtype
    return hw.dtype_name(d) in FLOATS and all(
        a.dtype == d and a.shape == arrays[0].shape for a in arrays) and \
        arrays[0].size > 0 and arrays[0].ndim >= 2


def _block_rows(length: int, causal: bool) -> int:
    rows = max(1, min(length, BLOCK_VALUES // length))
    return min(rows, CAUSAL_BLOCK_ROWS) if causal else rows


def _run(k: hw.NativeKernel, args: list, items: int) -> None:
    with blas_calls.one_thread():
        k(*args, n=items, parallel=items >= 2)


def _bound(k: hw.NativeKernel, args: list, items: int):
    """``_run(k, args, items)`` made ready (``NativeKernel.bind``), or None."""
    return k.bind(*args, n=items, parallel=items >= 2, one_blas=True)


def _views(*arrays: np.ndarray) -> tuple | None:
    """``_rows`` of each, or None where one of them would be a copy (a binding reads
    the operands' own memory)."""
    rows = tuple(_rows(a) for a in arrays)
    return rows if _views_of(zip(rows, arrays)) else None


def _forward_args(q, k, v, scale, causal, perm, out, rows):
    """The lanes kernel and its arguments for ``sdpa`` on the row views ``rows`` of q, k
    and v, with its result array; None where the op's reference runs it."""
    kern = attention_kernel("fwd", hw.dname(q)) if _usable(q, k, v) else None
    if kern is None or not _ready(kern):
        return None
    q, k, v = rows
    length, dim = q.shape[-2:]
    items = q.size // (length * dim)
    offs, (qs, ks, vs) = _layout((q, k, v))
    br = _block_rows(length, causal)
    shape = q.shape if perm is None else tuple(q.shape[i] for i in perm)
    res = hw.result(shape, q.dtype, out)
    layout = _output_rows(res.shape, res.strides, res.dtype, tuple(q.shape),
                          None if perm is None else tuple(perm))
    if layout is None:
        return None
    oo, ors = layout
    geo = np.array([length, dim, qs, ks, vs, br, int(bool(causal)), ors], np.int64)
    sc = np.array([scale], q.dtype)
    return kern, [q, k, v, res, offs, oo, geo, sc, (br + dim) * length, items], items, res


def sdpa(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool,
         perm=None, *, out: np.ndarray | None = None) -> np.ndarray:
    """``sdpa`` by the lanes kernel (see the module docstring), into ``out`` when given,
    permuted by ``perm`` (written in that layout directly)."""
    ready = _forward_args(q, k, v, scale, causal, perm, out,
                          (_rows(q), _rows(k), _rows(v))) if _usable(q, k, v) else None
    if ready is None:
        ref = REGISTRY["sdpa"].reference
        return hw.into(ref(q, k, v, scale=scale, causal=causal, perm=perm), out)
    kern, args, items, res = ready
    _run(kern, args, items)
    return hw.into(res, out)


def _bind_sdpa(q, k, v, scale, causal, perm=None, *, out=None):
    """``sdpa(..., out=out)`` as a prepared call for these arrays, or None."""
    rows = _views(q, k, v) if out is not None and _usable(q, k, v) else None
    ready = _forward_args(q, k, v, scale, causal, perm, out, rows) if rows else None
    if ready is None or ready[3] is not out:
        return None
    return _bound(ready[0], ready[1], ready[2])


def _layout_rows(res_shape: tuple, res_strides: tuple, dtype, shape: tuple,
                 views_of) -> tuple | None:
    """Where each item's rows start in a result of this layout (its views of ``shape``
    from ``views_of(result)``, each item's offsets view after view) and their common
    row stride, or None where a row is not contiguous there. Worked out on a stand-in
    array of that layout, which touches no memory (~20 us a call)."""
    res = np.lib.stride_tricks.as_strided(np.empty(1, dtype), res_shape, res_strides)
    views = views_of(res)
    strides = [hw.strides(x) for x in views]
    if any(x.shape != shape or st[-1] != 1 or st[-2] != strides[0][-2]
           for x, st in zip(views, strides)):
        return None
    base = res.__array_interface__["data"][0]
    starts = [(x.__array_interface__["data"][0] - base) // res.itemsize for x in views]
    offs = _offsets(tuple(shape[:-2]), tuple(st[:-2] for st in strides))
    rows = offs + np.repeat(np.array(starts, np.int64), offs.size // len(views))
    rows.flags.writeable = False
    return rows, strides[0][-2]


@functools.lru_cache(maxsize=64)
def _output_rows(res_shape: tuple, res_strides: tuple, dtype, shape: tuple,
                 perm) -> tuple | None:
    """``_layout_rows`` of ``sdpa``'s result (``shape`` permuted by ``perm``), kept per
    layout."""
    inv = None if perm is None else tuple(int(i) for i in np.argsort(perm))
    return _layout_rows(res_shape, res_strides, dtype, shape,
                        lambda r: [r if inv is None else np.transpose(r, inv)])


def _gradient_rows(res: np.ndarray, shape: tuple, perm, cat_dim) -> tuple | None:
    """Where dq, dk and dv go in ``res`` (``sdpa_backward``'s result for its layout):
    each item's first-row offsets (dq's, dk's, dv's) and the row stride, or None where a
    row is not contiguous there."""
    return _gradient_layout(res.shape, res.strides, res.dtype, tuple(shape),
                            None if perm is None else tuple(perm), cat_dim)


@functools.lru_cache(maxsize=64)
def _gradient_layout(res_shape: tuple, res_strides: tuple, dtype, shape: tuple, perm,
                     cat_dim) -> tuple | None:
    """``_layout_rows`` of ``sdpa_backward``'s result, kept per layout."""
    if perm is None:
        return _layout_rows(res_shape, res_strides, dtype, shape, list)
    n = res_shape[cat_dim] // 3
    inv = tuple(int(i) for i in np.argsort(perm))
    return _layout_rows(res_shape, res_strides, dtype, shape, lambda r: [
        np.transpose(r[(slice(None),) * cat_dim + (slice(j * n, (j + 1) * n),)], inv)
        for j in range(3)])


def _backward_args(g, q, k, v, scale, causal, perm, cat_dim, out, rows):
    """As ``_forward_args``, for ``sdpa_backward`` on the row views of g, q, k, v."""
    kern = attention_kernel("bwd", hw.dname(q)) if _usable(q, k, v, g) else None
    if kern is None or not _ready(kern):
        return None
    g, q, k, v = rows
    length, dim = q.shape[-2:]
    items = q.size // (length * dim)
    offs, (qs, ks, vs, gs) = _layout((q, k, v, g))
    br = _block_rows(length, causal)
    res = hw.result(gradient_shape(q.shape, perm, cat_dim), q.dtype, out)
    layout = _gradient_rows(res, q.shape, perm, cat_dim)
    if layout is None:
        return None
    oo, ors = layout
    geo = np.array([length, dim, qs, ks, vs, gs, br, int(bool(causal)), ors], np.int64)
    sc = np.array([scale], q.dtype)
    return (kern, [g, q, k, v, res, offs, oo, geo, sc, 2 * (br + dim) * length + 1, items],
            items, res)


def sdpa_backward(g: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
                  causal: bool, perm=None, cat_dim=None, *,
                  out: np.ndarray | None = None) -> np.ndarray:
    """``sdpa_backward``: [dq, dk, dv] by the lanes kernel, into ``out`` when given, in
    the op's layout (stacked, or permuted and concatenated: written there directly)."""
    ready = _backward_args(g, q, k, v, scale, causal, perm, cat_dim, out,
                           (_rows(g), _rows(q), _rows(k), _rows(v))) \
        if _usable(q, k, v, g) else None
    if ready is None:
        ref = REGISTRY["sdpa_backward"].reference
        return hw.into(ref(g, q, k, v, scale=scale, causal=causal, perm=perm,
                           cat_dim=cat_dim), out)
    kern, args, items, res = ready
    _run(kern, args, items)
    return hw.into(res, out)


def _bind_sdpa_backward(g, q, k, v, scale, causal, perm=None, cat_dim=None, *, out=None):
    """``sdpa_backward(..., out=out)`` as a prepared call for these arrays, or None."""
    rows = _views(g, q, k, v) if out is not None and _usable(q, k, v, g) else None
    ready = _backward_args(g, q, k, v, scale, causal, perm, cat_dim, out, rows) \
        if rows else None
    if ready is None or ready[3] is not out:
        return None
    return _bound(ready[0], ready[1], ready[2])


sdpa.bind = _bind_sdpa
sdpa_backward.bind = _bind_sdpa_backward


NATIVE = {"sdpa": sdpa, "sdpa_backward": sdpa_backward}


def register() -> None:
    """Serve the attention ops from the native versions (idempotent); each takes
    ``out=`` (``handwritten.writes_out``)."""
    hw.serve(NATIVE)


register()
