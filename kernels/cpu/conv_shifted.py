"""The weight gradient of a stride-1 convolution as shifted GEMMs, without im2col
(``conv_native`` runs and binds its ``plan``).

For a window offset ``s = (kh, kw)``, ``dW[:, :, kh, kw] = Σ_p g[:, p] x[:, p + s]``
over the output positions ``p``. With each image's input copied channels-last into a
zero-padded plane of width ``Wp`` (rows ``q``, ``C`` values each), and the output
gradient copied into rows of ``Wp`` values (``OW`` real, the rest zero), the rows
``x[p + s]`` for every ``p`` are one contiguous block at row ``kh Wp + kw``: so each
offset is one GEMM, ``g (Cout, OH Wp) @ xt[s:s + OH Wp] (OH Wp, C)``, straight from
the copies. The zero columns of ``g`` meet the values that wrap from one input row to
the next; they add ``(Wp - OW) / OW`` multiplies (8% at MNIST's conv2) and nothing to
the sums, as long as every input is finite: the copy checks that, and a non-finite
input goes back to im2col, whose sums never meet it.

Each product is split along K so that it stays within OpenBLAS's small-matrix kernels
(``blas_calls.SMALL_GEMM_MACS``), which run without packing; where OpenBLAS has none the
path is not taken (not measured there). The two copies (~21 K and ~37 K values per
MNIST image; the input's read eight planes at a time, fewer streams for the prefetcher)
replace im2col's 166 K, whose columns the GEMM then packed again. At MNIST's conv2
(batch 64, 32 -> 64 channels, 3x3 over 26x26) on two threads, inside the compiled
training step, the op took 8.9 ms against im2col's 10.2 (medians of six alternations
in one process).

Results do not depend on the thread count: like im2col's path, the weight gradient is
``parts`` fixed partial sums over fixed image ranges, each accumulated image by image,
summed in order. Dilation is a larger shift; strides other than 1 are not served.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ir.ops.nn import _spatial_out

from . import blas_calls
from . import handwritten as hw
from .nn_native import _ready

__all__ = ["applies", "plan", "MIN_CHANNELS", "MAX_IMAGE_BYTES"]

# Fewer input channels make each offset's GEMM too narrow (N = C) to beat im2col's
# (MNIST's conv1, C = 1, took 1.0 ms against im2col's 0.36).
MIN_CHANNELS = 8
# A lane's two copies beyond this leave the core's caches (the offsets' GEMMs read
# them nine times): larger images stay with im2col.
MAX_IMAGE_BYTES = 4 << 20
# The shortest K a product is split into: shorter ones run the small kernels poorly
# (so Cout * C is at most SMALL_GEMM_MACS / MIN_K).
MIN_K = 32

_BODY = '''
@njit(nogil=True, inline="always")
def body(x, g, acc, bsum, bad, xt, gt, N, NL, NP, C, H, W, cout, OH, OW, KH, KW, PH, PW,
         DH, DW, KC, lo, hi):
    # lane j: images of parts [j NP / NL, (j + 1) NP / NL); acc is (NP, KH KW, cout, C),
    # bsum (NP, cout) the parts' sums of g, bad (NL, CB) NaN where an input is not finite
    Wp = W + 2 * PW
    XT = ((H + 2 * PH) * Wp + (KW - 1) * DW) * C
    GK = OH * Wp
    GT = cout * GK
    S = KH * KW
    HW = H * W
    L = OH * OW
    CB = {cb}   # input planes per pass of the copy
    for j in range(lo, hi):
        xb = xt[j * XT:(j + 1) * XT]
        gb = gt[j * GT:(j + 1) * GT]
        for q in range(XT):   # the padding and the zero columns stay zero
            xb[q] = ZERO
        for q in range(GT):
            gb[q] = ZERO
        xp = address(xb, 0)
        gp = address(gb, 0)
        zs = bad[j * CB:(j + 1) * CB]   # CB chains: one would serialise the copy
        for c in range(CB):
            zs[c] = ZERO
        for p in range(j * NP // NL, (j + 1) * NP // NL):
            first = p * N // NP
            bs = bsum[p * cout:(p + 1) * cout]
            for co in range(cout):
                bs[co] = ZERO
            for i in range(first, (p + 1) * N // NP):
                xi = x[i * C * HW:(i + 1) * C * HW]
                for c0 in range(0, C, CB):   # CB planes at a time: fewer read streams
                    cn = min(CB, C - c0)
                    for h in range(H):
                        for w in range(W):
                            src = xi[c0 * HW + h * W + w:]
                            dst = xb[((h + PH) * Wp + w + PW) * C + c0:]
                            for c in range(cn):
                                v = src[c * HW]
                                zs[c] += v * ZERO   # NaN from an inf or a NaN
                                dst[c] = v
                gi = g[i * cout * L:(i + 1) * cout * L]
                for co in range(cout):
                    t = ZERO
                    for oh in range(OH):
                        a = gi[co * L + oh * OW:co * L + oh * OW + OW]
                        b = gb[co * GK + oh * Wp:co * GK + oh * Wp + OW]
                        for ow in range(OW):
                            b[ow] = a[ow]
                            t += a[ow]
                    bs[co] += t
                for s in range(S):
                    off = (s // KW) * DH * Wp + (s % KW) * DW
                    cp = address(acc, (p * S + s) * cout * C)
                    k0 = 0
                    while k0 < GK:
                        kk = min(KC, GK - k0)
                        beta = ZERO if i == first and k0 == 0 else ONE
                        GEMM(ROW_MAJOR, NO_TRANS, NO_TRANS, cout, C, kk, ONE,
                             gp + np.uintp(k0 * _ITEM), GK,
                             xp + np.uintp((off + k0) * C * _ITEM), C, beta, cp, C)
                        k0 += kk
'''
_CB = 8  # input planes copied at a time (fewer read streams for the prefetcher)
_INTS = ("N", "NL", "NP", "C", "H", "W", "cout", "OH", "OW", "KH", "KW", "PH", "PW", "DH",
         "DW", "KC")
_KERNELS: dict[str, hw.NativeKernel] = {}


def _kernel(dtype: str) -> hw.NativeKernel:
    k = _KERNELS.get(dtype)
    if k is None:
        params = tuple((n, kind, dtype) for n, kind in (
            ("x", "in"), ("g", "in"), ("acc", "out"), ("bsum", "out"), ("bad", "out"),
            ("xt", "out"), ("gt", "out"))) + tuple((n, "int", None) for n in _INTS)
        k = _KERNELS[dtype] = hw.kernel("conv_wgrad_shifted", params,
                                        blas_calls.kernel_head(dtype) + _BODY.format(cb=_CB),
                                        op="conv_weight_grad")
    return k


class _Layout(NamedTuple):
    """A 1-D or 2-D convolution's plane (1-D: H = 1) and a lane's copy lengths."""
    h: int
    w: int
    kh: int
    kw: int
    ph: int
    pw: int
    dh: int
    dw: int
    oh: int
    ow: int
    x_len: int   # the channels-last input plane, padded, plus the last offset's overrun
    g_len: int   # the output gradient in rows of the padded width


def _layout(x: np.ndarray, cout: int, kernel, padding, dilation) -> _Layout:
    sp, ks, ps, ds = (tuple(int(v) for v in t)
                      for t in (x.shape[2:], kernel, padding, dilation))
    if x.ndim == 3:
        sp, ks, ps, ds = (1,) + sp, (1,) + ks, (0,) + ps, (1,) + ds
    oh, ow = _spatial_out(sp, ks, (1, 1), ps, ds)
    wp = sp[1] + 2 * ps[1]
    x_len = ((sp[0] + 2 * ps[0]) * wp + (ks[1] - 1) * ds[1]) * x.shape[1]
    return _Layout(*sp, *ks, *ps, *ds, oh, ow, x_len, cout * oh * wp)


def applies(x: np.ndarray, cout: int, kernel, stride, padding, dilation) -> bool:
    """Whether ``weight_grad`` serves this convolution of ``x`` into ``cout`` channels:
    1-D or 2-D, stride 1, padding >= 0, at least ``MIN_CHANNELS`` input channels, an
    output, a lane's copies within ``MAX_IMAGE_BYTES``, float32/float64, and OpenBLAS
    callable with small-matrix kernels that take ``MIN_K`` of this product."""
    if not (x.ndim in (3, 4) and all(int(s) == 1 for s in stride)
            and min(int(p) for p in padding) >= 0 and x.shape[1] >= MIN_CHANNELS
            and hw.dname(x) in ("float32", "float64") and x.shape[0] > 0 and cout > 0):
        return False
    lay = _layout(x, cout, kernel, padding, dilation)
    return lay.oh > 0 and lay.ow > 0 and \
        (lay.x_len + lay.g_len) * x.itemsize <= MAX_IMAGE_BYTES and \
        blas_calls.provide() and cout * x.shape[1] * MIN_K <= blas_calls.small_gemm_macs()


# The parts' sums in order into res (Cout, C S + ones): [ci S + s] from acc (NP, S, Cout,
# C), the bias column from bsum (NP, Cout); ``flag`` where a lane's copy met a value
# that is not finite (its ``bad`` sum is NaN).
_POST = '''
@njit(nogil=True, inline="always")
def body(acc, bsum, bad, res, flag, NP, S, cout, C, ones, NB, lo, hi):
    w = C * S + ones
    for co in range(lo, hi):
        row = res[co * w:(co + 1) * w]
        for ci in range(C):
            for s in range(S):
                v = acc[(s * cout + co) * C + ci]
                for p in range(1, NP):
                    v += acc[((p * S + s) * cout + co) * C + ci]
                row[ci * S + s] = v
        if ones:
            v = bsum[co]
            for p in range(1, NP):
                v += bsum[p * cout + co]
            row[C * S] = v
    if lo == 0:
        for i in range(NB):
            if bad[i] != bad[i]:
                flag[0] = 1
'''


def _post_kernel(dtype: str) -> hw.NativeKernel:
    return hw.kernel(f"conv_wgrad_shifted_sums_{dtype}", tuple(
        (n, kind, dtype) for n, kind in (("acc", "in"), ("bsum", "in"), ("bad", "in"),
                                         ("res", "out"))) + (("flag", "out", "int8"),)
        + tuple((n, "int", None) for n in ("NP", "S", "cout", "C", "ones", "NB")),
        _POST, op="conv_weight_grad")


def plan(x: np.ndarray, g: np.ndarray, kernel, padding, dilation, ones_row: bool,
         res: np.ndarray, lanes: int, parts: int, scratch) -> hw.Checked | None:
    """The calls that make ``res`` (Cout, R) the weight gradient of the convolution of
    ``x`` (C-contiguous, see ``applies``) given its output gradient ``g``
    (C-contiguous): the lanes' GEMMs, then the parts' sums, which flag an input that is
    not finite (im2col serves it). None where the kernels cannot run.
    ``scratch(key, shape, dtype)`` gives the work buffers."""
    k, post = _kernel(hw.dname(x)), _post_kernel(hw.dname(x))
    if not _ready(k, post):
        return None
    n, c = x.shape[:2]
    cout = g.shape[1]
    lay = _layout(x, cout, kernel, padding, dilation)
    h, w, kh, kw, ph, pw, dh, dw, oh, ow = lay[:10]
    gk = lay.g_len // cout
    # K split into even chunks, each product within the small kernels' size
    chunks = -(-cout * c * gk // blas_calls.small_gemm_macs())
    kc = -(-gk // chunks)
    d = x.dtype
    acc = scratch("shift_acc", (parts, kh * kw, cout, c), d)
    bsum = scratch("shift_bsum", (parts, cout), d)
    bad = np.zeros(lanes * _CB, d)
    xt = scratch("shift_x", (lanes * lay.x_len,), d)
    gt = scratch("shift_g", (lanes * lay.g_len,), d)
    flag = np.zeros(1, np.int8)
    return hw.Checked([], [
        hw.Task(k, (x, g, acc, bsum, bad, xt, gt, n, lanes, parts, c, h, w, cout, oh, ow, kh,
                    kw, ph, pw, dh, dw, kc), lanes, parallel=lanes >= 2, one_blas=True),
        hw.Task(post, (acc, bsum, bad, res, flag, parts, kh * kw, cout, c, int(ones_row),
                       bad.size), cout, work=acc.size)], flag)
