"""Native kernels for the eager optimizer updates (Adam/AdamW, SGD, Adagrad, RMSprop).

Op by op, one Adam step on one parameter is a dozen NumPy calls, each a pass over memory
and most a fresh temporary. Here it is one hand-written kernel per parameter
(``kernels.cpu.handwritten``) that reads the parameter, its gradient and its state once
and writes them back in place.

Results equal the op-by-op code in ``gcompile.optim`` bit for bit: every kernel does the
same float operations in the same order, in the parameter's dtype, with the Python-float
hyper-parameters rounded to that dtype as a Python scalar operand of a tensor op is
(``hp`` is a float64 array of them, converted to ``T`` inside the kernel), and the
scalars derived from them (``1 - beta1``, ``lr / bias_correction1``) computed here in
Python exactly as the op-by-op code computes them. Hyper-parameters are passed on every
call, so lr schedulers and hand edits of a param group take effect at once.

Each kernel walks its range in blocks of ``BLOCK`` elements and, per block, runs a few
short loops that each write one array (the gradient term goes to a per-thread scratch
block): LLVM vectorises a loop only when the run-time overlap checks between its arrays
are few, and a block's arrays stay in L1 cache between the loops, so memory is still
read and written once.
"""
from __future__ import annotations

import numpy as np

from . import handwritten as hw

__all__ = ["DTYPES", "BLOCK", "adam", "sgd", "adagrad", "rmsprop"]

DTYPES = ("float32", "float64")
BLOCK = 512
_ONE: dict[str, np.ndarray] = {}


def _dummy(dtype: np.dtype) -> np.ndarray:
    """A one-element array standing in for an absent state buffer (never accessed)."""
    a = _ONE.get(dtype.name)
    if a is None:
        a = _ONE[dtype.name] = np.zeros(1, dtype)
    return a


_HEAD = '''
@njit(nogil=True, inline="always")
def body({args}, lo, hi):
{unpack}
    i0 = lo
    while i0 < hi:
        nb = min({block}, hi - i0)
        i1 = i0 + nb
'''


def _source(args: str, scalars: list[str], dtype: str, block: str) -> str:
    """A kernel body over blocks: the shared head (scalars unpacked from ``hp`` as
    ``T``) and ``block``, the per-block loops (indented 8 spaces, ends with nothing:
    the head's loop advances ``i0``)."""
    t = "np." + dtype
    unpack = "\n".join(f"    {s} = {t}(hp[{k}])" for k, s in enumerate(scalars))
    return (_HEAD.format(args=args, unpack=unpack, block=BLOCK)
            + block.rstrip("\n") + "\n        i0 = i1\n")


def _run(k: hw.NativeKernel, args: tuple, n: int, arrays: int) -> None:
    k(*args, n=n, work=n * arrays)


# ---- Adam / AdamW -----------------------------------------------------------------------

_ADAM_SCALARS = ["sg", "wd", "decay", "b1", "omb1", "b2", "omb2", "bc2s", "eps", "nss"]
_ADAM_BLOCK = '''
        p = param[i0:i1]
        g = grad[i0:i1]
        m = exp_avg[i0:i1]
        v = exp_avg_sq[i0:i1]
        if l2:
            for j in range(nb):
                gs[j] = g[j] * sg + p[j] * wd
        else:
            for j in range(nb):
                gs[j] = g[j] * sg
        for j in range(nb):
            m[j] = m[j] * b1 + gs[j] * omb1
        for j in range(nb):
            v[j] = v[j] * b2 + (gs[j] * gs[j]) * omb2
        s = v
        if ams:
            s = max_sq[i0:i1]
            for j in range(nb):
                a = s[j]
                b = v[j]
                s[j] = a if (a >= b or a != a) else b
        for j in range(nb):
            p[j] = p[j] * decay + (m[j] / (math.sqrt(s[j]) / bc2s + eps)) * nss
'''


def _adam_kernel(dtype: str) -> hw.NativeKernel:
    params = (("param", "out", dtype), ("grad", "in", dtype), ("exp_avg", "out", dtype),
              ("exp_avg_sq", "out", dtype), ("max_sq", "out", dtype),
              ("hp", "in", "float64"), ("gs", "scratch", dtype), ("l2", "int", None),
              ("ams", "int", None))
    src = _source("param, grad, exp_avg, exp_avg_sq, max_sq, hp, gs, l2, ams", _ADAM_SCALARS,
                  dtype, _ADAM_BLOCK)
    return hw.kernel(f"adam_{dtype}", params, src)


def adam(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
         max_exp_avg_sq: np.ndarray | None, *, step: float, lr: float, beta1: float,
         beta2: float, eps: float, weight_decay: float, decoupled_weight_decay: bool,
         maximize: bool) -> None:
    """One Adam/AdamW update of ``param`` and its state, in place (``step`` is the
    already incremented step count; ``max_exp_avg_sq`` is given for AMSGrad)."""
    l2 = weight_decay != 0 and not decoupled_weight_decay
    decay = 1 - lr * weight_decay if weight_decay != 0 and decoupled_weight_decay else 1.0
    bc1 = 1 - beta1 ** step
    bc2 = 1 - beta2 ** step
    hp = np.array([-1.0 if maximize else 1.0, weight_decay, decay, beta1, 1 - beta1, beta2,
                   1 - beta2, bc2 ** 0.5, eps, -(lr / bc1)])
    ams = max_exp_avg_sq is not None
    k = _adam_kernel(hw.dname(param))
    _run(k, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if ams else _dummy(param.dtype),
             hp, BLOCK, int(l2), int(ams)), param.size, 6 if ams else 5)


# ---- SGD --------------------------------------------------------------------------------

_SGD_SCALARS = ["sg", "wd", "mom", "omd", "nlr"]
_SGD_BLOCK = '''
        p = param[i0:i1]
        g = grad[i0:i1]
        if l2:
            for j in range(nb):
                gs[j] = g[j] * sg + p[j] * wd
        else:
            for j in range(nb):
                gs[j] = g[j] * sg
        d = gs
        if mode != 0:
            b = buf[i0:i1]
            if mode == 2:
                for j in range(nb):
                    b[j] = gs[j]
            else:
                for j in range(nb):
                    b[j] = b[j] * mom + gs[j] * omd
            if nesterov:
                for j in range(nb):
                    gs[j] = gs[j] + b[j] * mom
            else:
                d = b
        for j in range(nb):
            p[j] = p[j] + d[j] * nlr
'''


def _sgd_kernel(dtype: str) -> hw.NativeKernel:
    params = (("param", "out", dtype), ("grad", "in", dtype), ("buf", "out", dtype),
              ("hp", "in", "float64"), ("gs", "scratch", dtype), ("l2", "int", None),
              ("mode", "int", None), ("nesterov", "int", None))
    src = _source("param, grad, buf, hp, gs, l2, mode, nesterov", _SGD_SCALARS, dtype,
                  _SGD_BLOCK)
    return hw.kernel(f"sgd_{dtype}", params, src)


def sgd(param: np.ndarray, grad: np.ndarray, momentum_buffer: np.ndarray | None, *,
        first: bool, lr: float, momentum: float, dampening: float, weight_decay: float,
        nesterov: bool, maximize: bool) -> None:
    """One SGD update of ``param`` in place; with momentum, ``momentum_buffer`` is
    updated in place (``first``: it is set to the gradient term, torch's first step)."""
    hp = np.array([-1.0 if maximize else 1.0, weight_decay, momentum, 1 - dampening, -lr])
    mode = 0 if momentum == 0 else (2 if first else 1)
    buf = momentum_buffer if mode else _dummy(param.dtype)
    _run(_sgd_kernel(hw.dname(param)),
         (param, grad, buf, hp, BLOCK, int(weight_decay != 0), mode, int(bool(nesterov))),
         param.size, 4 if mode else 3)


# ---- Adagrad ----------------------------------------------------------------------------

_ADAGRAD_SCALARS = ["sg", "wd", "one", "eps", "nclr"]
_ADAGRAD_BLOCK = '''
        p = param[i0:i1]
        g = grad[i0:i1]
        s = state_sum[i0:i1]
        if l2:
            for j in range(nb):
                gs[j] = g[j] * sg + p[j] * wd
        else:
            for j in range(nb):
                gs[j] = g[j] * sg
        for j in range(nb):
            s[j] = s[j] + (gs[j] * gs[j]) * one
        for j in range(nb):
            p[j] = p[j] + (gs[j] / (math.sqrt(s[j]) + eps)) * nclr
'''


def _adagrad_kernel(dtype: str) -> hw.NativeKernel:
    params = (("param", "out", dtype), ("grad", "in", dtype), ("state_sum", "out", dtype),
              ("hp", "in", "float64"), ("gs", "scratch", dtype), ("l2", "int", None))
    src = _source("param, grad, state_sum, hp, gs, l2", _ADAGRAD_SCALARS, dtype,
                  _ADAGRAD_BLOCK)
    return hw.kernel(f"adagrad_{dtype}", params, src)


def adagrad(param: np.ndarray, grad: np.ndarray, state_sum: np.ndarray, *, clr: float,
            eps: float, weight_decay: float, maximize: bool) -> None:
    """One Adagrad update of ``param`` and its running sum of squares, in place
    (``clr``: the step's decayed learning rate)."""
    hp = np.array([-1.0 if maximize else 1.0, weight_decay, 1.0, eps, -clr])
    _run(_adagrad_kernel(hw.dname(param)),
         (param, grad, state_sum, hp, BLOCK, int(weight_decay != 0)), param.size, 4)


# ---- RMSprop ----------------------------------------------------------------------------

_RMSPROP_SCALARS = ["sg", "wd", "alpha", "oma", "eps", "mom", "nlr", "one", "mone"]
_RMSPROP_BLOCK = '''
        p = param[i0:i1]
        g = grad[i0:i1]
        sq = square_avg[i0:i1]
        if l2:
            for j in range(nb):
                gs[j] = g[j] * sg + p[j] * wd
        else:
            for j in range(nb):
                gs[j] = g[j] * sg
        for j in range(nb):
            sq[j] = sq[j] * alpha + (gs[j] * gs[j]) * oma
        if centered:
            ga = grad_avg[i0:i1]
            for j in range(nb):
                ga[j] = ga[j] * alpha + gs[j] * oma
            for j in range(nb):
                av[j] = math.sqrt(sq[j] + (ga[j] * ga[j]) * mone) + eps
        else:
            for j in range(nb):
                av[j] = math.sqrt(sq[j]) + eps
        if momentum:
            b = buf[i0:i1]
            for j in range(nb):
                b[j] = b[j] * mom + (gs[j] / av[j]) * one
            for j in range(nb):
                p[j] = p[j] + b[j] * nlr
        else:
            for j in range(nb):
                p[j] = p[j] + (gs[j] / av[j]) * nlr
'''


def _rmsprop_kernel(dtype: str) -> hw.NativeKernel:
    params = (("param", "out", dtype), ("grad", "in", dtype), ("square_avg", "out", dtype),
              ("grad_avg", "out", dtype), ("buf", "out", dtype), ("hp", "in", "float64"),
              ("gs", "scratch", dtype), ("av", "scratch", dtype), ("l2", "int", None),
              ("centered", "int", None), ("momentum", "int", None))
    src = _source("param, grad, square_avg, grad_avg, buf, hp, gs, av, l2, centered, momentum",
                  _RMSPROP_SCALARS, dtype, _RMSPROP_BLOCK)
    return hw.kernel(f"rmsprop_{dtype}", params, src)


def rmsprop(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray,
            grad_avg: np.ndarray | None, momentum_buffer: np.ndarray | None, *, lr: float,
            alpha: float, eps: float, weight_decay: float, momentum: float,
            maximize: bool) -> None:
    """One RMSprop update of ``param`` and its state, in place (``grad_avg`` given when
    centered, ``momentum_buffer`` when momentum > 0)."""
    hp = np.array([-1.0 if maximize else 1.0, weight_decay, alpha, 1 - alpha, eps, momentum,
                   -lr, 1.0, -1.0])
    dummy = _dummy(param.dtype)
    centered = grad_avg is not None
    mom = momentum_buffer is not None
    _run(_rmsprop_kernel(hw.dname(param)),
         (param, grad, square_avg, grad_avg if centered else dummy,
          momentum_buffer if mom else dummy, hp, BLOCK, BLOCK, int(weight_decay != 0),
          int(centered), int(mom)), param.size, 4 + centered + mom)

