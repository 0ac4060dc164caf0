"""Device versions of the scalar helpers generated bodies call by name.

``kernels.cpu.codegen``'s body emitter writes calls such as ``exp_f32(x)`` or
``floordiv_f64(a, b)`` (on the CPU: ``kernels.cpu.fastmath``, polynomial code LLVM
vectorises). On a GPU the hardware's own ``expf``/``tanhf``/``erff`` (libdevice, which
numba.cuda maps ``math.*`` to) are the fast path, so these are thin device functions
over ``math`` with NumPy's semantics kept where they differ from C's (floor division and
remainder by NumPy's ``npy_divmod``; integer division by zero gives 0). float32 helpers
return float32 so the simulator (which runs them as Python) computes in the same dtype
as the device.
"""
from __future__ import annotations

import math

import numpy as np

from kernels.cpu.fastmath import divmod_functions

from .views import cuda_module

cuda = cuda_module()

__all__ = ["exp_f32", "expm1_f32", "log_f32", "log1p_f32", "log2_f32", "log10_f32",
           "tanh_f32", "sigmoid_f32", "erf_f32", "gelu_grad_f32", "sigmoid_f64",
           "floordiv_f32",
           "floordiv_f64", "remainder_f32", "remainder_f64", "floordiv_int",
           "remainder_int"]

_f32 = np.float32
_ONE32 = np.float32(1.0)
_ZERO32 = np.float32(0.0)


def _dev(fn):
    return cuda.jit(device=True, inline=True)(fn)


@_dev
def exp_f32(x):
    return _f32(math.exp(x))


@_dev
def expm1_f32(x):
    return _f32(math.expm1(x))


@_dev
def log_f32(x):
    return _f32(math.log(x)) if x > _ZERO32 else _f32(np.log(x))


@_dev
def log1p_f32(x):
    return _f32(np.log1p(x))


@_dev
def log2_f32(x):
    return _f32(np.log2(x))


@_dev
def log10_f32(x):
    return _f32(np.log10(x))


@_dev
def tanh_f32(x):
    return _f32(math.tanh(x))


@_dev
def sigmoid_f32(x):
    # exp(-|x|) never overflows, so tiny results for x < -87 stay right
    e = _f32(math.exp(-abs(x)))
    r = _ONE32 / (_ONE32 + e)
    return r if x >= _ZERO32 else e * r


@_dev
def erf_f32(x):
    return _f32(math.erf(x))


_SQRT1_2 = np.float32(0.7071067811865476)
_INV_SQRT_2PI = np.float32(0.3989422804014327)
_HALF32 = np.float32(0.5)


@_dev
def gelu_grad_f32(x):
    # GELU's derivative Phi(x) + x phi(x) (the CPU's shares one exp; here libdevice's)
    u = x * _SQRT1_2
    return _f32(_HALF32 * (_ONE32 + _f32(math.erf(u)))
                + x * _f32(math.exp(-(u * u))) * _INV_SQRT_2PI)


@_dev
def sigmoid_f64(x):
    return 1.0 / (1.0 + math.exp(-x))


def _make_divmod(ftype):
    return tuple(_dev(f) for f in divmod_functions(ftype))


floordiv_f32, remainder_f32 = _make_divmod(np.float32)
floordiv_f64, remainder_f64 = _make_divmod(np.float64)


@_dev
def floordiv_int(a, b):
    """NumPy's integer floor_divide: floors; a zero divisor gives 0."""
    zero = a - a
    if b == zero:
        return zero
    if b == zero - 1:
        return zero - a
    q = a // b
    return q


@_dev
def remainder_int(a, b):
    """NumPy's integer remainder: the sign of the divisor; a zero divisor gives 0."""
    zero = a - a
    if b == zero or b == zero - 1:
        return zero
    return a % b
