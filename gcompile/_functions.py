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
from ir.shapes import normalize_dim, normalize_dims

from ._tensor import Tensor, _graph_break, _wrap_scalar_or_tensor, apply_op, return_type

_S = (bool, int, float)


def _np_index(spec, tensors):
    return np_index(spec, [t._data for t in tensors])


def _is_one(alpha) -> bool:
    """``alpha == 1`` for numbers; a tensor alpha (an lr being traced) is never skipped."""
    return isinstance(alpha, (int, float)) and alpha == 1


def _t(x):
    """Tensor for a value that must be one (first argument of most functions)."""
    if isinstance(x, Tensor):
        return x
    from ._creation import tensor
    return tensor(x)


# ---- elementwise -------------------------------------------------------------
def _unary(name, grad_name=None):
    def fn(input, *, out=None):
        r = apply_op(name, (_t(input),), grad_name=grad_name)
        return _out(r, out)
    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = f"Elementwise ``{name}`` (torch.{name})."
    return fn


def _out(r, out):
    if out is None:
        return r
    if tuple(out.shape) != tuple(r.shape):
        out._data = np.empty(r.shape, out._data.dtype)
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
        return _out(apply_op(name, (a, b), grad_name=grad_name), out)
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


mul = _binary("mul")
div = _binary("div")
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
multiply, divide, true_divide = mul, div, div
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


def add(input, other, *, alpha=1, out=None):
    other = _wrap_scalar_or_tensor(other)
    if not _is_one(alpha):
        other = mul(other, alpha) if isinstance(other, Tensor) else other * alpha
    a = _wrap_scalar_or_tensor(input)
    if not isinstance(a, Tensor) and not isinstance(other, Tensor):
        a = _t(a)
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
    if not x.dtype.is_floating_point and (isinstance(min, float) or isinstance(max, float)):
        x = x.to(dt.get_default_dtype())
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
    a, b = _t(input), _t(other)
    _graph_break("isclose")
    return Tensor._make(np.isclose(a._data, b._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


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


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    if isinstance(unbiased, bool) is False and unbiased is not None and dim is None:
        dim, unbiased = unbiased, None
    return _red("var", input, dim, keepdim, {"correction": _correction(unbiased, correction)})


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
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
    return apply_op("cumsum", (x,), {"dim": normalize_dim(dim, x.dim())})


def cumprod(input, dim, *, dtype=None):
    x = _t(input)
    if dtype is not None:
        x = x.to(dtype)
    return apply_op("cumprod", (x,), {"dim": normalize_dim(dim, x.dim())})


def sort(input, dim=-1, descending=False, stable=False):
    x = _t(input)
    d = normalize_dim(dim, x.dim()) if x.dim() else 0
    if x.dim() == 0:
        return return_type("sort", x.clone(), Tensor._make(np.zeros((), np.int64)))
    _graph_break("sort/topk/kthvalue/median (indices computed outside the op registry)")
    data = x._data
    if not descending:
        idx = np.argsort(data, axis=d, kind="stable")  # NaN last, like torch
    elif data.dtype.kind == "f":
        # descending and stable; NaN counts as the largest value, so it comes first
        nan = np.isnan(data)
        idx = np.lexsort((np.negative(np.where(nan, 0, data)), ~nan), axis=d)
    else:
        # ~x reverses the order of every integer type (and bool) without overflow
        idx = np.argsort(np.invert(data), axis=d, kind="stable")
    idx_t = Tensor._make(idx.astype(np.int64))
    values = apply_op("gather", (x, idx_t), {"dim": d}, "SortBackward0")
    return return_type("sort", values, idx_t)


def argsort(input, dim=-1, descending=False, stable=False):
    return sort(input, dim, descending, stable).indices


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    x = _t(input)
    d = normalize_dim(dim, x.dim()) if x.dim() else 0
    n = x.shape[d] if x.dim() else 1
    if k > n or k < 0:
        raise RuntimeError(f"selected index k out of range (k={k}, dimension {d} has size {n})")
    s = sort(x, d, descending=largest)
    idx = s.indices.narrow(d, 0, k).contiguous()
    values = apply_op("gather", (x, idx), {"dim": d}, "TopkBackward0")
    return return_type("topk", values, idx)


def kthvalue(input, k, dim=-1, keepdim=False):
    x = _t(input)
    d = normalize_dim(dim, x.dim())
    s = sort(x, d)
    idx = s.indices.narrow(d, k - 1, 1).contiguous()
    values = apply_op("gather", (x, idx), {"dim": d}, "KthvalueBackward0")
    if not keepdim:
        values, idx = values.squeeze(d), idx.squeeze(d)
    return return_type("kthvalue", values, idx)


def median(input, dim=None, keepdim=False):
    x = _t(input)
    if dim is None:
        flat = x.flatten()
        return kthvalue(flat, (flat.numel() + 1) // 2, 0).values
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
    from ._tensor import Size
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
        from ._creation import zeros
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
    a, b = _t(input), _t(other)
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
    parse_einsum(equation, len(ops))
    return apply_op("einsum", ops, {"equation": equation.replace(" ", "")})


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



def check_values(input: Tensor, kind: str, *, low=None, high=None, ignore=None,
                 error: str = "RuntimeError", message: str) -> Tensor:
    """``input``, or ``error(message.format(bad=...))`` when a value fails the check
    (kind "finite" or "range"): an op, so a compiled plan checks on every call."""
    return apply_op("check", (input,), {"kind": kind, "low": low, "high": high,
                                        "ignore": ignore, "error": error, "message": message})
