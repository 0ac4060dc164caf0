"""Attach Python operators (``x + y``, ``x @ w``, ``x += 1``) and function-style methods
(``x.exp()``, ``x.sum(dim)``, ``x.add_(y)``) to Tensor: one definition each, in
``_functions``; here only the binding.

Layer: the top of the eager core's Tensor methods, just below ``_tensor``, which imports
it so ``Tensor`` is complete.
"""
from __future__ import annotations

import numpy as np

from . import _functions as F
# the class's own methods first: the bindings below replace same-named ones
from . import _tensor_autograd, _tensor_convert, _tensor_inplace, _tensor_shape  # noqa: F401
from ._functions import _is_one
from ._symbolic import SymScalar
from ._creation import _wrap_scalar_or_tensor
from ._dispatch import apply_op
from ._state import state
from ._tensor_base import Tensor


def _binop(name):
    def method(self, other):
        if other.__class__ is not Tensor:
            if other is None:
                return NotImplemented  # x == None is False, x + None a TypeError
            other = _wrap_scalar_or_tensor(other)
        return apply_op(name, (self, other))
    return method


def _rbinop(name):
    def method(self, other):
        other = _wrap_scalar_or_tensor(other)
        return apply_op(name, (other, self) if isinstance(other, (Tensor, SymScalar)) else
                        (F._t(other), self) if name not in ("sub", "div", "pow", "floor_divide",
                                                            "remainder") else (other, self))
    return method


def _rsub(self, other):
    return apply_op("rsub", (self, _wrap_scalar_or_tensor(other)))


_CHUNK = 1 << 16  # elements per chunk of an in-place composite computed under a trace


def traced_in_chunks(fn, self: Tensor, *tensors: Tensor) -> bool:
    """While a compiled function is traced: record ``fn(self, *tensors)`` (in-place ops
    on ``self`` through temporaries of its size) on the whole tensors, computing
    nothing, then compute it untraced on one chunk of the flat arrays at a time. The
    same elementwise ops on each element, so the same numbers, and the trace holds no
    parameter-sized temporary beyond eager's (issue 20: an optimizer traced op by op
    over a 4096-wide layer held 64 MB more than eager's native update). Symbolic
    numbers ``fn`` reads compute through the 0-d tensors the trace made for them.
    False, having done nothing, unless every tensor is a same-shaped C-contiguous float
    host array of at least four chunks."""
    tracer = state.tracer
    a = self._data
    if tracer is None or tracer.record_only or a.__class__ is not np.ndarray or \
            a.dtype.kind != "f" or a.size < 4 * _CHUNK or not all(
                t._data.__class__ is np.ndarray and t._data.shape == a.shape and
                t._data.dtype == a.dtype and t._data.flags.c_contiguous
                for t in (self,) + tensors):
        return False
    with tracer.recording_only():
        fn(self, *tensors)
    flats = [t._data.reshape(-1) for t in (self,) + tensors]
    state.tracer, state.concrete = None, tracer.scalar_tensor
    try:
        for i in range(0, a.size, _CHUNK):
            fn(*(Tensor._make(f[i:i + _CHUNK]) for f in flats))
    finally:
        state.tracer, state.concrete = tracer, None
    self._vbox[0] += 1  # the one in-place write the graph records
    return True


def concrete(x):
    """``x``, or for a symbolic number inside ``traced_in_chunks`` the 0-d tensor the trace
    computes it through."""
    f = state.concrete
    return f(x) if f is not None and isinstance(x, SymScalar) else x


def _inplace_binop(name):
    def method(self, other, *, alpha=1):
        if isinstance(other, Tensor) and not _is_one(alpha) and traced_in_chunks(
                lambda s, o: s._inplace(name, (o * concrete(alpha),)), self, other):
            return self
        other = _wrap_scalar_or_tensor(other)
        if not _is_one(alpha):
            other = other * alpha
        return self._inplace(name, (other,))
    return method


def _sub(self, other, *, alpha=1):
    return F.sub(self, other, alpha=alpha)


def _add(self, other, *, alpha=1):
    return F.add(self, other, alpha=alpha)


_DUNDER = {"__add__": "add", "__sub__": "sub", "__mul__": "mul", "__truediv__": "div",
           "__floordiv__": "floor_divide", "__mod__": "remainder", "__pow__": "pow",
           "__eq__": "eq", "__ne__": "ne", "__lt__": "lt", "__le__": "le", "__gt__": "gt",
           "__ge__": "ge", "__and__": "logical_and", "__or__": "logical_or",
           "__xor__": "logical_xor"}


def _bitwise(logical, bitwise):
    def method(self, other):
        other = _wrap_scalar_or_tensor(other)
        is_bool = self.dtype.name == "bool" and (
            not isinstance(other, Tensor) or other.dtype.name == "bool")
        return apply_op(logical if is_bool else bitwise, (self, other))
    return method


for _d, _op in _DUNDER.items():
    setattr(Tensor, _d, _binop(_op))
Tensor.__sub__ = lambda self, other: F.sub(self, other)
Tensor.__and__ = _bitwise("logical_and", "bitwise_and")
Tensor.__or__ = _bitwise("logical_or", "bitwise_or")
Tensor.__xor__ = _bitwise("logical_xor", "bitwise_xor")
Tensor.__rand__ = Tensor.__and__
Tensor.__ror__ = Tensor.__or__
Tensor.__rxor__ = Tensor.__xor__
Tensor.__radd__ = lambda self, other: apply_op("add", (_wrap_scalar_or_tensor(other), self))
Tensor.__rmul__ = lambda self, other: apply_op("mul", (_wrap_scalar_or_tensor(other), self))
Tensor.__rsub__ = _rsub
Tensor.__rtruediv__ = lambda self, other: apply_op("div", (_wrap_scalar_or_tensor(other), self))
Tensor.__rfloordiv__ = lambda self, other: apply_op("floor_divide",
                                                    (_wrap_scalar_or_tensor(other), self))
Tensor.__rmod__ = lambda self, other: apply_op("remainder", (_wrap_scalar_or_tensor(other), self))
Tensor.__rpow__ = lambda self, other: apply_op("pow", (_wrap_scalar_or_tensor(other), self))
Tensor.__matmul__ = lambda self, other: F.matmul(self, other)
Tensor.__rmatmul__ = lambda self, other: F.matmul(F._t(other), self)
Tensor.__neg__ = lambda self: apply_op("neg", (self,))
Tensor.__pos__ = lambda self: self
Tensor.__abs__ = lambda self: apply_op("abs", (self,))


def _invert(self):
    return apply_op("logical_not" if self.dtype.name == "bool" else "bitwise_not", (self,))


Tensor.__invert__ = _invert

for _d, _op in (("__iadd__", "add"), ("__isub__", "sub"), ("__imul__", "mul"),
                ("__itruediv__", "div"), ("__ifloordiv__", "floor_divide"),
                ("__imod__", "remainder"), ("__ipow__", "pow")):
    setattr(Tensor, _d, _inplace_binop(_op))
Tensor.__iand__ = lambda self, o: self._inplace(
    "logical_and" if self.dtype.name == "bool" else "bitwise_and", (_wrap_scalar_or_tensor(o),))
Tensor.__ior__ = lambda self, o: self._inplace(
    "logical_or" if self.dtype.name == "bool" else "bitwise_or", (_wrap_scalar_or_tensor(o),))

# function-style methods: x.exp(), x.sum(dim) ...
_METHODS = F._UNARY + [
    "mul", "div", "pow", "floor_divide", "remainder", "maximum", "minimum", "atan2", "eq",
    "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "bitwise_and",
    "bitwise_or", "bitwise_xor", "clamp", "clip", "clamp_min", "clamp_max", "round", "square",
    "fmod", "lerp", "addcmul", "addcdiv", "isclose", "allclose", "equal", "sum", "mean", "prod",
    "var", "std", "amax", "amin", "logsumexp", "any", "all", "max", "min", "argmax", "argmin",
    "norm", "dist", "cumsum", "cumprod", "sort", "argsort", "topk", "kthvalue", "median",
    "quantile", "matmul", "mm", "bmm", "mv", "dot", "inner", "outer", "addmm", "diag", "trace",
    "multiply", "divide", "true_divide", "subtract", "negative", "absolute", "greater",
    "greater_equal", "less", "less_equal", "not_equal", "fix", "broadcast_to", "rsub",
]
for _m in _METHODS:
    setattr(Tensor, _m, getattr(F, _m))
Tensor.add = _add
Tensor.sub = _sub
Tensor.subtract = _sub
Tensor.__hash__ = lambda self: id(self)

# in-place variants: x.exp_(), x.add_(y), x.clamp_(0, 1) ...
_INPLACE_UNARY = [n for n in F._UNARY if n not in ("isnan", "isinf", "isfinite")]


def _make_inplace_unary(name):
    def method(self):
        return self._inplace(name, ())
    method.__name__ = name + "_"
    return method


for _m in _INPLACE_UNARY:
    setattr(Tensor, _m + "_", _make_inplace_unary(_m))
Tensor.neg_ = _make_inplace_unary("neg")
Tensor.negative_ = Tensor.neg_
Tensor.round_ = _make_inplace_unary("round")
for _m in ("mul", "div", "pow", "floor_divide", "remainder", "maximum", "minimum", "atan2",
           "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
           "bitwise_and", "bitwise_or", "bitwise_xor"):
    setattr(Tensor, _m + "_", _inplace_binop(_m))
Tensor.add_ = _inplace_binop("add")
Tensor.sub_ = _inplace_binop("sub")
Tensor.multiply_ = Tensor.mul_
Tensor.divide_ = Tensor.div_
Tensor.subtract_ = Tensor.sub_
Tensor.true_divide_ = Tensor.div_


def _clamp_(self, min=None, max=None):  # noqa: A002
    return self._assign(F.clamp(self, min, max)) if (
        isinstance(min, Tensor) or isinstance(max, Tensor) or not self.dtype.is_floating_point
    ) else self._inplace("clamp", (), {"min": min, "max": max})


Tensor.clamp_ = _clamp_
Tensor.clip_ = _clamp_
Tensor.clamp_min_ = lambda self, min: _clamp_(self, min=min)  # noqa: A002
Tensor.clamp_max_ = lambda self, max: _clamp_(self, max=max)  # noqa: A002
def _one_temporary(self, *operands) -> bool:
    """Whether an in-place composite may build its value through one temporary (its ops in
    place on it, then added into self): autograd tracks nothing, and every tensor operand
    has self's dtype and broadcasts to self's shape. An optimizer traced op by op then
    holds one parameter-sized temporary, as eager torch does (issue 20)."""
    tensors = [t for t in operands if isinstance(t, Tensor)]
    if state.grad_enabled and (self.requires_grad or any(t.requires_grad for t in tensors)):
        return False
    if any(t.dtype is not self.dtype for t in tensors):
        return False
    try:
        return np.broadcast_shapes(self._data.shape, *[t._data.shape for t in tensors]) == \
            self._data.shape
    except ValueError:
        return False


def _lerp_(self, end, weight):
    """self + weight * (end - self), F.lerp's ops in its order."""
    if not isinstance(end, Tensor) or not _one_temporary(self, end, weight):
        return self._assign(F.lerp(self, end, weight))
    if not isinstance(weight, Tensor) and traced_in_chunks(
            lambda s, e: _lerp_one(s, e, concrete(weight)), self, end):
        return self
    return _lerp_one(self, end, weight)


def _lerp_one(self, end, weight):
    t = F.sub(end, self)
    F.mul(weight, t, out=t)
    return self.add_(t)


def _addc_(name):
    def one(self, tensor1, tensor2, value):
        t = F.mul(tensor1, tensor2) if name == "addcmul" else F.div(tensor1, tensor2)
        if not _is_one(value):  # x * 1 is x exactly: F's composite multiplies anyway
            t.mul_(value)
        return self.add_(t)

    def method(self, tensor1, tensor2, value=1):
        if not (isinstance(tensor1, Tensor) and isinstance(tensor2, Tensor)
                and _one_temporary(self, tensor1, tensor2, value)):
            return self._assign(getattr(F, name)(self, tensor1, tensor2, value=value))
        if not isinstance(value, Tensor) and traced_in_chunks(
                lambda s, a, b: one(s, a, b, concrete(value)), self, tensor1, tensor2):
            return self
        return one(self, tensor1, tensor2, value)
    method.__name__ = name + "_"
    method.__doc__ = f"self + value * (tensor1 {'*' if name == 'addcmul' else '/'} tensor2), " \
        f"F.{name}'s ops in its order."
    return method


Tensor.lerp_ = _lerp_
Tensor.addcmul_ = _addc_("addcmul")
Tensor.addcdiv_ = _addc_("addcdiv")
Tensor.square_ = lambda self: self._assign(F.square(self))
Tensor.sigmoid_ = _make_inplace_unary("sigmoid")
Tensor.relu_ = _make_inplace_unary("relu")
Tensor.index_put_ = None


def _index_put_(self, indices, values, accumulate=False):
    spec = tuple(("t", i) for i in range(len(indices)))
    return self._assign(apply_op("index_put", (self, values.to(self.dtype)) + tuple(indices),
                                 {"index": spec, "accumulate": accumulate}))


def _index_put(self, indices, values, accumulate=False):
    spec = tuple(("t", i) for i in range(len(indices)))
    return apply_op("index_put", (self, values.to(self.dtype)) + tuple(indices),
                    {"index": spec, "accumulate": accumulate})


Tensor.index_put_ = _index_put_
Tensor.index_put = _index_put


def _index_add(self, dim, index, source, *, alpha=1):
    from ir.shapes import normalize_dim
    d = normalize_dim(dim, self.dim())
    spec = tuple(("s", None, None, None) for _ in range(d)) + (("t", 0),)
    src = source if alpha == 1 else source * alpha
    return apply_op("index_put", (self, src.to(self.dtype), index),
                    {"index": spec, "accumulate": True})


Tensor.index_add = _index_add
Tensor.index_add_ = lambda self, dim, index, source, *, alpha=1: self._assign(
    _index_add(self, dim, index, source, alpha=alpha))

# methods added with the wider torch API (one definition each, in _functions)
for _m in ("asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erfc", "erfinv",
           "lgamma", "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "arctan2",
           "digamma", "exp2", "logit", "hypot", "logaddexp", "logaddexp2", "xlogy", "fmax",
           "fmin", "nan_to_num", "nansum", "nanmean", "sinc", "deg2rad", "rad2deg", "frac",
           "float_power", "copysign", "baddbmm", "addbmm", "addmv", "addr", "kron", "cross",
           "movedim", "moveaxis", "tile", "repeat_interleave", "diagonal", "diag_embed",
           "take_along_dim", "rot90", "diff", "cummax", "cummin", "logcumsumexp", "bincount",
           "unique", "unique_consecutive", "index_copy", "index_fill", "masked_scatter",
           "scatter_reduce"):
    setattr(Tensor, _m, getattr(F, _m))
Tensor.polygamma = lambda self, n: F.polygamma(n, self)
for _m in ("asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erfc", "erfinv",
           "lgamma"):
    setattr(Tensor, _m + "_", _make_inplace_unary(_m))
Tensor.arcsin_, Tensor.arccos_, Tensor.arctan_ = Tensor.asin_, Tensor.acos_, Tensor.atan_
for _m in ("digamma", "exp2", "logit", "hypot", "logaddexp", "xlogy", "nan_to_num", "sinc",
           "deg2rad", "rad2deg", "frac", "fmax", "fmin", "copysign", "baddbmm", "addbmm",
           "addmv", "addr", "index_copy", "index_fill", "masked_scatter", "scatter_reduce"):
    if _m in ("fmax", "fmin"):
        continue  # torch has no in-place fmax_/fmin_


    def _make(name):
        def method(self, *args, **kwargs):
            return self._assign(getattr(F, name)(self, *args, **kwargs))
        method.__name__ = name + "_"
        return method
    setattr(Tensor, _m + "_", _make(_m))


def _div_(self, other, *, rounding_mode=None):
    if rounding_mode is None:
        return self._inplace("div", (_wrap_scalar_or_tensor(other),))
    return self._assign(F.div(self, other, rounding_mode=rounding_mode))


Tensor.div_ = _div_
Tensor.divide_ = _div_

for _m in ("matrix_exp", "signbit", "count_nonzero", "msort", "ravel", "diagflat", "take",
           "nanmedian", "histc", "renorm", "frexp", "positive", "sgn", "heaviside", "isposinf",
           "isneginf", "isreal", "ldexp", "cov", "corrcoef", "hsplit", "vsplit", "dsplit",
           "conj", "resolve_conj", "resolve_neg", "bitwise_left_shift",
           "bitwise_right_shift", "is_complex", "is_conj", "mode", "histogram", "gcd", "lcm",
           "nextafter"):
    if not hasattr(Tensor, _m):
        setattr(Tensor, _m, getattr(F, _m))


def _where(self, condition, other):
    return F.where(condition, self, other)


Tensor.where = _where
