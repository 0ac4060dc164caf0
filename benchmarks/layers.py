"""Eager forward+backward of Conv2d and LSTM vs the same math hand-written in NumPy.

    python benchmarks/layers.py [--repeat N] [--clock wall|cpu]

Conv2d: batch 32, 3->64 channels, 32x32, 3x3, padding 1 (im2col + matmul by hand).
LSTM: batch 32, seq 64, 128->256 (the LSTM equations and their backward by hand).
Prints median times and the ratio eager / NumPy (below 1.0 means eager is faster).
Runs of the two are interleaved. ``--clock cpu`` measures process CPU time,
steadier on a shared machine (run with OPENBLAS_NUM_THREADS=1 so it is also
the wall time of a single-threaded run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gcompile as torch  # noqa: E402
import gcompile.nn as nn  # noqa: E402


CLOCK = time.perf_counter


def _median_times(a, b, repeat: int) -> tuple[float, float]:
    """Median times of a and b, runs interleaved so machine noise hits both alike."""
    a()
    b()
    ta, tb = [], []
    for _ in range(repeat):
        t0 = CLOCK()
        a()
        t1 = CLOCK()
        b()
        t2 = CLOCK()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


# ---- conv -----------------------------------------------------------------------
def numpy_conv(x, w, b, gy_seed):
    """Forward and backward of a 3x3 stride-1 pad-1 conv by im2col + matmul."""
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.empty((n, c, kh, kw, h, wd), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + wd]
    cols = cols.reshape(n, c * kh * kw, h * wd)
    w2 = w.reshape(co, -1)
    y = np.matmul(w2, cols) + b[None, :, None]
    y = y.reshape(n, co, h, wd)
    gy = gy_seed.reshape(n, co, h * wd)
    gw = np.matmul(gy, cols.transpose(0, 2, 1)).sum(0).reshape(w.shape)
    gb = gy.sum(axis=(0, 2))
    gcols = np.matmul(w2.T, gy).reshape(n, c, kh, kw, h, wd)
    gxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i:i + h, j:j + wd] += gcols[:, :, i, j]
    return y, gxp[:, :, 1:-1, 1:-1], gw, gb


def bench_conv(repeat: int):
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    conv = nn.Conv2d(3, 64, 3, padding=1)
    w_np, b_np = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    gy_np = rng.standard_normal((32, 64, 32, 32)).astype(np.float32)
    x = torch.from_numpy(x_np).requires_grad_()
    gy = torch.from_numpy(gy_np)

    def eager():
        conv.zero_grad()
        x.grad = None
        conv(x).backward(gy)

    def by_hand():
        numpy_conv(x_np, w_np, b_np, gy_np)

    eager()
    y, gx, gw, gb = numpy_conv(x_np, w_np, b_np, gy_np)
    assert np.allclose(conv(x).detach().numpy(), y, atol=1e-4)
    assert np.allclose(x.grad.numpy(), gx, atol=1e-3)
    assert np.allclose(conv.weight.grad.numpy(), gw, rtol=1e-3, atol=1e-2)
    return _median_times(eager, by_hand, repeat)


# ---- lstm -----------------------------------------------------------------------
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_lstm(x, w_ih, w_hh, b_ih, b_hh, gout):
    """LSTM forward over the sequence and full BPTT, textbook style."""
    t_len, bsz, _ = x.shape
    h = w_hh.shape[1]
    xw = (x.reshape(t_len * bsz, -1) @ w_ih.T + b_ih + b_hh).reshape(t_len, bsz, 4 * h)
    hs = np.zeros((t_len + 1, bsz, h), x.dtype)
    cs = np.zeros((t_len + 1, bsz, h), x.dtype)
    cache = []
    for t in range(t_len):
        a = xw[t] + hs[t] @ w_hh.T
        i, f = _sigmoid(a[:, :h]), _sigmoid(a[:, h:2 * h])
        g, o = np.tanh(a[:, 2 * h:3 * h]), _sigmoid(a[:, 3 * h:])
        cs[t + 1] = f * cs[t] + i * g
        tc = np.tanh(cs[t + 1])
        hs[t + 1] = o * tc
        cache.append((i, f, g, o, tc))
    dxw = np.empty_like(xw)
    dw_hh = np.zeros_like(w_hh)
    dh_next = np.zeros((bsz, h), x.dtype)
    dc_next = np.zeros((bsz, h), x.dtype)
    for t in range(t_len - 1, -1, -1):
        i, f, g, o, tc = cache[t]
        dh = gout[t] + dh_next
        dc = dc_next + dh * o * (1 - tc * tc)
        da = np.concatenate([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f),
                             dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
        dxw[t] = da
        dw_hh += da.T @ hs[t]
        dh_next = da @ w_hh
        dc_next = dc * f
    d2 = dxw.reshape(t_len * bsz, -1)
    dw_ih = d2.T @ x.reshape(t_len * bsz, -1)
    dx = (d2 @ w_ih).reshape(x.shape)
    db = d2.sum(0)
    return hs[1:], dx, dw_ih, dw_hh, db


def bench_lstm(repeat: int):
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((64, 32, 128)).astype(np.float32)
    lstm = nn.LSTM(128, 256)
    ws = [p.detach().numpy() for p in lstm.parameters()]
    gout_np = rng.standard_normal((64, 32, 256)).astype(np.float32)
    x = torch.from_numpy(x_np).requires_grad_()
    gout = torch.from_numpy(gout_np)

    def eager():
        lstm.zero_grad()
        x.grad = None
        out, _ = lstm(x)
        out.backward(gout)

    def by_hand():
        numpy_lstm(x_np, *ws, gout_np)

    eager()
    hs, dx, dw_ih, dw_hh, db = numpy_lstm(x_np, *ws, gout_np)
    assert np.allclose(lstm(x)[0].detach().numpy(), hs, atol=1e-4)
    assert np.allclose(x.grad.numpy(), dx, atol=1e-3)
    assert np.allclose(lstm.weight_hh_l0.grad.numpy(), dw_hh, rtol=1e-3, atol=1e-2)
    return _median_times(eager, by_hand, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    print(f"{'layer (fwd+bwd)':<44}{'eager ms':>10}{'numpy ms':>10}{'ratio':>8}")
    for name, fn in (("Conv2d 32x3x32x32 -> 64, 3x3, pad 1", bench_conv),
                     ("LSTM batch 32, seq 64, 128 -> 256", bench_lstm)):
        e, n = fn(args.repeat)
        print(f"{name:<44}{e * 1e3:>10.2f}{n * 1e3:>10.2f}{e / n:>8.2f}")


if __name__ == "__main__":
    main()
