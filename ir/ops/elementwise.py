"""Elementwise ops: NumPy impl, scalar expression and gradient, side by side.

Expressions use the names in ``kernels`` math namespace (``exp``, ``tanh``,
``where``...), operands ``{0}``, ``{1}``.
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import OpDef, register

LN2 = math.log(2.0)
LN10 = math.log(10.0)
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _unary(name, impl, expr, grad=None, saves=(), dtype_rule="same", **kw):
    return register(OpDef(name, "unary", impl, expr=expr, grad=grad, saves=saves,
                          dtype_rule=dtype_rule, **kw))


def _binary(name, impl, expr, grad=None, saves=(), dtype_rule="promote", **kw):
    return register(OpDef(name, "binary", impl, expr=expr, grad=grad, saves=saves,
                          dtype_rule=dtype_rule, **kw))


def _zero_grad(b, g, xs, out, **_):
    return tuple(b.zeros_like(g) if not isinstance(x, (int, float)) else None for x in xs)


def _sigmoid(x):
    # stable for large |x|; computes in the input's float dtype
    with np.errstate(over="ignore"):
        return np.exp(-np.logaddexp(np.zeros((), x.dtype), -x)).astype(x.dtype, copy=False)


_SQRTPI = math.sqrt(math.pi)


def _erf_terms(tmax: float, eps: float) -> int:
    n, term = 0, 1.0
    while term > eps and n < 60:
        n += 1
        term *= tmax / (2 * n + 1)
    return n


def _erf(x):
    """Vectorised erf, accurate to ~1 ulp in float64.

    |x| < 2: erf(x) = 2x/sqrt(pi) e^{-x^2} sum_n (2x^2)^n / (2n+1)!! (all terms
    positive, so no cancellation; the number of terms adapts to max |x|).
    |x| >= 2: erfc from its continued fraction, evaluated bottom-up.
    """
    eps = 1e-17 if x.dtype == np.float64 else 1e-9
    shape = x.shape
    xd = x.astype(np.float64).reshape(-1)
    small = np.abs(xd) < 2.0
    all_small = bool(small.all())
    out = xd if all_small else np.empty_like(xd)
    xs = xd if all_small else xd[small]
    if xs.size:
        t = xs * xs
        t2 = 2.0 * t
        p = np.ones_like(xs)
        for n in range(_erf_terms(float(t2.max()), eps), 0, -1):
            p *= t2
            p *= 1.0 / (2 * n + 1)
            p += 1.0
        np.negative(t, out=t)
        np.exp(t, out=t)
        p *= t
        p *= xs
        p *= TWO_OVER_SQRT_PI
        if all_small:
            return p.astype(x.dtype, copy=False).reshape(shape)
        out[small] = p
    big = ~small
    if big.any():
        xb = np.abs(xd[big])
        f = xb.copy()
        for k in range(60 if eps < 1e-12 else 30, 0, -1):
            f = xb + (k / 2.0) / f
        erfc = np.exp(-xb * xb) / _SQRTPI / f
        out[big] = np.copysign(1.0 - erfc, xd[big])
    return out.astype(x.dtype, copy=False).reshape(shape)


def _relu(x):
    return np.maximum(x, x.dtype.type(0))


def _clamp(x, min=None, max=None):
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    out = x
    if min is not None:
        out = np.maximum(out, x.dtype.type(min))
    if max is not None:
        out = np.minimum(out, x.dtype.type(max))
    return out if out is not x else x.copy()


def _clamp_grad(b, g, xs, out, min=None, max=None):
    (x,) = xs
    mask = None
    if min is not None:
        mask = b.ge(x, min)
    if max is not None:
        m2 = b.le(x, max)
        mask = m2 if mask is None else b.logical_and(mask, m2)
    return (b.where(mask, g, 0.0),)


# ---- unary ---------------------------------------------------------------
_unary("neg", np.negative, "(-{0})", lambda b, g, xs, out: (b.neg(g),))
_unary("abs", np.abs, "abs({0})", lambda b, g, xs, out: (b.mul(g, b.sign(xs[0])),), saves=(0,))
_unary("exp", np.exp, "exp({0})", lambda b, g, xs, out: (b.mul(g, out),), saves=(-1,),
       dtype_rule="float")
_unary("log", np.log, "log({0})", lambda b, g, xs, out: (b.div(g, xs[0]),), saves=(0,),
       dtype_rule="float")
_unary("log2", np.log2, "log2({0})", lambda b, g, xs, out: (b.div(g, b.mul(xs[0], LN2)),),
       saves=(0,), dtype_rule="float")
_unary("log10", np.log10, "log10({0})", lambda b, g, xs, out: (b.div(g, b.mul(xs[0], LN10)),),
       saves=(0,), dtype_rule="float")
_unary("log1p", np.log1p, "log1p({0})", lambda b, g, xs, out: (b.div(g, b.add(xs[0], 1.0)),),
       saves=(0,), dtype_rule="float")
_unary("expm1", np.expm1, "expm1({0})", lambda b, g, xs, out: (b.mul(g, b.add(out, 1.0)),),
       saves=(-1,), dtype_rule="float")
_unary("sqrt", np.sqrt, "sqrt({0})", lambda b, g, xs, out: (b.div(g, b.mul(out, 2.0)),),
       saves=(-1,), dtype_rule="float")
_unary("rsqrt", lambda x: np.reciprocal(np.sqrt(x)), "(1.0 / sqrt({0}))",
       lambda b, g, xs, out: (b.mul(b.mul(g, -0.5), b.mul(out, b.mul(out, out))),),
       saves=(-1,), dtype_rule="float")
_unary("reciprocal", np.reciprocal, "(1.0 / {0})",
       lambda b, g, xs, out: (b.neg(b.mul(g, b.mul(out, out))),), saves=(-1,),
       dtype_rule="float")
_unary("sin", np.sin, "sin({0})", lambda b, g, xs, out: (b.mul(g, b.cos(xs[0])),), saves=(0,),
       dtype_rule="float")
_unary("cos", np.cos, "cos({0})", lambda b, g, xs, out: (b.neg(b.mul(g, b.sin(xs[0]))),),
       saves=(0,), dtype_rule="float")
_unary("tan", np.tan, "tan({0})",
       lambda b, g, xs, out: (b.mul(g, b.add(b.mul(out, out), 1.0)),), saves=(-1,),
       dtype_rule="float")
_unary("tanh", np.tanh, "tanh({0})",
       lambda b, g, xs, out: (b.mul(g, b.rsub(b.mul(out, out), 1.0)),), saves=(-1,),
       dtype_rule="float")
_unary("sigmoid", _sigmoid, "sigmoid({0})",
       lambda b, g, xs, out: (b.mul(g, b.mul(out, b.rsub(out, 1.0))),), saves=(-1,),
       dtype_rule="float")
_unary("erf", _erf, "erf({0})",
       lambda b, g, xs, out: (b.mul(g, b.mul(b.exp(b.neg(b.mul(xs[0], xs[0]))),
                                              TWO_OVER_SQRT_PI)),),
       saves=(0,), dtype_rule="float")
_unary("relu", _relu, "relu({0})",
       lambda b, g, xs, out: (b.where(b.gt(out, 0), g, 0.0),), saves=(-1,))
_unary("sign", np.sign, "sign({0})", _zero_grad)
_unary("floor", np.floor, "floor({0})", _zero_grad)
_unary("ceil", np.ceil, "ceil({0})", _zero_grad)
_unary("round", np.round, "rint({0})", _zero_grad)
_unary("trunc", np.trunc, "trunc({0})", _zero_grad)
_unary("logical_not", np.logical_not, "(not {0})", dtype_rule="bool")
_unary("bitwise_not", np.invert, "(~{0})", dtype_rule="int_only")
_unary("isnan", np.isnan, "isnan({0})", dtype_rule="bool")
_unary("isinf", np.isinf, "isinf({0})", dtype_rule="bool")
_unary("isfinite", np.isfinite, "isfinite({0})", dtype_rule="bool")
register(OpDef("clamp", "unary", _clamp, expr="clamp({0}, {min}, {max})", grad=_clamp_grad,
               saves=(0,), dtype_rule="same", attrs=("min", "max")))
register(OpDef("cast", "unary", lambda x, dtype: x.astype(dtype.np),
               expr="cast({0}, {dtype})", grad=lambda b, g, xs, out, dtype: (g,),
               dtype_rule="cast", attrs=("dtype",), backward_name="ToCopyBackward0",
               infer=lambda specs, attrs: (tuple(specs[0][0]), attrs["dtype"])))


# ---- binary --------------------------------------------------------------
def _div_grad(b, g, xs, out):
    x, y = xs
    gx = b.div(g, y)
    gy = None if isinstance(y, (int, float)) else b.neg(b.div(b.mul(g, x), b.mul(y, y)))
    return gx, gy


def _pow_grad(b, g, xs, out):
    x, y = xs
    if isinstance(y, (int, float)):
        gx = None if y == 0 else b.mul(b.mul(g, float(y)), b.pow(x, float(y) - 1.0))
        return gx, None
    gx = None
    if not isinstance(x, (int, float)):
        gx = b.where(b.eq(y, 0.0), 0.0, b.mul(b.mul(g, y), b.pow(x, b.sub(y, 1.0))))
    base_log = b.log(x) if not isinstance(x, (int, float)) else math.log(x) if x > 0 else None
    if base_log is None:
        raise RuntimeError("pow: gradient with respect to the exponent needs a positive base")
    gy = b.mul(b.mul(g, out), base_log)
    if not isinstance(x, (int, float)):
        gy = b.where(b.logical_and(b.eq(x, 0.0), b.ge(y, 0.0)), 0.0, gy)
    return gx, gy


def _max_grad(b, g, xs, out, less=False):
    x, y = xs
    w = b.add(b.lt(x, y) if less else b.gt(x, y), b.mul(b.eq(x, y), 0.5))
    gx = b.mul(g, w)
    return gx, b.sub(g, gx)


def _remainder_grad(b, g, xs, out):
    x, y = xs
    return g, (None if isinstance(y, (int, float)) else b.neg(b.mul(g, b.floor_divide(x, y))))


_binary("add", np.add, "({0} + {1})", lambda b, g, xs, out: (g, g))
_binary("sub", np.subtract, "({0} - {1})", lambda b, g, xs, out: (g, b.neg(g)))
_binary("rsub", lambda x, y: np.subtract(y, x), "({1} - {0})",
        lambda b, g, xs, out: (b.neg(g), g), backward_name="RsubBackward1")
_binary("mul", np.multiply, "({0} * {1})",
        lambda b, g, xs, out: (b.mul(g, xs[1]), b.mul(g, xs[0])), saves=(0, 1))
_binary("div", np.true_divide, "({0} / {1})", _div_grad, saves=(0, 1), dtype_rule="float")
_binary("pow", np.power, "({0} ** {1})", _pow_grad, saves=(0, 1, -1))
def _integer_division(ufunc):
    """``ufunc`` that raises for an integer (or bool) zero divisor, as torch does;
    NumPy would return 0. Generated kernels cannot raise, so codegen leaves a
    run-time integer divisor to this implementation."""
    def impl(x, y):
        if getattr(y, "dtype", np.dtype(type(y))).kind in "iub" and \
                getattr(x, "dtype", np.dtype(type(x))).kind in "iub" and not np.all(y):
            raise RuntimeError("ZeroDivisionError")
        return ufunc(x, y)
    impl.__name__ = ufunc.__name__
    return impl


_binary("floor_divide", _integer_division(np.floor_divide), "floordiv({0}, {1})", _zero_grad)
_binary("remainder", _integer_division(np.remainder), "remainder({0}, {1})", _remainder_grad,
        saves=(0, 1))
_binary("maximum", np.maximum, "maximum({0}, {1})", _max_grad, saves=(0, 1))
_binary("minimum", np.minimum, "minimum({0}, {1})",
        lambda b, g, xs, out: _max_grad(b, g, xs, out, less=True), saves=(0, 1))
_binary("atan2", np.arctan2, "atan2({0}, {1})",
        lambda b, g, xs, out: (
            b.div(b.mul(g, xs[1]), b.add(b.mul(xs[0], xs[0]), b.mul(xs[1], xs[1]))),
            b.div(b.neg(b.mul(g, xs[0])), b.add(b.mul(xs[0], xs[0]), b.mul(xs[1], xs[1])))),
        saves=(0, 1), dtype_rule="float")
for _name, _f, _e in (("eq", np.equal, "=="), ("ne", np.not_equal, "!="), ("lt", np.less, "<"),
                      ("le", np.less_equal, "<="), ("gt", np.greater, ">"),
                      ("ge", np.greater_equal, ">=")):
    _binary(_name, _f, "({0} " + _e + " {1})", dtype_rule="bool")
_binary("logical_and", np.logical_and, "({0} and {1})", dtype_rule="bool")
_binary("logical_or", np.logical_or, "({0} or {1})", dtype_rule="bool")
_binary("logical_xor", np.logical_xor, "({0} != {1})", dtype_rule="bool")
_binary("bitwise_and", np.bitwise_and, "({0} & {1})", dtype_rule="int_only")
_binary("bitwise_or", np.bitwise_or, "({0} | {1})", dtype_rule="int_only")
_binary("bitwise_xor", np.bitwise_xor, "({0} ^ {1})", dtype_rule="int_only")


# ---- ternary -------------------------------------------------------------
def _where_infer(specs, attrs):
    from ..dtypes import result_type
    from ..shapes import broadcast_shapes
    shapes = [s[0] for s in specs if isinstance(s, tuple)]
    d = result_type(*[(s[1], len(s[0])) if isinstance(s, tuple) else s for s in specs[1:]])
    return broadcast_shapes(*shapes, op="where"), d


register(OpDef("where", "ternary", lambda c, x, y: np.where(c, x, y),
               expr="({1} if {0} else {2})", infer=_where_infer, saves=(0,),
               dtype_rule="where", nondiff_inputs=(0,),
               grad=lambda b, g, xs, out: (None, b.where(xs[0], g, 0.0),
                                           b.where(xs[0], 0.0, g))))
