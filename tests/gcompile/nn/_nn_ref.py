"""NumPy reference implementations (independent formulations) for nn tests."""
import itertools

import numpy as np


def conv_ref(x, w, b, stride, padding, dilation, groups):
    """Shift-and-add convolution: one einsum per kernel offset (no im2col)."""
    nsp = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    kernel = w.shape[2:]
    out_sp = [(xp.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
              for i in range(nsp)]
    n, c = x.shape[:2]
    co = w.shape[0]
    cg, og = c // groups, co // groups
    out = np.zeros((n, co) + tuple(out_sp))
    for offs in itertools.product(*(range(k) for k in kernel)):
        sl = tuple(slice(o * d, o * d + s * (m - 1) + 1, s)
                   for o, d, s, m in zip(offs, dilation, stride, out_sp))
        patch = xp[(slice(None), slice(None)) + sl]
        for g in range(groups):
            wk = w[(slice(g * og, (g + 1) * og), slice(None)) + offs]
            out[:, g * og:(g + 1) * og] += np.einsum(
                "nc...,oc->no...", patch[:, g * cg:(g + 1) * cg], wk)
    if b is not None:
        out += b.reshape((1, co) + (1,) * nsp)
    return out


def pool_ref(x, kernel, stride, padding, op, ceil_mode=False, count_include_pad=True):
    """Loop over output windows; max pads with -inf, avg follows torch's divisor rules."""
    n, c, h, w = x.shape
    def osize(sz, k, s, p):
        if ceil_mode:
            o = -(-(sz + 2 * p - k) // s) + 1
            if (o - 1) * s >= sz + p:
                o -= 1
            return o
        return (sz + 2 * p - k) // s + 1
    oh, ow = osize(h, kernel[0], stride[0], padding[0]), osize(w, kernel[1], stride[1],
                                                                padding[1])
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * stride[0] - padding[0], j * stride[1] - padding[1]
            he, we = min(hs + kernel[0], h + padding[0]), min(ws + kernel[1], w + padding[1])
            pool = (he - hs) * (we - ws)
            hs0, ws0, he0, we0 = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs0:he0, ws0:we0]
            if op == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                div = pool if count_include_pad else (he0 - hs0) * (we0 - ws0)
                out[:, :, i, j] = win.sum(axis=(2, 3)) / div
    return out


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_ref(x, h, c, w_ih, w_hh, b_ih, b_hh):
    outs = []
    for t in range(x.shape[0]):
        gates = x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = np.split(gates, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outs.append(h)
    return np.stack(outs), h, c


def gru_ref(x, h, w_ih, w_hh, b_ih, b_hh):
    outs = []
    for t in range(x.shape[0]):
        gi = x[t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        ir, iz, in_ = np.split(gi, 3, axis=1)
        hr, hz, hn = np.split(gh, 3, axis=1)
        r, z = sigmoid(ir + hr), sigmoid(iz + hz)
        n = np.tanh(in_ + r * hn)
        h = (1 - z) * n + z * h
        outs.append(h)
    return np.stack(outs), h


def rnn_ref(x, h, w_ih, w_hh, b_ih, b_hh, act=np.tanh):
    outs = []
    for t in range(x.shape[0]):
        h = act(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        outs.append(h)
    return np.stack(outs), h


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
