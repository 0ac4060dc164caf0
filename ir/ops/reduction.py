"""Reductions and scans. Attributes: ``dims`` (normalised tuple), ``keepdim``."""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register
from ..shapes import numel


def reduced_shape(shape, dims, keepdim):
    if keepdim:
        return tuple(1 if i in dims else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in dims)


def _infer(kind, name=None):
    def infer(specs, attrs):
        shape, d = specs[0]
        if kind == "extremum":  # no identity: torch refuses an empty reduced dim
            for dim in (range(len(shape)) if attrs["dims"] is None else attrs["dims"]):
                if isinstance(shape[dim], int) and shape[dim] == 0:
                    raise IndexError(f"{name}(): Expected reduction dim {dim} to have "
                                     "non-zero size.")
        out_shape = reduced_shape(shape, attrs["dims"], attrs["keepdim"])
        if kind == "sum" and d.kind != "f":
            return out_shape, dt.int64
        if kind == "float" and d.kind != "f":
            raise RuntimeError(
                f"{attrs.get('_op', 'reduction')}: could not infer output dtype. Input dtype must "
                f"be either a floating point or complex dtype. Got: {d.name.capitalize()}")
        if kind == "index":
            return out_shape, dt.int64
        if kind == "bool":
            return out_shape, dt.bool_
        return out_shape, d
    return infer


def _keep(b, g, x, dims, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input."""
    if keepdim:
        return g
    return b.reshape(g, shape=reduced_shape(x.shape, dims, True))


def _count(shape, dims):
    return numel(shape[d] for d in dims)


def _sum_impl(x, dims, keepdim):
    out_dtype = np.int64 if x.dtype.kind in "biu" else x.dtype
    return np.asarray(np.sum(x, axis=dims, keepdims=keepdim, dtype=out_dtype))


def _sum_grad(b, g, xs, out, dims, keepdim):
    return (b.expand(_keep(b, g, xs[0], dims, keepdim), shape=tuple(xs[0].shape)),)


def _mean_grad(b, g, xs, out, dims, keepdim):
    x = xs[0]
    n = _count(x.shape, dims)
    return (b.expand(_keep(b, b.div(g, float(n)), x, dims, keepdim), shape=tuple(x.shape)),)


def _extreme_grad(b, g, xs, out, dims, keepdim):
    # ties share the gradient evenly, as torch's amax/amin (and max() without dim)
    x = xs[0]
    o = _keep(b, out, x, dims, keepdim)
    mask = b.cast(b.eq(x, o), x.dtype)
    count = b.sum(mask, dims=dims, keepdim=True)
    return (b.div(b.mul(_keep(b, g, x, dims, keepdim), mask), count),)


def _var_impl(x, dims, keepdim, correction=1):
    n = _count(x.shape, dims)
    if n - correction <= 0:
        return np.full(reduced_shape(x.shape, dims, keepdim), np.nan, x.dtype)
    v = np.var(x, axis=dims, keepdims=keepdim, ddof=0) * (n / (n - correction))
    return np.asarray(v).astype(x.dtype, copy=False)


def _var_grad(b, g, xs, out, dims, keepdim, correction=1):
    x = xs[0]
    n = _count(x.shape, dims)
    mean = b.mean(x, dims=dims, keepdim=True)
    scale = 2.0 / max(n - correction, 0) if n - correction > 0 else float("nan")
    return (b.mul(b.mul(_keep(b, g, x, dims, keepdim), b.sub(x, mean)), scale),)


def _std_grad(b, g, xs, out, dims, keepdim, correction=1):
    x = xs[0]
    n = _count(x.shape, dims)
    mean = b.mean(x, dims=dims, keepdim=True)
    denom = b.mul(_keep(b, out, x, dims, keepdim), float(max(n - correction, 0)))
    return (b.div(b.mul(_keep(b, g, x, dims, keepdim), b.sub(x, mean)), denom),)


def _logsumexp_impl(x, dims, keepdim):
    if x.size == 0:
        return np.asarray(np.log(np.sum(np.exp(x), axis=dims, keepdims=keepdim)))
    m = np.max(x, axis=dims, keepdims=True)
    m = np.where(np.isfinite(m), m, np.zeros((), x.dtype))
    with np.errstate(divide="ignore"):
        s = np.log(np.sum(np.exp(x - m), axis=dims, keepdims=True)) + m
    if not keepdim:
        s = np.squeeze(s, axis=dims)
    return np.asarray(s).astype(x.dtype, copy=False)


# Kept beside the decomposition (decompositions.py): g exp(x - out) from the saved (reduced)
# output is one pass; the gradient derived from the primitives recomputes the max, exp and
# sums, and sends g through the max's finite guard, where it cancels only up to rounding.
def _logsumexp_grad(b, g, xs, out, dims, keepdim):
    x = xs[0]
    return (b.mul(_keep(b, g, x, dims, keepdim), b.exp(b.sub(x, _keep(b, out, x, dims, keepdim)))),)


def _prod_impl(x, dims, keepdim):
    out_dtype = np.int64 if x.dtype.kind in "biu" else x.dtype
    return np.asarray(np.prod(x, axis=dims, keepdims=keepdim, dtype=out_dtype))


def _prod_others_impl(x, dims):
    """Product of all other elements in each reduced group (exact with zeros)."""
    keep = [d for d in range(x.ndim) if d not in dims]
    perm = keep + list(dims)
    xp = np.transpose(x, perm)
    lead = xp.shape[:len(keep)]
    flat = xp.reshape(lead + (-1,))
    ones = np.ones(lead + (1,), x.dtype)
    left = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    right = np.flip(np.cumprod(np.flip(np.concatenate([flat[..., 1:], ones], axis=-1), -1),
                               axis=-1), -1)
    res = (left * right).reshape(xp.shape)
    return np.ascontiguousarray(np.transpose(res, np.argsort(perm)))


def _prod_grad(b, g, xs, out, dims, keepdim):
    x = xs[0]
    return (b.mul(_keep(b, g, x, dims, keepdim), b.prod_others(x, dims=dims)),)


def _red(name, impl, kind, grad=None, saves=(), extra_attrs=(), **kw):
    register(OpDef(name, "reduction", impl, infer=_infer(kind, name), grad=grad, saves=saves,
                   attrs=("dims", "keepdim") + tuple(extra_attrs), **kw))


_red("sum", _sum_impl, "sum", _sum_grad)
def _mean_impl(x, dims, keepdim):
    if x.size == 0:
        # the mean of nothing is nan, without NumPy's "Mean of empty slice" warning (torch)
        with np.errstate(invalid="ignore"):
            s = np.sum(x, axis=dims, keepdims=keepdim)
            return np.asarray(s / x.dtype.type(_count(x.shape, dims))).astype(x.dtype)
    return np.asarray(np.mean(x, axis=dims, keepdims=keepdim))


_red("mean", _mean_impl, "float", _mean_grad)
_red("prod", _prod_impl, "sum", _prod_grad, saves=(0,))
_red("amax", lambda x, dims, keepdim: np.asarray(np.amax(x, axis=dims, keepdims=keepdim)),
     "extremum", _extreme_grad, saves=(0, -1))
_red("amin", lambda x, dims, keepdim: np.asarray(np.amin(x, axis=dims, keepdims=keepdim)),
     "extremum", _extreme_grad, saves=(0, -1))
_red("var", _var_impl, "float", _var_grad, saves=(0,), extra_attrs=("correction",))
_red("std", lambda x, dims, keepdim, correction=1: np.sqrt(_var_impl(x, dims, keepdim, correction)),
     "float", _std_grad, saves=(0, -1), extra_attrs=("correction",))
_red("logsumexp", _logsumexp_impl, "float", _logsumexp_grad, saves=(0, -1))
_red("any", lambda x, dims, keepdim: np.asarray(np.any(x, axis=dims, keepdims=keepdim)), "bool")
_red("all", lambda x, dims, keepdim: np.asarray(np.all(x, axis=dims, keepdims=keepdim)), "bool")


def _sum_to(x, shape):
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                      if s == 1 and x.shape[i + lead] != 1)
    out = np.sum(x, axis=axes, keepdims=True, dtype=x.dtype) if axes else x
    return np.asarray(out).reshape(shape)


register(OpDef("sum_to_size", "reduction", _sum_to, attrs=("shape",),
               infer=lambda specs, attrs: (tuple(attrs["shape"]), specs[0][1]),
               grad=lambda b, g, xs, out, shape: (b.expand(g, shape=tuple(xs[0].shape)),),
               backward_name="SumBackward1", doc="undo broadcasting: sum down to shape"))


def _index_reduce(fn):
    def impl(x, dim, keepdim):
        if x.size == 0:
            raise IndexError("argmax/argmin: expected reduction dim to have non-zero size")
        if dim is None:
            r = fn(x.reshape(-1))
            return np.asarray(r, dtype=np.int64).reshape((1,) * x.ndim if keepdim else ())
        return np.asarray(fn(x, axis=dim, keepdims=keepdim), dtype=np.int64)
    return impl


def _index_infer(specs, attrs):
    shape, _ = specs[0]
    dim = attrs["dim"]
    if dim is None:
        return ((1,) * len(shape) if attrs["keepdim"] else ()), dt.int64
    return reduced_shape(shape, (dim,), attrs["keepdim"]), dt.int64


register(OpDef("argmax", "reduction", _index_reduce(np.argmax), infer=_index_infer,
               attrs=("dim", "keepdim")))
register(OpDef("argmin", "reduction", _index_reduce(np.argmin), infer=_index_infer,
               attrs=("dim", "keepdim")))
def _prod_no_double_backward(b, g, xs, out, **attrs):
    raise NotImplementedError("prod: second derivatives (double backward) are not supported")


register(OpDef("prod_others", "other", _prod_others_impl, attrs=("dims",),
               infer=lambda specs, attrs: (tuple(specs[0][0]), specs[0][1]),
               # prod's gradient: without a rule, double backward treated it as a constant
               grad=_prod_no_double_backward))


# ---- scans ---------------------------------------------------------------
def _cumsum_impl(x, dim):
    out_dtype = np.int64 if x.dtype.kind in "biu" else x.dtype
    return np.cumsum(x, axis=dim, dtype=out_dtype)


def _cumsum_grad(b, g, xs, out, dim):
    return (b.flip(b.cumsum(b.flip(g, dims=(dim,)), dim=dim), dims=(dim,)),)


def _scan_infer(specs, attrs):
    shape, d = specs[0]
    return tuple(shape), (dt.int64 if d.kind != "f" else d)


register(OpDef("cumsum", "scan", _cumsum_impl, infer=_scan_infer, grad=_cumsum_grad,
               attrs=("dim",)))
def _cumprod_backward_impl(g, x, out, dim):
    """Exact gradient of cumprod, zeros included.

    Without zeros: reverse_cumsum(g * out) / x. Past a slice's first zero z only
    position z gets gradient: out[z-1] * sum_{j>=z} g[j] prod_{z<i<=j} x[i].
    """
    gm = np.moveaxis(g, dim, -1)
    xm = np.moveaxis(x, dim, -1)
    om = np.moveaxis(out, dim, -1)
    shape = xm.shape
    n = shape[-1]
    g2, x2, o2 = (a.reshape(-1, n) for a in (gm, xm, om))
    rev = np.flip(np.cumsum(np.flip(g2 * o2, -1), -1), -1)
    zero = x2 == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        res = np.where(zero, 0, rev / np.where(zero, 1, x2)).astype(x.dtype)
    for r in np.nonzero(zero.any(-1))[0]:
        z = int(np.argmax(zero[r]))
        before = o2[r, z - 1] if z > 0 else 1
        q = np.cumprod(np.concatenate([[1], x2[r, z + 1:]]))
        res[r, z] = before * np.sum(g2[r, z:] * q)
        res[r, z + 1:] = 0
    return np.ascontiguousarray(np.moveaxis(res.reshape(shape), -1, dim))


def _cumprod_grad(b, g, xs, out, dim):
    return (b.cumprod_backward(g, xs[0], out, dim=dim),)


def _no_double_backward(b, g, xs, out, **attrs):
    raise NotImplementedError("cumprod: second derivatives (double backward) are not supported")


register(OpDef("cumprod", "scan", lambda x, dim: np.cumprod(
    x, axis=dim, dtype=np.int64 if x.dtype.kind in "biu" else x.dtype), infer=_scan_infer,
    grad=_cumprod_grad, saves=(0, -1), attrs=("dim",)))
register(OpDef("cumprod_backward", "other", _cumprod_backward_impl, attrs=("dim",),
               infer=lambda specs, attrs: (tuple(specs[1][0]), specs[1][1]),
               grad=_no_double_backward))


# ---- vector norm ---------------------------------------------------------------
def _vector_norm_impl(x, ord, dims, keepdim):  # noqa: A002
    a = np.abs(x)
    if ord == 2:
        r = np.sqrt(np.sum(x * x, axis=dims, keepdims=keepdim))
    elif ord == 1:
        r = np.sum(a, axis=dims, keepdims=keepdim)
    else:
        r = np.power(np.sum(np.power(a, ord), axis=dims, keepdims=keepdim), 1.0 / ord)
    return np.asarray(r).astype(x.dtype, copy=False)


def _vector_norm_grad(b, g, xs, out, ord, dims, keepdim):  # noqa: A002
    """d||x||_p = sign(x)|x|^(p-1) / ||x||^(p-1); 0 where the norm is 0, like torch."""
    x = xs[0]
    gk = _keep(b, g, x, dims, keepdim)
    if ord == 1:
        return (b.mul(gk, b.sign(x)),)
    nk = _keep(b, out, x, dims, keepdim)
    zero = b.eq(nk, 0.0)
    safe = b.where(zero, 1.0, nk)
    if ord == 2:
        scaled = b.div(x, safe)
    else:
        num = b.mul(b.sign(x), b.pow(b.abs(x), float(ord) - 1.0))
        scaled = b.div(num, b.pow(safe, float(ord) - 1.0))
    return (b.where(zero, 0.0, b.mul(gk, scaled)),)


register(OpDef("vector_norm", "reduction", _vector_norm_impl, infer=_infer("float"),
               grad=_vector_norm_grad, saves=(0, -1), attrs=("ord", "dims", "keepdim"),
               backward_name="LinalgVectorNormBackward0",
               doc="p-norm over dims for finite p other than 0 (inf norms use amax/amin)"))
