"""The native optimizer kernels (kernels.cpu.optim_native) against NumPy transcriptions
of the op-by-op updates in gcompile.optim (same operations, same order, scalars rounded
to the array dtype), and split over threads against one thread, bit for bit."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import kernels.cpu as cpu
from kernels.cpu import optim_native as on

N = 2 * on.BLOCK + 37  # several blocks and a ragged tail


def _arrays(dtype, k, seed=0):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(N).astype(dtype) for _ in range(k)]
    return out


def _close(a, b):
    tol = 1e-5 if a.dtype == np.float32 else 1e-12  # FMA contraction: an ulp or two
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ams,wd,dec,mx", list(itertools.product([0, 1], [0, 0.1], [0, 1],
                                                                  [0, 1])))
def test_adam(dtype, ams, wd, dec, mx):
    T = dtype
    p, g, m = _arrays(dtype, 3)
    v, vm = (np.abs(a) for a in _arrays(dtype, 2, 1))
    P, G, M, V, VM = (a.copy() for a in (p, g, m, v, vm))
    lr, b1, b2, eps, step = 1e-2, 0.9, 0.999, 1e-8, 3.0
    on.adam(p, g, m, v, vm if ams else None, step=step, lr=lr, beta1=b1, beta2=b2, eps=eps,
            weight_decay=wd, decoupled_weight_decay=bool(dec), maximize=bool(mx))
    gg = -G if mx else G
    if wd and not dec:
        gg = gg + P * T(wd)
    if wd and dec:
        P = P * T(1 - lr * wd)
    M = M * T(b1) + gg * T(1 - b1)
    V = V * T(b2) + (gg * gg) * T(1 - b2)
    s = V
    if ams:
        VM = s = np.maximum(VM, V)
    d = np.sqrt(s) / T((1 - b2 ** step) ** 0.5) + T(eps)
    P = P + (M / d) * T(-(lr / (1 - b1 ** step)))
    for a, b in [(p, P), (m, M), (v, V)] + ([(vm, VM)] if ams else []):
        assert a.dtype == dtype
        _close(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mom,damp,nes,wd,mx,first",
                         [c for c in itertools.product([0, 0.9], [0, 0.3], [0, 1], [0, 0.1],
                                                       [0, 1], [0, 1])
                          if not (c[2] and (c[0] == 0 or c[1])) and not (c[5] and c[0] == 0)])
def test_sgd(dtype, mom, damp, nes, wd, mx, first):
    T = dtype
    p, g, b = _arrays(dtype, 3)
    P, G, B = p.copy(), g.copy(), b.copy()
    lr = 0.05
    on.sgd(p, g, b if mom else None, first=bool(first), lr=lr, momentum=mom, dampening=damp,
           weight_decay=wd, nesterov=bool(nes), maximize=bool(mx))
    gg = -G if mx else G
    if wd:
        gg = gg + P * T(wd)
    if mom:
        B = gg.copy() if first else B * T(mom) + gg * T(1 - damp)
        gg = gg + B * T(mom) if nes else B
    P = P + gg * T(-lr)
    _close(p, P)
    if mom:
        _close(b, B)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd,mx", [(0, 0), (0.1, 1)])
def test_adagrad(dtype, wd, mx):
    T = dtype
    p, g = _arrays(dtype, 2)
    (s,) = (np.abs(a) for a in _arrays(dtype, 1, 2))
    P, G, S = p.copy(), g.copy(), s.copy()
    on.adagrad(p, g, s, clr=0.03, eps=1e-10, weight_decay=wd, maximize=bool(mx))
    gg = -G if mx else G
    if wd:
        gg = gg + P * T(wd)
    S = S + (gg * gg) * T(1)
    P = P + (gg / (np.sqrt(S) + T(1e-10))) * T(-0.03)
    _close(p, P)
    _close(s, S)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("centered,mom,wd,mx", list(itertools.product([0, 1], [0, 0.9],
                                                                       [0, 0.1], [0, 1])))
def test_rmsprop(dtype, centered, mom, wd, mx):
    T = dtype
    p, g, ga, b = _arrays(dtype, 4)
    ga *= dtype(0.1)  # keep sq - ga**2 away from cancellation (FMA rounds it once)
    (sq,) = (np.abs(a) + 1 for a in _arrays(dtype, 1, 3))
    P, G, SQ, GA, B = (a.copy() for a in (p, g, sq, ga, b))
    lr, alpha, eps = 0.01, 0.99, 1e-8
    on.rmsprop(p, g, sq, ga if centered else None, b if mom else None, lr=lr, alpha=alpha,
               eps=eps, weight_decay=wd, momentum=mom, maximize=bool(mx))
    gg = -G if mx else G
    if wd:
        gg = gg + P * T(wd)
    SQ = SQ * T(alpha) + (gg * gg) * T(1 - alpha)
    if centered:
        GA = GA * T(alpha) + gg * T(1 - alpha)
        avg = np.sqrt(SQ + (GA * GA) * T(-1))
    else:
        avg = np.sqrt(SQ)
    avg = avg + T(eps)
    if mom:
        B = B * T(mom) + (gg / avg) * T(1)
        P = P + B * T(-lr)
    else:
        P = P + (gg / avg) * T(-lr)
    _close(p, P)
    _close(sq, SQ)
    if centered:
        _close(ga, GA)
    if mom:
        _close(b, B)


def test_threads_split_the_range_without_changing_results():
    base = _arrays(np.float32, 4)
    base[3] = np.abs(base[3])  # exp_avg_sq
    kw = dict(step=2.0, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
              decoupled_weight_decay=True, maximize=False)
    one = [a.copy() for a in base]
    on.adam(*one, None, **kw)
    old = cpu.set_parallel_threshold(1)
    try:
        many = [a.copy() for a in base]
        on.adam(*many, None, **kw)
    finally:
        cpu.set_parallel_threshold(old)
    for a, b in zip(one, many):
        assert np.array_equal(a, b)


def test_amsgrad_max_keeps_nan_like_numpy():
    p, g, m = (np.zeros(4, np.float32) for _ in range(3))
    v = np.array([1, 2, 3, 4], np.float32)
    vm = np.array([np.nan, 1, 5, 0], np.float32)
    ref = np.maximum(vm, np.float32(0.999) * v)
    on.adam(p, g, m, v, vm, step=1.0, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
            weight_decay=0, decoupled_weight_decay=False, maximize=False)
    np.testing.assert_array_equal(vm, ref)
