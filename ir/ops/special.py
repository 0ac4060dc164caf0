"""Inverse and hyperbolic trigonometry and special functions (erfc, erfinv, lgamma, polygamma).

The trigonometric ones have scalar expressions (Numba's ``math`` functions) so kernels fuse
them. ``erfinv``, ``lgamma`` and ``polygamma`` have none: NumPy lacks them (SciPy is not a
dependency), so their implementations are vectorised here and run as NumPy inside a plan.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register
from .elementwise import _erf

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_SQRT_PI_OVER_2 = math.sqrt(math.pi) / 2.0


def _unary(name, impl, expr, grad, saves=(0,), **kw):
    return register(OpDef(name, "unary", impl, expr=expr, grad=grad, saves=saves,
                          dtype_rule="float", **kw))


def _per_element(fn):
    """A NumPy function from a float64 scalar function (computed in float64, returned in the
    input's float dtype)."""
    uf = np.frompyfunc(fn, 1, 1)

    def impl(x):
        x = np.asarray(x)
        out = uf(x.astype(np.float64))
        return np.asarray(out, dtype=np.float64).astype(x.dtype, copy=False).reshape(x.shape)
    return impl


def _erfc1(v: float) -> float:
    return math.erfc(v)


def _lgamma1(v: float) -> float:
    try:
        return math.lgamma(v)
    except ValueError:  # the poles 0, -1, -2, ...
        return math.inf


# ---- polygamma -----------------------------------------------------------------------------
_B2K = (1.0 / 6, -1.0 / 30, 1.0 / 42, -1.0 / 30, 5.0 / 66, -691.0 / 2730, 7.0 / 6)


def _polygamma_impl(x, n):
    """psi^(n)(x): shift up with the recurrence until x >= 15 + n, then the asymptotic series.
    digamma (n = 0) reflects negative arguments; its poles give -inf at 0 and nan at the
    negative integers, as torch."""
    n = int(n)
    xd = np.asarray(x, np.float64)
    shape, dtype = xd.shape, np.asarray(x).dtype
    xd = xd.reshape(-1).copy()
    out = np.zeros_like(xd)
    with np.errstate(all="ignore"):
        refl = np.zeros(xd.shape, bool)
        if n == 0:
            refl = xd < 0.5
            cot = np.where(refl, math.pi / np.tan(math.pi * np.where(refl, xd, 0.25)), 0.0)
            xd = np.where(refl, 1.0 - xd, xd)
        y = xd.copy()
        acc = np.zeros_like(y)
        fact = math.factorial(n)
        sgn = -1.0 if n % 2 == 0 else 1.0  # (-1)^(n+1)
        lim = 15.0 + n
        finite = np.isfinite(y)
        while True:
            m = (y < lim) & finite
            if not m.any():
                break
            term = 1.0 / y[m] if n == 0 else fact / y[m] ** (n + 1)
            acc[m] += term
            y[m] += 1.0
        if n == 0:
            series = np.log(y) - 0.5 / y
            y2 = 1.0 / (y * y)
            p = y2
            for k, b in enumerate(_B2K, start=1):
                series -= b / (2 * k) * p
                p = p * y2
            out = series - acc
            out = np.where(refl, out - cot, out)
            orig = np.where(refl, 1.0 - xd, xd)
            out = np.where(orig == 0, -np.inf, out)
            out = np.where((orig < 0) & (orig == np.floor(orig)), np.nan, out)
            out = np.where(orig == np.inf, np.inf, out)
        else:
            series = math.factorial(n - 1) / y ** n + fact / (2.0 * y ** (n + 1))
            for k, b in enumerate(_B2K, start=1):
                series += b * math.factorial(2 * k + n - 1) / math.factorial(2 * k) / \
                    y ** (2 * k + n)
            out = sgn * (series + acc)
            out = np.where(xd == np.inf, 0.0, out)
            out = np.where((xd <= 0) & (xd == np.floor(xd)), np.inf, out)
    return out.reshape(shape).astype(dtype if dtype.kind == "f" else np.float64, copy=False)


# ---- erfinv --------------------------------------------------------------------------------
def _erfinv_impl(y):
    """Giles' single-precision approximation, then Newton steps in float64 (on erf for
    |y| < 0.5, on erfc near +-1 so the tail keeps its relative accuracy)."""
    yd = np.asarray(y, np.float64)
    dtype = np.asarray(y).dtype
    a = np.abs(yd).reshape(-1)
    with np.errstate(all="ignore"):
        inside = a < 1.0
        ai = np.where(inside, a, 0.0)
        w = -np.log((1.0 - ai) * (1.0 + ai))
        w1 = w - 2.5
        p1 = 2.81022636e-08
        for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                  -0.00125372503, -0.00417768164, 0.246640727, 1.50140941):
            p1 = c + p1 * w1
        w2 = np.sqrt(w) - 3.0
        p2 = -0.000200214257
        for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                  -0.0076224613, 0.00943887047, 1.00167406, 2.83297682):
            p2 = c + p2 * w2
        x = np.where(w < 5.0, p1, p2) * ai
        erfc = _per_element(_erfc1)
        for _ in range(3):
            small = ai < 0.5
            f = np.where(small, _erf(x) - ai, (1.0 - ai) - erfc(x))
            d = _TWO_OVER_SQRT_PI * np.exp(-x * x)
            x = np.where(d > 0, x - f / np.where(d > 0, d, 1.0), x)
        x = np.where(a == 1.0, np.inf, x)
        x = np.where((a > 1.0) | np.isnan(a), np.nan, x)
    out = np.copysign(x, yd.reshape(-1)).reshape(yd.shape)
    return out.astype(dtype if dtype.kind == "f" else np.float64, copy=False)


def _sq(b, x):
    return b.mul(x, x)


_unary("asin", np.arcsin, "asin({0})",
       lambda b, g, xs, out: (b.mul(g, b.rsqrt(b.rsub(_sq(b, xs[0]), 1.0))),))
_unary("acos", np.arccos, "acos({0})",
       lambda b, g, xs, out: (b.neg(b.mul(g, b.rsqrt(b.rsub(_sq(b, xs[0]), 1.0)))),))
_unary("atan", np.arctan, "atan({0})",
       lambda b, g, xs, out: (b.div(g, b.add(_sq(b, xs[0]), 1.0)),))
_unary("sinh", np.sinh, "sinh({0})", lambda b, g, xs, out: (b.mul(g, b.cosh(xs[0])),))
_unary("cosh", np.cosh, "cosh({0})", lambda b, g, xs, out: (b.mul(g, b.sinh(xs[0])),))
_unary("asinh", np.arcsinh, "asinh({0})",
       lambda b, g, xs, out: (b.mul(g, b.rsqrt(b.add(_sq(b, xs[0]), 1.0))),))
_unary("acosh", np.arccosh, "acosh({0})",
       lambda b, g, xs, out: (b.mul(g, b.rsqrt(b.sub(_sq(b, xs[0]), 1.0))),))
_unary("atanh", np.arctanh, "atanh({0})",
       lambda b, g, xs, out: (b.div(g, b.rsub(_sq(b, xs[0]), 1.0)),))
_unary("erfc", _per_element(_erfc1), "erfc({0})",
       lambda b, g, xs, out: (b.mul(g, b.mul(b.exp(b.neg(_sq(b, xs[0]))),
                                             -_TWO_OVER_SQRT_PI)),))
# No scalar expressions (Numba has no erfinv, and lgamma/polygamma need care at the poles):
# registered as "other" ops, so compiled plans run these NumPy implementations as they are.
def _float_out(fn):
    """fn computing in the input's float dtype; integer inputs give the default float dtype
    (as an elementwise op with the 'float' dtype rule would)."""
    def impl(x, **attrs):
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(dt.get_default_dtype().np)
        return fn(x, **attrs)
    impl.__name__ = getattr(fn, "__name__", "impl")
    return impl


def _float_infer(specs, attrs):
    shape, d = specs[0]
    return tuple(shape), d if d.is_floating_point else dt.get_default_dtype()


def _other(name, impl, grad, saves=(0,), **kw):
    return register(OpDef(name, "other", _float_out(impl), infer=_float_infer, grad=grad,
                          saves=saves, **kw))


_other("erfinv", _erfinv_impl,
       lambda b, g, xs, out: (b.mul(g, b.mul(b.exp(_sq(b, out)), _SQRT_PI_OVER_2)),),
       saves=(-1,))
_other("lgamma", _per_element(_lgamma1),
       lambda b, g, xs, out: (b.mul(g, b.polygamma(xs[0], n=0)),))
_other("polygamma", _polygamma_impl, attrs=("n",),
       grad=lambda b, g, xs, out, n: (b.mul(g, b.polygamma(xs[0], n=n + 1)),),
       backward_name="PolygammaBackward0")
