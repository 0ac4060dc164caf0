"""torch-level functions over registered ops, attached as Tensor methods too.

Each is a thin front end: argument normalisation in torch's signatures, then
``apply_op``. Ops themselves are defined once, in ``ir.ops``.
"""
from __future__ import annotations

import builtins
import math

import numpy as np

from ir import dtypes as dt
from ir.ops.linalg import parse_einsum
from ir.ops.movement import np_index
from ir.registry import REGISTRY as _REGISTRY
from ir.shapes import normalize_dim, normalize_dims

from . import _autocast
from ._creation import _wrap_scalar_or_tensor  # noqa: F401  (the operators' operand rule)
from ._creation import eye, tensor, zeros, zeros_like
from ._dispatch import _graph_break, apply_op, check_values  # noqa: F401  (re-exported)
from ._tensor_base import Size, Tensor, return_type
from ._tensor_base import named_result as _result

_S = (bool, int, float)


def _np_index(spec, tensors):
    return np_index(spec, [t._data for t in tensors])


def _zeros_like(input, *, dtype=None, **kw):
    return zeros_like(input, dtype=dtype, **kw)


def _zeros(*size, dtype=None, **kw):
    return zeros(*size, dtype=dtype, **kw)


def _is_one(alpha) -> bool:
    """``alpha == 1`` for numbers; a tensor alpha (an lr being traced) is never skipped."""
    return isinstance(alpha, (int, float)) and alpha == 1


def _t(x):
    """Tensor for a value that must be one (first argument of most functions)."""
    if isinstance(x, Tensor):
        return x
    return tensor(x)


def _pad_last(x: Tensor, pad: tuple) -> Tensor:
    """Zero padding of the last dims, (left, right, top, bottom, ...): the ``pad`` op as
    ``nn.functional.pad`` runs it, for pads known to be valid."""
    return apply_op("pad", (x,), {"pad": tuple(pad), "mode": "constant", "value": 0.0})


# ---- elementwise -------------------------------------------------------------
def _unary(name, grad_name=None):
    def fn(input, *, out=None):
        x = _t(input)
        if out is not None and _into(out, name, (x,)):
            return out
        return _out(apply_op(name, (x,), grad_name=grad_name), out)
    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = f"Elementwise ``{name}`` (torch.{name})."
    return fn


def _into(out, name: str, args: tuple) -> bool:
    """``out=`` of the same shape as the result, nothing tracked: the op writes straight
    into it (no result-sized temporary; ``torch.div(a, b, out=b)`` needs none)."""
    if not isinstance(out, Tensor):
        return False
    shapes = [a._data.shape for a in args if isinstance(a, Tensor)]
    try:
        if np.broadcast_shapes(*shapes) != out._data.shape:
            return False
    except ValueError:
        return False
    return out._ew_into(_REGISTRY[name], args)


def _out(r, out):
    if out is None:
        return r
    if not dt.can_cast(r.dtype, out.dtype):  # torch refuses a narrower out=
        raise RuntimeError(f"result type {r.dtype.scalar_name} can't be cast to the desired "
                           f"output type {out.dtype.scalar_name}")
    if tuple(out.shape) != tuple(r.shape):
        d = out._data
        out._data = np.empty(r.shape, d.dtype) if d.__class__ is np.ndarray else \
            d.empty(r.shape, d.dtype, d.device)  # a CUDA out= stays on its device
    out.copy_(r.detach() if not out.requires_grad else r)
    return out


_UNARY = ["neg", "abs", "exp", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt",
          "reciprocal", "sin", "cos", "tan", "tanh", "sigmoid", "erf", "relu", "sign", "floor",
          "ceil", "trunc", "logical_not", "bitwise_not", "isnan", "isinf", "isfinite"]
neg = _unary("neg")
abs = _unary("abs")
exp = _unary("exp")
log = _unary("log")
log2 = _unary("log2")
log10 = _unary("log10")
log1p = _unary("log1p")
expm1 = _unary("expm1")
sqrt = _unary("sqrt")
rsqrt = _unary("rsqrt")
reciprocal = _unary("reciprocal")
sin = _unary("sin")
cos = _unary("cos")
tan = _unary("tan")
tanh = _unary("tanh")
sigmoid = _unary("sigmoid")
erf = _unary("erf")
relu = _unary("relu")
sign = _unary("sign")
floor = _unary("floor")
ceil = _unary("ceil")
trunc = _unary("trunc")
logical_not = _unary("logical_not")
bitwise_not = _unary("bitwise_not")
isnan = _unary("isnan")
isinf = _unary("isinf")
isfinite = _unary("isfinite")
negative = neg
absolute = abs
fix = trunc


def round(input, *, decimals=0):  # noqa: A001
    x = _t(input)
    if decimals == 0:
        return apply_op("round", (x,))
    scale = 10.0 ** decimals
    return apply_op("round", (apply_op("mul", (x, scale)),)) / scale


def square(input):
    x = _t(input)
    return apply_op("mul", (x, x), grad_name="PowBackward0") if x.dtype.is_floating_point else \
        apply_op("pow", (x, 2))


def _binary(name, grad_name=None):
    def fn(input, other, *, out=None):
        a = _wrap_scalar_or_tensor(input)
        b = _wrap_scalar_or_tensor(other)
        if not isinstance(a, Tensor) and not isinstance(b, Tensor):
            a = _t(a)
        if out is not None and _into(out, name, (a, b)):
            return out
        return _out(apply_op(name, (a, b), grad_name=grad_name), out)
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


mul = _binary("mul")
_true_div = _binary("div")


def div(input, other, *, rounding_mode=None, out=None):
    """a / b; rounding_mode 'trunc' rounds toward zero, 'floor' down (integer results for
    integer inputs, as torch)."""
    if rounding_mode is None:
        return _true_div(input, other, out=out)
    if rounding_mode == "floor":
        return floor_divide(input, other, out=out)
    if rounding_mode != "trunc":
        raise RuntimeError("div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                           f"but found '{rounding_mode}'")
    a, b = _wrap_scalar_or_tensor(input), _wrap_scalar_or_tensor(other)
    if not isinstance(a, Tensor):
        a = _t(a)
    q = _true_div(a, b)
    r = trunc(q)
    res_dt = dt.result_type(*[(x.dtype, x.dim()) if isinstance(x, Tensor) else x
                              for x in (a, b)])
    if not res_dt.is_floating_point:
        # trunc of the exact integer quotient: floor_divide corrected toward zero
        fq = floor_divide(a, b)
        adj = logical_and(ne(remainder(a, b), 0), lt(mul(sign(a), sign(b)), 0))
        r = add(fq, adj.to(fq.dtype))
    return _out(r, out)
pow = _binary("pow")
floor_divide = _binary("floor_divide")
remainder = _binary("remainder")
maximum = _binary("maximum")
minimum = _binary("minimum")
atan2 = _binary("atan2")
eq = _binary("eq")
ne = _binary("ne")
lt = _binary("lt")
le = _binary("le")
gt = _binary("gt")
ge = _binary("ge")
logical_and = _binary("logical_and")
logical_or = _binary("logical_or")
logical_xor = _binary("logical_xor")
bitwise_and = _binary("bitwise_and")
bitwise_or = _binary("bitwise_or")
bitwise_xor = _binary("bitwise_xor")
multiply, divide, true_divide = mul, div, _true_div
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


def add(input, other, *, alpha=1, out=None):
    other = _wrap_scalar_or_tensor(other)
    if not _is_one(alpha):
        other = mul(other, alpha) if isinstance(other, Tensor) else other * alpha
    a = _wrap_scalar_or_tensor(input)
    if not isinstance(a, Tensor) and not isinstance(other, Tensor):
        a = _t(a)
    if out is not None and _into(out, "add", (a, other)):
        return out
    return _out(apply_op("add", (a, other)), out)


def sub(input, other, *, alpha=1, out=None):
    other = _wrap_scalar_or_tensor(other)
    if isinstance(input, Tensor) and input.dtype is dt.bool_ and (
            not isinstance(other, Tensor) or other.dtype is dt.bool_):
        raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not "
                           "supported. Use the `^` or `logical_xor()` operator instead.")
    if not _is_one(alpha):
        other = mul(other, alpha) if isinstance(other, Tensor) else other * alpha
    a = _wrap_scalar_or_tensor(input)
    if not isinstance(a, Tensor) and not isinstance(other, Tensor):
        a = _t(a)
    if out is not None and _into(out, "sub", (a, other)):
        return out
    return _out(apply_op("sub", (a, other)), out)


subtract = sub


def rsub(input, other, *, alpha=1):
    return sub(other, input, alpha=alpha)


def fmod(input, other):
    """C's remainder (the sign of the dividend). Integers: Python's remainder moved
    into the dividend's sign, all in ops (a raw NumPy result would be invisible
    to a trace and replayed as a constant)."""
    a = _t(input)
    if a.dtype.is_floating_point or isinstance(other, float) or (
            isinstance(other, Tensor) and other.dtype.is_floating_point):
        return sub(a, mul(trunc(div(a, other)), other))
    r = remainder(a, other)
    wrong_sign = logical_and(ne(r, 0), ne(lt(r, 0), lt(a, 0)))
    return where(wrong_sign, sub(r, other), r)


def clamp(input, min=None, max=None, *, out=None):  # noqa: A002
    x = _t(input)
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        r = x
        if min is not None:
            r = maximum(r, min)
        if max is not None:
            r = minimum(r, max)
        return _out(r, out)
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    bounds = [v for v in (min, max) if isinstance(v, float)]
    if bounds:  # an integer tensor clamped to float bounds promotes, as torch's result type
        x = x.to(dt.result_type((x.dtype, x.dim()), *bounds))
    return _out(apply_op("clamp", (x,), {"min": min, "max": max}), out)


clip = clamp


def clamp_min(input, min):  # noqa: A002
    return clamp(input, min=min)


def clamp_max(input, max):  # noqa: A002
    return clamp(input, max=max)


def where(condition, input=None, other=None):
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    c = _t(condition)
    if c.dtype is not dt.bool_:
        c = c.to(dt.bool_)
    a = _wrap_scalar_or_tensor(input)
    b = _wrap_scalar_or_tensor(other)
    return apply_op("where", (c, a, b))


def nonzero(input, *, as_tuple=False):
    return _t(input).nonzero(as_tuple=as_tuple)


def lerp(input, end, weight):
    return add(input, mul(weight, sub(end, input)))


def addcmul(input, tensor1, tensor2, *, value=1):
    return add(input, mul(mul(tensor1, tensor2), value))


def addcdiv(input, tensor1, tensor2, *, value=1):
    return add(input, mul(div(tensor1, tensor2), value))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|a - b| <= atol + rtol * |b|, or a == b (infinities), composed of ops so it traces."""
    a, b = _t(input), _wrap_scalar_or_tensor(other)
    if isinstance(b, Tensor) and a.dtype is not b.dtype:
        raise RuntimeError(f"{a.dtype.scalar_name} did not match {b.dtype.scalar_name}")
    same = apply_op("eq", (a, b))
    if a.dtype is dt.bool_ or not a.dtype.is_floating_point and (rtol == 0 and atol == 0):
        return same
    af = a.to(dt.float_type(a.dtype))
    bf = b.to(dt.float_type(b.dtype)) if isinstance(b, Tensor) else b
    diff = apply_op("abs", (apply_op("sub", (af, bf)),))
    bound = apply_op("add", (apply_op("mul", (apply_op("abs", (_t(bf) if not isinstance(
        bf, Tensor) else bf,)), float(rtol))), float(atol)))
    close = apply_op("logical_and", (apply_op("le", (diff, bound)),
                                     apply_op("isfinite", (diff,))))
    out = apply_op("logical_or", (same, close))
    if equal_nan:
        both = apply_op("logical_and", (apply_op("isnan", (af,)),
                                        apply_op("isnan", (_t(bf) if not isinstance(
                                            bf, Tensor) else bf,))))
        out = apply_op("logical_or", (out, both))
    return out


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    _graph_break("allclose")
    return bool(np.allclose(_t(input)._data, _t(other)._data, rtol=rtol, atol=atol,
                            equal_nan=equal_nan))


def equal(input, other) -> bool:
    _graph_break("equal")
    return tuple(input.shape) == tuple(other.shape) and bool(np.array_equal(input._data,
                                                                           other._data))


# ---- reductions ---------------------------------------------------------------
def _red(name, input, dim, keepdim, extra=None, grad_name=None):
    x = _t(input)
    dims = normalize_dims(dim, x.dim(), name + "(): ") if x.dim() else ()
    attrs = {"dims": dims, "keepdim": bool(keepdim)}
    if extra:
        attrs.update(extra)
    return apply_op(name, (x,), attrs, grad_name)


def sum(input, dim=None, keepdim=False, *, dtype=None):  # noqa: A001
    x = _t(input)
    if dtype is not None:
        x = x.to(dtype)
    return _red("sum", x, dim, keepdim)


def mean(input, dim=None, keepdim=False, *, dtype=None):
    x = _t(input)
    if dtype is not None:
        x = x.to(dtype)
    if not x.dtype.is_floating_point:
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point or "
            f"complex dtype. Got: {_cap(x.dtype)}")
    return _red("mean", x, dim, keepdim)


def _cap(d):
    return {"int64": "Long", "int32": "Int", "bool": "Bool", "uint8": "Byte", "int8": "Char",
            "int16": "Short"}.get(d.name, d.name.capitalize())


def prod(input, dim=None, keepdim=False, *, dtype=None):
    x = _t(input)
    if dtype is not None:
        x = x.to(dtype)
    return _red("prod", x, dim, keepdim)


def _correction(unbiased, correction):
    if correction is not None:
        return correction
    return 1 if unbiased in (None, True) else 0


def _var_args(dim, unbiased):
    """torch's overloads: var(x, True) passes ``unbiased`` positionally in dim's place."""
    if isinstance(dim, bool):
        if unbiased is not None and not isinstance(unbiased, bool):
            raise TypeError("var(): unbiased given twice")
        return None, dim
    if isinstance(unbiased, bool) is False and unbiased is not None and dim is None:
        return unbiased, None
    return dim, unbiased


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    dim, unbiased = _var_args(dim, unbiased)
    return _red("var", input, dim, keepdim, {"correction": _correction(unbiased, correction)})


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    dim, unbiased = _var_args(dim, unbiased)
    return _red("std", input, dim, keepdim, {"correction": _correction(unbiased, correction)})


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return (var(input, dim, unbiased, keepdim, correction=correction),
            mean(input, dim, keepdim))


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return (std(input, dim, unbiased, keepdim, correction=correction),
            mean(input, dim, keepdim))


def amax(input, dim=(), keepdim=False):
    return _red("amax", input, None if dim == () else dim, keepdim)


def amin(input, dim=(), keepdim=False):
    return _red("amin", input, None if dim == () else dim, keepdim)


def logsumexp(input, dim, keepdim=False):
    return _red("logsumexp", input, dim, keepdim)


def any(input, dim=None, keepdim=False):  # noqa: A001
    return _red("any", input, dim, keepdim)


def all(input, dim=None, keepdim=False):  # noqa: A001
    return _red("all", input, dim, keepdim)


def _check_nonempty(x, name):
    if x.numel() == 0:
        raise RuntimeError(f"{name}(): Expected reduction dim to be specified for input.numel() == "
                           "0. Specify the reduction dim with the 'dim' argument.")


def _extreme(name, argname, input, dim=None, keepdim=False):
    x = _t(input)
    if isinstance(dim, Tensor):  # torch.max(a, b) is maximum
        return maximum(x, dim) if name == "amax" else minimum(x, dim)
    if dim is None:
        _check_nonempty(x, name[1:])
        return _red(name, x, None, False, grad_name="MaxBackward1" if name == "amax"
                    else "MinBackward1")
    if x.dim() == 0:  # torch treats a 0-d tensor as one element along dim 0 / -1
        normalize_dim(dim, 1)
        r = _extreme(name, argname, x.reshape(1), 0, False)
        return return_type(name[1:], r.values.reshape(()), r.indices.reshape(()))
    d = normalize_dim(dim, x.dim())
    idx = apply_op(argname, (x,), {"dim": d, "keepdim": True})
    gname = "MaxBackward0" if name == "amax" else "MinBackward0"
    values = apply_op("gather", (x, idx), {"dim": d}, gname)
    if not keepdim:
        shape = tuple(values.shape[:d]) + tuple(values.shape[d + 1:])
        values = apply_op("reshape", (values,), {"shape": shape}, gname)
        idx = idx.squeeze(d)
    return return_type(name[1:], values, idx)


def max(input, dim=None, keepdim=False, *, out=None):  # noqa: A001
    return _extreme("amax", "argmax", input, dim, keepdim)


def min(input, dim=None, keepdim=False, *, out=None):  # noqa: A001
    return _extreme("amin", "argmin", input, dim, keepdim)


def argmax(input, dim=None, keepdim=False):
    x = _t(input)
    return apply_op("argmax", (x,), {"dim": None if dim is None else normalize_dim(dim, x.dim()),
                                     "keepdim": keepdim})


def argmin(input, dim=None, keepdim=False):
    x = _t(input)
    return apply_op("argmin", (x,), {"dim": None if dim is None else normalize_dim(dim, x.dim()),
                                     "keepdim": keepdim})


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    x = _t(input)
    if dtype is not None:
        x = x.to(dtype)
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex tensor as "
                           f"input. Got {_cap(x.dtype)}")
    if p == "fro" or p is None:
        p = 2
    if p == "nuc":
        raise NotImplementedError("norm: nuclear norm is not supported")
    a = abs(x)
    if p == math.inf or p == "inf":
        return amax(a, dim if dim is not None else (), keepdim)
    if p == -math.inf:
        return amin(a, dim if dim is not None else (), keepdim)
    if p == 0:
        return sum(ne(x, 0).to(x.dtype), dim, keepdim)
    return _red("vector_norm", x, dim, keepdim, {"ord": float(p)})


def dist(input, other, p=2):
    return norm(sub(input, other), p)


def cumsum(input, dim, *, dtype=None):
    x = _t(input)
    if dtype is not None:
        x = x.to(dtype)
    if x.dim() == 0:
        normalize_dim(dim, 1)
        return apply_op("cumsum", (x.reshape(1),), {"dim": 0}).reshape(())
    return apply_op("cumsum", (x,), {"dim": normalize_dim(dim, x.dim())})


def cumprod(input, dim, *, dtype=None):
    x = _t(input)
    if dtype is not None:
        x = x.to(dtype)
    if x.dim() == 0:
        normalize_dim(dim, 1)
        return apply_op("cumprod", (x.reshape(1),), {"dim": 0}).reshape(())
    return apply_op("cumprod", (x,), {"dim": normalize_dim(dim, x.dim())})


def sort(input, dim=-1, descending=False, stable=False):
    """torch.sort: indices from the ``argsort`` op, values by ``gather`` (traces, no break)."""
    x = _t(input)
    d = normalize_dim(dim, x.dim()) if x.dim() else 0
    if x.dim() == 0:
        normalize_dim(dim, 1)
        return return_type("sort", x.clone(), _zeros_like(x, dtype=dt.int64))
    idx = apply_op("argsort", (x,), {"dim": d, "descending": bool(descending),
                                     "stable": bool(stable)})
    values = apply_op("gather", (x, idx), {"dim": d}, "SortBackward0")
    return return_type("sort", values, idx)


def argsort(input, dim=-1, descending=False, stable=False):
    return sort(input, dim, descending, stable).indices


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    x = _t(input)
    d = normalize_dim(dim, x.dim()) if x.dim() else normalize_dim(dim, 1)
    n = x.shape[d] if x.dim() else 1
    if k > n or k < 0:
        raise RuntimeError(f"selected index k out of range (k={k}, dimension {d} has size {n})")
    if x.dim() == 0:
        return return_type("topk", x.clone() if k else x.reshape(1)[:0],
                           _zeros_like(x, dtype=dt.int64) if k else
                           _zeros(0, dtype=dt.int64))
    s = sort(x, d, descending=largest)
    idx = s.indices.narrow(d, 0, k).contiguous()
    values = apply_op("gather", (x, idx), {"dim": d}, "TopkBackward0")
    return return_type("topk", values, idx)


def kthvalue(input, k, dim=-1, keepdim=False):
    x = _t(input)
    if x.dim() == 0:
        normalize_dim(dim, 1)
        if k != 1:
            raise RuntimeError("kthvalue(): selected number k out of range for dimension 0")
        return return_type("kthvalue", x.clone(), _zeros_like(x, dtype=dt.int64))
    d = normalize_dim(dim, x.dim())
    if not 1 <= k <= x.shape[d]:
        raise RuntimeError(f"kthvalue(): selected number k out of range for dimension {d}")
    s = sort(x, d)
    idx = s.indices.narrow(d, k - 1, 1).contiguous()
    values = apply_op("gather", (x, idx), {"dim": d}, "KthvalueBackward0")
    if not keepdim:
        # dropping the size-1 dim by a one-element sum, not a view: a returned view of a
        # temporary would make compile run the call eagerly
        values = apply_op("sum", (values,), {"dims": (d,), "keepdim": False},
                          "KthvalueBackward0")
        idx = apply_op("sum", (idx,), {"dims": (d,), "keepdim": False})
    return return_type("kthvalue", values, idx)


def median(input, dim=None, keepdim=False):
    x = _t(input)
    if dim is None:
        flat = x.flatten()
        return kthvalue(flat, (flat.numel() + 1) // 2, 0).values
    if x.dim() == 0:
        normalize_dim(dim, 1)
        return return_type("median", x.clone(), _zeros_like(x, dtype=dt.int64))
    d = normalize_dim(dim, x.dim())
    return return_type("median", *kthvalue(x, (x.shape[d] + 1) // 2, d, keepdim))


def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    x = _t(input)
    if not x.dtype.is_floating_point:
        raise RuntimeError("quantile() input tensor must be either float or double dtype")
    scalar_q = not isinstance(q, Tensor) and not isinstance(q, (list, tuple))
    qs = np.atleast_1d(np.asarray(q._data if isinstance(q, Tensor) else q, np.float64))
    if qs.size and (qs.min() < 0 or qs.max() > 1):
        raise RuntimeError("quantile() q values must be in the range [0, 1]")
    if dim is None:
        x = x.flatten()
        d = 0
    else:
        d = normalize_dim(dim, x.dim())
    s = sort(x, d).values
    n = s.shape[d]
    outs = []
    for qv in qs:
        pos = qv * (n - 1)
        lo, hi = int(math.floor(pos)), int(math.ceil(pos))
        if interpolation == "lower":
            hi = lo
        elif interpolation == "higher":
            lo = hi
        elif interpolation == "nearest":
            lo = hi = int(np.round(pos))
        a = s.narrow(d, lo, 1)
        b = s.narrow(d, hi, 1)
        if interpolation == "midpoint":
            v = add(a, mul(sub(b, a), 0.5))
        else:
            v = add(a, mul(sub(b, a), pos - lo))
        if not keepdim:
            v = v.squeeze(d)
        elif dim is None:
            v = v.reshape((1,) * input.dim())
        outs.append(v)
    if scalar_q:
        return outs[0]
    return stack(outs, 0)


# ---- joining -------------------------------------------------------------------
def cat(tensors, dim=0, *, out=None):
    tensors = [_t(t) for t in tensors]
    if not tensors:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    # torch skips legacy empty 1-d tensors
    nonempty = [t for t in tensors if not (t.dim() == 1 and t.numel() == 0)] or tensors[:1]
    ref = nonempty[0]
    if ref.dim() == 0:
        raise RuntimeError("zero-dimensional tensor (at position 0) cannot be concatenated")
    d = normalize_dim(dim, ref.dim())
    for i, t in enumerate(nonempty):
        if t.dim() != ref.dim():
            raise RuntimeError(f"Tensors must have same number of dimensions: got {ref.dim()} and "
                               f"{t.dim()} (tensor {i} of shape {tuple(t.shape)})")
    return _out(apply_op("cat", tuple(nonempty), {"dim": d}), out)


concat = concatenate = cat


def stack(tensors, dim=0, *, out=None):
    tensors = [_t(t) for t in tensors]
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    shape = tuple(tensors[0].shape)
    for i, t in enumerate(tensors):
        if tuple(t.shape) != shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shape)} "
                               f"at entry 0 and {list(t.shape)} at entry {i}")
    d = normalize_dim(dim, len(shape) + 1)
    return _out(cat([t.unsqueeze(d) for t in tensors], d), out)


def hstack(tensors):
    tensors = [_t(t) for t in tensors]
    if tensors[0].dim() <= 1:
        return cat([t.reshape(-1) if t.dim() == 0 else t for t in tensors], 0)
    return cat(tensors, 1)


def vstack(tensors):
    return cat([atleast_2d(_t(t)) for t in tensors], 0)


row_stack = vstack


def dstack(tensors):
    ts = [_t(t) for t in tensors]
    ts = [t.reshape(1, -1, 1) if t.dim() <= 1 else (t.unsqueeze(-1) if t.dim() == 2 else t)
          for t in ts]
    return cat(ts, 2)


def column_stack(tensors):
    return hstack([_t(t).reshape(-1, 1) if _t(t).dim() <= 1 else _t(t) for t in tensors])


def atleast_1d(t):
    return t.reshape(1) if t.dim() == 0 else t


def atleast_2d(t):
    return t.reshape(1, -1) if t.dim() < 2 else t


def split(tensor, split_size_or_sections, dim=0):
    return tensor.split(split_size_or_sections, dim)


def chunk(input, chunks, dim=0):
    return input.chunk(chunks, dim)


def unbind(input, dim=0):
    return input.unbind(dim)


# ---- shape functions -----------------------------------------------------------
def reshape(input, shape):
    return _t(input).reshape(shape)


def flatten(input, start_dim=0, end_dim=-1):
    return _t(input).flatten(start_dim, end_dim)


def unflatten(input, dim, sizes):
    return input.unflatten(dim, sizes)


def squeeze(input, dim=None):
    return input.squeeze(dim)


def unsqueeze(input, dim):
    return input.unsqueeze(dim)


def transpose(input, dim0, dim1):
    return input.transpose(dim0, dim1)


swapaxes = swapdims = transpose


def permute(input, dims):
    return input.permute(*dims)


def t(input):
    return input.t()


def flip(input, dims):
    return input.flip(dims)


def roll(input, shifts, dims=None):
    return input.roll(shifts, dims)


def narrow(input, dim, start, length):
    return input.narrow(dim, start, length)


def select(input, dim, index):
    return input.select(dim, index)


def gather(input, dim, index):
    return input.gather(dim, index)


def scatter(input, dim, index, src=None, value=None, reduce=None):
    return input.scatter(dim, index, src, value, reduce)


def scatter_add(input, dim, index, src):
    return input.scatter_add(dim, index, src)


def index_select(input, dim, index):
    return input.index_select(dim, index)


def masked_fill(input, mask, value):
    return input.masked_fill(mask, value)


def masked_select(input, mask):
    return input.masked_select(mask)


def tril(input, diagonal=0):
    return input.tril(diagonal)


def triu(input, diagonal=0):
    return input.triu(diagonal)


def broadcast_to(input, size):
    return input.expand(size)


def broadcast_tensors(*tensors):
    from ir.shapes import broadcast_shapes
    shape = broadcast_shapes(*[tuple(t.shape) for t in tensors], op="broadcast_tensors")
    return tuple(t.expand(shape) for t in tensors)


def broadcast_shapes(*shapes):
    from ir.shapes import broadcast_shapes as bs
    return Size(bs(*[(s,) if isinstance(s, int) else tuple(s) for s in shapes]))


def clone(input, *, memory_format=None):
    return input.clone()


def numel(input) -> int:
    return input.numel()


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def is_floating_point(input) -> bool:
    return input.dtype.is_floating_point


def diag(input, diagonal=0):
    x = _t(input)
    if x.dim() == 1:
        n = x.shape[0] + builtins.abs(diagonal)
        out = zeros(n, n, dtype=x.dtype)
        rows = np.arange(x.shape[0]) + builtins.max(-diagonal, 0)
        cols = np.arange(x.shape[0]) + builtins.max(diagonal, 0)
        r = Tensor._make(rows.astype(np.int64))
        c = Tensor._make(cols.astype(np.int64))
        return apply_op("index_put", (out, x, r, c), {"index": (("t", 0), ("t", 1)),
                                                      "accumulate": False})
    n = builtins.min(x.shape[0], x.shape[1])
    rows = np.arange(n) + builtins.max(-diagonal, 0)
    cols = np.arange(n) + builtins.max(diagonal, 0)
    keep = (rows < x.shape[0]) & (cols < x.shape[1])
    r = Tensor._make(rows[keep].astype(np.int64))
    c = Tensor._make(cols[keep].astype(np.int64))
    return x[r, c]


def trace(input):
    return sum(diag(input))


# ---- linear algebra --------------------------------------------------------------
def _same_dtype_pair(a, b, op):
    if a.dtype is not b.dtype:
        raise RuntimeError(f"{op}: expected both operands to have the same dtype, but got "
                           f"{a.dtype} and {b.dtype}")


def matmul(input, other, *, out=None):
    a, b = _autocast.cast_inputs(_t(input), _t(other))
    _same_dtype_pair(a, b, "matmul")
    name = "MmBackward0" if a.dim() == 2 and b.dim() == 2 else (
        "BmmBackward0" if a.dim() == 3 and b.dim() == 3 else "MatmulBackward0")
    if a.dim() == 1 and b.dim() == 1:
        name = "DotBackward0"
    elif b.dim() == 1 and a.dim() == 2:
        name = "MvBackward0"
    return _out(apply_op("matmul", (a, b), grad_name=name), out)


def mm(input, mat2):
    if input.dim() != 2 or mat2.dim() != 2:
        raise RuntimeError(f"mm: expected 2D tensors, got {input.dim()}D and {mat2.dim()}D "
                           f"(shapes {tuple(input.shape)} and {tuple(mat2.shape)})")
    return matmul(input, mat2)


def bmm(input, mat2):
    if input.dim() != 3 or mat2.dim() != 3:
        raise RuntimeError(f"bmm: expected 3D tensors, got {input.dim()}D and {mat2.dim()}D")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {tuple(input.shape)} and "
                           f"{tuple(mat2.shape)}")
    return matmul(input, mat2)


def mv(input, vec):
    if input.dim() != 2 or vec.dim() != 1:
        raise RuntimeError(f"mv: expected a matrix and a vector, got shapes {tuple(input.shape)} "
                           f"and {tuple(vec.shape)}")
    return matmul(input, vec)


def dot(input, other):
    if input.dim() != 1 or other.dim() != 1:
        raise RuntimeError(f"1D tensors expected, but got {input.dim()}D and {other.dim()}D "
                           "tensors")
    if input.shape[0] != other.shape[0]:
        raise RuntimeError(f"inconsistent tensor size, expected tensor [{input.shape[0]}] and src "
                           f"[{other.shape[0]}] to have the same number of elements, but got "
                           f"{input.shape[0]} and {other.shape[0]} elements respectively")
    return matmul(input, other)


inner = dot
vdot = dot


def outer(input, vec2):
    return mul(input.reshape(-1, 1), vec2.reshape(1, -1))


ger = outer


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    prod_ = mm(mat1, mat2)
    if not _is_one(alpha):
        prod_ = mul(prod_, alpha)
    return add(mul(input, beta) if beta != 1 else input, prod_)


def einsum(equation, *operands):
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    ops = tuple(_t(o) for o in operands)
    equation = equation.replace(" ", "")
    if "..." in equation:
        equation = _expand_ellipsis(equation, ops)
    parse_einsum(equation, len(ops))
    return apply_op("einsum", ops, {"equation": equation})


def _expand_ellipsis(equation: str, ops) -> str:
    """Write '...' out as letters the equation does not use (right-aligned across operands,
    as broadcasting), so the einsum op sees explicit subscripts."""
    lhs, arrow, rhs = equation.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(ops):
        raise RuntimeError(f"einsum(): {len(ins)} operands in the equation but {len(ops)} given")
    free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
            if c not in equation]
    counts = []
    for sub, op in zip(ins, ops):
        if "..." in sub:
            k = op.dim() - (len(sub) - 3)
            if k < 0:
                raise RuntimeError(f"einsum(): the number of subscripts in '{sub}' does not "
                                   f"match the number of dimensions ({op.dim()}) of operand")
            counts.append(k)
        else:
            counts.append(0)
    nell = builtins.max(counts) if counts else 0
    ell = "".join(free[:nell])
    new_ins = [sub.replace("...", ell[nell - k:]) if "..." in sub else sub
               for sub, k in zip(ins, counts)]
    if arrow:
        out = rhs.replace("...", ell)
    else:
        letters = "".join(new_ins)
        out = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1
                                   and c not in ell))
    return ",".join(new_ins) + "->" + out


def tensordot(a, b, dims=2):
    if isinstance(dims, int):
        da = list(range(a.dim() - dims, a.dim()))
        db = list(range(dims))
    else:
        da, db = [list(x) if isinstance(x, (list, tuple)) else [x] for x in dims]
    letters = "abcdefghijklmnopqrstuvwxyz"
    sa = list(letters[:a.dim()])
    sb = list(letters[a.dim():a.dim() + b.dim()])
    for i, j in zip(da, db):
        sb[j] = sa[i]
    out = [c for i, c in enumerate(sa) if i not in da] + [c for j, c in enumerate(sb)
                                                          if j not in db]
    return einsum("".join(sa) + "," + "".join(sb) + "->" + "".join(out), a, b)



# ---- inverse/hyperbolic trigonometry and special functions ------------------------------
_UNARY += ["asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erfc",
           "erfinv", "lgamma"]
asin = _unary("asin")
acos = _unary("acos")
atan = _unary("atan")
sinh = _unary("sinh")
cosh = _unary("cosh")
asinh = _unary("asinh")
acosh = _unary("acosh")
atanh = _unary("atanh")
erfc = _unary("erfc")
erfinv = _unary("erfinv")
lgamma = _unary("lgamma")
arcsin, arccos, arctan, arcsinh, arccosh, arctanh = asin, acos, atan, asinh, acosh, atanh
arctan2 = atan2


def _float(x: Tensor) -> Tensor:
    """``x`` in the default float dtype when it is integral (ops that compute in floats)."""
    return x.to(dt.float_type(x.dtype))


def digamma(input, *, out=None):
    """psi(x), the derivative of lgamma (a registered op: ``polygamma`` with n=0)."""
    return _out(apply_op("polygamma", (_t(input),), {"n": 0}, "DigammaBackward0"), out)


def polygamma(n, input, *, out=None):
    """The n-th derivative of digamma."""
    if not isinstance(n, int) or n < 0:
        raise RuntimeError("polygamma(n, x) does not support negative n.")
    return _out(apply_op("polygamma", (_t(input),), {"n": n}), out)


def exp2(input, *, out=None):
    """2 ** x, in floats."""
    return _out(apply_op("pow", (2.0, _float(_t(input)))), out)


def logit(input, eps=None, *, out=None):
    """log(p / (1 - p)), p clamped to [eps, 1 - eps] when eps is given."""
    x = _float(_t(input))
    if eps is not None:
        x = clamp(x, eps, 1.0 - eps)
    return _out(log(div(x, rsub(x, 1.0))), out)


def hypot(input, other, *, out=None):
    """sqrt(a^2 + b^2), scaled by max(|a|, |b|) so it neither overflows nor underflows."""
    a, b = _t(input), _t(other)
    aa, ab = abs(a), abs(b)
    m = maximum(aa, ab)
    safe = where(m == 0, 1.0, m)
    r = mul(m, sqrt(add(square(div(aa, safe)), square(div(ab, safe)))))
    return _out(r, out)


def logaddexp(input, other, *, out=None):
    """log(e^a + e^b) without overflow: max + log1p(exp(-|a - b|))."""
    a, b = _t(input), _t(other)
    m = maximum(a, b)
    d = abs(sub(a, b))
    r = add(m, log1p(exp(neg(d))))
    # equal infinities: a - b is nan, the answer is that infinity
    return _out(where(eq(a, b), add(a, math.log(2.0)), r), out)


def logaddexp2(input, other, *, out=None):
    """log2(2^a + 2^b)."""
    a, b = _t(input), _t(other)
    return _out(div(logaddexp(mul(a, math.log(2.0)), mul(b, math.log(2.0))), math.log(2.0)),
                out)


def xlogy(input, other, *, out=None):
    """x * log(y), 0 where x == 0 (unless y is nan)."""
    x, y = _wrap_scalar_or_tensor(input), _wrap_scalar_or_tensor(other)
    if not isinstance(x, Tensor):
        x = _t(x)
    yt = y if isinstance(y, Tensor) else _t(float(y))
    r = mul(x, log(_float(yt)))
    return _out(where(logical_and(eq(x, 0), logical_not(isnan(yt))), 0.0, r), out)


def fmax(input, other, *, out=None):
    """maximum that ignores NaN (NaN only where both are NaN)."""
    a, b = _t(input), _t(other)
    m = maximum(a, b)
    if not m.dtype.is_floating_point:
        return _out(m, out)
    return _out(where(isnan(a), b, where(isnan(b), a, m)), out)


def fmin(input, other, *, out=None):
    """minimum that ignores NaN."""
    a, b = _t(input), _t(other)
    m = minimum(a, b)
    if not m.dtype.is_floating_point:
        return _out(m, out)
    return _out(where(isnan(a), b, where(isnan(b), a, m)), out)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None, *, out=None):
    """NaN, +inf, -inf replaced (by default with 0 and the dtype's largest/smallest value)."""
    x = _t(input)
    if not x.dtype.is_floating_point:
        return _out(x.clone(), out)
    fi = np.finfo(x.dtype.np)
    hi = float(fi.max) if posinf is None else float(posinf)
    lo = float(fi.min) if neginf is None else float(neginf)
    r = where(isnan(x), float(nan), x)
    r = where(logical_and(isinf(r), gt(r, 0)), hi, r)
    r = where(logical_and(isinf(r), lt(r, 0)), lo, r)
    return _out(r, out)


def nansum(input, dim=None, keepdim=False, *, dtype=None):
    """sum treating NaN as zero."""
    x = _t(input)
    if x.dtype.is_floating_point:
        x = where(isnan(x), 0.0, x)
    return sum(x, dim, keepdim, dtype=dtype)


def nanmean(input, dim=None, keepdim=False, *, dtype=None):
    """mean over the non-NaN elements."""
    x = _t(input)
    if not x.dtype.is_floating_point:
        raise RuntimeError("nanmean(): expected input to have floating point dtype but got "
                           f"{x.dtype}")
    keep = logical_not(isnan(x))
    n = sum(keep.to(x.dtype), dim, keepdim)
    return div(nansum(x, dim, keepdim, dtype=dtype), n)


def sinc(input, *, out=None):
    """sin(pi x) / (pi x), 1 at 0."""
    x = _float(_t(input))
    px = mul(x, math.pi)
    return _out(where(eq(x, 0), 1.0, div(sin(px), where(eq(x, 0), 1.0, px))), out)


def deg2rad(input):
    return mul(_float(_t(input)), math.pi / 180.0)


def rad2deg(input):
    return mul(_float(_t(input)), 180.0 / math.pi)


def frac(input):
    """x - trunc(x)."""
    x = _t(input)
    return sub(x, trunc(x))


def float_power(input, exponent):
    """pow in float64."""
    a = _t(input).to(dt.float64)
    e = exponent.to(dt.float64) if isinstance(exponent, Tensor) else float(exponent)
    return pow(a, e)


def copysign(input, other):
    """|a| with b's sign (b's sign bit: -0.0 counts as negative)."""
    a = _float(_t(input))
    b = _wrap_scalar_or_tensor(other)
    if isinstance(b, Tensor):
        neg_b = logical_or(lt(b, 0), logical_and(eq(b, 0), lt(div(1.0, _float(b)), 0)))
        return where(neg_b, neg(abs(a)), abs(a))
    return neg(abs(a)) if math.copysign(1.0, b) < 0 else abs(a)


# ---- products ------------------------------------------------------------------------------
def _scaled(x, c):
    return x if _is_one(c) else mul(x, c)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    """beta * input + alpha * (batch1 @ batch2) (input ignored when beta == 0, as torch)."""
    p = _scaled(bmm(batch1, batch2), alpha)
    if isinstance(beta, (int, float)) and beta == 0:
        return _out(p, out)
    return _out(add(_scaled(_t(input), beta), p), out)


def addbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    """beta * input + alpha * sum_b batch1[b] @ batch2[b]."""
    p = _scaled(sum(bmm(batch1, batch2), 0), alpha)
    if isinstance(beta, (int, float)) and beta == 0:
        return _out(p, out)
    return _out(add(_scaled(_t(input), beta), p), out)


def addmv(input, mat, vec, *, beta=1, alpha=1, out=None):
    """beta * input + alpha * (mat @ vec)."""
    p = _scaled(mv(mat, vec), alpha)
    if isinstance(beta, (int, float)) and beta == 0:
        return _out(p, out)
    return _out(add(_scaled(_t(input), beta), p), out)


def addr(input, vec1, vec2, *, beta=1, alpha=1, out=None):
    """beta * input + alpha * outer(vec1, vec2)."""
    p = _scaled(outer(vec1, vec2), alpha)
    if isinstance(beta, (int, float)) and beta == 0:
        return _out(p, out)
    return _out(add(_scaled(_t(input), beta), p), out)


def kron(input, other):
    """Kronecker product: every a[i] * b as a block."""
    a, b = _t(input), _t(other)
    n = builtins.max(a.dim(), b.dim())
    a = a.reshape((1,) * (n - a.dim()) + tuple(a.shape))
    b = b.reshape((1,) * (n - b.dim()) + tuple(b.shape))
    ash = []
    bsh = []
    for sa, sb in zip(a.shape, b.shape):
        ash += [sa, 1]
        bsh += [1, sb]
    r = mul(a.reshape(ash), b.reshape(bsh))
    return r.reshape(tuple(sa * sb for sa, sb in zip(a.shape, b.shape)))


def block_diag(*tensors):
    """Tensors (0-, 1- or 2-d) on the diagonal of a zero matrix."""
    ts = [_t(t) for t in tensors]
    ts = [t.reshape(1, 1) if t.dim() == 0 else t.reshape(1, -1) if t.dim() == 1 else t
          for t in ts]
    for i, t in enumerate(ts):
        if t.dim() != 2:
            raise RuntimeError(f"torch.block_diag: Input tensors must have 2 or fewer "
                               f"dimensions. Input {i} has {t.dim()} dimensions")
    if not ts:
        return _zeros(1, 0)
    d = ts[0].dtype
    for t in ts[1:]:
        d = dt.promote_types(d, t.dtype)
    total = builtins.sum(t.shape[1] for t in ts)
    rows, left = [], 0
    for t in ts:
        c = t.shape[1]
        rows.append(_pad_last(t.to(d), (left, total - left - c)))
        left += c
    return cat(rows, 0)


def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """Pairwise p-norm distances between the rows of x1 and x2 (batched)."""
    a, b = _t(x1), _t(x2)
    if a.dim() < 2 or b.dim() < 2:
        raise RuntimeError(f"cdist only supports at least 2D tensors, X1 got: {a.dim()}D")
    if a.shape[-1] != b.shape[-1]:
        raise RuntimeError(f"X1 and X2 must have the same number of columns. X1: "
                           f"{a.shape[-1]} X2: {b.shape[-1]}")
    d = sub(a.unsqueeze(-2), b.unsqueeze(-3))
    return norm(d, p=p, dim=-1)


def cross(input, other, dim=None):
    """Cross product of 3-vectors along dim (default: the first dimension of size 3)."""
    a, b = _t(input), _t(other)
    if dim is None:
        dims = [i for i, s in enumerate(a.shape) if s == 3]
        if not dims:
            raise RuntimeError("no dimension of size 3 in input")
        dim = dims[0]
    d = normalize_dim(dim, a.dim())
    if a.shape[d] != 3 or b.shape[normalize_dim(dim, b.dim())] != 3:
        raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got "
                           f"{a.shape[d]} and {b.shape[normalize_dim(dim, b.dim())]}")
    a0, a1, a2 = a.unbind(d)
    b0, b1, b2 = b.unbind(normalize_dim(dim, b.dim()))
    return stack([sub(mul(a1, b2), mul(a2, b1)), sub(mul(a2, b0), mul(a0, b2)),
                  sub(mul(a0, b1), mul(a1, b0))], d)


# ---- shapes and indices ---------------------------------------------------------------------
def movedim(input, source, destination):
    """Move dims source to positions destination, the rest keep their order."""
    x = _t(input)
    n = x.dim()
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source ({src} dims) "
                           f"should contain the same number of dims as destination ({dst} dims)")
    src = [normalize_dim(s, n) for s in src]
    dst = [normalize_dim(s, n) for s in dst]
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise RuntimeError("movedim: repeated dim in `source` or `destination`")
    order = [None] * n
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(i for i in range(n) if i not in src)
    order = [o if o is not None else next(rest) for o in order]
    return x.permute(order)


moveaxis = movedim


def tile(input, dims):
    """repeat with dims padded by leading ones (to the input's dimensions)."""
    x = _t(input)
    dims = tuple(dims) if not isinstance(dims, int) else (dims,)
    if len(dims) < x.dim():
        dims = (1,) * (x.dim() - len(dims)) + dims
    return x.repeat(*dims)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Each element repeated ``repeats`` times along dim (the flattened input when dim is
    None). Tensor repeats need their values in Python (a graph break), as in torch."""
    x = _t(input)
    if repeats is None:  # torch.repeat_interleave(repeats): indices repeated by their counts
        reps = x
        counts = reps.tolist()
        idx = [i for i, c in enumerate(counts) for _ in range(c)]
        return tensor(idx, dtype=dt.int64)
    if dim is None:
        x = x.flatten()
        dim = 0
    d = normalize_dim(dim, x.dim())
    if isinstance(repeats, Tensor) and repeats.numel() != 1:
        counts = repeats.tolist()
        if len(counts) != x.shape[d]:
            raise RuntimeError("repeats must have the same size as input along dim, but got "
                               f"repeats.size(0) = {len(counts)} and input.size({d}) = "
                               f"{x.shape[d]}")
        idx = tensor([i for i, c in enumerate(counts) for _ in range(c)], dtype=dt.int64)
        return index_select(x, d, idx)
    r = repeats.item() if isinstance(repeats, Tensor) else int(repeats)
    shape = list(x.shape)
    y = x.unsqueeze(d + 1).expand(*shape[:d + 1], r, *shape[d + 1:])
    return y.reshape(*shape[:d], shape[d] * r, *shape[d + 1:])


def diagonal(input, offset=0, dim1=0, dim2=1):
    """The diagonal of the (dim1, dim2) planes, as the last dim (a gather, so it traces and
    differentiates; torch returns a view)."""
    x = _t(input)
    n = x.dim()
    d1, d2 = normalize_dim(dim1, n), normalize_dim(dim2, n)
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    y = movedim(x, (d1, d2), (-2, -1))
    r, c = y.shape[-2], y.shape[-1]
    if offset >= 0:
        k = builtins.max(0, builtins.min(r, c - offset))
        rows, cols = np.arange(k), np.arange(k) + offset
    else:
        k = builtins.max(0, builtins.min(r + offset, c))
        rows, cols = np.arange(k) - offset, np.arange(k)
    flat = y.reshape(*y.shape[:-2], r * c)
    idx = tensor((rows * c + cols).astype(np.int64), dtype=dt.int64)
    return index_select(flat, -1, idx) if flat.dim() else flat


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """Matrices with input's last dim on their diagonal."""
    x = _t(input)
    n = x.shape[-1]
    m = n + builtins.abs(offset)
    e = eye(n, dtype=x.dtype)
    out = mul(x.unsqueeze(-1), e)  # (..., n, n) with x on the diagonal
    if offset > 0:
        out = _pad_last(out, (offset, 0, 0, offset))
    elif offset < 0:
        out = _pad_last(out, (0, -offset, -offset, 0))
    nd = out.dim()
    d1, d2 = normalize_dim(dim1, nd), normalize_dim(dim2, nd)
    del m
    return movedim(out, (nd - 2, nd - 1), (d1, d2))


def tril_indices(row, col, offset=0, *, dtype=None, device=None, layout=None):
    """Coordinates (2, N) of the lower triangle, row-major."""
    r, c = np.tril_indices(row, offset, col)
    return tensor(np.stack([r, c]).astype(np.int64), dtype=dtype or dt.int64)


def triu_indices(row, col, offset=0, *, dtype=None, device=None, layout=None):
    """Coordinates (2, N) of the upper triangle, row-major."""
    r, c = np.triu_indices(row, offset, col)
    return tensor(np.stack([r, c]).astype(np.int64), dtype=dtype or dt.int64)


def meshgrid(*tensors, indexing=None):
    """Coordinate grids; indexing='ij' (torch's default) or 'xy'."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    ts = [_t(t) for t in tensors]
    for t in ts:
        if t.dim() > 1:
            raise RuntimeError("torch.meshgrid: Expected 0D or 1D tensor in the tensor list "
                               f"but got: {t}")
    ts = [t.reshape(-1) for t in ts]
    indexing = indexing or "ij"
    if indexing not in ("ij", "xy"):
        raise RuntimeError("torch.meshgrid: indexing must be one of \"xy\" or \"ij\", but "
                           f"received: {indexing}")
    swap = indexing == "xy" and len(ts) >= 2
    shape = tuple(t.shape[0] for t in ts)
    n = len(ts)
    grids = [t.reshape((1,) * i + (-1,) + (1,) * (n - i - 1)).expand(shape)
             for i, t in enumerate(ts)]
    if swap:  # 'xy': the first two dims trade places
        grids = [g.transpose(0, 1) for g in grids]
    return tuple(grids)


def take_along_dim(input, indices, dim=None):
    """gather with the index broadcast against the input (flattened when dim is None)."""
    x = _t(input)
    if dim is None:
        return gather(x.flatten(), 0, indices.flatten())
    d = normalize_dim(dim, x.dim())
    xs = list(x.shape)
    ish = list(indices.shape)
    bx = xs[:d] + [1] + xs[d + 1:]
    bi = ish[:d] + [1] + ish[d + 1:]
    b = list(np.broadcast_shapes(tuple(bx), tuple(bi)))
    x = x.expand(*(b[:d] + [xs[d]] + b[d + 1:]))
    indices = indices.expand(*(b[:d] + [ish[d]] + b[d + 1:]))
    return gather(x, d, indices)


def rot90(input, k=1, dims=(0, 1)):
    """Rotate by 90 degrees k times in the plane dims (from the first axis towards the
    second)."""
    x = _t(input)
    if len(dims) != 2:
        raise RuntimeError(f"expected total rotation dims == 2, but got dims = {len(dims)}")
    d0, d1 = normalize_dim(dims[0], x.dim()), normalize_dim(dims[1], x.dim())
    if d0 == d1:
        raise RuntimeError(f"expected rotation dims to be different, but got dim0 = {d0} and "
                           f"dim1 = {d1}")
    k = k % 4
    if k == 1:
        return x.flip(d1).transpose(d0, d1)
    if k == 2:
        return x.flip(d0, d1)
    if k == 3:
        return x.flip(d0).transpose(d0, d1)
    return x.clone()


def diff(input, n=1, dim=-1, prepend=None, append=None):
    """n-th forward difference along dim."""
    x = _t(input)
    d = normalize_dim(dim, x.dim())
    parts = [p for p in (prepend, x, append) if p is not None]
    if len(parts) > 1:
        x = cat([_t(p) for p in parts], d)
    for _ in range(n):
        m = x.shape[d]
        if m == 0:
            break
        a, b = x.narrow(d, 1, m - 1), x.narrow(d, 0, m - 1)
        x = logical_xor(a, b) if x.dtype is dt.bool_ else sub(a, b)
    return x


def gradient(input, *, spacing=1, dim=None, edge_order=1) -> tuple:
    """torch.gradient: central differences inside, one-sided (edge_order 1 or 2) at the
    ends, per dimension; ``spacing`` is one number, one per dimension, or each
    dimension's coordinates (non-uniform, as NumPy's formula)."""
    x = _t(input)
    if edge_order not in (1, 2):
        raise RuntimeError("torch.gradient only supports edge_order=1 and edge_order=2.")
    dims = (tuple(range(x.dim())) if dim is None else
            (normalize_dim(dim, x.dim()),) if isinstance(dim, int) else
            tuple(normalize_dim(d, x.dim()) for d in dim))
    if not x.dtype.is_floating_point:
        x = x.to(dt.get_default_dtype())
    if isinstance(spacing, (list, tuple)):
        if len(spacing) != len(dims):
            raise RuntimeError(f"torch.gradient expected spacing to be unspecified, a scalar or "
                               f"it's spacing and dim arguments to have the same length, but "
                               f"got a spacing argument of length {len(spacing)} and a dim "
                               f"argument of length {len(dims)}.")
        spacings = list(spacing)
    else:
        spacings = [spacing] * len(dims)
    return tuple(_gradient_along(x, d, h, edge_order) for d, h in zip(dims, spacings))


def _gradient_along(x, d: int, h, edge_order: int):
    n = x.shape[d]
    if n < edge_order + 1:
        raise RuntimeError("torch.gradient expected each dimension size to be at least "
                           "edge_order+1")

    def sl(start, length):
        return x.narrow(d, start, length)
    if not isinstance(h, Tensor):
        h = float(h.item()) if hasattr(h, "item") else float(h)
        inner = (sl(2, n - 2) - sl(0, n - 2)) / (2.0 * h)
        if edge_order == 1:
            first, last = (sl(1, 1) - sl(0, 1)) / h, (sl(n - 1, 1) - sl(n - 2, 1)) / h
        else:
            first = (sl(0, 1) * -3.0 + sl(1, 1) * 4.0 - sl(2, 1)) / (2.0 * h)
            last = (sl(n - 3, 1) - sl(n - 2, 1) * 4.0 + sl(n - 1, 1) * 3.0) / (2.0 * h)
        return cat([first, inner, last], d)
    c = h.to(x.dtype)
    if c.dim() != 1 or c.shape[0] != n:
        raise RuntimeError(f"torch.gradient expected each tensor to be on the same device and "
                           f"to have size {n} along dimension {d}")
    shape = [1] * x.dim()
    shape[d] = -1

    def coef(t):  # a 1-D coordinate difference, broadcast along dimension d
        return t.reshape(shape)
    dx = c.narrow(0, 1, n - 1) - c.narrow(0, 0, n - 1)
    hl, hr = coef(dx.narrow(0, 0, n - 2)), coef(dx.narrow(0, 1, n - 2))
    inner = (sl(2, n - 2) * (hl * hl) - sl(0, n - 2) * (hr * hr)
             + sl(1, n - 2) * (hr * hr - hl * hl)) / (hl * hr * (hl + hr))
    if edge_order == 1:
        first = (sl(1, 1) - sl(0, 1)) / coef(dx.narrow(0, 0, 1))
        last = (sl(n - 1, 1) - sl(n - 2, 1)) / coef(dx.narrow(0, n - 2, 1))
    else:
        a1, a2 = coef(dx.narrow(0, 0, 1)), coef(dx.narrow(0, 1, 1))
        first = (sl(0, 1) * (-(2.0 * a1 + a2) / (a1 * (a1 + a2)))
                 + sl(1, 1) * ((a1 + a2) / (a1 * a2)) + sl(2, 1) * (-a1 / (a2 * (a1 + a2))))
        b1, b2 = coef(dx.narrow(0, n - 3, 1)), coef(dx.narrow(0, n - 2, 1))
        last = (sl(n - 3, 1) * (b2 / (b1 * (b1 + b2))) + sl(n - 2, 1) * (-(b2 + b1) / (b1 * b2))
                + sl(n - 1, 1) * ((2.0 * b2 + b1) / (b2 * (b1 + b2))))
    return cat([first, inner, last], d)


def _cum_extreme(name, input, dim, largest):
    x = _t(input)
    if x.dim() == 0:
        normalize_dim(dim, 1)
        return return_type(name, x.clone(), _zeros_like(x, dtype=dt.int64))
    d = normalize_dim(dim, x.dim())
    idx = apply_op("cumarg", (x,), {"dim": d, "largest": largest})
    values = apply_op("gather", (x, idx), {"dim": d},
                      "CummaxBackward0" if largest else "CumminBackward0")
    return return_type(name, values, idx)


def cummax(input, dim):
    """Running maximum and its index along dim."""
    return _cum_extreme("cummax", input, dim, True)


def cummin(input, dim):
    """Running minimum and its index along dim."""
    return _cum_extreme("cummin", input, dim, False)


def logcumsumexp(input, dim):
    """log(cumsum(exp(x))) along dim, shifted by the (constant) maximum so it does not
    overflow."""
    x = _t(input)
    if x.dim() == 0:
        normalize_dim(dim, 1)
        return x.clone()
    d = normalize_dim(dim, x.dim())
    m = amax(x, d, keepdim=True).detach()
    m = where(isfinite(m), m, 0.0)
    return add(log(cumsum(exp(sub(x, m)), d)), m)


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None,
                 sorter=None):
    """Insertion indices of input into the innermost dim of sorted_sequence."""
    seq = _t(sorted_sequence)
    vals = _t(input) if isinstance(input, Tensor) or not isinstance(input, (int, float)) \
        else None
    scalar = vals is None
    if scalar:
        vals = tensor([input], dtype=seq.dtype)
    if side is not None:
        if side not in ("left", "right"):
            raise RuntimeError(f"torch.searchsorted(): side can only be 'left' or 'right' but "
                               f"got {side}")
        if right and side == "left":
            raise RuntimeError("torch.searchsorted(): side and right can't be set to opposites, "
                               "got side of left while right was True")
        right = side == "right"
    if sorter is not None:
        seq = gather(seq, -1, sorter)
    r = apply_op("searchsorted", (seq, vals.to(seq.dtype) if vals.dtype is not seq.dtype
                                  else vals), {"right": bool(right)})
    if scalar:
        r = r.reshape(())
    return r.to(dt.int32) if out_int32 else r


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """Bucket index of each value (boundaries 1-d and sorted)."""
    b = _t(boundaries)
    if b.dim() != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim({b.dim()})")
    return searchsorted(b, input, out_int32=out_int32, right=right)


def bincount(input, weights=None, minlength=0):
    """Counts (or summed weights) of each non-negative integer; the length depends on the
    data, so its maximum is read with .item() (a graph break under compile)."""
    x = _t(input)
    if x.dim() != 1 or x.dtype.is_floating_point or x.dtype is dt.bool_:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if x.numel() and builtins.bool(lt(x, 0).any()):
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    n = builtins.max(int(minlength), (int(x.max().item()) + 1) if x.numel() else 0)
    if weights is None:
        w = _zeros_like(x, dtype=dt.int64).add(1)
        out = _zeros(n, dtype=dt.int64)
    else:
        w = _t(weights)
        wd = w.dtype if w.dtype.is_floating_point else dt.float64
        w = w.to(wd)
        out = _zeros(n, dtype=wd)
    return out.index_put((x,), w, accumulate=True)


def unique(input, sorted=True, return_inverse=False, return_counts=False,  # noqa: A002
           dim=None):
    """Distinct values (sorted), optionally the inverse map and counts. The result's size
    depends on the data: a graph break under compile, as in torch."""
    x = _t(input)
    _graph_break("torch.unique (data-dependent output size)")
    data = x.numpy()
    if dim is None:
        vals, inv, cnt = np.unique(data.reshape(-1), return_inverse=True, return_counts=True)
        inv = inv.reshape(data.shape)
    else:
        d = normalize_dim(dim, x.dim())
        vals, inv, cnt = np.unique(data, axis=d, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
    out = [tensor(vals, dtype=x.dtype)]
    if return_inverse:
        out.append(tensor(inv.astype(np.int64), dtype=dt.int64))
    if return_counts:
        out.append(tensor(cnt.astype(np.int64), dtype=dt.int64))
    return out[0] if len(out) == 1 else tuple(out)


def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """Collapse runs of equal values (flattened when dim is None)."""
    x = _t(input)
    _graph_break("torch.unique_consecutive (data-dependent output size)")
    if dim is not None:
        raise NotImplementedError("unique_consecutive: dim is not supported")
    data = x.numpy().reshape(-1)
    if data.size == 0:
        starts = np.zeros(0, np.int64)
    else:
        starts = np.flatnonzero(np.concatenate([[True], data[1:] != data[:-1]]))
    out = [tensor(data[starts], dtype=x.dtype)]
    if return_inverse:
        out.append(tensor((np.cumsum(np.concatenate([[False], data[1:] != data[:-1]]))
                           if data.size else np.zeros(0, np.int64)).astype(np.int64)
                          .reshape(x.shape), dtype=dt.int64))
    if return_counts:
        out.append(tensor(np.diff(np.append(starts, data.size)).astype(np.int64),
                          dtype=dt.int64))
    return out[0] if len(out) == 1 else tuple(out)


def index_copy(input, dim, index, source):
    """input with the slices at index along dim replaced by source."""
    x = _t(input)
    d = normalize_dim(dim, x.dim()) if x.dim() else 0
    spec = tuple(("s", None, None, None) for _ in range(d)) + (("t", 0),)
    return apply_op("index_put", (x, _t(source).to(x.dtype), index),
                    {"index": spec, "accumulate": False}, "IndexCopyBackward0")


def index_fill(input, dim, index, value):
    """input with the slices at index along dim set to value."""
    x = _t(input)
    d = normalize_dim(dim, x.dim()) if x.dim() else 0
    spec = tuple(("s", None, None, None) for _ in range(d)) + (("t", 0),)
    v = value.to(x.dtype) if isinstance(value, Tensor) else value
    if not isinstance(v, Tensor):
        v = tensor(v, dtype=x.dtype)
    return apply_op("index_put", (x, v, index), {"index": spec, "accumulate": False},
                    "IndexFillBackward0")


def index_add(input, dim, index, source, *, alpha=1):
    return _t(input).index_add(dim, index, source, alpha=alpha)


def masked_scatter(input, mask, source):
    """Copy source's leading elements, in order, into the positions where mask is True;
    the position of each is a cumulative sum of the mask (ops only, so it traces)."""
    x = _t(input)
    m = mask.expand_as(x) if tuple(mask.shape) != tuple(x.shape) else mask
    if m.dtype is not dt.bool_:
        raise RuntimeError(f"masked_scatter_ only supports boolean masks, but got mask with "
                           f"dtype {m.dtype}")
    flat = m.reshape(-1)
    pos = sub(cumsum(flat.to(dt.int64), 0), 1)
    src = _t(source).reshape(-1)
    pos = clamp(pos, 0, builtins.max(src.shape[0] - 1, 0))
    vals = index_select(src, 0, pos).to(x.dtype).reshape(tuple(x.shape))
    return where(m, vals, x)


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    """scatter with reduce 'sum', 'prod', 'mean', 'amax' or 'amin'."""
    x = _t(input)
    d = normalize_dim(dim, x.dim())
    if reduce in ("sum", "prod"):
        base = x if include_self else scatter(x, d, index, src=None, value=(
            0 if reduce == "sum" else 1))
        return base.scatter(d, index, src, reduce="add" if reduce == "sum" else "multiply")
    if reduce == "mean":
        ones = _zeros_like(src, dtype=x.dtype).add(1)
        base = x if include_self else x.scatter(d, index, 0.0 if x.dtype.is_floating_point
                                                else 0)
        s = base.scatter(d, index, src, reduce="add")
        cnt = _zeros_like(x, dtype=x.dtype).add(1 if include_self else 0)
        cnt = cnt.scatter(d, index, ones, reduce="add")
        cnt = where(eq(cnt, 0), 1, cnt)
        r = div(s, cnt)
        return r if x.dtype.is_floating_point else floor_divide(s, cnt).to(x.dtype)
    if reduce in ("amax", "amin"):
        # the extreme of each target as a constant: src sorted so the extreme is written last
        # (index_put keeps the last write); then a tie-aware average of the winners (self and
        # src elements equal to it), so the gradient is shared evenly among ties, as torch
        src_t = _t(src)
        sl = tuple(slice(0, n) for n in index.shape)
        vals = src_t[sl].reshape(-1).to(x.dtype)
        grids = np.indices(tuple(index.shape)).reshape(index.dim(), -1)
        coords = [tensor(g.astype(np.int64)) for g in grids]
        coords[d] = index[sl].reshape(-1)
        order = argsort(vals.detach(), 0, descending=(reduce == "amin"), stable=True)
        sc = tuple(index_select(c, 0, order) for c in coords)
        sv = index_select(vals, 0, order)
        written = _zeros_like(x, dtype=dt.bool_).index_put(sc, tensor(True), accumulate=False)
        ext = x.detach().index_put(sc, sv.detach(), accumulate=False)
        if include_self:
            ext = where(written, maximum(ext, x.detach()) if reduce == "amax"
                        else minimum(ext, x.detach()), ext)
        win_self = logical_and(eq(x, ext), logical_or(logical_not(written), include_self))
        win_src = eq(sv, ext[sc]).to(x.dtype)
        num = mul(x, win_self.to(x.dtype)).index_put(sc, mul(sv, win_src), accumulate=True)
        cnt = win_self.to(x.dtype).index_put(sc, win_src, accumulate=True)
        return div(num, cnt)
    raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got "
                       f"{reduce}")


# ---- more of torch's documented functions (compositions) -------------------------------------
def positive(input):
    """The input itself (torch.positive)."""
    x = _t(input)
    if x.dtype is dt.bool_:
        raise RuntimeError("The `+` operator, on a bool tensor is not supported.")
    return x


def sgn(input):
    """sign for real tensors."""
    return sign(input)


def signbit(input):
    """True where the sign bit is set (negative numbers and -0.0)."""
    x = _t(input)
    if not x.dtype.is_floating_point:
        return lt(x, 0)
    return logical_or(lt(x, 0), logical_and(eq(x, 0), lt(div(1.0, x), 0)))


def heaviside(input, values):
    """0 below zero, 1 above, ``values`` at zero."""
    x = _t(input)
    v = _t(values)
    r = where(gt(x, 0), 1, 0).to(x.dtype)
    return where(eq(x, 0), v.to(x.dtype), r)


def isposinf(input):
    x = _t(input)
    return logical_and(isinf(x), gt(x, 0)) if x.dtype.is_floating_point else _zeros_like(
        x, dtype=dt.bool_)


def isneginf(input):
    x = _t(input)
    return logical_and(isinf(x), lt(x, 0)) if x.dtype.is_floating_point else _zeros_like(
        x, dtype=dt.bool_)


def isreal(input):
    """All True: gcompile has no complex dtypes."""
    return _zeros_like(_t(input), dtype=dt.bool_).logical_not()


def is_complex(input) -> bool:
    return False


def is_conj(input) -> bool:
    return False


def conj(input):
    """Real tensors are their own conjugate."""
    return _t(input)


conj_physical = resolve_conj = resolve_neg = real = conj


def isin(elements, test_elements, *, assume_unique=False, invert=False):
    """Whether each element occurs in test_elements (an equality against every test value)."""
    e = _t(elements)
    te = _t(test_elements).reshape(-1)
    if te.numel() == 0:
        r = _zeros_like(e, dtype=dt.bool_)
    else:
        r = any(eq(e.unsqueeze(-1), te), -1) if e.dim() else any(eq(e.reshape(1, 1), te))
    return logical_not(r) if invert else r


def count_nonzero(input, dim=None):
    return sum(ne(_t(input), 0), dim)


def msort(input):
    return sort(input, 0).values


def atleast_3d(*tensors):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        return tuple(atleast_3d(t) for t in tensors[0])
    if len(tensors) > 1:
        return tuple(atleast_3d(t) for t in tensors)
    x = _t(tensors[0])
    if x.dim() == 0:
        return x.reshape(1, 1, 1)
    if x.dim() == 1:
        return x.reshape(1, -1, 1)
    if x.dim() == 2:
        return x.unsqueeze(-1)
    return x


def ravel(input):
    return _t(input).reshape(-1)


def fliplr(input):
    return _t(input).fliplr()


def flipud(input):
    return _t(input).flipud()


def diagflat(input, offset=0):
    """A 2-D matrix with the flattened input on its offset diagonal."""
    return diag_embed(_t(input).reshape(-1), offset)


def take(input, index):
    """input treated as 1-D, gathered at index (result has index's shape)."""
    flat = _t(input).reshape(-1)
    return index_select(flat, 0, index.reshape(-1)).reshape(tuple(index.shape))


def tensor_split(input, indices_or_sections, dim=0):
    return _t(input).tensor_split(indices_or_sections, dim)


def hsplit(input, indices_or_sections):
    x = _t(input)
    return tensor_split(x, indices_or_sections, 1 if x.dim() > 1 else 0)


def vsplit(input, indices_or_sections):
    return tensor_split(input, indices_or_sections, 0)


def dsplit(input, indices_or_sections):
    return tensor_split(input, indices_or_sections, 2)


def trapezoid(y, x=None, *, dx=None, dim=-1):
    """Trapezoidal rule along dim (spacing dx, or sample points x)."""
    y = _t(y)
    d = normalize_dim(dim, y.dim())
    n = y.shape[d]
    if n == 0:
        return sum(y, d)
    avg = mul(add(y.narrow(d, 1, n - 1), y.narrow(d, 0, n - 1)), 0.5)
    if x is not None:
        xt = _t(x)
        dd = normalize_dim(dim, xt.dim()) if xt.dim() > 1 else 0
        m = xt.shape[dd]
        spacing = sub(xt.narrow(dd, 1, m - 1), xt.narrow(dd, 0, m - 1))
        if xt.dim() == 1 and y.dim() > 1:
            spacing = spacing.reshape((m - 1,) + (1,) * (y.dim() - 1 - d))
        return sum(mul(avg, spacing), d)
    return mul(sum(avg, d), 1.0 if dx is None else dx)


trapz = trapezoid


def vander(x, N=None, increasing=False):  # noqa: N803 - torch's name
    """Columns x^0..x^(N-1) (decreasing powers unless increasing)."""
    x = _t(x)
    n = x.shape[0] if N is None else N
    cols = [pow(x, p) if p else _zeros_like(x).add(1) for p in range(n)]
    if not increasing:
        cols = cols[::-1]
    return stack(cols, 1) if cols else _zeros(x.shape[0], 0, dtype=x.dtype)


def cartesian_prod(*tensors):
    """All combinations, one per row (itertools.product order)."""
    if len(tensors) == 1:
        return _t(tensors[0])
    grids = meshgrid(*tensors, indexing="ij")
    return stack([g.reshape(-1) for g in grids], 1)


def combinations(input, r=2, with_replacement=False):
    """Length-r combinations of a 1-D tensor's elements (itertools' order)."""
    import itertools
    x = _t(input)
    n = x.shape[0]
    it = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    idx = list(it(range(n), r))
    if not idx:
        return _zeros(0, r, dtype=x.dtype) if r else _zeros(0, dtype=x.dtype)
    cols = tensor(np.array(idx, np.int64))
    return stack([index_select(x, 0, cols[:, j]) for j in range(r)], 1)


def cov(input, *, correction=1, fweights=None, aweights=None):
    """Covariance of the rows (variables) over the columns (observations)."""
    x = _t(input)
    if x.dim() < 2:
        x = x.reshape(1, -1)
    xf = _float(x)
    w = None
    if fweights is not None:
        w = _float(_t(fweights)).to(xf.dtype)
    if aweights is not None:
        aw = _float(_t(aweights)).to(xf.dtype)
        w = aw if w is None else mul(w, aw)
    if w is None:
        n = xf.shape[1]
        avg = mean(xf, 1, keepdim=True)
        norm_ = n - correction
        xc = sub(xf, avg)
        c = div(matmul(xc, xc.t()), float(builtins.max(norm_, 0)))
    else:
        wsum = sum(w)
        avg = div(sum(mul(xf, w), 1, keepdim=True), wsum)
        if correction == 0:
            norm_ = wsum
        elif aweights is None:
            norm_ = sub(wsum, correction)
        else:
            norm_ = sub(wsum, div(mul(sum(mul(w, _float(_t(aweights)))), correction), wsum))
        xc = sub(xf, avg)
        c = div(matmul(mul(xc, w), xc.t()), clamp(norm_, 0) if isinstance(norm_, Tensor)
                else norm_)
    return c.reshape(()) if input.dim() < 2 or x.shape[0] == 1 and _t(input).dim() < 2 else c


def corrcoef(input):
    """Pearson correlation of the rows."""
    c = cov(input)
    if c.dim() == 0:
        return div(c, c)
    d = sqrt(diagonal(c))
    return clamp(div(div(c, d.unsqueeze(1)), d.unsqueeze(0)), -1, 1)


def ldexp(input, other):
    """input * 2**other."""
    return mul(_float(_t(input)), pow(2.0, _float(_t(other))))


def bitwise_left_shift(input, other):
    """x << s for integers (as multiplication by 2**s)."""
    x = _t(input)
    return mul(x, pow(2, _t(other).to(x.dtype) if isinstance(other, Tensor) else other))


def bitwise_right_shift(input, other):
    """x >> s for integers (arithmetic: floor division by 2**s)."""
    x = _t(input)
    return floor_divide(x, pow(2, _t(other).to(x.dtype) if isinstance(other, Tensor)
                               else other))


def _window(n, periodic, fn, dtype):
    if n == 0:
        return tensor(np.zeros(0), dtype=dtype or dt.get_default_dtype())
    if n == 1:
        return tensor(np.ones(1), dtype=dtype or dt.get_default_dtype())
    m = n + 1 if periodic else n
    w = fn(np.arange(m, dtype=np.float64), m)[:n]
    return tensor(w, dtype=dtype or dt.get_default_dtype())


def hann_window(window_length, periodic=True, *, dtype=None, layout=None, device=None,
                requires_grad=False):
    return _window(window_length, periodic,
                   lambda k, m: 0.5 - 0.5 * np.cos(2 * math.pi * k / (m - 1)), dtype)


def hamming_window(window_length, periodic=True, alpha=0.54, beta=0.46, *, dtype=None,
                   layout=None, device=None, requires_grad=False):
    return _window(window_length, periodic,
                   lambda k, m: alpha - beta * np.cos(2 * math.pi * k / (m - 1)), dtype)


def blackman_window(window_length, periodic=True, *, dtype=None, layout=None, device=None,
                    requires_grad=False):
    return _window(window_length, periodic,
                   lambda k, m: 0.42 - 0.5 * np.cos(2 * math.pi * k / (m - 1))
                   + 0.08 * np.cos(4 * math.pi * k / (m - 1)), dtype)


def bartlett_window(window_length, periodic=True, *, dtype=None, layout=None, device=None,
                    requires_grad=False):
    return _window(window_length, periodic,
                   lambda k, m: 1 - np.abs(2 * k / (m - 1) - 1), dtype)


def kaiser_window(window_length, periodic=True, beta=12.0, *, dtype=None, layout=None,
                  device=None, requires_grad=False):
    return _window(window_length, periodic,
                   lambda k, m: np.i0(beta * np.sqrt(1 - (2 * k / (m - 1) - 1) ** 2))
                   / np.i0(beta), dtype)


def matrix_exp(A):  # noqa: N803
    """exp(A) by scaling and squaring with a Taylor series (in ops, so it differentiates)."""
    A = _t(A)
    nrm = float(amax(sum(abs(A.detach()), -2)).item()) if A.numel() else 0.0
    s = builtins.max(0, int(math.ceil(math.log2(nrm))) + 1) if nrm > 0.5 else 0
    X = div(A, float(2 ** s))
    eye_ = eye(A.shape[-1], dtype=A.dtype)
    term = eye_.expand(*A.shape)
    result = term
    for k in range(1, 20):
        term = div(matmul(term, X), float(k))
        result = add(result, term)
    for _ in range(s):
        result = matmul(result, result)
    return result


_FLAGS = {"deterministic": False, "warn_only": False, "warn_always": False}


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """Recorded; gcompile's CPU kernels are deterministic already."""
    _FLAGS["deterministic"] = bool(mode)
    _FLAGS["warn_only"] = bool(warn_only)


def are_deterministic_algorithms_enabled() -> bool:
    return _FLAGS["deterministic"]


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    return _FLAGS["warn_only"]


def set_warn_always(b: bool) -> None:
    _FLAGS["warn_always"] = bool(b)


def is_warn_always_enabled() -> bool:
    return _FLAGS["warn_always"]


def set_flush_denormal(mode: bool) -> bool:
    """False: flushing denormals is not supported (torch returns whether it is)."""
    return False


def nanmedian(input, dim=None, keepdim=False):
    """The lower median of the non-NaN values (NaN where there are none): sorting puts NaN
    last, so the median sits at (count - 1) // 2 (ops only, it traces)."""
    x = _t(input)
    if dim is None:
        flat = x.reshape(-1)
        if flat.numel() == 0:
            return sum(flat).mul(math.nan)
        r = nanmedian(flat, 0)
        return r.values
    if x.dim() == 0:
        normalize_dim(dim, 1)
        return return_type("nanmedian", x.clone(), _zeros_like(x, dtype=dt.int64))
    d = normalize_dim(dim, x.dim())
    s = sort(x, d)
    if x.dtype.is_floating_point:
        k = sum(logical_not(isnan(x)), d, keepdim=True)
        pos = clamp(floor_divide(sub(k, 1), 2), 0)
    else:
        pos = _zeros_like(sum(x, d, keepdim=True), dtype=dt.int64).add((x.shape[d] - 1) // 2)
    idx = gather(s.indices, d, pos)
    values = apply_op("gather", (x, idx), {"dim": d}, "NanmedianBackward0")
    if not keepdim:
        values = apply_op("sum", (values,), {"dims": (d,), "keepdim": False},
                          "NanmedianBackward0")
        idx = apply_op("sum", (idx,), {"dims": (d,), "keepdim": False})
    return return_type("nanmedian", values, idx)


def histc(input, bins=100, min=0, max=0):  # noqa: A002
    """Counts in `bins` equal bins over [min, max] (the data's range when both are 0, read
    with .item()); values outside are ignored, max falls in the last bin."""
    x = _t(input)
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"\"histogram_cpu\" not implemented for '{x.dtype}'")
    lo, hi = float(min), float(max)
    if lo == hi and x.numel():
        lo, hi = float(x.min().item()), float(x.max().item())
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    if lo > hi:
        raise RuntimeError("torch.histc: max must be larger than min")
    flat = x.reshape(-1)
    inside = logical_and(ge(flat, lo), le(flat, hi))
    b = floor(mul(sub(flat, lo), bins / (hi - lo))).to(dt.int64)
    b = clamp(b, 0, bins - 1)
    w = inside.to(x.dtype)
    return _zeros(bins, dtype=x.dtype).index_put((b,), w, accumulate=True)


def histogram(input, bins=100, *, range=None, weight=None, density=False):  # noqa: A002
    """Counts (or weights) of ``input``'s values in ``bins`` equal bins over ``range`` (the
    data's range by default, read with .item()) or between the edges of a 1-D ``bins``
    tensor; the last edge is inclusive, values outside are ignored. ``density`` divides
    by the total and the bin widths. Returns (hist, bin_edges)."""
    from ._creation import linspace
    x = _t(input)
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"\"histogram_cpu\" not implemented for '{x.dtype}'")
    flat = x.reshape(-1)
    if isinstance(bins, Tensor):
        if bins.dim() != 1 or bins.numel() < 2:
            raise RuntimeError("torch.histogram(): bins tensor should have one dimension and "
                               "at least 2 elements")
        edges = bins.to(x.dtype)
    else:
        if bins < 1:
            raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins}")
        if range is not None:
            lo, hi = float(range[0]), float(range[1])
        elif flat.numel():
            lo, hi = float(flat.min().item()), float(flat.max().item())
        else:
            lo, hi = 0.0, 0.0
        if lo > hi:
            raise RuntimeError(f"torch.histogram(): min should not exceed max, but got min "
                               f"{lo} max {hi}")
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = linspace(lo, hi, int(bins) + 1, dtype=x.dtype)
    n = edges.shape[0] - 1
    last = edges[-1]
    idx = sub(searchsorted(edges, flat, right=True), 1)
    idx = clamp(where(eq(flat, last), n - 1, idx), 0, n - 1)
    w = logical_and(ge(flat, edges[0]), le(flat, last)).to(x.dtype)
    if weight is not None:
        w = mul(w, _t(weight).reshape(-1).to(x.dtype))
    hist = _zeros(n, dtype=x.dtype).index_put((idx,), w, accumulate=True)
    if density:
        hist = div(hist, mul(hist.sum(), sub(edges[1:], edges[:-1])))
    return _result("histogram", "hist bin_edges", hist, edges)


def mode(input, dim=-1, keepdim=False):
    """The most frequent value along ``dim`` (the smallest of tied ones) and the index of
    its last occurrence: sort, runs of equal values, their lengths."""
    x = _t(input)
    if x.dim() == 0:
        normalize_dim(dim, 1)
        return return_type("mode", x.clone(), _zeros_like(x, dtype=dt.int64))
    d = normalize_dim(dim, x.dim())
    n = x.shape[d]
    if n == 0:
        raise IndexError("mode(): Expected reduction dim to have non-zero size.")
    s = sort(x, d).values
    starts = ne(s.narrow(d, 1, n - 1), s.narrow(d, 0, n - 1)).to(dt.int64)
    first = _zeros_like(s.narrow(d, 0, 1), dtype=dt.int64)
    run = cumsum(cat([first, starts], d), d)           # run number of each sorted position
    lengths = _zeros_like(run).scatter_add(d, run, add(_zeros_like(run), 1))
    count = gather(lengths, d, run)                     # run length at each sorted position
    best = argmax(eq(count, count.amax(d, keepdim=True)).to(dt.int64), d, keepdim=True)
    value = gather(s, d, best)                          # the first (smallest) longest run
    shape = [1] * x.dim()
    shape[d] = n
    from ._creation import arange
    pos = arange(n).reshape(shape).expand(*x.shape)
    index = where(eq(x, value), pos, -1).amax(d, keepdim=True)
    if not keepdim:
        value, index = value.squeeze(d), index.squeeze(d)
    return return_type("mode", value, index)


def gcd(input, other):
    """Elementwise greatest common divisor of integer tensors (non-negative)."""
    return apply_op("gcd", (_t(input), _t(other)))


def lcm(input, other):
    """Elementwise least common multiple of integer tensors (non-negative)."""
    return apply_op("lcm", (_t(input), _t(other)))


def nextafter(input, other):
    """The next floating-point value after ``input`` towards ``other``."""
    return apply_op("nextafter", (_t(input), _t(other)))


def renorm(input, p, dim, maxnorm):
    """Each slice along dim rescaled so its p-norm is at most maxnorm."""
    x = _t(input)
    d = normalize_dim(dim, x.dim())
    others = [i for i in range(x.dim()) if i != d]
    n = norm(x, p=p, dim=others, keepdim=True) if others else abs(x)
    factor = where(gt(n, maxnorm), div(float(maxnorm), add(n, 1e-7)), 1.0)
    return mul(x, factor)


def frexp(input):
    """(mantissa in [0.5, 1), exponent) with input = mantissa * 2**exponent."""
    x = _t(input)
    if not x.dtype.is_floating_point:
        raise RuntimeError("torch.frexp() only supports floating-point dtypes")
    ax = abs(x)
    finite_nz = logical_and(isfinite(x), ne(x, 0))
    e = where(finite_nz, add(floor(log2(where(finite_nz, ax, 1.0))), 1.0), 0.0)
    m = div(x, pow(2.0, e))
    # log2 rounding can put the mantissa at 1.0 or just below 0.5: one correction step
    big = ge(abs(m), 1.0)
    e = where(big, add(e, 1.0), e)
    m = where(big, mul(m, 0.5), m)
    small = logical_and(finite_nz, lt(abs(m), 0.5))
    e = where(small, sub(e, 1.0), e)
    m = where(small, mul(m, 2.0), m)
    return _result("frexp", "mantissa exponent", m, e.to(dt.int32))


_THREADS: dict = {"intra": None, "interop": None, "limiter": None}


def get_num_threads() -> int:
    """Threads used for intra-op parallelism (BLAS and generated kernels)."""
    if _THREADS["intra"] is not None:
        return _THREADS["intra"]
    from threadpoolctl import threadpool_info
    counts = [info.get("num_threads", 1) for info in threadpool_info()]
    import os
    return builtins.max(counts) if counts else (os.cpu_count() or 1)


def set_num_threads(int) -> None:  # noqa: A002 - torch's parameter name
    """Limit BLAS (through threadpoolctl) and Numba's kernels to this many threads."""
    n = int
    if not isinstance(n, builtins.int) or isinstance(n, builtins.bool) or n <= 0:
        raise RuntimeError("set_num_threads expects a positive integer")
    from threadpoolctl import threadpool_limits
    _THREADS["limiter"] = threadpool_limits(limits=n)
    _THREADS["intra"] = n
    from kernels.cpu import set_num_threads as kernel_threads
    kernel_threads(n)
    import sys
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(builtins.min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_interop_threads() -> int:
    """gcompile runs one op at a time: inter-op parallelism is 1 unless set."""
    return _THREADS["interop"] or 1


def set_num_interop_threads(int) -> None:  # noqa: A002
    n = int
    if not isinstance(n, builtins.int) or isinstance(n, builtins.bool) or n <= 0:
        raise RuntimeError("Expected positive number of threads")
    _THREADS["interop"] = n


def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """quantile over the non-NaN values (NaN where a slice has none): NaN sorts last, so the
    positions come from each slice's count of numbers (gathers, so it traces)."""
    x = _t(input)
    if not x.dtype.is_floating_point:
        raise RuntimeError("quantile() input tensor must be either float or double dtype")
    if interpolation not in ("linear", "lower", "higher", "midpoint", "nearest"):
        raise RuntimeError("quantile() interpolation must be one of linear, lower, higher, "
                           f"midpoint or nearest. Got {interpolation}")
    scalar_q = not isinstance(q, (Tensor, list, tuple))
    qs = [float(v) for v in (q.reshape(-1).tolist() if isinstance(q, Tensor) else
                             ([q] if scalar_q else list(q)))]
    if builtins.any(v < 0 or v > 1 for v in qs):
        raise RuntimeError("quantile() q values must be in the range [0, 1]")
    if dim is None:
        xs, d = x.reshape(-1), 0
    else:
        xs, d = x, normalize_dim(dim, x.dim())
    s = sort(xs, d).values
    k = sum(logical_not(isnan(xs)), d, keepdim=True).to(x.dtype)
    last = clamp(sub(k, 1.0), 0.0)
    outs = []
    for qv in qs:
        pos = mul(last, qv)
        lo, hi = floor(pos), ceil(pos)
        if interpolation == "lower":
            hi = lo
        elif interpolation == "higher":
            lo = hi
        elif interpolation == "nearest":
            lo = hi = round(pos)
        a = gather(s, d, lo.to(dt.int64))
        b = gather(s, d, hi.to(dt.int64))
        w = 0.5 if interpolation == "midpoint" else sub(pos, lo)
        v = add(a, mul(sub(b, a), w))
        v = where(eq(k, 0), math.nan, v)
        if not keepdim:
            v = v.squeeze(d)
        elif dim is None:
            v = v.reshape((1,) * x.dim())
        outs.append(v)
    return outs[0] if scalar_q else stack(outs, 0)
