"""Native kernels for the recurrent scans (``lstm_scan``, ``gru_scan``, ``rnn_scan`` and
their backward ops in ``ir.ops.recurrent``).

A step of a recurrent layer is one small BLAS matmul (the hidden state times W_hh,
written straight into a preallocated buffer) and elementwise gate math over a
(batch, hidden) block. In NumPy the gate math is a dozen ufunc calls per step, each
with its own dispatch and a pass over memory; here it is one hand-written native
kernel per step (``kernels.cpu.handwritten``) that reads the matmul result, the
step's input projection and the previous state once and writes every value the
backward needs. The backward is the same: one kernel per step for the gate
derivatives, then the matmul for the hidden-state gradient. The weight gradient
stays one large matmul over all steps and the bias gradient one reduction (the
gradient rules in ``ir.ops.recurrent`` build them in the graph).

Importing this module makes the native versions the ops' ``impl``
(``OpDef.use_native``); ``op.reference`` keeps the NumPy loops, used for dtypes
other than float32/float64, mixed dtypes and empty shapes. Per step, the kernel's
entry point is called directly with its argument list built once per sequence
(only the step index changes), unless a step's block is large enough for
``PARALLEL_THRESHOLD``; then it goes through ``NativeKernel.__call__``, which splits
the batch rows over the kernel thread pool.

Where NumPy's own OpenBLAS is loaded (``blas_calls``), the LSTM and the GRU instead run
each sequence as one kernel (``seq_kernel``): batch rows are independent through time, so
each thread of the pool takes its rows through all T steps, calling OpenBLAS's GEMM for
its rows' ``h @ W_hh`` (on one thread) and the step body in turn. The benchmark LSTM
(T 64, B 32, H 128) went from 12.97 to 11.74 ms per compiled training step and from
14.81 to 13.62 ms eager (medians of five interleaved rounds, fresh processes). Its
GEMMs run in blocks of rows that OpenBLAS computes without packing W_hh where it can
(``blas_calls.gemm_rows``): the step then took 10.26 ms against 11.92 (four rounds).
A plan's step binds the LSTM and GRU scans (``bind``): W_hh^T written by a native
transposing copy (``block_copy.transpose_task``), then the sequence kernel, whose
backward zeroes its own state rows and writes the initial state's gradient row.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

import ir.ops  # noqa: F401  (registers the scan ops this module serves)
from ir.registry import REGISTRY

from . import block_copy
from . import handwritten as hw

__all__ = ["lstm_scan", "lstm_scan_backward", "gru_scan", "gru_scan_backward", "rnn_scan",
           "rnn_scan_backward", "register"]

_DTYPES = ("float32", "float64")

# float32 uses the vectorisable polynomial approximations (kernels.cpu.fastmath, a few
# ulp); float64 uses libm, as NumPy does.
_MATH = {
    "float32": ("from kernels.cpu.fastmath import sigmoid_f32 as SIG, tanh_f32 as TANH\n"
                "ONE = np.float32(1.0)\nZERO = np.float32(0.0)\n"),
    "float64": ("from kernels.cpu.fastmath import sigmoid_f64 as SIG\nTANH = math.tanh\n"
                "ONE = np.float64(1.0)\nZERO = np.float64(0.0)\n"),
}

# Every array is C-contiguous and seen flat; ``nt, nb, nh`` are T, B, H, and the work
# units are batch rows (disjoint outputs, so rows may run on different threads). Each
# row works on slices indexed from 0 by the inner loop (LLVM then knows no index is
# negative and drops NumPy's wraparound selects), in several short loops that each touch
# at most five arrays: LLVM cannot prove the slices disjoint, and it vectorises a loop
# only when the run-time overlap checks that needs are few. A row is a few hundred
# elements, so the extra passes stay in L1 cache.

_LSTM_FWD = '''
@njit(nogil=True, inline="always")
def body(gates, xw, bias, c0, out, t, nt, nb, nh, lo, hi):
    # gates = h_{t-1} @ W_hh^T (B, 4H), activated in place; out is (7, T, B, H):
    # h, c, i, f, g, o, tanh(c)
    bh = nb * nh
    p = nt * bh
    n4 = 4 * nh
    for b in range(lo, hi):
        g = gates[b * n4:(b + 1) * n4]
        x = xw[(t * nb + b) * n4:(t * nb + b + 1) * n4]
        for j in range(n4):
            g[j] = g[j] + x[j] + bias[j]
        gi, gf = g[0:nh], g[nh:2 * nh]
        gg, go = g[2 * nh:3 * nh], g[3 * nh:n4]
        for j in range(2 * nh):
            g[j] = SIG(g[j])
        for j in range(nh):
            gg[j] = TANH(gg[j])
        for j in range(nh):
            go[j] = SIG(go[j])
        o = t * bh + b * nh
        cp = c0[b * nh:(b + 1) * nh] if t == 0 else out[p + o - bh:p + o - bh + nh]
        oh, oc, ot = out[o:o + nh], out[p + o:p + o + nh], out[6 * p + o:6 * p + o + nh]
        for j in range(nh):
            oc[j] = gf[j] * cp[j] + gi[j] * gg[j]
        for j in range(nh):
            tc = TANH(oc[j])
            ot[j] = tc
            oh[j] = go[j] * tc
        for k in range(4):
            a = out[(2 + k) * p + o:(2 + k) * p + o + nh]
            src = g[k * nh:(k + 1) * nh]
            for j in range(nh):
                a[j] = src[j]
'''

_LSTM_BWD = '''
@njit(nogil=True, inline="always")
def body(gout, out, c0, dhn, dcn, res, t, nt, nb, nh, lo, hi):
    # dhn = d(gates)_{t+1} @ W_hh (B, H), overwritten by dh_t; dcn the cell gradient
    # carried from step t+1, updated in place to the carry into step t-1;
    # res is (T+1, B, 4H)
    bh = nb * nh
    p = nt * bh
    for b in range(lo, hi):
        o = t * bh + b * nh
        s = b * nh
        r = (t * nb + b) * 4 * nh
        ai, af = out[2 * p + o:2 * p + o + nh], out[3 * p + o:3 * p + o + nh]
        ag, ao = out[4 * p + o:4 * p + o + nh], out[5 * p + o:5 * p + o + nh]
        at = out[6 * p + o:6 * p + o + nh]
        cp = c0[s:s + nh] if t == 0 else out[p + o - bh:p + o - bh + nh]
        gh, gc = gout[o:o + nh], gout[p + o:p + o + nh]
        dh, dc = dhn[s:s + nh], dcn[s:s + nh]
        ri, rf = res[r:r + nh], res[r + nh:r + 2 * nh]
        rg, ro = res[r + 2 * nh:r + 3 * nh], res[r + 3 * nh:r + 4 * nh]
        for j in range(nh):
            dh[j] = gh[j] + dh[j]
        for j in range(nh):
            dc[j] = dh[j] * ao[j] * (ONE - at[j] * at[j]) + gc[j] + dc[j]
        for j in range(nh):
            ri[j] = dc[j] * ag[j] * ai[j] * (ONE - ai[j])
        for j in range(nh):
            rf[j] = dc[j] * cp[j] * af[j] * (ONE - af[j])
        for j in range(nh):
            rg[j] = dc[j] * ai[j] * (ONE - ag[j] * ag[j])
        for j in range(nh):
            ro[j] = dh[j] * at[j] * ao[j] * (ONE - ao[j])
        for j in range(nh):
            dc[j] = dc[j] * af[j]
'''

_GRU_FWD = '''
@njit(nogil=True, inline="always")
def body(hh, xw, bhh, h0, out, t, nt, nb, nh, lo, hi):
    # hh = h_{t-1} @ W_hh^T (B, 3H), worked in place; out is (5, T, B, H):
    # h, r, z, n, W_hn h + b_hn
    bh = nb * nh
    p = nt * bh
    n3 = 3 * nh
    for b in range(lo, hi):
        g = hh[b * n3:(b + 1) * n3]
        x = xw[(t * nb + b) * n3:(t * nb + b + 1) * n3]
        for j in range(2 * nh):
            g[j] = SIG(g[j] + x[j] + bhh[j])
        gr, gz, gn = g[0:nh], g[nh:2 * nh], g[2 * nh:n3]
        xn, bn = x[2 * nh:n3], bhh[2 * nh:n3]
        for j in range(nh):
            gn[j] = gn[j] + bn[j]
        o = t * bh + b * nh
        hp = h0[b * nh:(b + 1) * nh] if t == 0 else out[o - bh:o - bh + nh]
        oh, on = out[o:o + nh], out[3 * p + o:3 * p + o + nh]
        for j in range(nh):
            on[j] = TANH(xn[j] + gr[j] * gn[j])
        for j in range(nh):
            oh[j] = on[j] + gz[j] * (hp[j] - on[j])
        for k in range(3):
            a = out[(1 + k + (k == 2)) * p + o:(1 + k + (k == 2)) * p + o + nh]
            src = g[k * nh:(k + 1) * nh]
            for j in range(nh):
                a[j] = src[j]
'''

_GRU_BWD = '''
@njit(nogil=True, inline="always")
def body(gout, out, h0, gemm, carry, res, t, nt, nb, nh, lo, hi):
    # gemm = d(hidden projection)_{t+1} @ W_hh, overwritten by dh_t; carry =
    # dh_{t+1} * z_{t+1}, updated in place to dh_t * z_t; res is (T+1, B, 6H):
    # [d input projection | d hidden projection]
    bh = nb * nh
    p = nt * bh
    for b in range(lo, hi):
        o = t * bh + b * nh
        s = b * nh
        rr = (t * nb + b) * 6 * nh
        ar, az = out[p + o:p + o + nh], out[2 * p + o:2 * p + o + nh]
        an, ahn = out[3 * p + o:3 * p + o + nh], out[4 * p + o:4 * p + o + nh]
        hp = h0[s:s + nh] if t == 0 else out[o - bh:o - bh + nh]
        gh, dh, ca = gout[o:o + nh], gemm[s:s + nh], carry[s:s + nh]
        r0, r1, r2 = res[rr:rr + nh], res[rr + nh:rr + 2 * nh], res[rr + 2 * nh:rr + 3 * nh]
        r3, r4 = res[rr + 3 * nh:rr + 4 * nh], res[rr + 4 * nh:rr + 5 * nh]
        r5 = res[rr + 5 * nh:rr + 6 * nh]
        for j in range(nh):
            dh[j] = gh[j] + dh[j] + ca[j]
        for j in range(nh):
            r2[j] = dh[j] * (ONE - az[j]) * (ONE - an[j] * an[j])
        for j in range(nh):
            r1[j] = dh[j] * (hp[j] - an[j]) * az[j] * (ONE - az[j])
        for j in range(nh):
            r0[j] = r2[j] * ahn[j] * ar[j] * (ONE - ar[j])
        for j in range(nh):
            r3[j] = r0[j]
        for j in range(nh):
            r4[j] = r1[j]
        for j in range(nh):
            r5[j] = r2[j] * ar[j]
        for j in range(nh):
            ca[j] = dh[j] * az[j]
'''

_RNN_FWD = '''
@njit(nogil=True, inline="always")
def body(xw, out, relu, t, nb, nh, lo, hi):
    # out[t] holds h_{t-1} @ W_hh^T; activated in place after adding the projection
    for b in range(lo, hi):
        o = (t * nb + b) * nh
        x, y = xw[o:o + nh], out[o:o + nh]
        if relu:
            for j in range(nh):
                v = y[j] + x[j]
                y[j] = ZERO if v < ZERO else v
        else:
            for j in range(nh):
                y[j] = TANH(y[j] + x[j])
'''

_RNN_BWD = '''
@njit(nogil=True, inline="always")
def body(gout, out, dhn, res, relu, t, nb, nh, lo, hi):
    # dhn = d(pre)_{t+1} @ W_hh; res[t] = (gout[t] + dhn) * act'(pre_t)
    for b in range(lo, hi):
        o = (t * nb + b) * nh
        g, h, d, r = gout[o:o + nh], out[o:o + nh], dhn[b * nh:(b + 1) * nh], res[o:o + nh]
        if relu:
            for j in range(nh):
                r[j] = (g[j] + d[j]) * (ONE if h[j] > ZERO else ZERO)
        else:
            for j in range(nh):
                r[j] = (g[j] + d[j]) * (ONE - h[j] * h[j])
'''

_INTS = ("t", "nt", "nb", "nh", "relu")
_BODIES = {
    "lstm_fwd": (_LSTM_FWD, ("gates", "out"), ("xw", "in"), ("bias", "in"), ("c0", "in"),
                 ("out", "out"), "t", "nt", "nb", "nh"),
    "lstm_bwd": (_LSTM_BWD, ("gout", "in"), ("out", "in"), ("c0", "in"), ("dhn", "out"),
                 ("dcn", "out"), ("res", "out"), "t", "nt", "nb", "nh"),
    "gru_fwd": (_GRU_FWD, ("hh", "out"), ("xw", "in"), ("bhh", "in"), ("h0", "in"),
                ("out", "out"), "t", "nt", "nb", "nh"),
    "gru_bwd": (_GRU_BWD, ("gout", "in"), ("out", "in"), ("h0", "in"), ("gemm", "out"),
                ("carry", "out"), ("res", "out"), "t", "nt", "nb", "nh"),
    "rnn_fwd": (_RNN_FWD, ("xw", "in"), ("out", "out"), "relu", "t", "nb", "nh"),
    "rnn_bwd": (_RNN_BWD, ("gout", "in"), ("out", "in"), ("dhn", "in"), ("res", "out"),
                "relu", "t", "nb", "nh"),
}


_STEP_KERNELS: dict[tuple[str, str], hw.NativeKernel] = {}

# A whole LSTM or GRU sequence in one kernel (``blas_calls``): the rows [lo, hi) of the batch
# are independent through time, so each thread of the pool runs all T steps for its
# rows, calling OpenBLAS's GEMM (on one thread, ``blas_calls.one_thread``: the rows are
# the parallelism) and the step body in turn, with no Python and no thread hand-off
# between steps. Per step of the 32x128 benchmark LSTM, the Python loop paid a 2-thread
# GEMM (~31 us), a serial gate kernel (~17 us) and their dispatch; two threads on 16
# rows each pay a one-thread GEMM (~28 us, half the rows: packing W dominates; in two
# 8-row blocks on OpenBLAS's small-matrix kernels, ~20 us) and half the gate math.
# Where the pool cannot take the second half (busy with another caller's task), the
# caller runs both halves, with one-thread GEMMs: slower than before.

# The sequence bodies, one per direction, filled in per layer: the forward's GEMM gives
# each step's hidden projection (``width`` columns) from h_{t-1}; the backward's gives
# dh_{t-1} from the step's hidden-projection gradient (``k`` columns at ``off`` in rows
# of ``rw``), for the steps ``cond`` says.
_FWD_SEQ = """
@njit(nogil=True, inline="always")
def body(xw, h0, {state}wt, bias, proj, out, nt, nb, nh, lo, hi):
    # proj rows [lo, hi) = h_{{t-1}} rows @ W_hh^T, then the step's gate math
    m = hi - lo
    width = {width}
    if m <= 0:
        return
    g = address(proj, lo * width)
    w = address(wt, 0)
    for t in range(nt):
        if t == 0:
            a = address(h0, lo * nh)
        else:
            a = address(out, ((t - 1) * nb + lo) * nh)
        gemm_rows(NO_TRANS, m, width, nh, a, nh, w, width, ZERO, g, width)
        step({step}, t, nt, nb, nh, lo, hi)
"""

_BWD_SEQ = """
@njit(nogil=True, inline="always")
def body(gout, out, s0, w, dh, carry, res, nt, nb, nh, lo, hi):
    # per step (T-1 down to 0) the gate derivatives of rows [lo, hi), then their
    # dh_{{t-1}} = d(hidden projection)_t @ W_hh; the rows' dh and carry start at 0, and
    # row T of res gets the gradient of the initial state in its first H columns
    m = hi - lo
    rw, k, off = {rw}, {k}, {off}
    if m <= 0:
        return
    for j in range(lo * nh, hi * nh):
        dh[j] = ZERO
        carry[j] = ZERO
    d = address(dh, lo * nh)
    wp = address(w, 0)
    for t in range(nt - 1, -1, -1):
        step(gout, out, s0, dh, carry, res, t, nt, nb, nh, lo, hi)
        if {cond}:
            r = address(res, (t * nb + lo) * rw + off)
            gemm_rows(NO_TRANS, m, nh, k, r, rw, wp, nh, ZERO, d, nh)
    for b in range(lo, hi):
        row = res[(nt * nb + b) * rw:(nt * nb + b + 1) * rw]
        for j in range(nh):
            row[j] = {first}
        for j in range(nh, rw):
            row[j] = ZERO
"""

_FWD_PARAMS = (("xw", "in"), ("h0", "in"), ("wt", "in"), ("bias", "in"), ("proj", "out"),
               ("out", "out"), "nt", "nb", "nh")
_BWD_PARAMS = (("gout", "in"), ("out", "in"), ("s0", "in"), ("w", "in"), ("dh", "out"),
               ("carry", "out"), ("res", "out"), "nt", "nb", "nh")
_SEQ = {  # name: (step body, sequence body, parameters)
    # LSTM: the cell state c0 is an input too; dh_{t-1} is needed for t >= 1 only
    "lstm_fwd_seq": (_LSTM_FWD, _FWD_SEQ.format(state="c0, ", width="4 * nh",
                                                step="proj, xw, bias, c0, out"),
                     _FWD_PARAMS[:2] + (("c0", "in"),) + _FWD_PARAMS[2:]),
    "lstm_bwd_seq": (_LSTM_BWD, _BWD_SEQ.format(rw="4 * nh", k="4 * nh", off="0",
                                                cond="t", first="carry[b * nh + j]"),
                     _BWD_PARAMS),
    # GRU: the hidden-projection gradient is the last 3H of res's 6H columns, and the
    # step before t = 0 gets it too (dh0 = it + the carry, added by the caller)
    "gru_fwd_seq": (_GRU_FWD, _FWD_SEQ.format(state="", width="3 * nh",
                                              step="proj, xw, bias, h0, out"), _FWD_PARAMS),
    "gru_bwd_seq": (_GRU_BWD, _BWD_SEQ.format(rw="6 * nh", k="3 * nh", off="3 * nh",
                                              cond="True",
                                              first="dh[b * nh + j] + carry[b * nh + j]"),
                    _BWD_PARAMS),
}


def seq_kernel(name: str, dtype: str) -> hw.NativeKernel | None:
    """The whole-sequence kernel ``name`` (a key of ``_SEQ``) for ``dtype``, or None
    where OpenBLAS's GEMM cannot be called from a kernel here (``blas_calls``)."""
    k = _STEP_KERNELS.get((name, dtype))
    if k is None:
        from . import blas_calls
        if not blas_calls.provide():
            return None
        step_body, seq_body, params = _SEQ[name]
        ps = tuple((p, "int", None) if isinstance(p, str) else (p[0], p[1], dtype)
                   for p in params)
        src = (_MATH[dtype] + blas_calls.kernel_head(dtype)
               + step_body.replace("def body(", "def step(") + seq_body)
        k = _STEP_KERNELS[(name, dtype)] = hw.kernel(f"recurrent_{name}_{dtype}", ps, src,
                                                     op=_op(name))
    return k


def _run_seq(name: str, *args) -> bool:
    """Run the sequence kernel ``name`` on ``args`` (its arrays, then T, B, H) over the
    batch rows, OpenBLAS on one thread meanwhile; False where there is none."""
    k = seq_kernel(name, hw.dname(args[0]))
    if k is None:
        return False
    from .blas_calls import one_thread
    bsz = args[-2]
    with one_thread():
        k(*args, n=bsz, parallel=bsz >= 2)
    return True


def step_kernel(name: str, dtype: str) -> hw.NativeKernel:
    """The native step kernel ``name`` (a key of ``_BODIES``) for ``dtype`` (memoised
    here: every scan call asks, and the kernel registry keys on the whole source)."""
    k = _STEP_KERNELS.get((name, dtype))
    if k is None:
        body, *params = _BODIES[name]
        ps = tuple((p, "int", None) if isinstance(p, str) else (p[0], p[1], dtype)
                   for p in params)
        k = _STEP_KERNELS[(name, dtype)] = hw.kernel(f"recurrent_{name}_{dtype}", ps,
                                                     _MATH[dtype] + body, op=_op(name))
    return k


def _op(name: str) -> str:
    """The scan op kernel ``name`` ("lstm_bwd_seq", "gru_fwd" ...) serves: an exported
    program whose steps run that op ships its machine code (``handwritten.loaded_for``)."""
    layer, way = name.split("_")[:2]
    return f"{layer}_scan" + ("_backward" if way == "bwd" else "")


class _Stepper:
    """One kernel bound to the arrays of one sequence: ``run(t)`` does step ``t`` over
    all batch rows. The C argument list (a pointer and a span per array, the ints,
    then ``lo, hi``: ``codegen.entry_lines``' layout) is built once; per step only the
    step index changes. Blocks at or above ``PARALLEL_THRESHOLD`` elements go through
    ``NativeKernel.__call__`` instead, which splits the rows over threads."""

    def __init__(self, k: hw.NativeKernel, args: list, nrows: int, work: int) -> None:
        import kernels.cpu as cpu
        self.k, self.args, self.nrows = k, args, nrows
        self.t_at = [p[0] for p in k.params].index("t")
        self.parallel = work >= cpu.PARALLEL_THRESHOLD and nrows >= 2
        if self.parallel:
            return
        cargs: list[int] = []
        for (pname, kind, dtype), a in zip(k.params, args):
            if kind == "int":
                if pname == "t":
                    self.t_slot = len(cargs)
                cargs.append(int(a))
            else:
                if a.dtype != np.dtype(dtype) or not a.flags.c_contiguous:
                    raise ValueError(f"{k.name}: {pname} must be a C-contiguous {dtype} "
                                     f"array")
                if kind == "out" and not a.flags.writeable:
                    raise ValueError(f"{k.name}: output {pname} is read-only")
                cargs += [a.__array_interface__["data"][0], a.size]
        self.cargs = cargs + [0, nrows]
        self.fn = k.load()

    def run(self, t: int) -> None:
        if self.parallel:
            self.args[self.t_at] = t
            self.k(*self.args, n=self.nrows, parallel=True)
        else:
            self.cargs[self.t_slot] = t
            self.fn(*self.cargs)


def _ready(*arrays: np.ndarray) -> bool:
    """Whether the native path applies: one float32/float64 dtype, nothing empty."""
    d = arrays[0].dtype
    return d.name in _DTYPES and all(a.dtype == d and a.size for a in arrays)


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def _transposed(w: np.ndarray, op: str) -> np.ndarray:
    """W^T as a C-contiguous copy, made once per sequence: each step's small
    ``h @ W^T`` is then a plain NN GEMM, which OpenBLAS runs ~1.5x faster than the
    transposed-operand one for the (batch x hidden) @ (hidden x gates) shapes here
    (32x128 @ 128x512: ~33 us against ~54 us on one core)."""
    if w.ndim != 2 or not w.flags.c_contiguous:
        return np.ascontiguousarray(w.T)
    wt = np.empty(w.shape[::-1], w.dtype)
    hw.run_tasks([block_copy.transpose_task(w, wt, op)])
    return wt


def _bound_seq(name: str, op: str, args: list, w: np.ndarray | None = None,
               w_t: np.ndarray | None = None):
    """``_run_seq(name, *args)`` made ready (``NativeKernel.bind``), after W^T is written
    into ``w_t`` from ``w`` where given; None where the kernels are not loaded or the
    native pool cannot take the call."""
    k = seq_kernel(name, hw.dname(args[0]))
    if k is None or k._fn is None:
        return None
    bsz = args[-2]
    seq = k.bind(*args, n=bsz, parallel=bsz >= 2, one_blas=True)
    if seq is None or w is None:
        return seq
    tr = block_copy.transpose_task(w, w_t, op)
    return hw.chain([tr.kernel.bind(*tr.args, n=tr.n, parallel=tr.parallel)
                     if tr.kernel._fn is not None else None, seq])


def _contiguous(*arrays: np.ndarray) -> bool:
    """Each is C-contiguous (a binding reads the operands' own memory, not copies)."""
    return all(a.flags.c_contiguous for a in arrays)


def _ref(name: str) -> Callable:
    op = REGISTRY[name]
    return op.reference or op.impl


# ---- LSTM ----------------------------------------------------------------------------
def lstm_scan(xw: np.ndarray, h0: np.ndarray, c0: np.ndarray, w_hh: np.ndarray,
              bias: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """``lstm_scan`` with one native gate kernel per step (see the module docstring),
    into ``out`` when given (``handwritten.writes_out``)."""
    if not _ready(xw, h0, c0, w_hh, bias):
        return hw.into(_ref("lstm_scan")(xw, h0, c0, w_hh, bias), out)
    xw, h0, c0, bias = _c(xw), _c(h0), _c(c0), _c(bias)
    t_len, bsz, h4 = xw.shape
    h = h4 // 4
    res = hw.result((7, t_len, bsz, h), xw.dtype, out)
    gates = np.empty((bsz, h4), xw.dtype)
    w_t = _transposed(w_hh, "lstm_scan")
    if _run_seq("lstm_fwd_seq", xw, h0, c0, w_t, bias, gates, res, t_len, bsz, h):
        return hw.into(res, out)
    k = step_kernel("lstm_fwd", hw.dname(xw))
    step = _Stepper(k, [gates, xw, bias, c0, res, 0, t_len, bsz, h], bsz, 11 * bsz * h)
    hp = h0
    for t in range(t_len):
        np.matmul(hp, w_t, out=gates)
        step.run(t)
        hp = res[0, t]
    return hw.into(res, out)


def lstm_scan_backward(gout: np.ndarray, fwd: np.ndarray, c0: np.ndarray,
                       w_hh: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """``lstm_scan_backward`` (``fwd``: the scan's output): per step one native kernel
    for the gate derivatives and the matmul for dh; dc0 in row T (first H columns), as
    the reference; into ``out`` when given."""
    if not _ready(fwd, gout, c0, w_hh):
        return hw.into(_ref("lstm_scan_backward")(gout, fwd, c0, w_hh), out)
    gout, fwd, c0 = _c(gout), _c(fwd), _c(c0)
    _, t_len, bsz, h = fwd.shape
    d = fwd.dtype
    res = hw.result((t_len + 1, bsz, 4 * h), d, out)
    dhn = np.empty((bsz, h), d)
    dcn = np.empty((bsz, h), d)
    if _run_seq("lstm_bwd_seq", gout, fwd, c0, _c(w_hh), dhn, dcn, res, t_len, bsz, h):
        return hw.into(res, out)  # (the kernel zeroes dhn, dcn and writes row T)
    res[t_len] = 0
    dhn[...] = 0
    dcn[...] = 0
    k = step_kernel("lstm_bwd", d.name)
    step = _Stepper(k, [gout, fwd, c0, dhn, dcn, res, 0, t_len, bsz, h], bsz, 14 * bsz * h)
    for t in range(t_len - 1, -1, -1):
        step.run(t)
        if t:   # dh0 = res[0] @ W_hh is the gradient rule's (one matmul in the graph)
            np.matmul(res[t], w_hh, out=dhn)
    res[t_len, :, :h] = dcn
    return hw.into(res, out)


def _bind_forward(seq: str, op: str, planes: int, gates: int, xw, states: tuple, w_hh,
                  bias, out):
    """A scan's sequence kernel (``seq``) as a prepared call for these arrays into ``out``
    ((planes, T, B, H)): W_hh^T written into a buffer of its own, then the kernel, with
    its projection buffer; or None."""
    arrays = (xw, *states, w_hh, bias)
    if out is None or not _ready(*arrays) or not _contiguous(*arrays) or w_hh.ndim != 2:
        return None
    t_len, bsz, width = xw.shape
    h = width // gates
    if hw.result((planes, t_len, bsz, h), xw.dtype, out) is not out:
        return None
    proj = np.empty((bsz, width), xw.dtype)
    w_t = np.empty(w_hh.shape[::-1], w_hh.dtype)
    return _bound_seq(seq, op, [xw, *states, w_t, bias, proj, out, t_len, bsz, h], w_hh, w_t)


def _bind_lstm_scan(xw, h0, c0, w_hh, bias, *, out=None):
    """``lstm_scan(..., out=out)`` as a prepared call for these arrays (a plan's step),
    or None."""
    return _bind_forward("lstm_fwd_seq", "lstm_scan", 7, 4, xw, (h0, c0), w_hh, bias, out)


def _bind_backward(seq: str, op: str, width: int, gout, fwd, s0, w_hh, out):
    """A scan backward's sequence kernel (``seq``) as a prepared call for these arrays
    into ``out`` ((T + 1, B, width H)), with its two state buffers, or None."""
    if out is None or not _ready(fwd, gout, s0, w_hh) or not _contiguous(gout, fwd, s0, w_hh):
        return None
    _, t_len, bsz, h = fwd.shape
    if hw.result((t_len + 1, bsz, width * h), fwd.dtype, out) is not out:
        return None
    dh, carry = np.empty((2, bsz, h), fwd.dtype)
    return _bound_seq(seq, op, [gout, fwd, s0, w_hh, dh, carry, out, t_len, bsz, h])


def _bind_lstm_scan_backward(gout, fwd, c0, w_hh, *, out=None):
    """``lstm_scan_backward(..., out=out)`` as a prepared call for these arrays, or None."""
    return _bind_backward("lstm_bwd_seq", "lstm_scan_backward", 4, gout, fwd, c0, w_hh, out)


lstm_scan.bind = _bind_lstm_scan
lstm_scan_backward.bind = _bind_lstm_scan_backward


# ---- GRU -----------------------------------------------------------------------------
def gru_scan(xw: np.ndarray, h0: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray, *,
             out: np.ndarray | None = None) -> np.ndarray:
    """``gru_scan`` with one native gate kernel per step, into ``out`` when given."""
    if not _ready(xw, h0, w_hh, b_hh):
        return hw.into(_ref("gru_scan")(xw, h0, w_hh, b_hh), out)
    xw, h0, b_hh = _c(xw), _c(h0), _c(b_hh)
    t_len, bsz, h3 = xw.shape
    h = h3 // 3
    res = hw.result((5, t_len, bsz, h), xw.dtype, out)
    hh = np.empty((bsz, h3), xw.dtype)
    w_t = _transposed(w_hh, "gru_scan")
    if _run_seq("gru_fwd_seq", xw, h0, w_t, b_hh, hh, res, t_len, bsz, h):
        return hw.into(res, out)
    k = step_kernel("gru_fwd", hw.dname(xw))
    step = _Stepper(k, [hh, xw, b_hh, h0, res, 0, t_len, bsz, h], bsz, 12 * bsz * h)
    hp = h0
    for t in range(t_len):
        np.matmul(hp, w_t, out=hh)
        step.run(t)
        hp = res[0, t]
    return hw.into(res, out)


def gru_scan_backward(gout: np.ndarray, fwd: np.ndarray, h0: np.ndarray,
                      w_hh: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """``gru_scan_backward`` (``fwd``: the scan's output): [d input projection | d hidden
    projection] per step from one native kernel, the matmul for dh into a buffer; dh0 in
    row T; into ``out`` when given."""
    if not _ready(fwd, gout, h0, w_hh):
        return hw.into(_ref("gru_scan_backward")(gout, fwd, h0, w_hh), out)
    gout, fwd, h0 = _c(gout), _c(fwd), _c(h0)
    _, t_len, bsz, h = fwd.shape
    d = fwd.dtype
    res = hw.result((t_len + 1, bsz, 6 * h), d, out)
    gemm = np.empty((bsz, h), d)
    carry = np.empty((bsz, h), d)
    if _run_seq("gru_bwd_seq", gout, fwd, h0, _c(w_hh), gemm, carry, res, t_len, bsz, h):
        return hw.into(res, out)  # (the kernel zeroes gemm, carry and writes row T)
    res[t_len] = 0
    gemm[...] = 0
    carry[...] = 0
    k = step_kernel("gru_bwd", d.name)
    step = _Stepper(k, [gout, fwd, h0, gemm, carry, res, 0, t_len, bsz, h], bsz,
                    13 * bsz * h)
    for t in range(t_len - 1, -1, -1):
        step.run(t)
        np.matmul(res[t, :, 3 * h:], w_hh, out=gemm)
    np.add(gemm, carry, out=res[t_len, :, :h])
    return hw.into(res, out)


def _bind_gru_scan(xw, h0, w_hh, b_hh, *, out=None):
    """``gru_scan(..., out=out)`` as a prepared call for these arrays, or None."""
    return _bind_forward("gru_fwd_seq", "gru_scan", 5, 3, xw, (h0,), w_hh, b_hh, out)


def _bind_gru_scan_backward(gout, fwd, h0, w_hh, *, out=None):
    """``gru_scan_backward(..., out=out)`` as a prepared call for these arrays, or None."""
    return _bind_backward("gru_bwd_seq", "gru_scan_backward", 6, gout, fwd, h0, w_hh, out)


gru_scan.bind = _bind_gru_scan
gru_scan_backward.bind = _bind_gru_scan_backward


# ---- Elman RNN -----------------------------------------------------------------------
def _relu_flag(nonlinearity: str) -> int:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                         "'relu'.")
    return int(nonlinearity == "relu")


def rnn_scan(xw: np.ndarray, h0: np.ndarray, w_hh: np.ndarray,
             nonlinearity: str = "tanh", *, out: np.ndarray | None = None) -> np.ndarray:
    """``rnn_scan``: each step's matmul lands in its output block, one native kernel adds
    the projection and activates in place; into ``out`` when given."""
    relu = _relu_flag(nonlinearity)
    if not _ready(xw, h0, w_hh):
        return hw.into(_ref("rnn_scan")(xw, h0, w_hh, nonlinearity=nonlinearity), out)
    xw = _c(xw)
    t_len, bsz, h = xw.shape
    res = hw.result((t_len, bsz, h), xw.dtype, out)
    k = step_kernel("rnn_fwd", hw.dname(xw))
    step = _Stepper(k, [xw, res, relu, 0, bsz, h], bsz, 3 * bsz * h)
    w_t = _transposed(w_hh, "rnn_scan")
    hp = h0
    for t in range(t_len):
        np.matmul(hp, w_t, out=res[t])
        step.run(t)
        hp = res[t]
    return hw.into(res, out)


def rnn_scan_backward(gout: np.ndarray, fwd: np.ndarray, w_hh: np.ndarray,
                      nonlinearity: str = "tanh", *,
                      out: np.ndarray | None = None) -> np.ndarray:
    """``rnn_scan_backward`` (``fwd``: the scan's output): d(pre-activation) per step
    from one native kernel and the matmul for dh into a buffer (dh0 is the gradient
    rule's); into ``out`` when given."""
    relu = _relu_flag(nonlinearity)
    if not _ready(fwd, gout, w_hh):
        return hw.into(_ref("rnn_scan_backward")(gout, fwd, w_hh, nonlinearity=nonlinearity),
                       out)
    gout, fwd = _c(gout), _c(fwd)
    t_len, bsz, h = fwd.shape
    res = hw.result((t_len, bsz, h), fwd.dtype, out)
    dhn = np.zeros((bsz, h), fwd.dtype)
    k = step_kernel("rnn_bwd", hw.dname(fwd))
    step = _Stepper(k, [gout, fwd, dhn, res, relu, 0, bsz, h], bsz, 4 * bsz * h)
    for t in range(t_len - 1, -1, -1):
        step.run(t)
        if t:
            np.matmul(res[t], w_hh, out=dhn)
    return hw.into(res, out)


NATIVE = {"lstm_scan": lstm_scan, "lstm_scan_backward": lstm_scan_backward,
          "gru_scan": gru_scan, "gru_scan_backward": gru_scan_backward,
          "rnn_scan": rnn_scan, "rnn_scan_backward": rnn_scan_backward}


def register() -> None:
    """Serve the scan ops from the native versions (idempotent); each takes ``out=``
    (``handwritten.writes_out``): a plan's library step passes its planned buffer."""
    hw.serve(NATIVE)


register()
