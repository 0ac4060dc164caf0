"""Whole-sequence recurrent scans (LSTM, GRU, Elman RNN) whose backward runs the
same loop in reverse, and select_block (one block of a packed scan output).

Moved out of nn.py so the recurrent ops live (and get native kernels) apart
from convolution and pooling. Every forward op's gradient is written in terms
of other registered ops, so eager autograd and the graph autodiff pass share it.
"""
from __future__ import annotations

import numpy as np

from ..registry import OpDef, register


# ---- recurrent scans --------------------------------------------------------------------
def _no_double_backward(name):
    """The gradient of a scan's backward op: not implemented, said out loud (without a
    rule, double backward treated the backward op as a constant)."""
    def grad(b, g, xs, out, **attrs):
        raise NotImplementedError(f"{name}: second derivatives (double backward) are not "
                                  "supported")
    return grad


# Each takes the input projection for every step (x @ W_ih^T + biases, computed
# by one matmul outside), the initial state and W_hh, and returns a packed
# tensor: the states the user sees plus the gate activations backward needs.
# The backward op returns the gradient of the input projection (and of the
# initial state in an extra trailing row); the weight gradients are then one
# large matmul each, outside the loop.

def _sig(x):
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)


def _lstm_impl(xw, h0, c0, w_hh, bias):
    """Forward loop over preallocated, contiguous per-step blocks. tanh(g) is
    computed as 2*sigmoid(2g)-1 so all four gates take one sigmoid."""
    t_len, bsz, h4 = xw.shape
    h = h4 // 4
    out = np.empty((7, t_len, bsz, h), xw.dtype)   # [h, c, i, f, g, o, tanh(c)]
    w_t = w_hh.T
    gates = np.empty((bsz, 4 * h), xw.dtype)
    g4 = gates.reshape(bsz, 4, h).transpose(1, 0, 2)   # (4, B, H) view of the gates
    tmp = np.empty((bsz, h), xw.dtype)
    hp, cp = h0, c0
    for t in range(t_len):
        np.matmul(hp, w_t, out=gates)
        gates += xw[t]
        gates += bias
        gates[:, 2 * h:3 * h] *= 2
        np.negative(gates, out=gates)
        np.exp(gates, out=gates)
        gates += 1
        act = out[2:6, t]
        np.reciprocal(g4, out=act)
        i, f, g, og = act
        g *= 2
        g -= 1
        c = out[1, t]
        np.multiply(f, cp, out=c)
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=out[6, t])
        np.multiply(og, out[6, t], out=out[0, t])
        hp, cp = out[0, t], c
    return out


def _lstm_backward_impl(gout, out, c0, w_hh):
    """d(input projection) for every step, plus dc0 in row T (first H columns).

    Works step by step on cache-resident (B, H) blocks (whole-sequence passes
    would be memory-bound); the four gate derivatives are one (4, B, H) op."""
    _, t_len, bsz, h = out.shape
    dt_ = out.dtype
    res = np.empty((t_len + 1, bsz, 4 * h), dt_)
    res[t_len] = 0
    gh, gc = gout[0], gout[1]
    dh = np.empty((bsz, h), dt_)
    dc = np.empty((bsz, h), dt_)
    tmp = np.empty((bsz, h), dt_)
    deriv = np.empty((4, bsz, h), dt_)
    coef = np.empty((4, bsz, h), dt_)
    dh_next = np.zeros((bsz, h), dt_)
    dc_next = np.zeros((bsz, h), dt_)
    for t in range(t_len - 1, -1, -1):
        act = out[2:6, t]                       # i, f, g, o
        i, f, g, og = act
        tc = out[6, t]
        c_prev = out[1, t - 1] if t > 0 else c0
        np.add(gh[t], dh_next, out=dh)
        # dc = dh * o * (1 - tanh(c)^2) + dc from outside + dc from step t+1
        np.multiply(tc, tc, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= og
        np.multiply(dh, tmp, out=dc)
        dc += gc[t]
        dc += dc_next
        # sigmoid'(x) = a (1 - a) for i, f, o; tanh' = 1 - g^2 for g
        np.subtract(1, act, out=deriv)
        deriv *= act
        np.multiply(g, g, out=deriv[2])
        np.subtract(1, deriv[2], out=deriv[2])
        np.multiply(dc, g, out=coef[0])
        np.multiply(dc, c_prev, out=coef[1])
        np.multiply(dc, i, out=coef[2])
        np.multiply(dh, tc, out=coef[3])
        np.multiply(coef, deriv, out=res[t].reshape(bsz, 4, h).transpose(1, 0, 2))
        if t:   # dh0 = res[0] @ W_hh is the gradient rule's (one matmul in the graph)
            np.matmul(res[t], w_hh, out=dh_next)
        np.multiply(dc, f, out=dc_next)
    res[t_len, :, :h] = dc_next
    return res


def _lstm_infer(specs, attrs):
    (xs, d), (hs, _), (cs, _), (ws, _), (bs, _) = specs
    if len(xs) != 3 or xs[2] % 4 or tuple(ws) != (xs[2], xs[2] // 4) or \
            tuple(hs) != (xs[1], xs[2] // 4) or tuple(cs) != tuple(hs) or tuple(bs) != (xs[2],):
        raise RuntimeError(f"lstm_scan: inconsistent shapes: projection {tuple(xs)}, h0 "
                           f"{tuple(hs)}, c0 {tuple(cs)}, weight_hh {tuple(ws)}, bias "
                           f"{tuple(bs)}")
    return (7, xs[0], xs[1], xs[2] // 4), d


def _weight_grad(b, dpre, hprev):
    """sum_t dpre[t]^T @ hprev[t] as one matmul."""
    t_len, bsz, g = dpre.shape
    h = hprev.shape[2]
    d2 = b.reshape(dpre, shape=(t_len * bsz, g))
    h2 = b.reshape(hprev, shape=(t_len * bsz, h))
    return b.matmul(b.permute(d2, dims=(1, 0)), h2)


def _states_prev(b, hs, h0):
    """h_{t-1} for every step: h0, then hs[:-1] (hs is (T, B, H))."""
    t_len = hs.shape[0]
    prev = b.getitem(hs, index=(("s", 0, t_len - 1, 1),))
    return b.cat(b.reshape(h0, shape=(1,) + tuple(h0.shape)), prev, dim=0)


def _lstm_grad(b, g, xs, out):
    xw, h0, c0, w_hh, _ = xs
    t_len, bsz, h4 = xw.shape
    h = h4 // 4
    r = b.lstm_scan_backward(g, out, c0, w_hh)
    dxw = b.getitem(r, index=(("s", 0, t_len, 1),))
    dc0 = b.getitem(r, index=(("i", t_len), ("s", None, None, None), ("s", 0, h, 1)))
    dh0 = b.matmul(b.getitem(r, index=(("i", 0),)), w_hh)
    dw = _weight_grad(b, dxw, _states_prev(b, b.select_block(out, index=0), h0))
    return dxw, dh0, dc0, dw, b.sum(dxw, dims=(0, 1), keepdim=False)


register(OpDef("lstm_scan", "other", _lstm_impl, infer=_lstm_infer, grad=_lstm_grad,
               saves=(1, 2, 3, -1), backward_name="LstmBackward0",
               doc="LSTM over a sequence: (T,B,4H) projections, h0, c0, W_hh, bias (4H) -> "
                   "(7,T,B,H) packed [h, c, i, f, g, o, tanh(c)]"))
# extra["grad_blocks"]: the leading blocks of the packed output's gradient (input 0) the
# backward reads (h and c here; ir.passes.rewrites.narrow_scan_gradients builds only those)
register(OpDef("lstm_scan_backward", "other", _lstm_backward_impl,
               grad=_no_double_backward("lstm_scan"), extra={"grad_blocks": 2},
               infer=lambda specs, attrs: ((specs[1][0][1] + 1, specs[1][0][2],
                                            4 * specs[1][0][3]), specs[1][1])))


def _select_block_backward_impl(g, shape, index):
    res = np.zeros(shape, g.dtype)   # calloc: untouched blocks cost nothing
    res[index] = g
    return res


register(OpDef("select_block", "view", lambda x, index: x[index],
               infer=lambda specs, attrs: (tuple(specs[0][0][1:]), specs[0][1]),
               attrs=("index",), backward_name="SelectBackward0",
               grad=lambda b, g, xs, out, index: (
                   b.select_block_backward(g, shape=tuple(xs[0].shape), index=index),),
               doc="x[index] along the leading axis (a view); picks a state out of a packed "
                   "scan output with a gradient that touches only that block"))
register(OpDef("select_block_backward", "other", _select_block_backward_impl,
               infer=lambda specs, attrs: (tuple(attrs["shape"]), specs[0][1]),
               attrs=("shape", "index"),
               grad=lambda b, g, xs, out, shape, index: (b.select_block(g, index=index),)))


def _gru_impl(xw, h0, w_hh, b_hh):
    t_len, bsz, h3 = xw.shape
    h = h3 // 3
    out = np.empty((5, t_len, bsz, h), xw.dtype)   # [h, r, z, n, W_hn h + b_hn]
    w_t = w_hh.T
    hh = np.empty((bsz, 3 * h), xw.dtype)
    rz = np.empty((bsz, 2 * h), xw.dtype)
    rz2 = rz.reshape(bsz, 2, h).transpose(1, 0, 2)
    tmp = np.empty((bsz, h), xw.dtype)
    hp = h0
    for t in range(t_len):
        np.matmul(hp, w_t, out=hh)
        hh += b_hh
        np.add(xw[t, :, :2 * h], hh[:, :2 * h], out=rz)
        np.negative(rz, out=rz)
        np.exp(rz, out=rz)
        rz += 1
        np.reciprocal(rz2, out=out[1:3, t])
        r, z = out[1, t], out[2, t]
        out[4, t] = hh[:, 2 * h:]
        n = out[3, t]
        np.multiply(r, out[4, t], out=n)
        n += xw[t, :, 2 * h:]
        np.tanh(n, out=n)
        np.subtract(hp, n, out=tmp)
        tmp *= z
        np.add(n, tmp, out=out[0, t])
        hp = out[0, t]
    return out


def _gru_backward_impl(gout, out, h0, w_hh):
    """[d(input projection) | d(hidden projection)] per step; dh0 in row T.

    dh_{t-1} = dh_t * z + d(hidden projection)_t @ W_hh: the matmul goes into a
    preallocated buffer and the ``dh * z`` carry is added at the next step."""
    _, t_len, bsz, h = out.shape
    dt_ = out.dtype
    res = np.empty((t_len + 1, bsz, 6 * h), dt_)
    res[t_len] = 0
    dh = np.empty((bsz, h), dt_)
    tmp = np.empty((bsz, h), dt_)
    carry = np.zeros((bsz, h), dt_)     # dh_t * z_t, the direct path to h_{t-1}
    gemm = np.zeros((bsz, h), dt_)      # d(hidden projection)_t @ W_hh
    for t in range(t_len - 1, -1, -1):
        r, z, n, hn = out[1, t], out[2, t], out[3, t], out[4, t]
        hp = out[0, t - 1] if t > 0 else h0
        np.add(gout[0, t], gemm, out=dh)
        dh += carry
        d = res[t]
        dr, dz, dn = d[:, :h], d[:, h:2 * h], d[:, 2 * h:3 * h]
        # dn = dh (1 - z) (1 - n^2)
        np.multiply(n, n, out=tmp)
        np.subtract(1, tmp, out=tmp)
        np.subtract(1, z, out=dn)
        dn *= tmp
        dn *= dh
        # dz = dh (h_prev - n) z (1 - z)
        np.subtract(hp, n, out=dz)
        dz *= dh
        np.subtract(1, z, out=tmp)
        tmp *= z
        dz *= tmp
        # dr = dn hn r (1 - r)
        np.subtract(1, r, out=dr)
        dr *= r
        dr *= hn
        dr *= dn
        d[:, 3 * h:5 * h] = d[:, :2 * h]
        np.multiply(dn, r, out=d[:, 5 * h:])
        np.multiply(dh, z, out=carry)
        np.matmul(d[:, 3 * h:], w_hh, out=gemm)
    np.add(gemm, carry, out=res[t_len, :, :h])
    return res


def _gru_infer(specs, attrs):
    (xs, d), (hs, _), (ws, _), (bs, _) = specs
    if len(xs) != 3 or xs[2] % 3 or tuple(ws) != (xs[2], xs[2] // 3) or \
            tuple(hs) != (xs[1], xs[2] // 3) or tuple(bs) != (xs[2],):
        raise RuntimeError(f"gru_scan: inconsistent shapes: projection {tuple(xs)}, h0 "
                           f"{tuple(hs)}, weight_hh {tuple(ws)}, bias_hh {tuple(bs)}")
    return (5, xs[0], xs[1], xs[2] // 3), d


def _gru_grad(b, g, xs, out):
    xw, h0, w_hh, b_hh = xs
    t_len, bsz, h3 = xw.shape
    h = h3 // 3
    r = b.gru_scan_backward(g, out, h0, w_hh)
    steps = (("s", 0, t_len, 1), ("s", None, None, None))
    dxw = b.getitem(r, index=steps + (("s", 0, 3 * h, 1),))
    dhh = b.getitem(r, index=steps + (("s", 3 * h, 6 * h, 1),))
    dh0 = b.getitem(r, index=(("i", t_len), ("s", None, None, None), ("s", 0, h, 1)))
    dw = _weight_grad(b, dhh, _states_prev(b, b.select_block(out, index=0), h0))
    db = b.sum(dhh, dims=(0, 1), keepdim=False)
    return dxw, dh0, dw, db


register(OpDef("gru_scan", "other", _gru_impl, infer=_gru_infer, grad=_gru_grad,
               saves=(1, 2, -1), backward_name="GruBackward0",
               doc="GRU over a sequence: (T,B,3H) input projections (with b_ih), h0, W_hh, "
                   "b_hh -> (5,T,B,H) packed [h, r, z, n, W_hn h + b_hn]"))
register(OpDef("gru_scan_backward", "other", _gru_backward_impl,
               grad=_no_double_backward("gru_scan"), extra={"grad_blocks": 1},  # h only
               infer=lambda specs, attrs: ((specs[1][0][1] + 1, specs[1][0][2],
                                            6 * specs[1][0][3]), specs[1][1])))


def _rnn_impl(xw, h0, w_hh, nonlinearity="tanh"):
    """Each step's matmul lands in its output block, activated in place."""
    t_len, bsz, h = xw.shape
    out = np.empty((t_len, bsz, h), xw.dtype)
    w_t = w_hh.T
    hp = h0
    for t in range(t_len):
        o = out[t]
        np.matmul(hp, w_t, out=o)
        o += xw[t]
        if nonlinearity == "tanh":
            np.tanh(o, out=o)
        else:
            np.maximum(o, 0, out=o)
        hp = o
    return out


def _rnn_backward_impl(gout, out, w_hh, nonlinearity="tanh"):
    """d(pre-activation) for every step; dh0 = res[0] @ W_hh is the gradient rule's."""
    t_len, bsz, h = out.shape
    res = np.empty((t_len, bsz, h), out.dtype)
    tmp = np.empty((bsz, h), out.dtype)
    dh_next = np.zeros((bsz, h), out.dtype)
    for t in range(t_len - 1, -1, -1):
        d = res[t]
        np.add(gout[t], dh_next, out=d)
        if nonlinearity == "tanh":
            np.multiply(out[t], out[t], out=tmp)
            np.subtract(1, tmp, out=tmp)
        else:
            np.greater(out[t], 0, out=tmp)
        d *= tmp
        if t:
            np.matmul(d, w_hh, out=dh_next)
    return res


def _rnn_infer(specs, attrs):
    (xs, d), (hs, _), (ws, _) = specs
    if len(xs) != 3 or tuple(ws) != (xs[2], xs[2]) or tuple(hs) != (xs[1], xs[2]):
        raise RuntimeError(f"rnn_scan: inconsistent shapes: projection {tuple(xs)}, h0 "
                           f"{tuple(hs)}, weight_hh {tuple(ws)}")
    return tuple(xs), d


def _rnn_grad(b, g, xs, out, nonlinearity="tanh"):
    xw, h0, w_hh = xs
    dpre = b.rnn_scan_backward(g, out, w_hh, nonlinearity=nonlinearity)
    dh0 = b.matmul(b.getitem(dpre, index=(("i", 0),)), w_hh)
    dw = _weight_grad(b, dpre, _states_prev(b, out, h0))
    return dpre, dh0, dw


register(OpDef("rnn_scan", "other", _rnn_impl, infer=_rnn_infer, grad=_rnn_grad,
               saves=(1, 2, -1), attrs=("nonlinearity",), backward_name="RnnBackward0",
               doc="Elman RNN over a sequence: (T,B,H) projections, h0, W_hh -> (T,B,H)"))
register(OpDef("rnn_scan_backward", "other", _rnn_backward_impl, attrs=("nonlinearity",),
               infer=lambda specs, attrs: (tuple(specs[1][0]), specs[1][1]),
               grad=_no_double_backward("rnn_scan")))
