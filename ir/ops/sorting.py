"""Ops that order values: sort indices, binary search, running arg-extremes.

They return int64 indices (no gradient); values follow by ``gather``, whose gradient rule
routes gradients back, so sort/topk/kthvalue/median/cummax trace without a graph break.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register


def _argsort_impl(x, dim, descending=False, stable=False):
    if x.ndim == 0:
        return np.zeros((), np.int64)
    if not descending:
        idx = np.argsort(x, axis=dim, kind="stable")  # NaN last, like torch
    elif x.dtype.kind == "f":
        # descending and stable; NaN counts as the largest value, so it comes first
        nan = np.isnan(x)
        idx = np.lexsort((np.negative(np.where(nan, 0, x)), ~nan), axis=dim)
    elif x.dtype.kind == "b":
        idx = np.argsort(~x, axis=dim, kind="stable")
    else:
        # ~x reverses the order of every integer type without overflow
        idx = np.argsort(np.invert(x), axis=dim, kind="stable")
    return idx.astype(np.int64, copy=False)


def _int64_same_shape(specs, attrs):
    return tuple(specs[0][0]), dt.int64


register(OpDef("argsort", "other", _argsort_impl, infer=_int64_same_shape,
               attrs=("dim", "descending", "stable"),
               doc="indices that sort along dim (stable; NaN is the largest value)"))


def _searchsorted_impl(seq, values, right=False):
    side = "right" if right else "left"
    if seq.ndim <= 1:
        return np.searchsorted(seq, values, side=side).astype(np.int64)
    if seq.shape[:-1] != values.shape[:-1]:
        raise RuntimeError("torch.searchsorted(): boundaries tensor should be 1 dimension or the "
                           "first N-1 dimensions of boundaries tensor and input value tensor must "
                           f"match, but we got boundaries tensor {list(seq.shape)} and input "
                           f"value tensor {list(values.shape)}")
    s2 = seq.reshape(-1, seq.shape[-1])
    v2 = values.reshape(-1, values.shape[-1])
    out = np.empty(v2.shape, np.int64)
    for r in range(s2.shape[0]):
        out[r] = np.searchsorted(s2[r], v2[r], side=side)
    return out.reshape(values.shape)


register(OpDef("searchsorted", "other", _searchsorted_impl,
               infer=lambda specs, attrs: (tuple(specs[1][0]), dt.int64), attrs=("right",),
               doc="insertion points of values in the innermost dim of a sorted sequence"))


def _cumarg_impl(x, dim, largest=True):
    """Index of the running maximum (minimum) along dim; on ties the later index, and a NaN
    sticks once seen (torch.cummax/cummin)."""
    if x.ndim == 0:
        return np.zeros((), np.int64)
    xm = np.moveaxis(x, dim, -1)
    out = np.empty(xm.shape, np.int64)
    if xm.shape[-1] == 0:
        return np.moveaxis(out, -1, dim)
    best = xm[..., 0].copy()
    bi = np.zeros(best.shape, np.int64)
    out[..., 0] = 0
    isf = x.dtype.kind == "f"
    for i in range(1, xm.shape[-1]):
        v = xm[..., i]
        take = (v >= best) if largest else (v <= best)
        if isf:
            take = (take | np.isnan(v)) & ~np.isnan(best)
        best = np.where(take, v, best)
        bi = np.where(take, i, bi)
        out[..., i] = bi
    return np.moveaxis(out, -1, dim)


register(OpDef("cumarg", "other", _cumarg_impl, infer=_int64_same_shape,
               attrs=("dim", "largest"),
               doc="indices of the running max/min (cummax/cummin's indices)"))
