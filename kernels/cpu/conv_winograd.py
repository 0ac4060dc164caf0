"""3x3 stride-1 convolutions by Winograd's F(2x2, 3x3): 2.25x fewer multiplies than
im2col's GEMM, for ``conv`` and ``conv_input_grad`` (``conv_native`` runs or binds its
``plan``: finiteness checks, the filter transform, the lanes;
the input gradient of a stride-1 3x3 convolution is the convolution of the output
gradient, padded by 2 - P, by the filters turned by 180 degrees).

Each 2x2 block of outputs is computed from a 4x4 tile of the input: the tile is
transformed (``d -> Bᵀ d B``), multiplied elementwise with the transformed filter
(``g -> G g Gᵀ``, once per call), summed over input channels, and transformed back
(``m -> Aᵀ m A``). Summed over channels, the 16 elementwise products of a tile are 16
GEMMs per image, ``U[ξ] (Cout, Cin) @ V[ξ] (Cin, tiles)``, each small enough (MNIST's
conv2: 64x32 @ 32x156) for OpenBLAS's unpacked small-matrix kernels.

The transforms are the costly part in plain loops: a tile's columns start every second
input column. Here the input plane is first split into its four (row, column parity)
sub-planes, so every transform is unit-stride arithmetic over whole planes that LLVM
vectorises (each loop reads at most three planes: more would need too many run-time
overlap checks). One kernel runs a lane of images per thread (``conv_native``'s lanes),
with an image's transformed input and products in the lane's buffers (320 + 640 KB at
MNIST's conv2: about a core's L2). There, batch 64 on two threads: forward 8.3-9.1 ->
5.9-6.6 ms, input gradient 8.4-9.4 -> 7.6-8.4 ms. The weight gradient is not done
this way: in this form its 16 GEMMs contract both operands along their rows, which
OpenBLAS's small kernels ran at ~60 GFLOP/s, and it was no faster than im2col
(``conv_shifted`` serves it instead).

Results differ from im2col's by rounding (the transforms add and subtract before the
products): within a few float32 ulps of the largest term, as the tests check against
the NumPy reference. Results do not depend on the thread count (each image alone).
"""
from __future__ import annotations

import numpy as np

from . import blas_calls
from . import handwritten as hw
from .nn_native import _ready

__all__ = ["applies", "finite_task", "plan", "filters_task",
           "MIN_CHANNELS", "MAX_IMAGE_BYTES"]

# Fewer input channels make each tile's GEMM too short (K = Cin) to beat im2col's
# K = 9 Cin one; MNIST's conv1 (Cin 1) stays with im2col.
MIN_CHANNELS = 8
# An image's transformed input and products beyond this leave the core's caches: larger
# images (ImageNet's early layers) stay with im2col.
MAX_IMAGE_BYTES = 4 << 20

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

# Layout: a tile row has W1 = TW + 1 slots (the last one a dummy tile), so that every
# pass below runs over whole planes at unit stride: the padded input plane is split
# into its four (row parity, column parity) sub-planes Q[s][u] of (TH + 1) x W1, the
# column transforms of each row parity are then shifts by one slot, and the row
# transforms shifts by one row (W1 slots). V and M hold TP = TH * W1 tiles per row.
# Per lane: the work rows (sub-planes, column transforms, inverse outputs and sums).
_LANE_BUFFERS = """        rb = rbuf[j * NR:(j + 1) * NR]
        q00 = rb[0:NQ]
        q01 = rb[NQ:2 * NQ]
        q10 = rb[2 * NQ:3 * NQ]
        q11 = rb[3 * NQ:4 * NQ]
        cw = rb[4 * NQ:12 * NQ]          # column transforms: [parity][k] planes
        y00 = rb[12 * NQ:12 * NQ + TP]
        y01 = rb[12 * NQ + TP:12 * NQ + 2 * TP]
        y10 = rb[12 * NQ + 2 * TP:12 * NQ + 3 * TP]
        y11 = rb[12 * NQ + 3 * TP:12 * NQ + 4 * TP]
        se = rb[12 * NQ + 4 * TP:12 * NQ + 12 * TP]  # the inverse's row sums: s0..s3, e0..e3
        q00[NQ - 1] = ZERO
        q01[NQ - 1] = ZERO
        q10[NQ - 1] = ZERO
        q11[NQ - 1] = ZERO"""

# Image i's input (C channels at ``x``) -> V[ξ][c][tile] (16 x C x TP).
_INPUT_TRANSFORM = """            xi = x[i * C * H * W:(i + 1) * C * H * W]
            for c in range(C):
                plane = xi[c * H * W:(c + 1) * H * W]
                for p in range(TH + 1):
                    for s in range(2):
                        # sub-plane rows: input row 2p + s - PH, its columns 2m - PW
                        # (even) and 2m + 1 - PW (odd), zero outside the input
                        er = (q00 if s == 0 else q10)[p * W1:(p + 1) * W1]
                        orr = (q01 if s == 0 else q11)[p * W1:(p + 1) * W1]
                        for m in range(W1):
                            er[m] = ZERO
                        for m in range(W1):
                            orr[m] = ZERO
                        ih = 2 * p + s - PH
                        if ih < 0 or ih >= H:
                            continue
                        src = plane[ih * W:(ih + 1) * W]
                        m0 = (PW + 1) // 2
                        m1 = min(W1, (W + PW + 1) // 2)
                        if m1 > m0:
                            dst = er[m0:m1]
                            sev = src[2 * m0 - PW:W]
                            for m in range(m1 - m0):
                                dst[m] = sev[2 * m]
                        m0 = PW // 2
                        m1 = min(W1, (W + PW) // 2)
                        if m1 > m0:
                            dst = orr[m0:m1]
                            sod = src[2 * m0 + 1 - PW:W]
                            for m in range(m1 - m0):
                                dst[m] = sod[2 * m]
                for s in range(2):
                    e = q00 if s == 0 else q10
                    o = q01 if s == 0 else q11
                    c0 = cw[(s * 4) * NQ:(s * 4 + 1) * NQ]
                    c1 = cw[(s * 4 + 1) * NQ:(s * 4 + 2) * NQ]
                    c2 = cw[(s * 4 + 2) * NQ:(s * 4 + 3) * NQ]
                    c3 = cw[(s * 4 + 3) * NQ:(s * 4 + 4) * NQ]
                    e1 = e[1:NQ]
                    o1 = o[1:NQ]
                    for q in range(NQ - 1):
                        c0[q] = e[q] - e1[q]
                    for q in range(NQ - 1):
                        c1[q] = o[q] + e1[q]
                    for q in range(NQ - 1):
                        c2[q] = e1[q] - o[q]
                    for q in range(NQ - 1):
                        c3[q] = o[q] - o1[q]
                for k in range(4):
                    r0 = cw[k * NQ:k * NQ + TP]
                    r1 = cw[(4 + k) * NQ:(4 + k) * NQ + TP]
                    r0n = cw[k * NQ + W1:k * NQ + W1 + TP]  # the next row of tiles
                    r1n = cw[(4 + k) * NQ + W1:(4 + k) * NQ + W1 + TP]
                    v0 = V[(k * C + c) * TP:(k * C + c + 1) * TP]
                    v1 = V[((4 + k) * C + c) * TP:((4 + k) * C + c + 1) * TP]
                    v2 = V[((8 + k) * C + c) * TP:((8 + k) * C + c + 1) * TP]
                    v3 = V[((12 + k) * C + c) * TP:((12 + k) * C + c + 1) * TP]
                    for q in range(TP):
                        v0[q] = r0[q] - r0n[q]
                    for q in range(TP):
                        v1[q] = r1[q] + r0n[q]
                    for q in range(TP):
                        v2[q] = r0n[q] - r1[q]
                    for q in range(TP):
                        v3[q] = r1[q] - r1n[q]"""

_FWD = """
@njit(nogil=True, inline="always")
def body(x, u, bias, y, vbuf, mbuf, rbuf, N, NL, C, H, W, PH, PW, cout, OH, OW, TH, TW,
         hasb, lo, hi):
    W1 = TW + 1
    TP = TH * W1
    NQ = (TH + 1) * W1 + 1
    NV = 16 * C * TP
    NM = 16 * cout * TP
    NR = 12 * NQ + 12 * TP
    for j in range(lo, hi):
        V = vbuf[j * NV:(j + 1) * NV]
        Mb = mbuf[j * NM:(j + 1) * NM]
LANE_BUFFERS
        for i in range(j * N // NL, (j + 1) * N // NL):
INPUT_TRANSFORM
            for g in range(16):
                GEMM(ROW_MAJOR, NO_TRANS, NO_TRANS, cout, TP, C, ONE,
                     address(u, g * cout * C), C, address(V, g * C * TP), TP, ZERO,
                     address(Mb, g * cout * TP), TP)
            yi = y[i * cout * OH * OW:(i + 1) * cout * OH * OW]
            for co in range(cout):
                bv = bias[co] if hasb else ZERO
OUTPUT_TRANSFORM
                for th in range(TH):
                    for a in range(2):
                        oh = 2 * th + a
                        if oh >= OH:
                            continue
                        ye = (y00 if a == 0 else y10)[th * W1:(th + 1) * W1]
                        yo = (y01 if a == 0 else y11)[th * W1:(th + 1) * W1]
                        row = yi[(co * OH + oh) * OW:(co * OH + oh + 1) * OW]
                        for tw in range(OW // 2):
                            row[2 * tw] = ye[tw]
                            row[2 * tw + 1] = yo[tw]
                        if OW % 2:
                            row[OW - 1] = ye[OW // 2]
"""


def _output_transform() -> str:
    """The inverse transform's source, per output channel: the 16 product planes
    ``m[a][b]`` -> the row sums ``s[b]``, ``e[b]`` -> the four output planes ``y[a][b]``
    (one value per tile), bias added; each loop reads at most three planes, so that
    LLVM vectorises it (more would need too many run-time overlap checks)."""
    ind = " " * 16
    lines = []
    for a in range(4):
        for b in range(4):
            off = f"({a * 4 + b} * cout + co) * TP"
            lines.append(ind + f"m{a}{b} = Mb[{off}:{off} + TP]")
    for k in range(8):
        lines.append(ind + f"{'se'[k // 4]}{k % 4} = se[{k} * TP:{k + 1} * TP]")
    for b in range(4):
        lines += [ind + "for q in range(TP):",
                  ind + f"    s{b}[q] = m0{b}[q] + m1{b}[q] + m2{b}[q]",
                  ind + "for q in range(TP):",
                  ind + f"    e{b}[q] = m1{b}[q] - m2{b}[q] - m3{b}[q]"]
    for out, expr in (("y00", "s0[q] + s1[q] + s2[q]"), ("y01", "s1[q] - s2[q] - s3[q]"),
                      ("y10", "e0[q] + e1[q] + e2[q]"), ("y11", "e1[q] - e2[q] - e3[q]")):
        lines += [ind + "for q in range(TP):", ind + f"    {out}[q] = {expr} + bv"]
    return "\n".join(lines)


_KERNELS: dict[tuple[str, str], hw.NativeKernel] = {}
_INTS = ("N", "NL", "C", "H", "W", "PH", "PW", "cout", "OH", "OW", "TH", "TW", "hasb")


def applies(x: np.ndarray, cout: int, kernel, stride, padding, dilation) -> bool:
    """Whether ``forward`` serves this convolution of ``x`` into ``cout`` channels: 2-D,
    3x3, stride 1, dilation 1, at least ``MIN_CHANNELS`` input channels, an image's
    transformed input and products within ``MAX_IMAGE_BYTES``, float32/float64,
    OpenBLAS callable."""
    if not (x.ndim == 4 and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and x.shape[1] >= MIN_CHANNELS
            and hw.dname(x) in ("float32", "float64") and min(padding) >= 0):
        return False
    oh, ow = (int(s) + 2 * int(p) - 2 for s, p in zip(x.shape[2:], padding))
    tiles = ((oh + 1) // 2) * ((ow + 1) // 2 + 1)
    return oh > 0 and ow > 0 and \
        16 * (x.shape[1] + cout) * tiles * x.itemsize <= MAX_IMAGE_BYTES and \
        blas_calls.provide()


# A NaN in ``flag`` sums where a value of ``a`` is not finite (v - v is NaN for inf and
# NaN, 0 otherwise); a work unit is a block of FINITE_BLOCK values.
FINITE_BLOCK = 1 << 14
_FINITE = """
@njit(nogil=True, inline="always")
def body(a, size, flag, lo, hi):
    for blk in range(lo, hi):
        s = 0.0
        for i in range(blk * BLOCK, min(size, (blk + 1) * BLOCK)):
            s += a[i] - a[i]
        if s != s:
            flag[0] = 1
""".replace("BLOCK", str(FINITE_BLOCK))


def finite_task(a: np.ndarray, flag: np.ndarray, op: str) -> hw.Task:
    """A task that sets ``flag[0]`` where a value of ``a`` (C-contiguous) is not finite.
    The transforms add and subtract inputs before the products, so an inf meets another
    as NaN where im2col's products give ±inf: such inputs go to im2col (NumPy's check
    cost ~0.1 ms at MNIST's conv2, 2% of the op)."""
    d = hw.dname(a)
    k = hw.kernel(f"all_finite_{d}", (("a", "in", d), ("size", "int", None),
                                      ("flag", "out", "int8")), _FINITE, op=op)
    return hw.Task(k, (a, a.size, flag), -(-a.size // FINITE_BLOCK), work=a.size)


# The filters' transform G g G^T (G: _G) in float64 for filter n = (o, i) of an (O, I)
# output: its taps from w's row o, columns i * 9 ...; with ``flip``, the input
# gradient's (``flipped``): taps from w's row i, columns o * 9 ..., turned by 180
# degrees. bias[o]: w's last column with ``ones``, else 0.
_FILTERS = """
@njit(nogil=True, inline="always")
def tap(w, base, flip, r, j):
    if flip:
        return np.float64(w[base + (2 - r) * 3 + 2 - j])
    return np.float64(w[base + r * 3 + j])


@njit(nogil=True, inline="always")
def rows(w, base, flip, r, b):
    # (g G^T)[r, b]
    if b == 0:
        return tap(w, base, flip, r, 0)
    if b == 3:
        return tap(w, base, flip, r, 2)
    g0 = 0.5 * tap(w, base, flip, r, 0)
    g1 = 0.5 * tap(w, base, flip, r, 1)
    g2 = 0.5 * tap(w, base, flip, r, 2)
    return g0 + g1 + g2 if b == 1 else g0 - g1 + g2


@njit(nogil=True, inline="always")
def body(w, u, bias, O, I, ld, flip, ones, lo, hi):
    for n in range(lo, hi):
        o = n // I
        i = n - o * I
        base = i * ld + o * 9 if flip else o * ld + i * 9
        for b in range(4):
            t0 = rows(w, base, flip, 0, b)
            t1 = rows(w, base, flip, 1, b)
            t2 = rows(w, base, flip, 2, b)
            u[(b * O + o) * I + i] = t0
            u[((4 + b) * O + o) * I + i] = 0.5 * t0 + 0.5 * t1 + 0.5 * t2
            u[((8 + b) * O + o) * I + i] = 0.5 * t0 - 0.5 * t1 + 0.5 * t2
            u[((12 + b) * O + o) * I + i] = t2
        if i == 0:
            bias[o] = w[o * ld + ld - 1] if ones and not flip else 0
"""


def _filters_kernel(dtype: str, op: str) -> hw.NativeKernel:
    return hw.kernel(f"winograd_filters_{dtype}", (
        ("w", "in", dtype), ("u", "out", dtype), ("bias", "out", dtype))
        + tuple((n, "int", None) for n in ("O", "I", "ld", "flip", "ones")), _FILTERS, op=op)


def _kernel(dtype: str, op: str) -> hw.NativeKernel:
    """The kernel for ``dtype``, registered as serving ``op`` (an exported program whose
    steps run ``op`` ships its machine code: ``handwritten.loaded_for``)."""
    k = _KERNELS.get((dtype, op))
    if k is None:
        head = blas_calls.kernel_head(dtype)
        body = (_FWD.replace("LANE_BUFFERS", _LANE_BUFFERS)
                .replace("INPUT_TRANSFORM", _INPUT_TRANSFORM)
                .replace("OUTPUT_TRANSFORM", _output_transform()))
        params = tuple((n, kind, dtype) for n, kind in (
            ("x", "in"), ("u", "in"), ("bias", "in"), ("y", "out"), ("vbuf", "out"),
            ("mbuf", "out"), ("rbuf", "out"))) + tuple((n, "int", None) for n in _INTS)
        k = _KERNELS[(dtype, op)] = hw.kernel("conv_winograd", params, head + body, op=op)
    return k


def filters_task(w2: np.ndarray, c: int, flip: bool, ones_row: bool, op: str
                 ) -> tuple[np.ndarray, np.ndarray, hw.Task]:
    """The transformed filters' array, the bias array and the task that writes them
    from ``w2`` (C-contiguous)."""
    cout = w2.shape[0]
    o, i = (c, cout) if flip else (cout, c)
    u = np.empty((16, o, i), w2.dtype)
    bias = np.empty(o, w2.dtype)
    k = _filters_kernel(hw.dname(w2), op)
    return u, bias, hw.Task(k, (w2, u, bias, o, i, w2.shape[1], int(flip), int(ones_row)),
                            o * i, work=16 * o * i)


def _buffers(scratch, lanes: int, c: int, cout: int, th: int, tw: int, d) -> tuple:
    """The lanes' transformed inputs, products and work rows."""
    w1 = tw + 1
    nq = (th + 1) * w1 + 1
    tp = th * w1
    return (scratch("wino_v", (lanes * 16 * c * tp,), d),
            scratch("wino_m", (lanes * 16 * cout * tp,), d),
            scratch("wino_r", (lanes * (12 * nq + 12 * tp),), d))


def plan(x: np.ndarray, w2: np.ndarray, padding, ones_row: bool, res: np.ndarray,
         lanes: int, scratch, op: str = "conv", flip: bool = False) -> hw.Checked | None:
    """The calls that make ``res`` the convolution of ``x`` (C-contiguous) by ``w2``
    (C-contiguous; see ``applies``), for the registry op ``op``; with ``flip``, by the
    input gradient's filters of ``w2`` (each turned by 180 degrees, in- and output
    channels swapped: ``_FILTERS``' ``flip``). None where the kernels cannot
    run. ``scratch(key, shape, dtype)`` gives the lanes' work buffers."""
    k = _kernel(hw.dname(x), op)
    flag = np.zeros(1, np.int8)
    checks = [finite_task(x, flag, op), finite_task(w2, flag, op)]
    if not _ready(k, _filters_kernel(hw.dname(x), op), *(t.kernel for t in checks)):
        return None
    n, c, h, w = x.shape
    cout = res.shape[1]
    ph, pw = (int(p) for p in padding)
    oh, ow = res.shape[2:]
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    d = x.dtype
    u, bias, transform = filters_task(w2, cout if flip else c, flip, ones_row, op)
    vbuf, mbuf, rbuf = _buffers(scratch, lanes, c, cout, th, tw, d)
    lanes_task = hw.Task(k, (x, u, bias, res, vbuf, mbuf, rbuf, n, lanes, c, h, w, ph, pw,
                             cout, oh, ow, th, tw, int(ones_row)), lanes,
                         parallel=lanes >= 2, one_blas=True)
    return hw.Checked(checks, [transform, lanes_task], flag)
