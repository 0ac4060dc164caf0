"""Native kernels for the convolution, pooling, embedding and scatter-add ops.

Importing this module serves ``im2col``, ``col2im``, ``max_pool_indices``,
``pool_gather``, ``pool_scatter``, ``avg_pool``, ``avg_pool_backward``, ``embedding``,
``embedding_backward``, ``index_put`` (accumulate over one 1-D row index) and
``scatter`` (reduce='add', 1-D/2-D) from hand-written kernels
(``kernels.cpu.handwritten``) through ``OpDef.use_native``; ``op.reference`` keeps the
NumPy implementation, which serves every case a kernel does not cover (other dtypes,
index errors, index layouts). Nothing here imports Numba: kernels compile on first use
or load from the disk cache.

Every kernel partitions its output between work units (rows of the result, or rows of
a bucket-sorted index), so the threads never write the same memory, and adds each
element's contributions in the order the NumPy reference does: results are the same
bit for bit as ``op.reference`` whatever the thread count.

Spatial ops work on three spatial dimensions: 1-D and 2-D inputs get leading
dimensions of size 1 (stride 0), so one kernel serves Conv1d/2d/3d and the pools.

``max_pool_indices`` and ``pool_gather`` stay two ops: an op has one output, and a
packed (values, indices) op would change the functional layer, both gradient rules and
the ONNX exporter (which matches max_pool_indices -> pool_gather). A plan runs the pair
as one step (``runtime.steps.pool_pair_step``), which computes both in one pass where
the windows fit (``max_pool_with_values``): the separate gather read the indices and
the input again, 0.9 of the MNIST example's 2.3 ms for the pair.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from ir.ops.nn import _avg_divisor, _spatial_out
from ir.registry import REGISTRY

from . import handwritten as hw

FLOATS = ("float32", "float64")
_FAILED: set[str] = set()

# ---- helpers ----------------------------------------------------------------------------


def _ready(*ks: hw.NativeKernel) -> bool:
    """Whether all of ``ks`` load; a kernel that cannot be built (no Numba on a cold
    cache, a compiler error) warns once and leaves its op to the NumPy reference. One
    that defers (``handwritten.Deferred``) does so after the others were asked, so that
    all of them join the next compile batch."""
    deferred = None
    for k in ks:
        if k.name in _FAILED:
            return False
        try:
            k.load()
        except hw.Deferred:  # left to the op's reference for now, not a failure
            deferred = k.name  # (not the exception: its traceback holds this frame)
        except Exception as e:  # noqa: BLE001 - any build failure: the reference works
            _FAILED.add(k.name)
            warnings.warn(f"gcompile: native kernel {k.name} could not be built "
                          f"({type(e).__name__}: {e}); using the NumPy implementation",
                          RuntimeWarning, stacklevel=3)
            return False
    if deferred is not None:
        raise hw.Deferred(deferred)
    return True


def _dims3(t, fill: int) -> tuple[int, int, int]:
    t = tuple(int(v) for v in t)
    return (fill,) * (3 - len(t)) + t


def _as5d(a: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape and element strides of an (N, C, *spatial) array seen as 5-D."""
    st = hw.strides(a)
    nsp = a.ndim - 2
    return (a.shape[:2] + (1,) * (3 - nsp) + a.shape[2:],
            st[:2] + (0,) * (3 - nsp) + st[2:])


def _geometry(spatial, kernel, stride, padding, dilation, out) -> list[int]:
    """Flattened 3-D geometry arguments: D H W, KD KH KW, SD SH SW, PD PH PW, DD DH DW,
    OD OH OW."""
    return (list(_dims3(spatial, 1)) + list(_dims3(kernel, 1)) + list(_dims3(stride, 1))
            + list(_dims3(padding, 0)) + list(_dims3(dilation, 1)) + list(_dims3(out, 1)))


_GEOM = ("D", "H", "W", "KD", "KH", "KW", "SD", "SH", "SW", "PD", "PH", "PW", "DD", "DH",
         "DW", "OD", "OH", "OW")
_IM2COL_INTS = ("C", "s0", "s1", "s2", "s3", "s4") + _GEOM + ("ones", "NB")
_COL2IM_INTS = ("C", "c0", "c1", "c2") + _GEOM


def _ints(*names: str) -> tuple:
    return tuple((n, "int", None) for n in names)


# Valid output range along the last axis: ow in [ow0, ow1) <=> 0 <= ow*SW + off < W.
_OW_RANGE = '''
@njit(nogil=True, inline="always")
def ow_range(off, SW, W, OW):
    if off >= 0:
        ow0 = 0
    else:
        ow0 = (-off + SW - 1) // SW
    if W - off <= 0:
        ow1 = 0
    else:
        ow1 = (W - off + SW - 1) // SW
    if ow1 > OW:
        ow1 = OW
    if ow0 > ow1:
        ow0 = ow1
    return ow0, ow1
'''

# ---- im2col -----------------------------------------------------------------------------
_IM2COL = _OW_RANGE + '''
@njit(nogil=True, inline="always")
def body(x, out, C, s0, s1, s2, s3, s4, D, H, W, KD, KH, KW, SD, SH, SW, PD, PH, PW,
         DD, DH, DW, OD, OH, OW, ones, NB, lo, hi):
    K = KD * KH * KW
    R = C * K + ones
    L = OD * OH * OW
    for t in range(lo, hi):
        if NB > 0:  # batch-last columns (R, N*L): unit t is row r of image ni
            r = t // NB
            ni = t - r * NB
        else:  # (N, R, L)
            ni = t // R
            r = t - ni * R
        q0 = t * L
        if r >= C * K:
            for j in range(L):
                out[q0 + j] = 1
            continue
        ci = r // K
        kk = r - ci * K
        kd = kk // (KH * KW)
        kh = (kk // KW) % KH
        kw = kk % KW
        off = kw * DW - PW
        ow0, ow1 = ow_range(off, SW, W, OW)
        step = SW * s4
        for od in range(OD):
            i_d = od * SD - PD + kd * DD
            for oh in range(OH):
                ih = oh * SH - PH + kh * DH
                q = q0 + (od * OH + oh) * OW
                if i_d < 0 or i_d >= D or ih < 0 or ih >= H:
                    for j in range(OW):
                        out[q + j] = 0
                    continue
                for j in range(ow0):
                    out[q + j] = 0
                b = ni * s0 + ci * s1 + i_d * s2 + ih * s3 + (ow0 * SW + off) * s4
                dst = out[q + ow0:q + ow1]
                if step == 1:
                    src = x[b:b + ow1 - ow0]
                    for j in range(ow1 - ow0):
                        dst[j] = src[j]
                else:
                    for j in range(ow1 - ow0):
                        dst[j] = x[b + j * step]
                for j in range(ow1, OW):
                    out[q + j] = 0
'''


_BODY_TOP = "    K = KD * KH * KW\n"  # the first line of the im2col and col2im bodies
# what a fixed-geometry im2col / col2im bakes in: the window, the innermost strides, and
# the sizes that are 1 for lower-dimensional convolutions
_FIXED_GEOM = ("KD", "KH", "KW", "SD", "SH", "SW", "PD", "PH", "PW", "DD", "DH", "DW")
_FIXED_IF_ONE = ("D", "H", "OD", "OH")


def fixed_args(args: dict[str, int], inner: tuple[str, ...]) -> dict[str, int]:
    """The int arguments of an im2col / col2im call that its fixed-geometry kernel bakes
    in (``inner``: the innermost stride and flags of that kernel)."""
    return {k: int(args[k]) for k in _FIXED_GEOM + inner} | \
        {k: 1 for k in _FIXED_IF_ONE if args[k] == 1}


def _fixed(body: str, fixed: dict[str, int] | None) -> str:
    """``body`` with the int parameters in ``fixed`` set to those values at its top (its
    callers pass the same values): LLVM folds the index arithmetic of that geometry. A
    3x3 stride-1 im2col of MNIST's conv2 input runs about 2.4x faster so."""
    if not fixed:
        return body
    return _fixed_source(body, tuple(sorted((k, int(v)) for k, v in fixed.items())))


@functools.lru_cache(maxsize=256)
def _fixed_source(body: str, fixed: tuple) -> str:
    """``_fixed``'s text, built once per geometry (conv ops ask for it on every call)."""
    if body.count(_BODY_TOP) != 1:
        raise ValueError("kernels: a fixed-geometry body needs one top line to set before")
    sets = "".join(f"    {k} = {v}\n" for k, v in fixed)
    return body.replace(_BODY_TOP, sets + _BODY_TOP)


def im2col_kernel(d: str, op: str = "im2col", fixed: dict[str, int] | None = None
                  ) -> hw.NativeKernel:
    """The im2col kernel for dtype ``d`` (``op``: the registry op a caller serves with it;
    ``fixed``: int arguments baked in, ``fixed_args``)."""
    return hw.kernel("im2col_fixed" if fixed else "im2col", (("x", "in", d), ("out", "out", d))
                     + _ints(*_IM2COL_INTS), _fixed(_IM2COL, fixed), op=op)


def im2col_args(x, kernel, stride, padding, dilation, ones_row: bool, nb: int
                ) -> tuple[dict[str, int], tuple[int, ...]]:
    """The int arguments of an im2col kernel call on ``x`` (``nb``: the batch for
    batch-last columns, else 0), by name, and the output's spatial size."""
    out = _spatial_out(x.shape[2:], kernel, stride, padding, dilation)
    vals = [x.shape[1], *_as5d(x)[1], *_geometry(x.shape[2:], kernel, stride, padding,
                                                dilation, out), 1 if ones_row else 0, nb]
    return dict(zip(_IM2COL_INTS, vals)), out


def _im2col_native(x, kernel, stride, padding, dilation, ones_row=False, batch_last=False,
                   out=None):
    ref = REGISTRY["im2col"].reference
    if hw.dname(x) not in FLOATS or x.size == 0:
        return hw.into(ref(x, kernel, stride, padding, dilation, ones_row, batch_last), out)
    k = im2col_kernel(hw.dname(x))
    if not _ready(k):
        return hw.into(ref(x, kernel, stride, padding, dilation, ones_row, batch_last), out)
    x = hw.operand(x)
    n, c = x.shape[:2]
    args, out_sp = im2col_args(x, kernel, stride, padding, dilation, ones_row,
                               n if batch_last else 0)
    rows = c * int(np.prod(kernel)) + (1 if ones_row else 0)
    length = int(np.prod(out_sp))
    res = hw.result((rows, n * length) if batch_last else (n, rows, length), x.dtype, out)
    k(x, res, *args.values(), n=n * rows, work=res.size)
    return hw.into(res, out)


# ---- col2im -----------------------------------------------------------------------------
# dst[d0 + ow*SW] += cols[src + ow*c2] over the valid ow of one output row
_ADD_RUN = '''
@njit(nogil=True, inline="always")
def add_run(dst, d0, cols, src, ow0, ow1, SW, c2):
    if SW == 1 and c2 == 1:
        dd = dst[d0 + ow0:d0 + ow1]
        s = cols[src + ow0:src + ow1]
        for j in range(ow1 - ow0):
            dd[j] += s[j]
    else:
        for ow in range(ow0, ow1):
            dst[d0 + ow * SW] += cols[src + ow * c2]
'''
# col2im's kernel signature (columns in, image out), shared by its two bodies
_COL2IM_HEAD = _OW_RANGE + _ADD_RUN + '''
@njit(nogil=True, inline="always")
def body(cols, out, C, c0, c1, c2, D, H, W, KD, KH, KW, SD, SH, SW, PD, PH, PW,
         DD, DH, DW, OD, OH, OW, lo, hi):
    K = KD * KH * KW
'''
# One unit per output row (n, c, d, h): the row is zeroed, then every kernel offset
# that reaches it adds its columns, in the reference's (kd, kh, kw) order.
_COL2IM = _COL2IM_HEAD + '''    for t in range(lo, hi):
        ih = t % H
        r = t // H
        i_d = r % D
        r = r // D
        ci = r % C
        ni = r // C
        row = out[t * W:(t + 1) * W]
        for j in range(W):
            row[j] = 0
        for kd in range(KD):
            a = i_d + PD - kd * DD
            if a < 0 or a % SD != 0 or a // SD >= OD:
                continue
            od = a // SD
            for kh in range(KH):
                b = ih + PH - kh * DH
                if b < 0 or b % SH != 0 or b // SH >= OH:
                    continue
                oh = b // SH
                for kw in range(KW):
                    off = kw * DW - PW
                    ow0, ow1 = ow_range(off, SW, W, OW)
                    src = (ni * c0 + (ci * K + (kd * KH + kh) * KW + kw) * c1
                           + (od * OH + oh) * OW * c2)
                    add_run(row, off, cols, src, ow0, ow1, SW, c2)
'''


# The same sums with one unit per (n, c) plane: each kernel offset's columns for an
# image are one contiguous run of OD*OH*OW values, read whole and added into the plane,
# which stays in cache. The row units above read runs of OW (24 values for MNIST's
# conv2, 9 rows of the columns interleaved) and ran at about half the memory rate. Per
# element, offsets still add in (kd, kh, kw) order: the same bits. Used when the planes
# are enough units to share among threads (``_PLANES_MIN``).
_COL2IM_PLANES = _COL2IM_HEAD + '''    P = D * H * W
    for t in range(lo, hi):
        ci = t % C
        ni = t // C
        plane = out[t * P:(t + 1) * P]
        for j in range(P):
            plane[j] = 0
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    off = kw * DW - PW
                    ow0, ow1 = ow_range(off, SW, W, OW)
                    src0 = ni * c0 + (ci * K + (kd * KH + kh) * KW + kw) * c1
                    for od in range(OD):
                        i_d = od * SD - PD + kd * DD
                        if i_d < 0 or i_d >= D:
                            continue
                        for oh in range(OH):
                            ih = oh * SH - PH + kh * DH
                            if ih < 0 or ih >= H:
                                continue
                            src = src0 + (od * OH + oh) * OW * c2
                            dst0 = (i_d * H + ih) * W + off
                            add_run(plane, dst0, cols, src, ow0, ow1, SW, c2)
'''
_PLANES_MIN = 64  # (n, c) planes from which col2im runs one unit per plane


def col2im_kernel(d: str, by_plane: bool, op: str = "col2im",
                  fixed: dict[str, int] | None = None) -> hw.NativeKernel:
    """The col2im kernel for dtype ``d``: one unit per (n, c) plane, or per input row;
    ``fixed``: int arguments baked in (``fixed_args``)."""
    name = "col2im_planes" if by_plane else "col2im"
    return hw.kernel(name + ("_fixed" if fixed else ""),
                     (("cols", "in", d), ("out", "out", d)) + _ints(*_COL2IM_INTS),
                     _fixed(_COL2IM_PLANES if by_plane else _COL2IM, fixed), op=op)


def _col2im_native(cols, spatial, kernel, stride, padding, dilation, ones_row=False,
                   batch_last=False, out=None):
    ref = REGISTRY["col2im"].reference
    if hw.dname(cols) not in FLOATS or cols.size == 0:
        return hw.into(ref(cols, spatial, kernel, stride, padding, dilation, ones_row,
                           batch_last), out)
    kk = int(np.prod(kernel))
    out_sp = _spatial_out(spatial, kernel, stride, padding, dilation)
    length = int(np.prod(out_sp))
    rows = cols.shape[0] if batch_last else cols.shape[1]
    n = cols.shape[1] // length if batch_last else cols.shape[0]
    c = (rows - (1 if ones_row else 0)) // kk
    by_plane = n * c >= _PLANES_MIN
    k = col2im_kernel(hw.dname(cols), by_plane)
    if not _ready(k):
        return hw.into(ref(cols, spatial, kernel, stride, padding, dilation, ones_row,
                           batch_last), out)
    cols = hw.operand(cols)
    if batch_last:  # (R, N*L): image n's row r starts at r*sr + n*L*sj
        if ones_row:
            cols = cols[:-1]
        sr, sj = hw.strides(cols)
        st = (length * sj, sr, sj)
    else:
        if ones_row:
            cols = cols[:, :-1]
        st = hw.strides(cols)
    res = hw.result((n, c) + tuple(int(s) for s in spatial), cols.dtype, out)
    d3 = _dims3(spatial, 1)
    k(cols, res, c, *st, *_geometry(spatial, kernel, stride, padding, dilation, out_sp),
      n=n * c if by_plane else n * c * d3[0] * d3[1], work=cols.size + res.size)
    return hw.into(res, out)


# ---- max pooling --------------------------------------------------------------------------
# One unit per output row (n, c, od, oh). The reference's rule: window offsets in
# lexicographic order, the first sets the maximum (padding reads as -inf), a later one
# wins where strictly greater or NaN (so later padding never wins and is skipped).
# Selects rather than branches: which offset wins is data-dependent, and mispredicted
# branches cost more than the loads (6 ms against 16 ms for a 2x2 pool of 64x64x24x24).
_MAXPOOL = '''
@njit(nogil=True, inline="always")
def body(x, out, C, s0, s1, s2, s3, s4, D, H, W, KD, KH, KW, SD, SH, SW, PD, PH, PW,
         DD, DH, DW, OD, OH, OW, lo, hi):
    for t in range(lo, hi):
        oh = t % OH
        r = t // OH
        od = r % OD
        r = r // OD
        ci = r % C
        ni = r // C
        base = ni * s0 + ci * s1
        d0 = od * SD - PD
        h0 = oh * SH - PH
        q = t * OW
        for ow in range(OW):
            w0 = ow * SW - PW
            # starting from -inf at the first offset's position is the same as taking
            # the first offset: it wins unless it is -inf (or padding) itself
            bo = -math.inf
            ao = (d0 * H + h0) * W + w0
            for kd in range(KD):
                i_d = d0 + kd * DD
                for kh in range(KH):
                    ih = h0 + kh * DH
                    if i_d < 0 or i_d >= D or ih < 0 or ih >= H:
                        continue
                    rb = base + i_d * s2 + ih * s3
                    rp = (i_d * H + ih) * W
                    for kw in range(KW):
                        iw = w0 + kw * DW
                        if iw < 0 or iw >= W:
                            continue
                        v = x[rb + iw * s4]
                        m = (v > bo) | (v != v)
                        bo = v if m else bo
                        ao = (rp + iw) if m else ao
            out[q + ow] = ao
'''

# One unit per output row (n, c, od, oh) of a pool whose windows all fit: ``base`` is
# the first window row's input offset, ``pbase`` its position in the plane.
_FIXED_UNIT = '''
@njit(nogil=True, inline="always")
def body(x, out, C, s0, s1, s2, s3, s4, D, H, W, KD, KH, KW, SD, SH, SW, PD, PH, PW,
         DD, DH, DW, OD, OH, OW, lo, hi):
    for t in range(lo, hi):
        oh = t % OH
        r = t // OH
        od = r % OD
        r = r // OD
        ci = r % C
        ni = r // C
        d0 = od * SD
        h0 = oh * SH
        base = ni * s0 + ci * s1 + d0 * s2 + h0 * s3
        pbase = (d0 * H + h0) * W
        o = out[t * OW:(t + 1) * OW]
'''

# The common pool (no padding, no dilation, every window inside the input: MNIST's 2x2)
# with the window size in the source: constant trip counts that LLVM unrolls, no bounds
# tests, and no branch on the data: Numba makes ``v if m else bo`` a branch, which
# mispredicts on every other offset, so the winner is kept with integer arithmetic
# (``m`` 0/1), the running maximum with ``max`` (a select) and ``nf`` (a NaN won: only a
# later NaN beats it). The same offsets in the same order as _MAXPOOL, so the same
# indices; a 2x2 pool of 64x64x24x24 on one core: ~3.4 ms against ~8-15 ms (noisy).
_MAXPOOL_FIXED = _FIXED_UNIT + '''        for ow in range(OW):
            w0 = ow * SW
            rb = base + w0 * s4
            # the first offset sets the maximum; later ones as in _MAXPOOL
            bo = x[rb]
            nf = np.int64(bo != bo)
            ao = pbase + w0
            for kd in range(KD_):
                for kh in range(KH_):
                    for kw in range(KW_):
                        if kd == 0 and kh == 0 and kw == 0:
                            continue
                        v = x[rb + kd * s2 + kh * s3 + kw * s4]
                        isn = np.int64(v != v)
                        m = (np.int64(v > bo) & (1 - nf)) | isn
                        nf |= isn
                        ao += m * (pbase + (kd * H + kh) * W + w0 + kw - ao)
                        bo = max(bo, v)
            o[ow] = ao
'''


# _MAXPOOL_FIXED's rule where the input's rows are contiguous (s4 == 1) and the window
# has at most ``ROW_RUN_MAX`` offsets: each window row is read from a slice of its input
# row at constant offsets (``r_kd_kh[SW * ow + kw]``, SW and the window baked in), the
# offsets written out in order. LLVM schedules constant-stride loads from one slice far
# better than loads at run-time strides: the MNIST 2x2 pool ran 3.0-3.7 ms against
# 5.0-7.1 ms on one thread, same indices (NaNs, infinities and ties included).
ROW_RUN_MAX = 16


def _maxpool_rows_source(kernel, stride) -> str:
    kd_, kh_, kw_ = _dims3(kernel, 1)
    sw = _dims3(stride, 1)[2]
    head = _FIXED_UNIT + f"        L = (OW - 1) * {sw} + {kw_}\n"
    rows = [f"        r_{a}_{b} = x[base + {a} * s2 + {b} * s3:base + {a} * s2 + {b} * s3 + L]"
            for a in range(kd_) for b in range(kh_)]
    loop = ["        for ow in range(OW):", f"            w0 = ow * {sw}",
            "            bo = r_0_0[w0]", "            nf = np.int64(bo != bo)",
            "            ao = pbase + w0"]
    for a in range(kd_):
        for b in range(kh_):
            for c in range(kw_):
                if a == b == c == 0:
                    continue
                loop += [f"            v = r_{a}_{b}[w0 + {c}]",
                         "            isn = np.int64(v != v)",
                         "            m = (np.int64(v > bo) & (1 - nf)) | isn",
                         "            nf |= isn",
                         f"            ao += m * (pbase + ({a} * H + {b}) * W + w0 + {c} - ao)",
                         "            bo = bo if bo >= v else v"]
    return head + "\n".join(rows + loop + ["            o[ow] = ao"]) + "\n"


def _maxpool_body(spatial, kernel, stride, padding, dilation, out_sp, s4: int = 0) -> str:
    """_MAXPOOL_FIXED for this window when it applies (no padding, dilation 1, every
    window inside the input, a small window), its row-run form where the input's rows
    are also contiguous (``s4``, the last axis's stride, is 1), else the general
    _MAXPOOL."""
    if any(int(p) for p in padding) or any(int(d) != 1 for d in dilation) or \
            int(np.prod(kernel)) > 64 or any((o - 1) * int(st) + int(k) > int(sp) for
                                             o, st, k, sp in zip(out_sp, stride, kernel,
                                                                 spatial)):
        return _MAXPOOL
    if s4 == 1 and int(np.prod(kernel)) <= ROW_RUN_MAX:
        return _maxpool_rows_source(kernel, stride)
    kd, kh, kw = _dims3(kernel, 1)
    return (_MAXPOOL_FIXED.replace("KD_", str(kd)).replace("KH_", str(kh))
            .replace("KW_", str(kw)))


def _values_body(body: str) -> str:
    """A fixed-window max-pool body (``_MAXPOOL_FIXED`` or its row-run form) that also
    writes each window's maximum, read at the index it chose, into ``vout``: the input
    position of plane index ``ao`` is ``xp + ao`` where the planes are contiguous."""
    body = body.replace("def body(x, out, C,", "def body(x, out, vout, C,")
    body = body.replace("        o = out[t * OW:(t + 1) * OW]\n",
                        "        o = out[t * OW:(t + 1) * OW]\n"
                        "        vo = vout[t * OW:(t + 1) * OW]\n"
                        "        xp = ni * s0 + ci * s1\n")
    return body.replace("            o[ow] = ao\n", "            o[ow] = ao\n"
                        "            vo[ow] = x[xp + ao]\n")


def _values_call(x, kernel, stride, padding, dilation, ceil_mode, indices, values):
    """``max_pool_with_values``' kernel and its arguments, or None where it does not
    serve these arrays."""
    d = hw.dname(x)
    out_sp = _spatial_out(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    n, c = x.shape[:2]
    shape = (n, c) + tuple(out_sp)
    if d not in FLOATS or x.size == 0 or x.ndim < 3 or \
            not all(a.shape == shape and a.flags.c_contiguous and a.flags.writeable
                    for a in (indices, values)) or \
            indices.dtype != np.int64 or values.dtype != x.dtype:
        return None
    x = hw.operand(x)
    (_, _, dd, hh, ww), st = _as5d(x)
    if st[4] != 1 or (hh > 1 and st[3] != ww) or (dd > 1 and st[2] != hh * ww):
        return None
    body = _maxpool_body(x.shape[2:], kernel, stride, padding, dilation, out_sp, 1)
    if body is _MAXPOOL:
        return None
    k = hw.kernel("max_pool_values", (("x", "in", d), ("out", "out", "int64"),
                                      ("vout", "out", d))
                  + _ints("C", "s0", "s1", "s2", "s3", "s4") + _ints(*_GEOM),
                  _values_body(body), op="max_pool_indices")
    try:
        if not _ready(k):
            return None
    except hw.Deferred:
        return None
    geo = _geometry(x.shape[2:], kernel, stride, padding, dilation, out_sp)
    return k, (x, indices, values, c, *st, *geo), dict(
        n=n * c * geo[15] * geo[16], work=indices.size * int(np.prod(kernel)))


def max_pool_with_values(x, kernel, stride, padding, dilation, ceil_mode, indices,
                         values) -> bool:
    """``max_pool_indices`` into ``indices`` and ``pool_gather`` of those into
    ``values`` in one pass over ``x``: each maximum is read while its window is in
    cache, where the separate gather read the indices and the input again (0.9 ms of
    the MNIST example's 3.2 ms of pooling). Only for windows that all fit (no padding
    or dilation) over contiguous planes, into C-contiguous outputs of the right shape
    and dtype; False (nothing written) elsewhere, and the caller runs the two ops."""
    call = _values_call(x, kernel, stride, padding, dilation, ceil_mode, indices, values)
    if call is None:
        return False
    k, args, kw = call
    k(*args, **kw)
    return True


def _bind_with_values(x, kernel, stride, padding, dilation, ceil_mode, *, indices, values):
    """``max_pool_with_values`` as a prepared call for these arrays (a plan's pool pair
    step), or None."""
    call = _values_call(x, kernel, stride, padding, dilation, ceil_mode, indices, values)
    if call is None or call[1][0] is not x:
        return None
    k, args, kw = call
    return k.bind(*args, **kw)


max_pool_with_values.bind = _bind_with_values


def _max_pool_indices_native(x, kernel, stride, padding, dilation, ceil_mode, out=None):
    ref = REGISTRY["max_pool_indices"].reference
    if hw.dname(x) not in FLOATS or x.size == 0:
        return hw.into(ref(x, kernel, stride, padding, dilation, ceil_mode), out)
    d = hw.dname(x)
    out_sp = _spatial_out(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    x = hw.operand(x)
    _, st = _as5d(x)
    k = hw.kernel("max_pool_indices", (("x", "in", d), ("out", "out", "int64"))
                  + _ints("C", "s0", "s1", "s2", "s3", "s4") + _ints(*_GEOM),
                  _maxpool_body(x.shape[2:], kernel, stride, padding, dilation, out_sp,
                                st[4]),
                  op="max_pool_indices")
    if not _ready(k):
        return hw.into(ref(x, kernel, stride, padding, dilation, ceil_mode), out)
    n, c = x.shape[:2]
    res = hw.result((n, c) + out_sp, np.int64, out)
    geo = _geometry(x.shape[2:], kernel, stride, padding, dilation, out_sp)
    od, oh = geo[15], geo[16]
    k(x, res, c, *st, *geo, n=n * c * od * oh, work=res.size * int(np.prod(kernel)))
    return hw.into(res, out)


# pool_gather: one unit per (n, c) plane; an index outside the plane flags the plane and
# the reference then raises (or wraps) as NumPy does.
_GATHER = '''
@njit(nogil=True, inline="always")
def body(x, idx, out, bad, C, s0, s1, sp, P, i0, i1, ip, O, lo, hi):
    for t in range(lo, hi):
        ni = t // C
        ci = t - ni * C
        xb = ni * s0 + ci * s1
        ib = ni * i0 + ci * i1
        q = t * O
        flag = 0
        for j in range(O):
            p = idx[ib + j * ip]
            if p < 0 or p >= P:
                flag = 1
                p = 0
            out[q + j] = x[xb + p * sp]
        bad[t] = flag
'''


def _plane_view(a: np.ndarray) -> np.ndarray | None:
    """(N, C, prod(spatial)) view of ``a`` without a copy, or None."""
    n, c = a.shape[:2]
    return hw.view_as(a, (n, c, int(np.prod(a.shape[2:]))))


def _pool_gather_native(x, idx, out=None):
    ref = REGISTRY["pool_gather"].reference
    if hw.dname(x) not in FLOATS or idx.dtype != np.int64 or x.size == 0 or idx.size == 0 \
            or x.ndim < 3 or idx.ndim != x.ndim:
        return hw.into(ref(x, idx), out)
    d = hw.dname(x)
    k = hw.kernel("pool_gather", (("x", "in", d), ("idx", "in", "int64"), ("out", "out", d),
                                  ("bad", "out", "int8"))
                  + _ints("C", "s0", "s1", "sp", "P", "i0", "i1", "ip", "O"),
                  _GATHER, op="pool_gather")
    if not _ready(k):
        return hw.into(ref(x, idx), out)
    xv = _plane_view(hw.operand(x))
    iv = _plane_view(hw.operand(idx))
    if xv is None:
        xv = np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
    if iv is None:
        iv = np.ascontiguousarray(idx).reshape(idx.shape[0], idx.shape[1], -1)
    n, c, p = xv.shape
    o = iv.shape[2]
    if iv.shape[:2] != (n, c):
        return hw.into(ref(x, idx), out)
    res = hw.result(idx.shape, x.dtype, out)
    bad = np.empty(n * c, np.int8)
    k(xv, iv, res, bad, c, *hw.strides(xv), p, *hw.strides(iv), o, n=n * c, work=res.size)
    if bad.any():
        return hw.into(ref(x, idx), out)
    return hw.into(res, out)


# pool_scatter: one unit per (n, c) plane. The reference sums each position's values in
# float64 in index order (its bincount) and rounds once. Where no position gets two
# values (a max pool whose windows do not overlap, found while writing: ``seen``), that
# sum is the value itself, added to the zeroed float row (0.0 + v, so -0.0 lands as
# +0.0 as in the reference); a plane where one repeats is summed the reference's way.
# The float64 pass over every plane cost the MNIST CNN's pool gradient 1.6 ms, against
# 0.7 ms without it.
_SCATTER = '''
@njit(nogil=True, inline="always")
def body(g, idx, out, bad, acc, seen, C, g0, g1, gp, i0, i1, ip, O, P, lo, hi):
    for t in range(lo, hi):
        ni = t // C
        ci = t - ni * C
        gb = ni * g0 + ci * g1
        ib = ni * i0 + ci * i1
        row = out[t * P:(t + 1) * P]
        for j in range(P):
            row[j] = 0
            seen[j] = 0
        flag = 0
        dup = 0
        for j in range(O):
            p = idx[ib + j * ip]
            if p < 0 or p >= P:
                flag = 1
            else:
                dup |= seen[p]
                seen[p] = 1
                row[p] += g[gb + j * gp]
        if flag:
            bad[0] = 1
        if dup:
            for j in range(P):
                acc[j] = 0.0
            for j in range(O):
                p = idx[ib + j * ip]
                if p >= 0 and p < P:
                    acc[p] += np.float64(g[gb + j * gp])
            for j in range(P):
                row[j] = acc[j]
'''


def _scatter_call(g, idx, shape, out):
    """``pool_scatter``'s kernel and its arguments into ``out`` (a C-contiguous result of
    the right shape and dtype) with its ``bad`` flag, or None (the reference serves
    it)."""
    if hw.dname(g) not in FLOATS or idx.dtype != np.int64 or g.size == 0 or len(shape) < 3 \
            or g.shape != idx.shape or g.shape[:2] != shape[:2]:
        return None
    d = hw.dname(g)
    k = hw.kernel("pool_scatter", (("g", "in", d), ("idx", "in", "int64"), ("out", "out", d),
                                   ("bad", "out", "int8"), ("acc", "scratch", "float64"),
                                   ("seen", "scratch", "int8"))
                  + _ints("C", "g0", "g1", "gp", "i0", "i1", "ip", "O", "P"),
                  _SCATTER, op="pool_scatter")
    if not _ready(k):
        return None
    gv = _plane_view(hw.operand(g))
    iv = _plane_view(hw.operand(idx))
    if gv is None:
        gv = np.ascontiguousarray(g).reshape(g.shape[0], g.shape[1], -1)
    if iv is None:
        iv = np.ascontiguousarray(idx).reshape(idx.shape[0], idx.shape[1], -1)
    n, c, o = gv.shape
    p = int(np.prod(shape[2:]))
    bad = np.zeros(1, np.int8)
    return k, (gv, iv, out, bad, p, p, c, *hw.strides(gv), *hw.strides(iv), o, p), dict(
        n=n * c, work=out.size + g.size), bad


def _pool_scatter_native(g, idx, shape, out=None):
    ref = REGISTRY["pool_scatter"].reference
    shape = tuple(int(s) for s in shape)
    res = hw.result(shape, g.dtype, out) if hw.dname(g) in FLOATS else None
    call = _scatter_call(g, idx, shape, res) if res is not None else None
    if call is None:
        return hw.into(ref(g, idx, shape), out)
    k, args, kw, bad = call
    k(*args, **kw)
    if bad[0]:
        return hw.into(ref(g, idx, shape), out)
    return hw.into(res, out)


def _bind_pool_scatter(g, idx, shape, out=None):
    """``pool_scatter(..., out=out)`` as a prepared call for these arrays, or None. An
    index out of its plane still goes to the reference, which raises."""
    shape = tuple(int(s) for s in shape)
    if out is None or hw.result(shape, g.dtype, out) is not out:
        return None
    call = _scatter_call(g, idx, shape, out)
    if call is None or not _views_of(((call[1][0], g), (call[1][1], idx))):
        return None
    k, args, kw, bad = call
    ref = REGISTRY["pool_scatter"].reference
    return hw.then_flagged(k.bind(*args, **kw), bad, lambda: hw.into(ref(g, idx, shape), out))


_pool_scatter_native.bind = _bind_pool_scatter


# ---- average pooling ----------------------------------------------------------------------
_AVGPOOL = '''
@njit(nogil=True, inline="always")
def body(x, div, out, C, s0, s1, s2, s3, s4, D, H, W, KD, KH, KW, SD, SH, SW, PD, PH, PW,
         DD, DH, DW, OD, OH, OW, lo, hi):
    for t in range(lo, hi):
        oh = t % OH
        r = t // OH
        od = r % OD
        r = r // OD
        ci = r % C
        ni = r // C
        base = ni * s0 + ci * s1
        q = t * OW
        dq = (od * OH + oh) * OW
        for ow in range(OW):
            acc = ZERO
            for kd in range(KD):
                i_d = od * SD - PD + kd
                if i_d < 0 or i_d >= D:
                    continue
                for kh in range(KH):
                    ih = oh * SH - PH + kh
                    if ih < 0 or ih >= H:
                        continue
                    for kw in range(KW):
                        iw = ow * SW - PW + kw
                        if 0 <= iw < W:
                            acc += x[base + i_d * s2 + ih * s3 + iw * s4]
            out[q + ow] = acc / div[dq + ow]
'''


def _avg_pool_native(x, kernel, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, out=None):
    ref = REGISTRY["avg_pool"].reference
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if hw.dname(x) not in FLOATS or x.size == 0:
        return hw.into(ref(x, *args), out)
    d = hw.dname(x)
    k = hw.kernel("avg_pool", (("x", "in", d), ("div", "in", d), ("out", "out", d))
                  + _ints("C", "s0", "s1", "s2", "s3", "s4") + _ints(*_GEOM),
                  _AVGPOOL.replace("ZERO", f"np.{d}(0)"), op="avg_pool")
    if not _ready(k):
        return hw.into(ref(x, *args), out)
    x = hw.operand(x)
    n, c = x.shape[:2]
    ones = (1,) * len(kernel)
    out_sp = _spatial_out(x.shape[2:], kernel, stride, padding, ones, ceil_mode)
    div = np.ascontiguousarray(np.broadcast_to(
        _avg_divisor(x.shape[2:], out_sp, kernel, stride, padding, ceil_mode,
                     count_include_pad, divisor_override, x.dtype), out_sp), dtype=x.dtype)
    res = hw.result((n, c) + out_sp, x.dtype, out)
    _, st = _as5d(x)
    geo = _geometry(x.shape[2:], kernel, stride, padding, ones, out_sp)
    k(x, div, res, c, *st, *geo, n=n * c * geo[15] * geo[16],
      work=res.size * int(np.prod(kernel)))
    return hw.into(res, out)


# One unit per input row (n, c, d, h): contributions in the reference's offset order.
_AVGPOOL_BWD = _OW_RANGE + '''
@njit(nogil=True, inline="always")
def body(g, div, out, C, g0, g1, g2, g3, g4, D, H, W, KD, KH, KW, SD, SH, SW, PD, PH, PW,
         DD, DH, DW, OD, OH, OW, lo, hi):
    for t in range(lo, hi):
        ih = t % H
        r = t // H
        i_d = r % D
        r = r // D
        ci = r % C
        ni = r // C
        row = out[t * W:(t + 1) * W]
        for j in range(W):
            row[j] = 0
        for kd in range(KD):
            a = i_d + PD - kd
            if a < 0 or a % SD != 0 or a // SD >= OD:
                continue
            od = a // SD
            for kh in range(KH):
                b = ih + PH - kh
                if b < 0 or b % SH != 0 or b // SH >= OH:
                    continue
                oh = b // SH
                gb = ni * g0 + ci * g1 + od * g2 + oh * g3
                db = (od * OH + oh) * OW
                for kw in range(KW):
                    off = kw - PW
                    ow0, ow1 = ow_range(off, SW, W, OW)
                    for ow in range(ow0, ow1):
                        row[ow * SW + off] += g[gb + ow * g4] / div[db + ow]
'''


def _avg_pool_backward_native(g, shape, kernel, stride, padding, ceil_mode, count_include_pad,
                              divisor_override, out=None):
    ref = REGISTRY["avg_pool_backward"].reference
    args = (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if hw.dname(g) not in FLOATS or g.size == 0:
        return hw.into(ref(g, *args), out)
    d = hw.dname(g)
    k = hw.kernel("avg_pool_backward", (("g", "in", d), ("div", "in", d), ("out", "out", d))
                  + _ints("C", "g0", "g1", "g2", "g3", "g4") + _ints(*_GEOM),
                  _AVGPOOL_BWD, op="avg_pool_backward")
    if not _ready(k):
        return hw.into(ref(g, *args), out)
    g = hw.operand(g)
    shape = tuple(int(s) for s in shape)
    spatial = shape[2:]
    out_sp = tuple(g.shape[2:])
    div = np.ascontiguousarray(np.broadcast_to(
        _avg_divisor(spatial, out_sp, kernel, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, g.dtype), out_sp), dtype=g.dtype)
    res = hw.result(shape, g.dtype, out)
    _, st = _as5d(g)
    geo = _geometry(spatial, kernel, stride, padding, (1,) * len(kernel), out_sp)
    n, c = shape[:2]
    k(g, div, res, c, *st, *geo, n=n * c * geo[0] * geo[1], work=res.size + g.size)
    return hw.into(res, out)


# ---- scatter-adds over rows ------------------------------------------------------------------
# Bucket sort (one serial unit): rows' segments in ``pos`` (pos[r] .. pos[r + 1]) of
# ``order``, stable, so each row then adds its contributions in index order, the order
# np.add.at uses. Entries equal to ``skip`` are dropped; negative entries wrap once
# (NumPy); anything else outside [0, R) sets bad[0].
_BUCKET = '''
@njit(nogil=True, inline="always")
def body(idx, si, order, pos, bad, M, R, skip, use_skip, lo, hi):
    for r in range(R + 1):
        pos[r] = 0
    bad[0] = 0
    for i in range(M):
        v = np.int64(idx[i * si])
        if use_skip != 0 and v == skip:
            continue
        if v < 0:
            v += R
        if v < 0 or v >= R:
            bad[0] = 1
            for r in range(R + 1):   # every segment empty: a segment add after is safe
                pos[r] = 0
            return
        pos[v + 1] += 1
    for r in range(R):
        pos[r + 1] += pos[r]
    for i in range(M):
        v = np.int64(idx[i * si])
        if use_skip != 0 and v == skip:
            continue
        if v < 0:
            v += R
        order[pos[v]] = i
        pos[v] += 1
'''
# after the fill pos[r] is the end of row r's segment; its start is pos[r - 1] (0 for r = 0)

# One unit per row r of the (R, F) result: base row (copy_base 1: copied; 2: zeroed here;
# 0: already zero), then the rows of ``vals`` whose index is r, in index order.
_SEGMENT_ADD = '''
@njit(nogil=True, inline="always")
def body(vals, v0, v1, base, b0, b1, order, pos, out, F, copy_base, lo, hi):
    for r in range(lo, hi):
        start = 0 if r == 0 else pos[r - 1]
        end = pos[r]
        row = out[r * F:(r + 1) * F]
        if copy_base == 1:
            bb = r * b0
            for j in range(F):
                row[j] = base[bb + j * b1]
        elif copy_base == 2:
            for j in range(F):
                row[j] = 0
        elif start == end:
            continue
        for p in range(start, end):
            vb = order[p] * v0
            if v1 == 1:
                src = vals[vb:vb + F]
                for j in range(F):
                    row[j] += src[j]
            else:
                for j in range(F):
                    row[j] += vals[vb + j * v1]
'''


def _rows_add_kernels(op: str, d: str, it: str) -> tuple:
    """The bucket sort of ``it`` indices and the segment add of ``d`` rows."""
    bucket = hw.kernel(f"bucket_{it}", (("idx", "in", it), ("si", "int", None),
                                        ("order", "out", "int64"), ("pos", "out", "int64"),
                                        ("bad", "out", "int8"))
                       + _ints("M", "R", "skip", "use_skip"), _BUCKET, op=op)
    seg = hw.kernel("segment_add", (("vals", "in", d), ("v0", "int", None), ("v1", "int", None),
                                    ("base", "in", d), ("b0", "int", None), ("b1", "int", None),
                                    ("order", "in", "int64"), ("pos", "in", "int64"),
                                    ("out", "out", d), ("F", "int", None),
                                    ("copy_base", "int", None)), _SEGMENT_ADD, op=op)
    return bucket, seg


def _rows_add(op, vals2, idx1, rows, base2=None, skip=None, out=None, row_offsets=None):
    """(rows, F) result: ``base2`` (or zeros) plus, for each i in order, vals2[i] added to
    row idx1[i], written into ``out`` (a C-contiguous (rows, F) array) when given; None
    when an index is out of range (the caller's reference raises). With ``row_offsets``,
    ``vals2`` is any array whose last axis holds the values and row i starts at element
    ``row_offsets[i]`` of it."""
    bucket, seg = _rows_add_kernels(op, hw.dname(vals2), hw.dname(idx1))
    if not _ready(bucket, seg):
        return None
    m = idx1.shape[0]
    f = vals2.shape[-1]
    order = np.empty(max(m, 1), np.int64)
    pos = np.empty(rows + 1, np.int64)
    bad = np.zeros(1, np.int8)
    bucket(idx1, hw.strides(idx1)[0], order, pos, bad, m, rows,
           0 if skip is None else int(skip), 0 if skip is None else 1, n=1, parallel=False)
    if bad[0]:
        return None
    if base2 is None:
        if out is None:
            out = np.zeros((rows, f), vals2.dtype)  # rows nothing reaches: untouched pages
            copy = 0
        else:
            copy = 2   # each row zeroed by its unit
        base2 = out
    else:
        if out is None:
            out = np.empty((rows, f), vals2.dtype)
        copy = 1
    v0, v1 = (1, hw.strides(vals2)[-1]) if row_offsets is not None else hw.strides(vals2)
    if row_offsets is not None:   # positions -> where their rows start in vals2
        used = int(pos[rows - 1]) if rows else 0
        order = row_offsets[order[:used]] if used else order
    seg(vals2, v0, v1, base2, *hw.strides(base2), order, pos, out, f, copy,
        n=rows, work=(rows if copy else 0) * f + vals2.size)
    return out


# embedding: one unit per looked-up row; negative indices wrap as NumPy's take does, and
# one outside [-R, R) flags the call, which the reference then raises for.
_LOOKUP = '''
@njit(nogil=True, inline="always")
def body(w, w0, w1, idx, si, out, bad, R, F, lo, hi):
    for i in range(lo, hi):
        v = np.int64(idx[i * si])
        if v < 0:
            v += R
        if v < 0 or v >= R:
            bad[0] = 1
            continue
        row = out[i * F:(i + 1) * F]
        if w1 == 1:
            src = w[v * w0:v * w0 + F]
            for j in range(F):
                row[j] = src[j]
        else:
            for j in range(F):
                row[j] = w[v * w0 + j * w1]
'''


def _lookup_kernel(weight, idx) -> hw.NativeKernel | None:
    """The embedding lookup's kernel for these operands, or None (the reference)."""
    if hw.dname(weight) not in FLOATS or weight.ndim != 2 or hw.dname(idx) not in (
            "int64", "int32") or idx.size == 0 or weight.size == 0:
        return None
    it = hw.dname(idx)
    return hw.kernel(f"embedding_{it}", (("w", "in", hw.dname(weight)),) + _ints("w0", "w1")
                     + (("idx", "in", it), ("si", "int", None),
                        ("out", "out", hw.dname(weight)), ("bad", "out", "int8"))
                     + _ints("R", "F"), _LOOKUP, op="embedding")


def _embedding_native(weight, idx, padding_idx=None, out=None):
    """Rows of ``weight`` into ``out``, split over threads when large (the LSTM LM's
    folded input projection looks up 2048 rows of 512: ``np.take`` and a copy into the
    plan's buffer took 0.4 ms)."""
    ref = REGISTRY["embedding"].reference
    k = _lookup_kernel(weight, idx)
    if k is None or not _ready(k):
        return hw.into(ref(weight, idx, padding_idx), out)
    w = hw.operand(weight)
    flat = hw.operand(idx.reshape(-1))
    rows, f = w.shape
    res = hw.result(idx.shape + (f,), w.dtype, out)
    bad = np.zeros(1, np.int8)
    k(w, *hw.strides(w), flat, hw.strides(flat)[0], res, bad, rows, f, n=flat.size,
      work=flat.size * f)
    if bad[0]:
        return hw.into(ref(weight, idx, padding_idx), out)
    return hw.into(res, out)


def _views_of(pairs) -> bool:
    """Each ``(view, array)``: the view reads the array's own memory (no copy was made)."""
    return all(v is a or np.may_share_memory(v, a) for v, a in pairs)


def _bind_embedding(weight, idx, padding_idx=None, out=None):
    """``embedding(..., out=out)`` as a prepared call for these arrays (a plan's step), or
    None. An index out of range still goes to the reference, which raises."""
    k = _lookup_kernel(weight, idx)
    if k is None or k._fn is None or out is None:
        return None
    w = hw.operand(weight)
    flat = hw.operand(idx.reshape(-1))
    rows, f = w.shape
    if hw.result(idx.shape + (f,), w.dtype, out) is not out or \
            not _views_of(((w, weight), (flat, idx))):
        return None
    bad = np.zeros(1, np.int8)
    ref = REGISTRY["embedding"].reference
    return hw.then_flagged(
        k.bind(w, *hw.strides(w), flat, hw.strides(flat)[0], out, bad, rows, f, n=flat.size,
               work=flat.size * f), bad,
        lambda: hw.into(ref(weight, idx, padding_idx), out))


_embedding_native.bind = _bind_embedding


def _rows_of(g: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``g``'s rows (its last axis) as a (rows, F) view, or, where its leading axes do
    not flatten by a view, ``g`` itself with each row's element offset in C order: a
    batch_first LSTM's embedding gradient is the transpose of its time-major input
    gradient, and copying it flat cost 512 KB per step."""
    v = hw.view_as(g, (g.size // g.shape[-1] if g.shape[-1] else 0, g.shape[-1]))
    if v is not None:
        return v, None
    return g, hw.index_offsets(g.shape[:-1], hw.strides(g)[:-1])


def _scatter_rows_usable(g, idx) -> bool:
    """An embedding gradient the segment-add kernels take: float rows, integer indices,
    one per row of ``g``, something to add."""
    return hw.dname(g) in FLOATS and hw.dname(idx) in ("int64", "int32") and g.ndim >= 1 \
        and idx.size * g.shape[-1] > 0 and idx.shape == g.shape[:-1]


def _embedding_backward_native(g, idx, num_weights, padding_idx=None, out=None):
    ref = REGISTRY["embedding_backward"].reference
    if not _scatter_rows_usable(g, idx):
        return hw.into(ref(g, idx, num_weights, padding_idx), out)
    dim = g.shape[-1]
    flat = hw.operand(idx.reshape(-1))
    g2, offsets = _rows_of(hw.operand(g))
    dest = None if out is None else hw.result((int(num_weights), dim), g.dtype, out)
    res = _rows_add("embedding_backward", g2, flat, int(num_weights), skip=padding_idx,
                    out=out if dest is out else None, row_offsets=offsets)
    if res is None:
        return hw.into(ref(g, idx, num_weights, padding_idx), out)
    return hw.into(res, out)


def _bind_embedding_backward(g, idx, num_weights, padding_idx=None, out=None):
    """``embedding_backward(..., out=out)`` as a prepared call for these arrays (a plan's
    step): the bucket sort, then the zero fill and segment add ``_rows_add`` makes; None
    where a view would be a copy or the gradient's rows need offsets."""
    if out is None or not _scatter_rows_usable(g, idx):
        return None
    rows, dim = int(num_weights), g.shape[-1]
    flat = hw.operand(idx.reshape(-1))
    g2, offsets = _rows_of(hw.operand(g))
    if offsets is not None or hw.result((rows, dim), g.dtype, out) is not out or \
            not _views_of(((flat, idx), (g2, g))):
        return None
    bucket, seg = _rows_add_kernels("embedding_backward", hw.dname(g2), hw.dname(flat))
    if bucket._fn is None or seg._fn is None:
        return None
    m = flat.shape[0]
    order = np.empty(max(m, 1), np.int64)
    pos = np.empty(rows + 1, np.int64)
    bad = np.zeros(1, np.int8)
    skip = padding_idx
    # the sort, then the zeroing segment add (no segments where the sort flagged an index)
    both = hw.chain([
        bucket.bind(flat, hw.strides(flat)[0], order, pos, bad, m, rows,
                    0 if skip is None else int(skip), 0 if skip is None else 1, n=1,
                    parallel=False),
        seg.bind(g2, *hw.strides(g2), out, *hw.strides(out), order, pos, out, dim, 2,
                 n=rows, work=out.size + g2.size)])
    ref = REGISTRY["embedding_backward"].reference
    return hw.then_flagged(both, bad,
                           lambda: hw.into(ref(g, idx, num_weights, padding_idx), out))


_embedding_backward_native.bind = _bind_embedding_backward


def _index_put_native(x, values, *idx, index, accumulate, out=None):
    """index_put(accumulate=True) with one integer index tensor over dim 0 (x[idx] += v,
    index_add along dim 0, the gradient of x[idx]) natively; all else by reference."""
    ref = REGISTRY["index_put"].reference
    if not (accumulate and len(idx) == 1 and tuple(map(tuple, index)) == (("t", 0),)):
        return hw.into(ref(x, values, *idx, index=index, accumulate=accumulate), out)
    i = idx[0]
    if not (isinstance(x, np.ndarray) and isinstance(i, np.ndarray) and x.ndim >= 1
            and hw.dname(x) in FLOATS and i.ndim >= 1 and hw.dname(i) in ("int64", "int32")
            and i.size and x.size):
        return hw.into(ref(x, values, *idx, index=index, accumulate=accumulate), out)
    try:  # x[i] has shape i.shape + x.shape[1:]: rows of x, one per index entry
        vals = np.broadcast_to(np.asarray(values, dtype=x.dtype), i.shape + x.shape[1:])
    except ValueError:
        return hw.into(ref(x, values, *idx, index=index, accumulate=accumulate), out)
    rows = x.shape[0]
    f = int(np.prod(x.shape[1:]))
    x2 = _rows2(hw.operand(x), rows, f)
    v2 = _rows2(hw.operand(vals), i.size, f)
    dest = None if out is None else hw.result(x.shape, x.dtype, out)
    res = _rows_add("index_put", v2, hw.operand(i.reshape(-1)), rows, base2=x2,
                    out=None if out is None or dest is not out else out.reshape(rows, f))
    if res is None:
        return hw.into(ref(x, values, *idx, index=index, accumulate=accumulate), out)
    return hw.into(res.reshape(x.shape), out)


def _rows2(a: np.ndarray, rows: int, f: int) -> np.ndarray:
    """``a`` as (rows, f) without a copy where its strides allow (broadcast rows too)."""
    if a.shape == (rows, f):
        return a
    v = hw.view_as(a, (rows, f))
    return v if v is not None else np.ascontiguousarray(a).reshape(rows, f)


# scatter(reduce='add') along dim 0 of a 1-D/2-D array: one unit per block of columns,
# rows of the index in order within it (np.add.at's order for every element).
_SCATTER_ADD = '''
@njit(nogil=True, inline="always")
def body(src, s0, s1, idx, i0, i1, out, o0, o1, R, M, F, bad, lo, hi):
    for blk in range(lo, hi):
        j0 = blk * 64
        j1 = min(j0 + 64, F)
        flag = 0
        for i in range(M):
            for j in range(j0, j1):
                v = np.int64(idx[i * i0 + j * i1])
                if v < 0:
                    v += R
                if v < 0 or v >= R:
                    flag = 1
                    continue
                out[v * o0 + j * o1] += src[i * s0 + j * s1]
        bad[blk] = flag
'''


def _scatter_native(x, index, src, dim, reduce=None, out=None):
    ref = REGISTRY["scatter"].reference
    if reduce not in ("add", "sum") or not isinstance(src, np.ndarray) \
            or not isinstance(x, np.ndarray) or x.ndim not in (1, 2) \
            or hw.dname(x) not in FLOATS or src.dtype != x.dtype \
            or hw.dname(index) not in ("int64", "int32") or index.ndim != x.ndim \
            or src.ndim != x.ndim or index.size == 0 \
            or any(si < ii for si, ii in zip(src.shape, index.shape)) \
            or any(xs < ii for d_, (xs, ii) in enumerate(zip(x.shape, index.shape))
                   if d_ != dim):
        return hw.into(ref(x, index, src, dim, reduce), out)
    it = hw.dname(index)
    d = hw.dname(x)
    k = hw.kernel(f"scatter_add_{it}", (("src", "in", d), ("s0", "int", None),
                                        ("s1", "int", None), ("idx", "in", it),
                                        ("i0", "int", None), ("i1", "int", None),
                                        ("out", "out", d), ("o0", "int", None),
                                        ("o1", "int", None)) + _ints("R", "M", "F")
                  + (("bad", "out", "int8"),), _SCATTER_ADD, op="scatter")
    if not _ready(k):
        return hw.into(ref(x, index, src, dim, reduce), out)
    src_c = hw.operand(src[tuple(slice(0, s) for s in index.shape)])
    idx_c = hw.operand(index)
    dest = out
    out = hw.result(x.shape, x.dtype, dest)
    np.copyto(out, x)
    if x.ndim == 1:
        out_t, src_t, idx_t = out.reshape(-1, 1), src_c.reshape(-1, 1), idx_c.reshape(-1, 1)
    elif dim == 0:
        out_t, src_t, idx_t = out, src_c, idx_c
    else:  # along dim 1: the same on the transposes (strided views, written in place:
        out_t, src_t, idx_t = out.T, src_c.T, idx_c.T  # one column of them per row)
    m, f = idx_t.shape
    rows = out_t.shape[0]
    reach = out_t[:, :f]  # the columns the index reaches, (rows, f); column j is one
    nblk = (f + 63) // 64  # thread's: blocks of columns split over threads never race
    bad = np.empty(nblk, np.int8)
    k(src_t, *hw.strides(src_t), idx_t, *hw.strides(idx_t), reach, *hw.strides(reach),
      rows, m, f, bad, n=nblk, work=idx_t.size + m * f)
    if bad.any():
        return hw.into(ref(x, index, src, dim, reduce), dest)
    return hw.into(out, dest)


# ---- registration ---------------------------------------------------------------------------
NATIVE = {
    "im2col": _im2col_native,
    "col2im": _col2im_native,
    "max_pool_indices": _max_pool_indices_native,
    "pool_gather": _pool_gather_native,
    "pool_scatter": _pool_scatter_native,
    "avg_pool": _avg_pool_native,
    "avg_pool_backward": _avg_pool_backward_native,
    "embedding": _embedding_native,
    "embedding_backward": _embedding_backward_native,
    "index_put": _index_put_native,
    "scatter": _scatter_native,
}


def register() -> None:
    """Serve the ops in ``NATIVE`` from their kernels (once; the NumPy implementations
    stay as ``op.reference``). Each takes ``out=`` (``handwritten.writes_out``): a plan's
    library step passes its planned buffer. ``max_pool_indices`` also offers
    ``with_values`` (``max_pool_with_values``), which a plan uses for an indices op and
    the gather that reads them."""
    hw.serve(NATIVE)
    NATIVE["max_pool_indices"].with_values = max_pool_with_values


register()
