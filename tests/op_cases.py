"""Sample inputs, attributes and independent NumPy references for every registered op.

``CASES`` maps every op name in ``ir.registry.REGISTRY`` to a list of ``Case``s;
``tests/ir/test_registry_coverage.py`` checks that its keys are exactly the
registry, so an op registered without cases fails by name. The references are
written here, in plain NumPy (loops where that is clearest), and never call an
op's own ``impl``. Backward ops are checked against a finite-difference VJP of
their forward op's reference (exact up to rounding for the linear ones).

Not a test module (no ``test_`` prefix): test files load it by path.
"""
from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ir import dtypes as _dt

from ir import dtypes as dt


# ---- inputs ------------------------------------------------------------------------------------
class Gen:
    """Deterministic sample arrays (float32 unless a dtype is given)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def f(self, *shape, lo=-2.0, hi=2.0, away=0.0, dtype=np.float32):
        """Uniform floats; ``away`` keeps |x| >= away (off kinks at 0)."""
        a = self.rng.uniform(lo, hi, shape)
        if away:
            a = np.where(np.abs(a) < away, np.where(a < 0, -away, away), a)
        return a.astype(dtype)

    def pos(self, *shape, lo=0.5, hi=2.0, dtype=np.float32):
        return self.f(*shape, lo=lo, hi=hi, dtype=dtype)

    def distinct(self, *shape, lo=-2.0, hi=2.0, dtype=np.float32):
        """No ties: a shuffled grid with gaps of (hi - lo) / n (for max/min/sort-like ops)."""
        n = int(np.prod(shape))
        a = self.rng.permutation(np.linspace(lo, hi, n)).reshape(shape)
        return a.astype(dtype)

    def frac(self, *shape, dtype=np.float32):
        """Integers plus a fraction in [0.15, 0.35] or [0.65, 0.85]: away from integers and
        halves (floor/ceil/round/trunc jump there)."""
        k = self.rng.integers(-4, 4, shape)
        fr = self.rng.uniform(0.15, 0.35, shape) + 0.5 * self.rng.integers(0, 2, shape)
        return (k + fr).astype(dtype)

    def i(self, *shape, lo=-5, hi=6, dtype=np.int64):
        return self.rng.integers(lo, hi, shape).astype(dtype)

    def b(self, *shape):
        return self.rng.integers(0, 2, shape).astype(bool)


class Sample(list):
    """Case arguments plus ``ctx``: data a reference needs that is not an op input (the
    forward inputs behind a backward op's saved activations)."""

    def __init__(self, args, **ctx) -> None:
        super().__init__(args)
        self.ctx = ctx


@dataclass
class Case:
    """One call of an op: ``make(gen)`` gives its positional arguments (NumPy arrays become
    Tensors, Python numbers stay numbers), ``ref(*args, **attrs)`` the expected result.

    out_dtype: the expected result dtype name (None: torch's promotion of the arguments,
    see ``expected_dtype``). grad: use this case, in float64, for the finite-difference
    gradient check (only float arrays, minus the op's ``nondiff_inputs``, require grad;
    ``grad_args`` narrows that). grad_out: maps the op's output to what gradcheck
    differentiates (a tuple for several outputs). gradcheck: extra gradcheck arguments.
    tol: (rtol, atol) for the eager-vs-reference comparison (default by dtype).
    """

    make: Callable
    ref: Callable
    attrs: dict = field(default_factory=dict)
    out_dtype: str | None = None
    grad: bool = True
    grad_args: tuple | None = None
    grad_out: Callable | None = None
    gradcheck: dict = field(default_factory=dict)
    tol: tuple | None = None
    label: str = ""


def W(a):
    """Widen for a reference: float arrays to float64, int arrays to int64."""
    if isinstance(a, np.ndarray):
        if a.dtype.kind == "f":
            return a.astype(np.float64)
        if a.dtype.kind in "iu":
            return a.astype(np.int64)
    return a


def expected_dtype(args) -> str:
    """torch's result type: the highest category (bool < int < float) among the arguments,
    taken from the first group that has it: tensors with dimensions, then 0-d tensors, then
    Python numbers (a Python float is the default float32, an int int64)."""
    def cat(d):
        return 2 if d.kind == "f" else 1 if d.kind in "iu" else 0

    def py(a):
        return np.dtype(np.bool_ if isinstance(a, bool) else np.int64 if isinstance(a, int)
                        else np.float32)
    groups = [[a.dtype for a in args if isinstance(a, np.ndarray) and a.ndim],
              [a.dtype for a in args if isinstance(a, np.ndarray) and not a.ndim],
              [py(a) for a in args if isinstance(a, (bool, int, float))]]
    top = max(cat(d) for grp in groups for d in grp)
    for grp in groups:
        found = [d for d in grp if cat(d) == top]
        if found:
            return np.result_type(*found).name
    raise AssertionError("unreachable")


def vjp(f, args, i, g, eps=1e-6):
    """sum(g * df/dargs[i]) by central differences in float64 (exact up to rounding when f
    is linear in args[i]; pass eps=1.0 there)."""
    args = [W(a) for a in args]
    x = args[i].copy()
    args[i] = x
    flat = x.reshape(-1)
    g = np.asarray(W(g), np.float64)
    res = np.zeros(x.size)
    for k in range(x.size):
        orig = flat[k]
        flat[k] = orig + eps
        plus = np.asarray(f(*args), np.float64)
        flat[k] = orig - eps
        minus = np.asarray(f(*args), np.float64)
        flat[k] = orig
        res[k] = np.sum(g * (plus - minus)) / (2 * eps)
    return res.reshape(x.shape)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


_erf = np.vectorize(math.erf, otypes=[np.float64])
FD_TOL = (1e-5, 1e-6)  # references through finite differences


# ---- elementwise ---------------------------------------------------------------------------------
CASES: dict[str, list[Case]] = {}


def _add(name, *cases):
    assert name not in CASES, name
    CASES[name] = list(cases)


def _unary(name, ref, gen=lambda g: g.f(3, 4), int_gen=None, int_dtype=None, grad=True, **kw):
    """A float32 case, plus an int32 case when ``int_gen`` is given (the result is
    ``int_dtype``: float32 for ops that compute in the default float dtype)."""
    cases = [Case(lambda g: [gen(g)], lambda x: ref(W(x)), grad=grad, **kw),
             Case(lambda g: [np.asarray(gen(g)[1, 2])], lambda x: ref(W(x)), grad=grad,
                  label="zero_d", **kw),
             Case(lambda g: [gen(g)[:0]], lambda x: ref(W(x)), grad=False, label="empty")]
    if int_gen is not None:
        cases.append(Case(lambda g: [int_gen(g)], lambda x: ref(W(x)), out_dtype=int_dtype,
                          grad=False, label="int"))
    _add(name, *cases)


def _ints(g):
    return g.i(3, 4, lo=1, hi=6, dtype=np.int32)


def _sints(g):
    return g.i(3, 4, dtype=np.int32)



_unary("neg", lambda x: -x, int_gen=_sints, int_dtype="int32")
_unary("abs", np.abs, lambda g: g.f(3, 4, away=0.1), int_gen=_sints, int_dtype="int32")
_unary("exp", np.exp, int_gen=_ints, int_dtype="float32")
_unary("log", np.log, lambda g: g.pos(3, 4), int_gen=_ints, int_dtype="float32")
_unary("log2", lambda x: np.log(x) / np.log(2.0), lambda g: g.pos(3, 4), int_gen=_ints,
       int_dtype="float32")
_unary("log10", lambda x: np.log(x) / np.log(10.0), lambda g: g.pos(3, 4), int_gen=_ints,
       int_dtype="float32")
_unary("log1p", lambda x: np.log(1.0 + x), lambda g: g.f(3, 4, lo=-0.5, hi=2.0),
       int_gen=_ints, int_dtype="float32")
_unary("expm1", lambda x: np.exp(x) - 1.0, int_gen=_ints, int_dtype="float32")
_unary("sqrt", lambda x: x ** 0.5, lambda g: g.pos(3, 4), int_gen=_ints, int_dtype="float32")
_unary("rsqrt", lambda x: x ** -0.5, lambda g: g.pos(3, 4), int_gen=_ints,
       int_dtype="float32")
_unary("reciprocal", lambda x: 1.0 / x, lambda g: g.f(3, 4, away=0.3), int_gen=_ints,
       int_dtype="float32")
_unary("sin", np.sin, int_gen=_ints, int_dtype="float32")
_unary("cos", np.cos, int_gen=_ints, int_dtype="float32")
_unary("tan", np.tan, lambda g: g.f(3, 4, lo=-1.2, hi=1.2), int_gen=_ints, int_dtype="float32")
_unary("tanh", lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1), int_gen=_ints,
       int_dtype="float32")
_unary("sigmoid", _sig, lambda g: g.f(3, 4, lo=-6, hi=6), int_gen=_ints, int_dtype="float32")
_unary("erf", _erf, int_gen=_ints, int_dtype="float32")
_unary("relu", lambda x: np.where(x > 0, x, 0), lambda g: g.f(3, 4, away=0.1), int_gen=_sints,
       int_dtype="int32")
_unary("sign", lambda x: (x > 0).astype(np.int64) - (x < 0), lambda g: g.f(3, 4, away=0.1),
       int_gen=_sints, int_dtype="int32")
for _n, _f in (("floor", np.floor), ("ceil", np.ceil), ("trunc", np.trunc),
               ("round", lambda x: np.floor(x + 0.5))):  # frac() has no halves
    _unary(_n, _f, lambda g: g.frac(3, 4), int_gen=_sints, int_dtype="int32")
def _round_half_even(x):
    r = np.floor(x + 0.5)
    return np.where((r - x == 0.5) & (r % 2 != 0), r - 1, r)


CASES["round"].append(Case(lambda g: [np.array([[-2.5, -1.5, -0.5, 0.5], [1.5, 2.5, 3.5, -3.49]],
                                                np.float32)],
                           lambda x: _round_half_even(W(x)), grad=False, label="halves"))
_NANS = np.array([[np.nan, 1.0, -2.0, np.nan], [0.5, np.nan, 3.0, -1.0]], np.float32)


_add("logical_not",
     Case(lambda g: [g.b(3, 4)], lambda x: ~x, out_dtype="bool"),
     Case(lambda g: [g.i(3, 4, lo=-1, hi=2).astype(np.float32)], lambda x: x == 0,
          out_dtype="bool", label="float"))
_add("bitwise_not",
     Case(lambda g: [g.i(3, 4, dtype=np.int32)], lambda x: -x - 1),
     Case(lambda g: [g.b(3, 4)], lambda x: ~x, label="bool"))
_SPECIAL = np.array([[0.0, 1.5, np.nan, np.inf], [-np.inf, -2.0, np.nan, 3e38]], np.float32)
_add("isnan", Case(lambda g: [_SPECIAL.copy()], lambda x: x != x, out_dtype="bool"),
     Case(lambda g: [g.i(2, 3)], lambda x: np.zeros(x.shape, bool), out_dtype="bool",
          label="int"))
_add("isinf", Case(lambda g: [_SPECIAL.copy()], lambda x: np.abs(x) == np.inf,
                   out_dtype="bool"))
_add("isfinite", Case(lambda g: [_SPECIAL.copy()],
                      lambda x: (x == x) & (np.abs(x) != np.inf), out_dtype="bool"))


def _clamp_ref(x, min=None, max=None):  # noqa: A002
    if min is not None:
        x = np.where(x < min, min, x)
    if max is not None:
        x = np.where(x > max, max, x)
    return x


_add("clamp",
     Case(lambda g: [g.f(3, 4, away=0.05)], _clamp_ref, {"min": -0.5, "max": 0.75}),
     Case(lambda g: [g.f(3, 4, away=0.05)], _clamp_ref, {"min": -0.5, "max": None},
          label="min"),
     Case(lambda g: [g.f(3, 4, away=0.05)], _clamp_ref, {"min": None, "max": 0.25},
          label="max"),
     Case(lambda g: [g.i(3, 4, dtype=np.int32)], _clamp_ref, {"min": -2, "max": 3},
          label="int"),
     Case(lambda g: [_NANS.copy()], _clamp_ref, {"min": -0.5, "max": 0.75}, grad=False,
          label="nan"))
_add("cast",
     Case(lambda g: [g.f(3, 4)], lambda x, dtype: x, {"dtype": dt.float64},
          out_dtype="float64"),
     Case(lambda g: [g.f(3, 4, dtype=np.float64)], lambda x, dtype: x, {"dtype": dt.float32},
          out_dtype="float32", gradcheck={"eps": 1e-3, "atol": 1e-3}, label="narrow"),
     Case(lambda g: [g.f(3, 4, lo=-9, hi=9)], lambda x, dtype: np.trunc(x), {"dtype": dt.int32},
          out_dtype="int32", grad=False, label="to_int"),
     Case(lambda g: [g.i(3, 4, lo=-1, hi=2).astype(np.float32)], lambda x, dtype: x != 0,
          {"dtype": dt.bool_}, out_dtype="bool", grad=False, label="to_bool"),
     Case(lambda g: [g.i(3, 4)], lambda x, dtype: x.astype(np.float64), {"dtype": dt.float32},
          out_dtype="float32", grad=False, label="from_int"))


def _binary(name, ref, gx=lambda g: g.f(3, 4), gy=lambda g: g.f(4), int_ok=True, scalar=1.5,
            out=None, grad=True, float_rule=False):
    """float32 (3,4) x (4,) broadcast; tensor x Python scalar; and int cases."""
    def r(x, y):
        return ref(W(x), W(y))
    cases = [Case(lambda g: [gx(g), gy(g)], r, out_dtype=out, grad=grad),
             Case(lambda g: [gx(g), scalar], r, out_dtype=out, grad=grad, label="scalar")]
    if int_ok:
        int_out = out or ("float32" if float_rule else None)
        cases += [
            Case(lambda g: [g.i(3, 4, lo=1, hi=6, dtype=np.int32), g.i(4, lo=1, hi=4)], r,
                 out_dtype=int_out, grad=False, label="int"),
            Case(lambda g: [g.i(3, 4, lo=1, hi=6, dtype=np.int32), gy(g)], r, out_dtype=out,
                 grad=False, label="int_float"),
            Case(lambda g: [g.i(3, 4, lo=1, hi=6), 2.5 if float_rule else scalar], r,
                 out_dtype=out, grad=False, label="int_pyfloat"),
            # a 0-d tensor's dtype counts only when no dimensioned tensor has its category
            Case(lambda g: [g.i(3, 4, lo=1, hi=6, dtype=np.int32),
                            np.asarray(gy(g)[0], np.float64)], r, out_dtype=out, grad=False,
                 label="int_zero_d")]
    cases += [Case(lambda g: [gx(g), np.asarray(gy(g)[0], np.float64)], r, out_dtype=out,
                   grad=grad, label="zero_d"),
              Case(lambda g: [gx(g)[:0], gy(g)], r, out_dtype=out, grad=False, label="empty")]
    _add(name, *cases)


_binary("add", lambda x, y: x + y)
_binary("sub", lambda x, y: x - y)
_binary("rsub", lambda x, y: y - x)
_binary("mul", lambda x, y: x * y)
_binary("div", lambda x, y: x / y, gy=lambda g: g.f(4, away=0.3), float_rule=True)
_binary("pow", lambda x, y: x ** y, gx=lambda g: g.pos(3, 4), scalar=3.0)
CASES["pow"] += [
    Case(lambda g: [2.0, g.f(3, 4)], lambda x, y: 2.0 ** W(y), label="scalar_base"),
    Case(lambda g: [g.f(3, 4), 2], lambda x, y: W(x) ** 2, label="int_exponent")]
_binary("floor_divide", lambda x, y: np.floor(x / y).astype(np.result_type(x, y)),
        gx=lambda g: g.frac(3, 4), gy=lambda g: g.f(4, lo=0.6, hi=2.0), scalar=0.75)
_binary("remainder", lambda x, y: x - np.floor(x / y) * y, gx=lambda g: g.f(3, 4, lo=0.05,
        hi=0.65), gy=lambda g: g.f(4, lo=0.7, hi=2.0), scalar=0.7)
for _n, _f in (("floor_divide", lambda x, y: np.floor(x / y)),
               ("remainder", lambda x, y: x - np.floor(x / y) * y)):
    CASES[_n] += [
        Case(lambda g: [g.f(3, 4, lo=-3, hi=3), g.f(4, lo=0.6, hi=2.0) * np.float32(-1)],
             lambda x, y, f=_f: f(W(x), W(y)), grad=False, label="negative"),
        Case(lambda g: [g.i(3, 4, lo=-9, hi=10), np.array([-3, -2, 2, 3])],
             lambda x, y, f=_f: f(W(x), W(y)).astype(np.int64), grad=False,
             label="int_negative")]
_binary("maximum", lambda x, y: np.where(x > y, x, y), gx=lambda g: g.distinct(3, 4),
        gy=lambda g: g.distinct(4, lo=-1.95, hi=1.95))
_binary("minimum", lambda x, y: np.where(x < y, x, y), gx=lambda g: g.distinct(3, 4),
        gy=lambda g: g.distinct(4, lo=-1.95, hi=1.95))
for _n, _f in (("maximum", np.greater), ("minimum", np.less)):
    # NaN in either operand propagates (torch.maximum / minimum)
    CASES[_n].append(Case(lambda g: [_NANS.copy(), _NANS[::-1].copy()],
                          lambda x, y, f=_f: np.where((x != x) | (y != y), np.nan,
                                                      np.where(f(x, y), W(x), W(y))),
                          grad=False, label="nan"))
_binary("atan2", lambda x, y: np.arctan2(x, y), gy=lambda g: g.f(4, away=0.3),
        float_rule=True)
for _n, _f in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
               ("gt", np.greater), ("ge", np.greater_equal)):
    _binary(_n, _f, gx=lambda g: g.i(3, 4, lo=-2, hi=3).astype(np.float32),
            gy=lambda g: g.i(4, lo=-2, hi=3).astype(np.float32), scalar=1.0, out="bool")
for _n, _f in (("logical_and", np.logical_and), ("logical_or", np.logical_or),
               ("logical_xor", np.logical_xor)):
    _add(_n, Case(lambda g: [g.b(3, 4), g.b(4)], lambda x, y, f=_f: f(x != 0, y != 0),
                  out_dtype="bool"),
         Case(lambda g: [g.i(3, 4, lo=-1, hi=2).astype(np.float32), g.i(3, 4, lo=0, hi=2)],
              lambda x, y, f=_f: f(x != 0, y != 0), out_dtype="bool", label="mixed"))
for _n, _f in (("bitwise_and", lambda x, y: x & y), ("bitwise_or", lambda x, y: x | y),
               ("bitwise_xor", lambda x, y: x ^ y)):
    _add(_n, Case(lambda g: [g.i(3, 4, lo=0, hi=64, dtype=np.int32), g.i(4, lo=-9, hi=64)],
                  lambda x, y, f=_f: f(W(x), W(y))),
         Case(lambda g: [g.b(3, 4), g.b(3, 4)], lambda x, y, f=_f: f(x, y), label="bool"),
         Case(lambda g: [g.i(3, 4, lo=0, hi=64, dtype=np.int32), 6],
              lambda x, y, f=_f: f(W(x), y), label="pyint"))
_add("where",
     Case(lambda g: [g.b(3, 4), g.f(3, 4), g.f(4)], lambda c, x, y: np.where(c, W(x), W(y))),
     Case(lambda g: [g.b(3, 1), g.f(3, 4), 0.5], lambda c, x, y: np.where(c, W(x), y),
          label="scalar"),
     Case(lambda g: [g.b(4), g.i(3, 4, dtype=np.int32), g.f(3, 4)],
          lambda c, x, y: np.where(c, W(x), W(y)), grad_args=(2,), label="mixed"))


# ---- inverse/hyperbolic trigonometry and special functions (ir/ops/special.py) ------------------
def _per(fn):
    return np.vectorize(fn, otypes=[np.float64])


def _erfinv_ref(y):
    """Bisection on math.erf (independent of the op's Newton iteration)."""
    def one(v):
        if v >= 1.0 or v <= -1.0:
            return math.copysign(math.inf, v) if abs(v) == 1.0 else math.nan
        lo, hi = -7.0, 7.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if math.erf(mid) < v:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
    return _per(one)(y)


def _lgamma_ref(x):
    return np.log(np.abs(_per(math.gamma)(x)))


def _polygamma_ref(x, n):
    """n = 0: a central difference of log|gamma|; n >= 1: the series n! sum 1/(x+k)^(n+1),
    its tail by Euler-Maclaurin."""
    x = np.asarray(x, np.float64)
    if n == 0:
        h = 1e-5
        return (_lgamma_ref(x + h) - _lgamma_ref(x - h)) / (2 * h)
    big = 2000
    k = np.arange(big, dtype=np.float64)
    xs = x[..., None] + k
    s = math.factorial(n) * np.sum(xs ** -(n + 1.0), axis=-1)
    t = x + big
    s += math.factorial(n - 1) / t ** n + math.factorial(n) / (2 * t ** (n + 1))
    return s * (-1.0) ** (n + 1)


_unit = lambda g: g.f(3, 4, lo=-0.9, hi=0.9)  # noqa: E731
_unary("asin", _per(math.asin), _unit)
_unary("acos", _per(math.acos), _unit)
_unary("atan", _per(math.atan), int_gen=_sints, int_dtype="float32")
_unary("sinh", lambda x: (np.exp(x) - np.exp(-x)) / 2, int_gen=_sints, int_dtype="float32")
_unary("cosh", lambda x: (np.exp(x) + np.exp(-x)) / 2, int_gen=_sints, int_dtype="float32")
_unary("asinh", lambda x: np.sign(x) * np.log(np.abs(x) + np.sqrt(x * x + 1)),
       lambda g: g.f(3, 4, lo=-3, hi=3))
_unary("acosh", lambda x: np.log(x + np.sqrt(x * x - 1)), lambda g: g.f(3, 4, lo=1.2, hi=4),
       int_gen=_ints, int_dtype="float32")
_unary("atanh", lambda x: 0.5 * np.log((1 + x) / (1 - x)), _unit)
_unary("erfc", lambda x: 1.0 - _erf(x), int_gen=_sints, int_dtype="float32")
_unary("erfinv", _erfinv_ref, lambda g: g.f(3, 4, lo=-0.95, hi=0.95))
CASES["erfinv"].append(Case(lambda g: [np.array([-1.0, 1.0, 0.0, 0.999, -0.9999, 1.5],
                                                np.float64)],
                            _erfinv_ref, grad=False, label="edges"))
_unary("lgamma", _lgamma_ref, lambda g: g.f(3, 4, lo=0.2, hi=6), int_gen=_ints,
       int_dtype="float32")
def _lgamma_poles_ref(x):
    pole = (x <= 0) & (x == np.floor(x))
    return np.where(pole, np.inf, _lgamma_ref(np.where(pole, 0.5, x)))


CASES["lgamma"].append(Case(lambda g: [np.array([-0.5, -1.5, -2.3, 0.0, -3.0, 30.0])],
                            _lgamma_poles_ref,
                            grad=False, label="negative_and_poles"))
_add("polygamma",
     *[Case(lambda g: [g.f(3, 4, lo=0.3, hi=5, dtype=np.float64)],
            lambda x, n: _polygamma_ref(x, n), {"n": nn}, tol=(1e-6, 1e-8), label=f"n{nn}")
       for nn in (0, 1, 2)],
     Case(lambda g: [np.array([-0.5, -2.7, 12.0, 0.01])], lambda x, n: _polygamma_ref(x, n),
          {"n": 0}, tol=(1e-6, 1e-8), grad=False, label="negative"),
     Case(lambda g: [np.array([1, 2, 7], np.int32)], lambda x, n: _polygamma_ref(x, n),
          {"n": 1}, out_dtype="float32", grad=False, label="int"))


# ---- ordering ops (ir/ops/sorting.py) ----------------------------------------------------------
def _argsort_ref(x, dim, descending=False, stable=False):
    """Python's stable sorted() per line, NaN as the largest value."""
    xm = np.moveaxis(x, dim, -1)
    out = np.empty(xm.shape, np.int64)
    for pos in np.ndindex(xm.shape[:-1]):
        row = list(xm[pos])

        def key(i, row=row):
            v = row[i]
            return (1, 0.0) if v != v else (0, v)
        order = sorted(range(len(row)), key=key, reverse=descending)
        out[pos] = order
    return np.moveaxis(out, -1, dim)


_SORT_NAN = np.array([[1.0, np.nan, -2.0, 1.0, 0.5], [np.nan, 3.0, 3.0, -1.0, np.nan]],
                     np.float32)
_add("argsort",
     Case(lambda g: [g.f(3, 5)], _argsort_ref, {"dim": 1, "descending": False, "stable": False},
          out_dtype="int64"),
     Case(lambda g: [g.f(4, 3)], _argsort_ref, {"dim": 0, "descending": True, "stable": True},
          out_dtype="int64", label="desc"),
     Case(lambda g: [_SORT_NAN.copy()], _argsort_ref,
          {"dim": 1, "descending": False, "stable": True}, out_dtype="int64", label="nan"),
     Case(lambda g: [_SORT_NAN.copy()], _argsort_ref,
          {"dim": 1, "descending": True, "stable": True}, out_dtype="int64", label="nan_desc"),
     Case(lambda g: [g.i(3, 6, lo=-2, hi=3, dtype=np.int32)], _argsort_ref,
          {"dim": 1, "descending": True, "stable": True}, out_dtype="int64", label="int_ties"),
     Case(lambda g: [g.b(2, 5)], _argsort_ref, {"dim": 1, "descending": True, "stable": True},
          out_dtype="int64", label="bool"))


def _searchsorted_ref(seq, values, right=False):
    import bisect
    f = bisect.bisect_right if right else bisect.bisect_left
    if seq.ndim == 1:
        return np.array([f(list(seq), v) for v in values.reshape(-1)],
                        np.int64).reshape(values.shape)
    out = np.empty(values.shape, np.int64)
    for pos in np.ndindex(values.shape[:-1]):
        out[pos] = [f(list(seq[pos]), v) for v in values[pos]]
    return out


_add("searchsorted",
     Case(lambda g: [np.array([-1.0, 0.0, 0.5, 0.5, 2.0], np.float32), g.frac(3, 4) / 3],
          _searchsorted_ref, {"right": False}, out_dtype="int64"),
     Case(lambda g: [np.array([1, 3, 3, 5, 9]), np.array([[0, 3, 5], [9, 10, 4]])],
          _searchsorted_ref, {"right": True}, out_dtype="int64", label="right_int"),
     Case(lambda g: [np.sort(g.f(2, 5), axis=1), g.f(2, 3)], _searchsorted_ref,
          {"right": False}, out_dtype="int64", label="batched"))


def _cumarg_ref(x, dim, largest=True):
    xm = np.moveaxis(x, dim, -1)
    out = np.empty(xm.shape, np.int64)
    for pos in np.ndindex(xm.shape[:-1]):
        best, bi = None, 0
        for i, v in enumerate(xm[pos]):
            if best is None or (best == best and (v != v or (v >= best if largest
                                                              else v <= best))):
                best, bi = v, i
            out[pos + (i,)] = bi
    return np.moveaxis(out, -1, dim)


_add("cumarg",
     Case(lambda g: [g.f(3, 5)], _cumarg_ref, {"dim": 1, "largest": True}, out_dtype="int64"),
     Case(lambda g: [g.f(4, 3)], _cumarg_ref, {"dim": 0, "largest": False}, out_dtype="int64",
          label="min"),
     Case(lambda g: [np.array([[1.0, 3.0, 3.0, np.nan, 5.0], [2.0, 2.0, 1.0, 2.0, 0.0]],
                              np.float32)], _cumarg_ref, {"dim": 1, "largest": True},
          out_dtype="int64", label="ties_nan"),
     Case(lambda g: [g.i(2, 6, lo=0, hi=3)], _cumarg_ref, {"dim": 1, "largest": False},
          out_dtype="int64", label="int"))


# ---- matrix factorisations (ir/ops/lapack.py) ---------------------------------------------------
def _wellcond(g, *shape, dtype=np.float32):
    """Square matrices near the identity (well conditioned)."""
    n = shape[-1]
    return (g.f(*shape, lo=-0.4, hi=0.4) + 2 * np.eye(n)).astype(dtype)


def _spd(g, *shape, dtype=np.float32):
    a = g.f(*shape, lo=-1, hi=1).astype(np.float64)
    return (a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])).astype(dtype)


def _gauss_inv(a):
    """Gauss-Jordan elimination with partial pivoting, per matrix (independent of LAPACK)."""
    a = np.asarray(a, np.float64)
    out = np.empty_like(a)
    for pos in np.ndindex(a.shape[:-2]):
        m = a[pos].copy()
        n = m.shape[0]
        aug = np.concatenate([m, np.eye(n)], 1)
        for c in range(n):
            p = c + int(np.argmax(np.abs(aug[c:, c])))
            aug[[c, p]] = aug[[p, c]]
            aug[c] /= aug[c, c]
            for r in range(n):
                if r != c:
                    aug[r] -= aug[r, c] * aug[c]
        out[pos] = aug[:, n:]
    return out


def _laplace_det(m):
    m = np.asarray(m, np.float64)
    if m.shape[-1] == 1:
        return m[..., 0, 0]
    return sum((-1) ** j * m[..., 0, j] * _laplace_det(np.delete(np.delete(m, 0, -2), j, -1))
               for j in range(m.shape[-1]))


def _chol_ref(a):
    a = np.asarray(a, np.float64)
    out = np.zeros_like(a)
    for pos in np.ndindex(a.shape[:-2]):
        m, lo = a[pos], out[pos]
        n = m.shape[0]
        for i in range(n):
            for j in range(i + 1):
                s = m[i, j] - sum(lo[i, k] * lo[j, k] for k in range(j))
                lo[i, j] = math.sqrt(s) if i == j else s / lo[j, j]
    return out


_add("linalg_inv",
     Case(lambda g: [_wellcond(g, 1, 3, 3)], _gauss_inv),
     Case(lambda g: [_wellcond(g, 2, 4, 4)], _gauss_inv, label="batched"))
_add("linalg_det",
     Case(lambda g: [_wellcond(g, 3, 3)], _laplace_det),
     Case(lambda g: [g.f(2, 4, 4)], _laplace_det, label="batched"))
_add("linalg_logabsdet",
     Case(lambda g: [_wellcond(g, 3, 3)], lambda a: np.log(np.abs(_laplace_det(a)))),
     Case(lambda g: [g.f(2, 3, 3, away=0.2) + np.float32(0)],
          lambda a: np.log(np.abs(_laplace_det(a))), label="batched"))
_add("linalg_solve",
     Case(lambda g: [_wellcond(g, 1, 3, 3), g.f(3, 2)], lambda a, b: _gauss_inv(a) @ W(b)),
     Case(lambda g: [_wellcond(g, 2, 3, 3), g.f(3, 1)], lambda a, b: _gauss_inv(a) @ W(b),
          label="broadcast"))
_add("linalg_cholesky",
     Case(lambda g: [_spd(g, 1, 3, 3)], _chol_ref),
     Case(lambda g: [_spd(g, 2, 4, 4)], _chol_ref, label="batched"))


def _eigh_check_ref(a):
    """(w; V): w from the characteristic polynomial's roots, V by inverse iteration, each
    w refined as the Rayleigh quotient; signs as the op's convention (the largest-magnitude
    entry of each vector positive). Reads the lower triangle, as the op."""
    a = np.asarray(a, np.float64)
    n = a.shape[-1]
    out = np.empty(a.shape[:-2] + (n + 1, n))
    for pos in np.ndindex(a.shape[:-2]):
        m = np.tril(a[pos]) + np.tril(a[pos], -1).T
        w = np.sort(np.roots(np.poly(m)).real)
        vs = []
        for lam in w:
            v = np.ones(n)
            for _ in range(50):
                v = np.linalg.solve(m - (lam + 1e-10) * np.eye(n), v)
                v /= np.linalg.norm(v)
            lam_ref = v @ m @ v
            vs.append(v * np.sign(v[np.argmax(np.abs(v))]))
            w[len(vs) - 1] = lam_ref
        out[pos][0] = w
        out[pos][1:] = np.stack(vs, 1)
    return out


def _sign_fix(packed, rows):
    """Multiply each column of the vector blocks by the sign of its largest-magnitude entry
    (eigen/singular vectors are defined up to sign)."""
    packed = np.asarray(packed, np.float64).copy()
    for pos in np.ndindex(packed.shape[:-2]):
        p = packed[pos]
        for lo, hi in rows:
            blk = p[lo:hi]
            idx = np.argmax(np.abs(blk), 0)
            sgn = np.sign(blk[idx, np.arange(blk.shape[1])])
            p[lo:hi] *= sgn
    return packed


def _svd_check_ref(a):
    """U, S, V from the eigen-decomposition of A^T A (reference only: squares the condition
    number, fine for these well-conditioned samples), signs fixed like _sign_fix."""
    a = np.asarray(a, np.float64)
    m, n = a.shape[-2:]
    k = min(m, n)
    out = np.empty(a.shape[:-2] + (m + 1 + n, k))
    for pos in np.ndindex(a.shape[:-2]):
        x = a[pos]
        gram = x.T @ x if m >= n else x @ x.T
        w = _eigh_check_ref(gram)
        lam, vecs = w[0][::-1], w[1:][:, ::-1]
        s = np.sqrt(np.maximum(lam, 0))[:k]
        if m >= n:
            v = vecs[:, :k]
            u = x @ v / s
        else:
            u = vecs[:, :k]
            v = x.T @ u / s
        out[pos][:m] = u
        out[pos][m] = s
        out[pos][m + 1:] = v
    return _sign_fix(out, [(0, m)])


_add("linalg_eigh",
     Case(lambda g: [_spd(g, 3, 3)], _eigh_check_ref, tol=(1e-4, 1e-5)),
     Case(lambda g: [_spd(g, 2, 4, 4, dtype=np.float64)], _eigh_check_ref, tol=(1e-8, 1e-10),
          label="batched"))
_add("linalg_svd",
     Case(lambda g: [_wellcond(g, 3, 3)], _svd_check_ref, tol=(1e-4, 1e-5)),
     Case(lambda g: [g.f(4, 2, dtype=np.float64) + np.array([[1.0, 0], [0, 2], [0, 0],
                                                              [0, 0]])],
          _svd_check_ref, tol=(1e-8, 1e-10), label="tall"),
     Case(lambda g: [g.f(2, 2, 3, dtype=np.float64) + np.array([[2.0, 0, 0], [0, 1, 0]])],
          _svd_check_ref, tol=(1e-8, 1e-10), label="wide"))


# ---- fused activations (nn) ---------------------------------------------------------------------
def _gelu_ref(x, approximate="none"):
    x = W(x)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _gelu_backward_ref(g, x, approximate="none"):
    h = 1e-6
    x = W(x)
    d = (_gelu_ref(x + h, approximate) - _gelu_ref(x - h, approximate)) / (2 * h)
    return W(g) * d


_add("gelu", *[Case(lambda g: [g.f(3, 4, lo=-4, hi=4)], _gelu_ref, {"approximate": a}, label=a)
               for a in ("none", "tanh")])
_add("gelu_backward",
     *[Case(lambda g: [g.f(3, 4), g.f(3, 4, lo=-4, hi=4)], _gelu_backward_ref,
            {"approximate": a}, tol=FD_TOL, label=a) for a in ("none", "tanh")])
_add("leaky_relu", *[Case(lambda g: [g.f(3, 4, away=0.1)],
                          lambda x, negative_slope: np.where(x > 0, W(x), negative_slope * W(x)),
                          {"negative_slope": s}, label=str(s)) for s in (0.01, 0.2)])
_add("elu", *[Case(lambda g: [g.f(3, 4, away=0.1)],
                   lambda x, alpha: np.where(x > 0, W(x), alpha * (np.exp(W(x)) - 1.0)),
                   {"alpha": a}, label=str(a)) for a in (1.0, 0.5)])


def _softplus_ref(x, beta, threshold):
    x = W(x)
    return np.where(x * beta > threshold, x, np.log(1.0 + np.exp(beta * x)) / beta)


_add("softplus",
     Case(lambda g: [g.f(3, 4, lo=-5, hi=5)], _softplus_ref, {"beta": 1.0, "threshold": 20.0}),
     # past the threshold softplus is the identity (x * beta > threshold): x in [3, 5] * 2 > 5
     Case(lambda g: [np.concatenate([g.f(2, 4, lo=-2, hi=2.2), g.f(1, 4, lo=3, hi=5)])],
          _softplus_ref, {"beta": 2.0, "threshold": 5.0}, label="threshold"))
_add("silu", Case(lambda g: [g.f(3, 4, lo=-5, hi=5)], lambda x: W(x) * _sig(W(x))))


# ---- reductions and scans ------------------------------------------------------------------------
def _red(name, ref, gen=lambda g: g.f(3, 4, 2), out=None, int_gen=None, int_out=None,
         grad=True, extra=None, empty=True, **kw):
    """dims (1,) / (0, 2) kept / all dims, with ``extra`` attrs (var/std correction), and
    a reduction over an empty dim (``empty``)."""
    extra = extra or {}
    cases = []
    for dims, keep in (((1,), False), ((0, 2), True), ((0, 1, 2), False)):
        cases.append(Case(lambda g: [gen(g)],
                          lambda x, dims, keepdim, **a: ref(W(x), dims, keepdim, **a),
                          dict({"dims": dims, "keepdim": keep}, **extra), out_dtype=out,
                          grad=grad, label="d" + "".join(map(str, dims)) + "_keep" * keep, **kw))
    if empty:
        cases.append(Case(lambda g: [gen(g)[:, :0]],
                          lambda x, dims, keepdim, **a: ref(W(x), dims, keepdim, **a),
                          dict({"dims": (1,), "keepdim": False}, **extra), out_dtype=out,
                          grad=False, label="empty"))
    if int_gen is not None:
        cases.append(Case(lambda g: [int_gen(g)],
                          lambda x, dims, keepdim, **a: ref(W(x), dims, keepdim, **a),
                          dict({"dims": (1,), "keepdim": False}, **extra), out_dtype=int_out,
                          grad=False, label="int"))
    _add(name, *cases)


def _var_ref(x, dims, keepdim, correction=1):
    n = int(np.prod([x.shape[d] for d in dims]))
    ss = ((x - x.sum(axis=dims, keepdims=True) / max(n, 1)) ** 2).sum(axis=dims,
                                                                      keepdims=keepdim)
    # no degrees of freedom left (torch): nan
    return ss / (n - correction) if n > correction else np.full(ss.shape, np.nan)


_red("sum", lambda x, d, k: x.sum(axis=d, keepdims=k), int_gen=lambda g: g.i(3, 4, 2,
     dtype=np.int32), int_out="int64")
CASES["sum"].append(Case(lambda g: [g.b(3, 4)], lambda x, dims, keepdim: x.sum(axis=dims),
                         {"dims": (0,), "keepdim": False}, out_dtype="int64", label="bool"))
_red("mean", lambda x, d, k: x.sum(axis=d, keepdims=k) / np.prod([x.shape[i] for i in d]))
_red("prod", lambda x, d, k: np.multiply.reduce(x, axis=d, keepdims=k),
     gen=lambda g: g.f(3, 4, 2, lo=0.5, hi=1.5), int_gen=lambda g: g.i(3, 4, 2, lo=-3, hi=4,
     dtype=np.int32), int_out="int64")
CASES["prod"].append(Case(lambda g: [np.array([[1.5, 0.0, -2.0], [0.5, 3.0, 0.0]], np.float32)],
                          lambda x, dims, keepdim: np.multiply.reduce(W(x), axis=dims),
                          {"dims": (1,), "keepdim": False}, label="zeros"))
_red("amax", lambda x, d, k: np.maximum.reduce(x, axis=d, keepdims=k),
     gen=lambda g: g.distinct(3, 4, 2), empty=False, int_gen=lambda g: g.i(3, 4, 2, dtype=np.int32))
_red("amin", lambda x, d, k: np.minimum.reduce(x, axis=d, keepdims=k),
     gen=lambda g: g.distinct(3, 4, 2), empty=False, int_gen=lambda g: g.i(3, 4, 2, dtype=np.int32))
for _n in ("amax", "amin"):
    # ties share the gradient evenly (torch's amax/amin): a one-sided derivative of neither side,
    # so this case is forward-only
    CASES[_n].append(Case(lambda g: [np.array([[1.0, 3.0, 3.0], [-2.0, -2.0, 0.5]], np.float32)],
                          lambda x, dims, keepdim, n=_n: (np.max if n == "amax" else np.min)(
                              W(x), axis=dims), {"dims": (1,), "keepdim": False}, grad=False,
                          label="ties"))
_red("var", _var_ref, extra={"correction": 1})
CASES["var"] += [Case(lambda g: [g.f(3, 4)], lambda x, dims, keepdim, correction: _var_ref(
    W(x), dims, keepdim, correction), {"dims": (0,), "keepdim": True, "correction": 0},
    label="population")]
_red("std", lambda x, d, k, correction=1: _var_ref(x, d, k, correction) ** 0.5,
     extra={"correction": 1})
CASES["std"] += [Case(lambda g: [g.f(3, 4)], lambda x, dims, keepdim, correction: _var_ref(
    W(x), dims, keepdim, correction) ** 0.5, {"dims": (1,), "keepdim": False, "correction": 0},
    label="population")]
_red("logsumexp", lambda x, d, k: np.log(np.exp(x).sum(axis=d, keepdims=k)))
CASES["logsumexp"].append(Case(lambda g: [g.f(2, 3, lo=80, hi=90)], lambda x, dims, keepdim: (
    np.log(np.exp(W(x) - 85).sum(axis=dims)) + 85), {"dims": (1,), "keepdim": False},
    grad=False, label="large"))
for _n, _f in (("any", np.logical_or), ("all", np.logical_and)):
    _add(_n, Case(lambda g: [g.b(3, 4)], lambda x, dims, keepdim, f=_f: f.reduce(
        x, axis=dims, keepdims=keepdim), {"dims": (1,), "keepdim": False}, out_dtype="bool"),
        Case(lambda g: [g.i(3, 4, lo=0, hi=2).astype(np.float32)], lambda x, dims, keepdim,
             f=_f: f.reduce(x != 0, axis=dims, keepdims=keepdim),
             {"dims": (0, 1), "keepdim": True}, out_dtype="bool", label="float"))


def _sum_to_ref(x, shape):
    x = W(x)
    x = x.sum(axis=tuple(range(x.ndim - len(shape))))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True)


_add("sum_to_size",
     Case(lambda g: [g.f(2, 3, 4)], _sum_to_ref, {"shape": (3, 1)}),
     Case(lambda g: [g.f(3, 4)], _sum_to_ref, {"shape": (1, 4)}, label="keep"))


def _arg_ref(fn):
    def ref(x, dim, keepdim):
        x = W(x)
        if dim is None:
            r = np.asarray(fn(x.reshape(-1)))
            return r.reshape((1,) * x.ndim) if keepdim else r
        r = fn(x, axis=dim)
        return np.expand_dims(r, dim) if keepdim else r
    return ref


for _n, _f in (("argmax", np.argmax), ("argmin", np.argmin)):
    _add(_n, Case(lambda g: [g.i(3, 4, lo=0, hi=3).astype(np.float32)], _arg_ref(_f),
                  {"dim": 1, "keepdim": False}, out_dtype="int64", label="ties"),
         Case(lambda g: [g.distinct(3, 4)], _arg_ref(_f), {"dim": 0, "keepdim": True},
              out_dtype="int64", label="keep"),
         Case(lambda g: [g.distinct(3, 4)], _arg_ref(_f), {"dim": None, "keepdim": False},
              out_dtype="int64", label="flat"),
         Case(lambda g: [g.i(2, 3, dtype=np.int32)], _arg_ref(_f), {"dim": None, "keepdim": True},
              out_dtype="int64", label="int"))


def _prod_others_ref(x, dims):
    x = W(x)
    out = np.empty_like(x)
    keep = [d for d in range(x.ndim) if d not in dims]
    for pos in np.ndindex(*x.shape):
        group = tuple(pos[d] if d in keep else slice(None) for d in range(x.ndim))
        others = x[group].copy()
        others[tuple(pos[d] for d in dims)] = 1.0
        out[pos] = np.prod(others)
    return out


_add("prod_others",
     Case(lambda g: [g.f(3, 4)], _prod_others_ref, {"dims": (1,)}, grad=False),
     Case(lambda g: [np.array([[[0.0, 2.0], [3.0, 0.5]], [[1.5, 0.0], [0.0, 2.0]]], np.float32)],
          _prod_others_ref, {"dims": (0, 2)}, grad=False, label="zeros"))


def _cum_ref(op):
    def ref(x, dim):
        x = W(x)
        if x.dtype == bool:
            x = x.astype(np.int64)
        out = x.copy()
        for k in range(1, x.shape[dim]):
            prev = np.take(out, [k - 1], axis=dim)
            cur = np.take(x, [k], axis=dim)
            idx = [slice(None)] * x.ndim
            idx[dim] = slice(k, k + 1)
            out[tuple(idx)] = op(prev, cur)
        return out
    return ref


_add("cumsum", Case(lambda g: [g.f(2, 4)], _cum_ref(np.add), {"dim": 1}),
     Case(lambda g: [g.f(3, 2, 2)], _cum_ref(np.add), {"dim": 0}, label="dim0"),
     Case(lambda g: [g.i(2, 4, dtype=np.int32)], _cum_ref(np.add), {"dim": 1},
          out_dtype="int64", label="int"))
_add("cumprod", Case(lambda g: [g.f(2, 4, away=0.2)], _cum_ref(np.multiply), {"dim": 1}),
     Case(lambda g: [np.array([[2.0, 0.0, 3.0, 0.5], [0.0, 1.5, 0.0, 2.0]], np.float32)],
          _cum_ref(np.multiply), {"dim": 1}, label="zeros"),
     Case(lambda g: [g.i(3, 2, lo=-3, hi=4, dtype=np.int32)], _cum_ref(np.multiply), {"dim": 0},
          out_dtype="int64", label="int"))


def _cumprod_backward_sample(g, x):
    return Sample([g.f(*x.shape), x, _cum_ref(np.multiply)(x, 1).astype(x.dtype)])


_add("cumprod_backward",
     Case(lambda g: _cumprod_backward_sample(g, g.f(2, 4, away=0.2)),
          lambda gr, x, out, dim: vjp(lambda x: _cum_ref(np.multiply)(x, dim), [x], 0, gr),
          {"dim": 1}, grad=False, tol=FD_TOL),
     Case(lambda g: _cumprod_backward_sample(g, np.array(
         [[2.0, 0.0, 3.0, 0.5], [0.0, 1.5, 0.0, 2.0], [1.0, 2.0, 0.5, 0.0]], np.float32)),
         lambda gr, x, out, dim: vjp(lambda x: _cum_ref(np.multiply)(x, dim), [x], 0, gr),
         {"dim": 1}, grad=False, tol=FD_TOL, label="zeros"))


def _norm_ref(x, ord, dims, keepdim):  # noqa: A002
    return (np.abs(W(x)) ** ord).sum(axis=dims, keepdims=keepdim) ** (1.0 / ord)


_add("vector_norm",
     Case(lambda g: [g.f(3, 4)], _norm_ref, {"ord": 2, "dims": (0, 1), "keepdim": False}),
     Case(lambda g: [g.f(3, 4, away=0.1)], _norm_ref, {"ord": 1, "dims": (1,), "keepdim": True},
          label="l1"),
     Case(lambda g: [g.f(3, 4, away=0.1)], _norm_ref, {"ord": 3, "dims": (0,), "keepdim": False},
          label="l3"),
     Case(lambda g: [g.f(3, 4, away=0.1)], _norm_ref, {"ord": 0.5, "dims": (1,),
                                                        "keepdim": False}, label="l0.5"))


# ---- views and data movement ---------------------------------------------------------------------
_add("reshape",
     Case(lambda g: [g.f(3, 4)], lambda x, shape: W(x).reshape(shape), {"shape": (2, 6)}),
     Case(lambda g: [g.f(2, 1, 3)], lambda x, shape: W(x).reshape(shape), {"shape": (6,)},
          label="flat"),
     Case(lambda g: [g.f(2, 3)], lambda x, shape: W(x).reshape(shape), {"shape": (1, 2, 3, 1)},
          label="ones"))
_add("permute",
     Case(lambda g: [g.f(2, 3, 4)], lambda x, dims: np.transpose(W(x), dims),
          {"dims": (2, 0, 1)}),
     Case(lambda g: [g.f(3, 4)], lambda x, dims: W(x).T, {"dims": (1, 0)}, label="t"))
_add("expand",
     Case(lambda g: [g.f(3, 1)], lambda x, shape: np.broadcast_to(W(x), shape),
          {"shape": (2, 3, 4)}),
     Case(lambda g: [g.f(4)], lambda x, shape: np.broadcast_to(W(x), shape), {"shape": (3, 4)},
          label="lead"))
_add("clone", Case(lambda g: [g.f(3, 4)], lambda x: W(x)),
     Case(lambda g: [g.i(3, 4)], lambda x: x, label="int"))
_add("detach", Case(lambda g: [g.f(3, 4)], lambda x: W(x), grad=False),
     Case(lambda g: [g.i(2, 5)], lambda x: x, label="int", grad=False))

_S = ("s", None, None, None)
_add("getitem",
     Case(lambda g: [g.f(4, 5)], lambda x, index: W(x)[0:3:2, 1], {"index": (("s", 0, 3, 2),
                                                                             ("i", 1))}),
     Case(lambda g: [g.f(4, 5), np.array([2, 0, 2, -1])], lambda x, i, index: W(x)[:, i],
          {"index": (_S, ("t", 0))}, label="tensor"),
     Case(lambda g: [g.f(2, 3, 4)], lambda x, index: W(x)[None, ..., -1],
          {"index": (("n",), ("e",), ("i", -1))}, label="none_ellipsis"),
     Case(lambda g: [g.f(3, 4), np.array([0, 2, 2]), np.array([1, 3, 1])],
          lambda x, i, j, index: W(x)[i, j], {"index": (("t", 0), ("t", 1))}, label="pairs"),
     Case(lambda g: [g.f(3, 4)], lambda x, index: W(x)[1, 2], {"index": (("i", 1), ("i", 2))},
          label="scalar"))


def _put(x, v, key):
    out = W(x).copy()
    out[key] = W(v)
    return out


def _put_add(x, v, *rows):
    """out[rows[0][k], rows[1][k], ...] += v[k] (or += v for every k), one write each."""
    out = W(x).copy()
    v = W(v)
    for k, pos in enumerate(zip(*rows)):
        out[pos] += v[k] if v.ndim == 1 and len(rows) == x.ndim else v
    return out


_add("index_put",
     Case(lambda g: [g.f(4, 5), g.f(2, 5)], lambda x, v, index, accumulate: _put(
         x, v, (slice(1, 4, 2),)), {"index": (("s", 1, 4, 2),), "accumulate": False}),
     Case(lambda g: [g.f(4, 5), g.f(3), np.array([0, 2, 0]), np.array([1, 1, 1])],
          lambda x, v, i, j, index, accumulate: _put_add(x, v, i, j),
          {"index": (("t", 0), ("t", 1)), "accumulate": True}, label="accumulate"),
     Case(lambda g: [g.f(4, 3), g.f(3), np.array([3, 1, 3])],
          lambda x, v, i, index, accumulate: _put_add(x, v, i),
          {"index": (("t", 0),), "accumulate": True}, label="rows"),
     Case(lambda g: [g.f(4, 5), g.f(1)], lambda x, v, index, accumulate: _put(
         x, v, (2, slice(0, 3))), {"index": (("i", 2), ("s", 0, 3, 1)), "accumulate": False},
          label="bcast"),
     Case(lambda g: [g.f(4, 5), g.f(2, 5), np.array([3, 0])],
          lambda x, v, i, index, accumulate: _put(x, v, (i,)),
          {"index": (("t", 0),), "accumulate": False}, label="tensor"))
_add("cat",
     Case(lambda g: [g.f(2, 3), g.f(1, 3), g.f(3, 3)], lambda *xs, dim: np.concatenate(
         [W(x) for x in xs], axis=dim), {"dim": 0}),
     Case(lambda g: [g.f(2, 3), g.i(2, 2, dtype=np.int32)], lambda *xs, dim: np.concatenate(
         [W(x).astype(np.float64) for x in xs], axis=dim), {"dim": 1}, label="promote"),
     Case(lambda g: [g.f(2, 2, 3)], lambda *xs, dim: W(xs[0]), {"dim": 2}, label="one"))


def _flip_ref(x, dims):
    x = W(x)
    for d in dims:
        x = x[(slice(None),) * d + (slice(None, None, -1),)]
    return x


_add("flip", Case(lambda g: [g.f(3, 4)], _flip_ref, {"dims": (0,)}),
     Case(lambda g: [g.f(2, 3, 4)], _flip_ref, {"dims": (0, 2)}, label="two"))


def _roll_ref(x, shifts, dims):
    x = W(x)
    for s, d in zip(shifts, dims):
        n = x.shape[d]
        idx = [(k - s) % n for k in range(n)]
        x = np.take(x, idx, axis=d)
    return x


_add("roll", Case(lambda g: [g.f(3, 4)], _roll_ref, {"shifts": (1,), "dims": (1,)}),
     Case(lambda g: [g.f(3, 4)], _roll_ref, {"shifts": (-1, 5), "dims": (0, 1)}, label="two"))


def _repeat_ref(x, repeats):
    x = W(x).reshape((1,) * (len(repeats) - x.ndim) + x.shape)
    for d, r in enumerate(repeats):
        x = np.concatenate([x] * r, axis=d) if r else np.take(x, [], axis=d)
    return x


_add("repeat", Case(lambda g: [g.f(2, 3)], _repeat_ref, {"repeats": (2, 1)}),
     Case(lambda g: [g.f(3)], _repeat_ref, {"repeats": (2, 1, 3)}, label="lead"))


def _pad_source(i, n, lo, mode):
    """The source index of padded position i (or None for a constant cell)."""
    p = i - lo
    if 0 <= p < n:
        return p
    if mode == "constant":
        return None
    if mode == "replicate":
        return min(max(p, 0), n - 1)
    if mode == "circular":
        return p % n
    # reflect: mirror without repeating the edge
    while not 0 <= p < n:
        p = -p if p < 0 else 2 * (n - 1) - p
    return p


def _pad_ref(x, pad, mode="constant", value=0.0):
    x = W(x)
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    shape = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, widths))
    out = np.full(shape, value, x.dtype)
    for pos in np.ndindex(*shape):
        src = tuple(_pad_source(i, n, lo, mode) for i, n, (lo, _) in zip(pos, x.shape, widths))
        if None not in src:
            out[pos] = x[src]
    return out


_add("pad",
     Case(lambda g: [g.f(2, 3)], _pad_ref, {"pad": (1, 2), "mode": "constant", "value": 0.0}),
     Case(lambda g: [g.f(2, 3, 4)], _pad_ref, {"pad": (1, 0, 2, 1), "mode": "constant",
                                               "value": -1.5}, label="value"),
     Case(lambda g: [g.f(3, 5)], _pad_ref, {"pad": (-1, 2, 1, -1), "mode": "constant",
                                            "value": 0.0}, label="crop"),
     *[Case(lambda g: [g.f(1, 2, 4)], _pad_ref, {"pad": (2, 1), "mode": m, "value": 0.0},
            label=m) for m in ("reflect", "replicate", "circular")],
     Case(lambda g: [g.f(1, 1, 3, 3)], _pad_ref, {"pad": (1, 2, 2, 1), "mode": "reflect",
                                                  "value": 0.0}, label="reflect2d"))


def _pad_backward_case(shape, pad, mode, label=""):
    def make(g):
        return [g.f(*_pad_ref(np.zeros(shape), pad, mode).shape)]

    def ref(gr, shape, pad, mode):
        return vjp(lambda x: _pad_ref(x, pad, mode), [np.zeros(shape)], 0, gr, eps=1.0)
    return Case(make, ref, {"shape": shape, "pad": pad, "mode": mode}, label=label or mode)


_add("pad_backward", *[_pad_backward_case((1, 2, 4), (2, 1), m)
                       for m in ("reflect", "replicate", "circular")],
     _pad_backward_case((1, 1, 3, 3), (1, 2, 2, 1), "reflect", "reflect2d"))


def _tri_ref(upper):
    def ref(x, diagonal):
        x = W(x)
        i = np.arange(x.shape[-2])[:, None]
        j = np.arange(x.shape[-1])[None, :]
        keep = (j - i >= diagonal) if upper else (j - i <= diagonal)
        return np.where(keep, x, 0)
    return ref


for _n in ("tril", "triu"):
    _add(_n, *[Case(lambda g: [g.f(3, 4)], _tri_ref(_n == "triu"), {"diagonal": d},
                    label=str(d)) for d in (0, 1, -1)],
         Case(lambda g: [g.f(2, 3, 3)], _tri_ref(_n == "triu"), {"diagonal": 0}, label="batch"))


# integer and float bit arithmetic (ir/ops/numeric.py)
_add("gcd",
     Case(lambda g: [np.array([12, -18, 0, 7, 0]), np.array([8, 12, 5, -21, 0])],
          lambda a, b: np.gcd(a, b), out_dtype="int64", grad=False),
     Case(lambda g: [np.array([[6], [15]], np.int32), np.array([4, 10, 25], np.int32)],
          lambda a, b: np.gcd(a, b), out_dtype="int32", grad=False, label="broadcast"))
_add("lcm",
     Case(lambda g: [np.array([4, -6, 0, 7]), np.array([6, 4, 3, 5])],
          lambda a, b: np.lcm(a, b), out_dtype="int64", grad=False))
_add("nextafter",
     Case(lambda g: [np.array([1.0, 0.0, -2.5, np.inf], np.float32),
                     np.array([2.0, -1.0, -2.5, 0.0], np.float32)],
          lambda a, b: np.nextafter(a, b), out_dtype="float32", grad=False),
     Case(lambda g: [g.f(3, 4, dtype=np.float64), g.f(4, dtype=np.float64)],
          lambda a, b: np.nextafter(a, b), out_dtype="float64", grad=False, label="f64"))


# creation ops (made from sizes alone; traced when a size is symbolic)
_add("arange",
     Case(lambda g: [], lambda start, end, step, dtype: np.arange(start, end, step),
          {"start": 2, "end": 11, "step": 3, "dtype": dt.int64}, out_dtype="int64",
          grad=False),
     Case(lambda g: [], lambda start, end, step, dtype: np.arange(start, end, step),
          {"start": 5, "end": -4, "step": -2, "dtype": dt.int64}, out_dtype="int64",
          grad=False, label="negative step"),
     Case(lambda g: [], lambda start, end, step, dtype: np.arange(start, end, step),
          {"start": 3, "end": 3, "step": 1, "dtype": dt.int64}, out_dtype="int64",
          grad=False, label="empty"))
_add("full",
     Case(lambda g: [], lambda shape, value, dtype: np.full(shape, value, np.float32),
          {"shape": (2, 3), "value": 1.5, "dtype": dt.float32}, out_dtype="float32",
          grad=False),
     Case(lambda g: [], lambda shape, value, dtype: np.full(shape, value, bool),
          {"shape": (4,), "value": True, "dtype": dt.bool_}, out_dtype="bool", grad=False,
          label="bool"))


def _like(fill):
    def ref(x, dtype=None, value=None):
        return np.full(x.shape, fill if value is None else value)
    return ref


_add("zeros_like", Case(lambda g: [g.f(3, 4)], _like(0), {"dtype": None}),
     Case(lambda g: [g.f(3, 4)], _like(0), {"dtype": dt.int64}, out_dtype="int64",
          label="int"))
_add("ones_like", Case(lambda g: [g.i(3, 4, dtype=np.int32)], _like(1), {"dtype": None}),
     Case(lambda g: [g.f(3, 4)], _like(1), {"dtype": dt.float64}, out_dtype="float64",
          label="f64"))
_add("full_like", Case(lambda g: [g.f(3, 4)], _like(None), {"value": 2.5, "dtype": None}),
     Case(lambda g: [g.f(3, 4)], _like(None), {"value": True, "dtype": dt.bool_},
          out_dtype="bool", label="bool"))


# ---- index-driven --------------------------------------------------------------------------------
def _gather_ref(x, index, dim):
    x = W(x)
    out = np.empty(index.shape, x.dtype)
    for pos in np.ndindex(*index.shape):
        src = list(pos)
        src[dim] = index[pos]
        out[pos] = x[tuple(src)]
    return out


def _scatter_ref(x, index, src, dim, reduce=None):
    out = W(x).copy()
    for pos in np.ndindex(*index.shape):
        dst = list(pos)
        dst[dim] = index[pos]
        dst = tuple(dst)
        v = src if not isinstance(src, np.ndarray) else W(src)[pos]
        if reduce == "add":
            out[dst] += v
        elif reduce == "multiply":
            out[dst] *= v
        else:
            out[dst] = v
    return out


def _perm_rows(g, rows, n, k):
    """(rows, k) int64 indices, each row k distinct values below n (a scatter with no
    duplicate targets, so the result does not depend on write order)."""
    return np.stack([g.rng.permutation(n)[:k] for _ in range(rows)]).astype(np.int64)


_add("gather",
     Case(lambda g: [g.f(3, 4), g.i(3, 5, lo=0, hi=4)], _gather_ref, {"dim": 1}),
     Case(lambda g: [g.f(4, 3), g.i(2, 2, lo=0, hi=4)], _gather_ref, {"dim": 0},
          label="smaller"))
_add("scatter",
     Case(lambda g: [g.f(3, 5), _perm_rows(g, 3, 5, 3), g.f(3, 4)], _scatter_ref,
          {"dim": 1, "reduce": None}),
     Case(lambda g: [g.f(3, 4), g.i(2, 4, lo=0, hi=3), g.f(2, 4)], _scatter_ref,
          {"dim": 0, "reduce": "add"}, label="add"),
     Case(lambda g: [g.f(3, 4), g.i(3, 2, lo=0, hi=4), g.f(3, 2)], _scatter_ref,
          {"dim": 1, "reduce": "multiply"}, grad=False, label="multiply"),
     Case(lambda g: [g.f(3, 5), _perm_rows(g, 3, 5, 2), 2.5], _scatter_ref,
          {"dim": 1, "reduce": None}, label="scalar"))
_add("index_select",
     Case(lambda g: [g.f(3, 4), np.array([3, 0, 3])], lambda x, i, dim: np.stack(
         [W(x)[:, k] for k in i], axis=1), {"dim": 1}),
     Case(lambda g: [g.f(3, 2, 2), np.array([2, 0])], lambda x, i, dim: np.stack(
         [W(x)[k] for k in i]), {"dim": 0}, label="dim0"))


# ---- matrix products -----------------------------------------------------------------------------
def _matmul_ref(a, b):
    a, b = W(a), W(b)
    va, vb = a.ndim == 1, b.ndim == 1
    a2 = a[None, :] if va else a
    b2 = b[:, None] if vb else b
    out = (a2[..., :, :, None] * b2[..., None, :, :]).sum(-2)
    if va:
        out = out[..., 0, :]
    if vb:
        out = out[..., 0]
    return out


_add("matmul",
     Case(lambda g: [g.f(3, 4), g.f(4, 2)], _matmul_ref),
     Case(lambda g: [g.f(2, 3, 4), g.f(4, 2)], _matmul_ref, label="batch_bcast"),
     Case(lambda g: [g.f(2, 1, 2, 3), g.f(3, 3, 2)], _matmul_ref, label="batch4d"),
     Case(lambda g: [g.f(4), g.f(4, 3)], _matmul_ref, label="vecmat"),
     Case(lambda g: [g.f(2, 3, 4), g.f(4)], _matmul_ref, label="matvec"),
     Case(lambda g: [g.f(4), g.f(4)], _matmul_ref, label="dot"),
     Case(lambda g: [g.i(2, 3), g.i(3, 2)], _matmul_ref, label="int"))


def _einsum_case(eq, shapes, ref, grad=True, label=None):
    return Case(lambda g: [g.f(*s) for s in shapes], lambda *xs, equation: ref(*map(W, xs)),
                {"equation": eq}, grad=grad, label=label or eq)


_add("einsum",
     _einsum_case("ij,jk->ik", [(2, 3), (3, 4)], lambda a, b: _matmul_ref(a, b)),
     _einsum_case("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)], lambda a, b: _matmul_ref(a, b)),
     _einsum_case("i,j->ij", [(3,), (2,)], lambda a, b: a[:, None] * b[None, :]),
     _einsum_case("ij->", [(2, 3)], lambda a: a.sum()),
     _einsum_case("ij,ij->j", [(2, 3), (2, 3)], lambda a, b: (a * b).sum(0)),
     _einsum_case("ij,jk", [(2, 3), (3, 2)], lambda a, b: _matmul_ref(a, b), label="implicit"),
     _einsum_case("ji", [(2, 3)], lambda a: a.T, label="implicit_transpose"),
     # repeated subscripts (a diagonal): the gradient raises NotImplementedError
     _einsum_case("ii->i", [(3, 3)], lambda a: np.array([a[k, k] for k in range(3)]),
                  grad=False))


# ---- nn: softmax, im2col/col2im, pooling, embedding ----------------------------------------------
def _softmax_ref(x, dim):
    e = np.exp(W(x))
    return e / e.sum(axis=dim, keepdims=True)


_add("softmax", Case(lambda g: [g.f(3, 4)], _softmax_ref, {"dim": 1}),
     Case(lambda g: [g.f(2, 3, 2, lo=-40, hi=40)], _softmax_ref, {"dim": 0}, grad=False,
          label="wide"))
_add("log_softmax", Case(lambda g: [g.f(3, 4)], lambda x, dim: np.log(_softmax_ref(x, dim)),
                         {"dim": 1}),
     Case(lambda g: [g.f(2, 3, 2)], lambda x, dim: np.log(_softmax_ref(x, dim)), {"dim": 0},
          label="dim0"))


def _conv_out(n, k, s, p, d, ceil_mode=False):
    span = n + 2 * p - d * (k - 1) - 1
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


def _im2col_ref(x, kernel, stride, padding, dilation, ones_row=False):
    x = W(x)
    n, c = x.shape[:2]
    sp = x.shape[2:]
    out = [_conv_out(*a) for a in zip(sp, kernel, stride, padding, dilation)]
    kk = int(np.prod(kernel))
    length = int(np.prod(out))
    cols = np.zeros((n, c * kk + (1 if ones_row else 0), length))
    for ci in range(c):
        for ki, offs in enumerate(itertools.product(*[range(k) for k in kernel])):
            for li, opos in enumerate(itertools.product(*[range(o) for o in out])):
                src = [o * s - p + k * d
                       for o, s, p, k, d in zip(opos, stride, padding, offs, dilation)]
                if all(0 <= i < m for i, m in zip(src, sp)):
                    cols[:, ci * kk + ki, li] = x[(slice(None), ci) + tuple(src)]
    if ones_row:
        cols[:, -1] = 1.0
    return cols


_CONV = [  # (x shape, kernel, stride, padding, dilation, ones_row)
    ((2, 2, 4, 4), (2, 2), (1, 1), (0, 0), (1, 1), False),
    ((1, 2, 5, 4), (3, 2), (2, 1), (1, 0), (1, 2), True),
    ((2, 3, 6), (3,), (2,), (1,), (1,), False),
]


def _conv_attrs(kernel, stride, padding, dilation, ones_row):
    return {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
            "ones_row": ones_row}


_add("im2col", *[Case(lambda g, s=s: [g.f(*s)], _im2col_ref, _conv_attrs(*rest),
                      label=f"{len(rest[0])}d{'_bias' if rest[-1] else ''}")
                 for s, *rest in _CONV])


def _col2im_case(xshape, kernel, stride, padding, dilation, ones_row):
    cols_shape = _im2col_ref(np.zeros(xshape), kernel, stride, padding, dilation, ones_row).shape

    def ref(cols, spatial, **conv):
        return vjp(lambda x: _im2col_ref(x, **conv), [np.zeros(xshape)], 0, cols, eps=1.0)
    return Case(lambda g: [g.f(*cols_shape)], ref,
                dict(spatial=tuple(xshape[2:]), **_conv_attrs(kernel, stride, padding, dilation,
                                                              ones_row)),
                label=f"{len(kernel)}d{'_bias' if ones_row else ''}")


_add("col2im", *[_col2im_case(*c) for c in _CONV])


def _batch_last(cols):
    """(N, R, L) columns -> the (R, N*L) layout of ``batch_last``."""
    return np.ascontiguousarray(np.swapaxes(cols, 0, 1)).reshape(cols.shape[1], -1)


def _im2col_batch_last_ref(x, batch_last, **conv):
    return _batch_last(_im2col_ref(x, **conv))


def _col2im_batch_last_case(xshape, kernel, stride, padding, dilation, ones_row):
    conv = _conv_attrs(kernel, stride, padding, dilation, ones_row)
    cols_shape = _im2col_batch_last_ref(np.zeros(xshape), True, **conv).shape

    def ref(cols, spatial, batch_last, **conv):
        return vjp(lambda x: _im2col_batch_last_ref(x, True, **conv), [np.zeros(xshape)], 0,
                   cols, eps=1.0)
    return Case(lambda g: [g.f(*cols_shape)], ref,
                dict(spatial=tuple(xshape[2:]), batch_last=True, **conv),
                label=f"{len(kernel)}d{'_bias' if ones_row else ''}_batch_last")


CASES["im2col"] += [Case(lambda g, s=s: [g.f(*s)], _im2col_batch_last_ref,
                         dict(_conv_attrs(*rest), batch_last=True),
                         label=f"{len(rest[0])}d{'_bias' if rest[-1] else ''}_batch_last")
                    for s, *rest in _CONV]
CASES["col2im"] += [_col2im_batch_last_case(*c) for c in _CONV]



def _conv_ref(x, w2, **conv):
    cols = _im2col_ref(x, **conv)
    out = [_conv_out(*a) for a in zip(W(x).shape[2:], conv["kernel"], conv["stride"],
                                      conv["padding"], conv["dilation"])]
    return np.matmul(W(w2), cols).reshape((cols.shape[0], W(w2).shape[0]) + tuple(out))


def _conv_shapes(xshape, kernel, stride, padding, dilation, ones_row, cout=3):
    rows = _im2col_ref(np.zeros(xshape), kernel, stride, padding, dilation, ones_row).shape[1]
    conv = _conv_attrs(kernel, stride, padding, dilation, ones_row)
    y = _conv_ref(np.zeros(xshape), np.zeros((cout, rows)), **conv)
    return (cout, rows), y.shape, conv


def _conv_cases(xshape, kernel, stride, padding, dilation, ones_row):
    wshape, yshape, conv = _conv_shapes(xshape, kernel, stride, padding, dilation, ones_row)
    label = f"{len(kernel)}d{'_bias' if ones_row else ''}"

    def input_grad_ref(g, w2, spatial, **conv):
        return vjp(lambda x: _conv_ref(x, w2, **conv), [np.zeros(xshape)], 0, g, eps=1.0)

    def weight_grad_ref(x, g, **conv):
        cols = _im2col_ref(x, **conv)
        return np.einsum("nol,nrl->or", W(g).reshape(g.shape[0], g.shape[1], -1), cols)
    return {"conv": Case(lambda g: [g.f(*xshape), g.f(*wshape)], _conv_ref, conv, label=label),
            "conv_input_grad": Case(lambda g: [g.f(*yshape), g.f(*wshape)], input_grad_ref,
                                    dict(spatial=tuple(xshape[2:]), **conv), label=label),
            "conv_weight_grad": Case(lambda g: [g.f(*xshape), g.f(*yshape)], weight_grad_ref,
                                     conv, label=label)}


for _c in _CONV:
    for _name, _case in _conv_cases(*_c).items():
        CASES.setdefault(_name, []).append(_case)

_POOL = [  # (x shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 2, 4, 4), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), (1, 1), True),
    ((1, 1, 7, 6), (2, 3), (2, 1), (1, 0), (2, 1), False),
    ((2, 2, 5), (2,), (2,), (0,), (1,), True),
]


def _pool_out(sp, kernel, stride, padding, dilation, ceil_mode):
    return [_conv_out(*a, ceil_mode) for a in zip(sp, kernel, stride, padding, dilation)]


def _max_pool_indices_ref(x, kernel, stride, padding, dilation, ceil_mode):
    x = W(x)
    sp = x.shape[2:]
    out = _pool_out(sp, kernel, stride, padding, dilation, ceil_mode)
    res = np.zeros(x.shape[:2] + tuple(out), np.int64)
    for nc in np.ndindex(*x.shape[:2]):
        for opos in itertools.product(*[range(o) for o in out]):
            best, arg = None, None
            for offs in itertools.product(*[range(k) for k in kernel]):
                src = tuple(o * s - p + k * d
                            for o, s, p, k, d in zip(opos, stride, padding, offs, dilation))
                if all(0 <= i < m for i, m in zip(src, sp)):
                    v = x[nc + src]
                    if best is None or v > best:  # first maximum wins ties
                        best, arg = v, int(np.ravel_multi_index(src, sp))
            res[nc + opos] = arg
    return res


def _pool_attrs(kernel, stride, padding, dilation, ceil_mode):
    return {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
            "ceil_mode": ceil_mode}


_add("max_pool_indices",
     *[Case(lambda g, s=s: [g.distinct(*s)], _max_pool_indices_ref, _pool_attrs(*rest),
            out_dtype="int64", label=f"{len(rest[0])}d_{i}")
       for i, (s, *rest) in enumerate(_POOL)],
     Case(lambda g: [g.i(2, 2, 4, 4, lo=0, hi=3).astype(np.float32)], _max_pool_indices_ref,
          _pool_attrs((2, 2), (1, 1), (1, 1), (1, 1), False), out_dtype="int64", label="ties"),
     Case(lambda g: [g.i(1, 2, 4, 4, lo=-50, hi=50, dtype=np.int32)], _max_pool_indices_ref,
          _pool_attrs((3, 3), (2, 2), (1, 1), (1, 1), True), out_dtype="int64", label="int"))


def _pool_gather_ref(x, idx):
    x = W(x)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    out = np.empty(idx.shape)
    for pos in np.ndindex(*idx.shape):
        out[pos] = flat[pos[0], pos[1], idx[pos]]
    return out


def _pool_gather_sample(g, xshape, oshape):
    plane = int(np.prod(xshape[2:]))
    return [g.f(*xshape), g.i(*xshape[:2], *oshape, lo=0, hi=plane)]


_add("pool_gather",
     Case(lambda g: _pool_gather_sample(g, (2, 2, 4, 4), (2, 2)), _pool_gather_ref),
     Case(lambda g: _pool_gather_sample(g, (2, 3, 5), (3,)), _pool_gather_ref, label="1d"))


def _pool_scatter_case(xshape, oshape, label):
    def make(g):
        _, idx = _pool_gather_sample(g, xshape, oshape)
        return [g.f(*idx.shape), idx]

    def ref(gr, idx, shape):
        return vjp(lambda x: _pool_gather_ref(x, idx), [np.zeros(shape)], 0, gr, eps=1.0)
    return Case(make, ref, {"shape": xshape}, label=label)


_add("pool_scatter", _pool_scatter_case((2, 2, 4, 4), (3, 2), "2d"),
     _pool_scatter_case((1, 3, 5), (4,), "1d"))


def _avg_pool_ref(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """torch's CPU avg_pool: windows clipped at the padded edge for the pad-counting size,
    at the input for the sum and the valid-count size."""
    x = W(x)
    sp = x.shape[2:]
    ones = (1,) * len(kernel)
    out = _pool_out(sp, kernel, stride, padding, ones, ceil_mode)
    res = np.zeros(x.shape[:2] + tuple(out))
    for opos in itertools.product(*[range(o) for o in out]):
        sl, pool_size, valid = [], 1, 1
        for o, s, p, k, n in zip(opos, stride, padding, kernel, sp):
            start = o * s - p
            end = min(start + k, n + p)
            pool_size *= end - start
            start, end = max(start, 0), min(end, n)
            valid *= end - start
            sl.append(slice(start, end))
        total = x[(slice(None), slice(None)) + tuple(sl)].sum(axis=tuple(range(2, x.ndim)))
        div = divisor_override or (pool_size if count_include_pad else valid)
        res[(slice(None), slice(None)) + opos] = total / div
    return res


_AVG = [  # (x shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    ((2, 2, 4, 4), (2, 2), (2, 2), (0, 0), False, True, None),
    ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), True, True, None),
    ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), True, False, None),
    ((1, 1, 4, 5), (2, 3), (1, 2), (1, 1), False, True, 4),
    ((2, 2, 7), (3,), (2,), (1,), True, False, None),
]


def _avg_attrs(kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return {"kernel": kernel, "stride": stride, "padding": padding, "ceil_mode": ceil_mode,
            "count_include_pad": count_include_pad, "divisor_override": divisor_override}


_add("avg_pool", *[Case(lambda g, s=s: [g.f(*s)], _avg_pool_ref, _avg_attrs(*rest),
                        label=f"{len(rest[0])}d_{i}") for i, (s, *rest) in enumerate(_AVG)])


def _avg_backward_case(xshape, *rest, label):
    attrs = _avg_attrs(*rest)
    oshape = _avg_pool_ref(np.zeros(xshape), **attrs).shape

    def ref(gr, shape, **a):
        return vjp(lambda x: _avg_pool_ref(x, **a), [np.zeros(shape)], 0, gr, eps=1.0)
    return Case(lambda g: [g.f(*oshape)], ref, dict(shape=xshape, **attrs), label=label)


_add("avg_pool_backward", *[_avg_backward_case(*c, label=f"{len(c[1])}d_{i}")
                            for i, c in enumerate(_AVG)])
_add("embedding",
     Case(lambda g: [g.f(5, 3), np.array([[0, 4, 4], [2, 0, 1]])],
          lambda w, i, padding_idx: W(w)[i], {"padding_idx": None}),
     # padding_idx only stops the gradient (the forward still reads the row), so the
     # finite-difference check does not apply; embedding_backward covers that zero row
     Case(lambda g: [g.f(4, 2), np.array([1, 3, 1], np.int32)],
          lambda w, i, padding_idx: W(w)[i], {"padding_idx": 1}, grad=False, label="padding"))


def _embedding_backward_ref(gr, idx, num_weights, padding_idx):
    gr = W(gr)
    out = np.zeros((num_weights, gr.shape[-1]))
    for pos in np.ndindex(*idx.shape):
        if idx[pos] != padding_idx:
            out[idx[pos]] += gr[pos]
    return out


_add("embedding_backward",
     Case(lambda g: [g.f(2, 3, 4), np.array([[0, 4, 4], [2, 0, 1]])], _embedding_backward_ref,
          {"num_weights": 6, "padding_idx": None}),
     Case(lambda g: [g.f(4, 2), np.array([1, 3, 1, 0])], _embedding_backward_ref,
          {"num_weights": 4, "padding_idx": 1}, label="padding"))


# ---- recurrent scans -----------------------------------------------------------------------------
T_, B_, H_ = 3, 2, 2


def _lstm_ref(xw, h0, c0, w, b):
    xw, h, c, w, b = map(W, (xw, h0, c0, w, b))
    t_len, bsz, h4 = xw.shape
    hh = h4 // 4
    out = np.zeros((7, t_len, bsz, hh))
    for t in range(t_len):
        z = xw[t] + h @ w.T + b
        i, f, gg, o = (_sig(z[:, :hh]), _sig(z[:, hh:2 * hh]), np.tanh(z[:, 2 * hh:3 * hh]),
                       _sig(z[:, 3 * hh:]))
        c = f * c + i * gg
        h = o * np.tanh(c)
        out[:, t] = [h, c, i, f, gg, o, np.tanh(c)]
    return out


def _lstm_inputs(g):
    return [g.f(T_, B_, 4 * H_), g.f(B_, H_), g.f(B_, H_), g.f(4 * H_, H_, lo=-1, hi=1),
            g.f(4 * H_, lo=-1, hi=1)]


def _select(k):
    from gcompile._tensor import apply_op

    def pick(out):
        return tuple(apply_op("select_block", (out,), {"index": i}) for i in k)
    return pick


# the packed outputs past the states (gate activations) are saved for backward, not
# differentiated: the gradient flows through the states the user can see (select_block)
_add("lstm_scan", Case(_lstm_inputs, _lstm_ref, grad_out=_select((0, 1))))


def _lstm_backward_sample(g):
    xw, h0, c0, w, b = _lstm_inputs(g)
    out = _lstm_ref(xw, h0, c0, w, b).astype(np.float32)
    gout = np.zeros_like(out)
    gout[:2] = g.f(2, T_, B_, H_)  # cotangents of h and c; gates are never differentiated
    return Sample([gout, out, c0, w], xw=xw, h0=h0, b=b)


def _lstm_backward_ref(gout, out, c0, w, ctx):
    def states(xw, c0):
        return _lstm_ref(xw, ctx["h0"], c0, w, ctx["b"])[:2]
    res = np.zeros((T_ + 1, B_, 4 * H_))
    res[:T_] = vjp(states, [ctx["xw"], c0], 0, gout[:2])
    res[T_, :, :H_] = vjp(states, [ctx["xw"], c0], 1, gout[:2])
    return res


_add("lstm_scan_backward", Case(_lstm_backward_sample, _lstm_backward_ref, tol=FD_TOL,
                                grad=False))


def _gru_ref(xw, h0, w, bh, delta=None):
    xw, h, w, bh = map(W, (xw, h0, w, bh))
    t_len, bsz, h3 = xw.shape
    hh = h3 // 3
    out = np.zeros((5, t_len, bsz, hh))
    for t in range(t_len):
        proj = h @ w.T + bh + (0 if delta is None else delta[t])
        r = _sig(xw[t, :, :hh] + proj[:, :hh])
        z = _sig(xw[t, :, hh:2 * hh] + proj[:, hh:2 * hh])
        n = np.tanh(xw[t, :, 2 * hh:] + r * proj[:, 2 * hh:])
        h = (1 - z) * n + z * h
        out[:, t] = [h, r, z, n, proj[:, 2 * hh:]]
    return out


def _gru_inputs(g):
    return [g.f(T_, B_, 3 * H_), g.f(B_, H_), g.f(3 * H_, H_, lo=-1, hi=1),
            g.f(3 * H_, lo=-1, hi=1)]


_add("gru_scan", Case(_gru_inputs, _gru_ref, grad_out=_select((0,))))


def _gru_backward_sample(g):
    xw, h0, w, bh = _gru_inputs(g)
    out = _gru_ref(xw, h0, w, bh).astype(np.float32)
    gout = np.zeros_like(out)
    gout[0] = g.f(T_, B_, H_)  # only the states are differentiated
    return Sample([gout, out, h0, w], xw=xw, bh=bh)


def _gru_backward_ref(gout, out, h0, w, ctx):
    """[d input projection | d hidden projection (W_hh h + b_hh)] per step, dh0 in row T."""
    def states(xw, h0, delta):
        return _gru_ref(xw, h0, w, ctx["bh"], delta)[0]
    args = [ctx["xw"], h0, np.zeros((T_, B_, 3 * H_))]
    res = np.zeros((T_ + 1, B_, 6 * H_))
    res[:T_, :, :3 * H_] = vjp(states, args, 0, gout[0])
    res[:T_, :, 3 * H_:] = vjp(states, args, 2, gout[0])
    res[T_, :, :H_] = vjp(states, args, 1, gout[0])
    return res


_add("gru_scan_backward", Case(_gru_backward_sample, _gru_backward_ref, tol=FD_TOL,
                               grad=False))


def _rnn_ref(xw, h0, w, nonlinearity="tanh"):
    xw, h, w = map(W, (xw, h0, w))
    out = np.zeros(xw.shape)
    for t in range(xw.shape[0]):
        pre = xw[t] + h @ w.T
        h = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)
        out[t] = h
    return out


def _rnn_inputs(g):
    # pre-activations away from relu's kink: small recurrent weights, inputs away from 0
    return [g.f(T_, B_, H_, away=0.3), g.f(B_, H_, lo=-0.5, hi=0.5),
            g.f(H_, H_, lo=-0.2, hi=0.2)]


_add("rnn_scan", *[Case(_rnn_inputs, _rnn_ref, {"nonlinearity": nl}, label=nl)
                   for nl in ("tanh", "relu")])


def _rnn_backward_case(nl):
    def make(g):
        xw, h0, w = _rnn_inputs(g)
        out = _rnn_ref(xw, h0, w, nl).astype(np.float32)
        return Sample([g.f(*out.shape), out, w], xw=xw, h0=h0)

    def ref(gout, out, w, nonlinearity, ctx):
        return vjp(lambda xw: _rnn_ref(xw, ctx["h0"], w, nonlinearity), [ctx["xw"]], 0, gout)
    return Case(make, ref, {"nonlinearity": nl}, tol=FD_TOL, grad=False, label=nl)


_add("rnn_scan_backward", *[_rnn_backward_case(nl) for nl in ("tanh", "relu")])


def _packed(g):
    return [g.f(5, T_, B_, H_)]


_add("select_block", Case(_packed, lambda x, index: W(x)[index], {"index": 0}),
     Case(_packed, lambda x, index: W(x)[index], {"index": 3}, label="3"))


def _select_block_backward_ref(gr, shape, index):
    out = np.zeros(shape)
    out[index] = W(gr)
    return out


_add("select_block_backward",
     Case(lambda g: [g.f(T_, B_, H_)], _select_block_backward_ref,
          {"shape": (5, T_, B_, H_), "index": 1}))


# ---- attention (ir/ops/attention.py) ------------------------------------------------------------
def _sdpa_ref(q, k, v, scale, causal):
    """Per item, in float64: scores, an explicit row softmax over the allowed keys, times v."""
    q, k, v = W(q), W(k), W(v)
    lq, d = q.shape[-2:]
    qf, kf, vf = (a.reshape(-1, lq, d) for a in (q, k, v))
    out = np.zeros(qf.shape)
    for b in range(qf.shape[0]):
        for i in range(lq):
            n = i + 1 if causal else lq
            s = np.array([scale * np.dot(qf[b, i], kf[b, j]) for j in range(n)])
            p = np.exp(s - s.max())
            p /= p.sum()
            out[b, i] = p @ vf[b, :n]
    return out.reshape(q.shape)


def _sdpa_backward_sample(shape, scale, causal):
    def make(g):
        return [g.f(*shape), g.f(*shape), g.f(*shape), g.f(*shape)]
    return Case(make, lambda gout, q, k, v, scale, causal: np.stack(
        [vjp(lambda *a: _sdpa_ref(*a, scale, causal), [q, k, v], i, gout) for i in range(3)]),
        {"scale": scale, "causal": causal}, tol=FD_TOL, label=f"{len(shape)}d_causal{causal}")


_add("sdpa",
     *[Case(lambda g, s=shape: [g.f(*s), g.f(*s), g.f(*s)], _sdpa_ref,
            {"scale": scale, "causal": causal}, label=f"{len(shape)}d_causal{causal}")
       for shape, scale, causal in (((2, 3, 5, 4), 0.5, False), ((2, 3, 5, 4), 0.5, True),
                                    ((6, 3), 1.3, True), ((1, 9, 2), 0.7, False))])
_add("sdpa_backward", _sdpa_backward_sample((2, 2, 4, 3), 0.5, True),
     _sdpa_backward_sample((5, 2), 1.1, False))


# ---- run-time checks -----------------------------------------------------------------------------
def _check_attrs(kind, low=None, high=None, ignore=None, error="RuntimeError"):
    return {"kind": kind, "low": low, "high": high, "ignore": ignore, "error": error,
            "message": "bad value {bad}"}


# values that pass come through unchanged (the raising side: the check op's own tests)
_add("check",
     Case(lambda g: [g.f(3, 4)], lambda x, **a: W(x), _check_attrs("finite")),
     Case(lambda g: [np.array([0, 3, -100, 4, 1])], lambda x, **a: x,
          _check_attrs("range", low=0, high=4, ignore=-100, error="IndexError"), label="range"),
     Case(lambda g: [g.f(2, 3, lo=-1, hi=1)], lambda x, **a: W(x),
          _check_attrs("range", low=-1.0, high=None), label="low_only"))


# random ops: the seed is the input. rand_uniform's reference is the Philox4x32-10 blocks
# of ir.ops.random (checked against Random123's known answers and a scalar cipher in
# tests/kernels/test_random_native.py) turned into floats here; the op itself runs the
# native kernel. rand_normal's is the PCG64 stream it defines.
# (tests/gcompile/test_random_ops.py checks the samples' statistics)
def _philox_uniform(seed, shape, dtype):
    from ir.ops.random import philox_blocks
    n = int(np.prod(shape, dtype=np.int64))
    per = 2 if dtype.name == "float64" else 4
    f64 = per == 2
    w = [x.astype(np.float64) for x in philox_blocks(int(seed), (n + per - 1) // per)]
    if f64:
        pairs = [((w[0] // 32) * 2**26 + w[1] // 64) / 2**53,
                 ((w[2] // 32) * 2**26 + w[3] // 64) / 2**53]
        vals = np.stack(pairs, axis=1).reshape(-1)
    else:
        vals = np.stack([(x // 256) / 2**24 for x in w], axis=1).reshape(-1)
    return vals[:n].reshape(shape).astype(dtype.np)


def _pcg_normal(seed, shape, dtype):
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    npd = np.float64 if dtype.name == "float64" else np.float32
    return rng.standard_normal(shape, dtype=npd).astype(dtype.np)


for _kind, _ref in (("uniform", _philox_uniform), ("normal", _pcg_normal)):
    _add(f"rand_{_kind}",
         Case(lambda g: [np.array(1234, np.int64)],
              lambda s, shape, dtype, _r=_ref: _r(s, shape, dtype),
              {"shape": (3, 4), "dtype": _dt.float32}, out_dtype="float32", grad=False),
         Case(lambda g: [np.array(2**40 + 7, np.int64)],
              lambda s, shape, dtype, _r=_ref: _r(s, shape, dtype),
              {"shape": (5,), "dtype": _dt.float64}, out_dtype="float64", grad=False,
              label="f64"))


def seed_of(name: str, k: int) -> int:
    return zlib.crc32(f"{name}:{k}".encode())


def make_args(name: str, k: int, case: Case):
    """The case's arguments (a fresh draw each call, the same values every call)."""
    return case.make(Gen(seed_of(name, k)))


def case_id(name: str, k: int, case: Case) -> str:
    return f"{name}[{case.label or k}]"


# ---- collectives (ir/ops/collectives.py) -------------------------------------------------------
# In one process (no process group) every collective is over a single rank: the identity.
# Multi-rank behaviour is tested under mpiexec (tests/gcompile/distributed).
_add("allreduce_start",
     Case(lambda g: [g.f(3, 4)], lambda x, op: W(x), {"op": "sum"}),
     Case(lambda g: [g.f(5)], lambda x, op: W(x), {"op": "avg"}, label="avg"),
     Case(lambda g: [g.i(2, 3)], lambda x, op: W(x), {"op": "max"}, label="int_max"))
_add("allreduce_wait",
     Case(lambda g: [g.f(3, 4)], lambda x, op: W(x), {"op": "sum"}),
     Case(lambda g: [g.f(2, 3, 2)], lambda x, op: W(x), {"op": "avg"}, label="avg"),
     Case(lambda g: [g.f(4)], lambda x, op: W(x), {"op": "min"}, label="min", grad=False))
_add("broadcast",
     Case(lambda g: [g.f(3, 4)], lambda x, src: W(x), {"src": 0}),
     Case(lambda g: [g.i(6)], lambda x, src: W(x), {"src": 0}, label="int"))


# ---- composites written once in primitives (ir/ops/composites.py) -------------------------------
def _layer_norm_ref(x, *wb, normalized_ndim, eps, has_weight=False, has_bias=False):
    x = W(x)
    lead = x.shape[:x.ndim - normalized_ndim]
    rows = x.reshape(lead + (-1,))
    out = np.empty_like(rows)
    for idx in np.ndindex(*lead):
        r = rows[idx]
        mu = r.sum() / r.size
        var = ((r - mu) ** 2).sum() / r.size
        out[idx] = (r - mu) / math.sqrt(var + eps)
    out = out.reshape(x.shape)
    if has_weight:
        out = out * W(wb[0])
    if has_bias:
        out = out + W(wb[-1])
    return out


def _loss_reduce(loss, reduction):
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _mse_ref(x, t, weight=None, reduction="mean"):
    loss = (W(x) - W(t)) ** 2 * (1.0 if weight is None else W(weight))
    return _loss_reduce(loss, reduction)


def _cross_entropy_ref(x, t, weight=None, reduction="mean", ignore_index=-100,
                       label_smoothing=0.0):
    """Sample by sample: -sum_c q_c w_c log p_c with q the (smoothed) target distribution."""
    x, vector = W(x), x.ndim == 1
    if vector:
        x, t = x[None], np.asarray(t)[None]
    n = x.shape[1]
    w = np.ones(n) if weight is None else W(weight)
    xs = np.moveaxis(x, 1, -1).reshape(-1, n)
    soft = t.dtype.kind == "f"
    ts = np.moveaxis(W(t), 1, -1).reshape(-1, n) if soft else np.asarray(t).reshape(-1)
    losses, denom = [], 0.0
    for row, tgt in zip(xs, ts):
        logp = row - row.max() - math.log(np.exp(row - row.max()).sum())
        if soft:
            q = tgt * (1 - label_smoothing) + label_smoothing / n
            losses.append(-(q * w * logp).sum())
            continue
        if tgt == ignore_index:
            losses.append(0.0)
            continue
        q = np.full(n, label_smoothing / n)
        q[tgt] += 1 - label_smoothing
        # torch: the smoothing term carries each class's weight, the nll term the target's
        losses.append(-(1 - label_smoothing) * w[tgt] * logp[tgt]
                      - (label_smoothing / n) * (w * logp).sum())
        denom += w[tgt]
    loss = np.array(losses).reshape(t.shape[:1] + t.shape[2:] if soft else t.shape)
    if reduction == "none":
        return loss.reshape(()) if vector else loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / (loss.size if soft else denom)


_LN = {"eps": 1e-5}
_add("linear",
     Case(lambda g: [g.f(3, 4), g.f(5, 4), g.f(5)], lambda x, w, b: W(x) @ W(w).T + W(b)),
     Case(lambda g: [g.f(2, 3, 4), g.f(2, 4)], lambda x, w: W(x) @ W(w).T, label="3d_nobias"),
     Case(lambda g: [g.f(4), g.f(3, 4), g.f(3)], lambda x, w, b: W(x) @ W(w).T + W(b),
          label="vector"))
_add("layer_norm",
     Case(lambda g: [g.f(3, 5), g.f(5), g.f(5)], _layer_norm_ref,
          {"normalized_ndim": 1, "has_weight": True, "has_bias": True, **_LN}),
     Case(lambda g: [g.f(2, 3, 4)], _layer_norm_ref, {"normalized_ndim": 2, **_LN},
          label="2dims"),
     Case(lambda g: [g.f(4, 3), g.f(3)], _layer_norm_ref,
          {"normalized_ndim": 1, "has_bias": True, "eps": 1e-3}, label="bias_only"))
_add("mse_loss",
     *[Case(lambda g: [g.f(3, 4), g.f(3, 4)], _mse_ref, {"reduction": r}, label=r)
       for r in ("mean", "sum", "none")],
     Case(lambda g: [g.f(2, 5), g.f(2, 5), g.pos(2, 5)], _mse_ref, {"reduction": "mean"},
          label="weight"))


def _ce_case(make, label, **attrs):
    attrs = {"reduction": "mean", "ignore_index": -100, "label_smoothing": 0.0, **attrs}
    return Case(make, _cross_entropy_ref, attrs, out_dtype="float32", label=label)


def _probs(g, *shape):
    p = g.pos(*shape)
    return p / p.sum(axis=1, keepdims=True)


_add("cross_entropy",
     _ce_case(lambda g: [g.f(4, 5), np.array([1, 0, 4, 2])], "mean"),
     _ce_case(lambda g: [g.f(4, 5), np.array([1, -100, 4, 2]), g.pos(5)], "weight_ignore",
              reduction="sum"),
     _ce_case(lambda g: [g.f(3, 4, 2), np.array([[0, 3], [2, 2], [1, 0]])], "smooth_none",
              reduction="none", label_smoothing=0.2),
     _ce_case(lambda g: [g.f(3, 4), np.array([3, 1, 1]), g.pos(4)], "smooth_weight",
              label_smoothing=0.1),
     _ce_case(lambda g: [g.f(3, 4), _probs(g, 3, 4)], "probs", label_smoothing=0.1),
     _ce_case(lambda g: [g.f(5), np.array(2)], "vector", reduction="none"))
