"""Index-driven ops: gather/scatter/index_select and friends."""
from __future__ import annotations

import numpy as np

from ..registry import OpDef, register


def _check_index(idx, size, op):
    if idx.size and (idx.min() < -size or idx.max() >= size):
        bad = idx.max() if idx.max() >= size else idx.min()
        raise IndexError(f"{op}: index {int(bad)} is out of bounds for dimension with size {size}")


def _gather_impl(x, index, dim):
    _check_index(index, x.shape[dim], "gather")
    for d in range(x.ndim):
        if d != dim and index.shape[d] > x.shape[d]:
            raise RuntimeError(
                f"gather: size of index {tuple(index.shape)} does not match input "
                f"{tuple(x.shape)} at dimension {d} (index may not be larger except at dim {dim})")
    xs = x[tuple(slice(0, index.shape[d]) if d != dim else slice(None) for d in range(x.ndim))]
    return np.take_along_axis(xs, index, axis=dim)


def _scatter_impl(x, index, src, dim, reduce=None):
    _check_index(index, x.shape[dim], "scatter")
    out = np.array(x, copy=True)
    src = np.broadcast_to(np.asarray(src, dtype=x.dtype), index.shape) if np.ndim(src) == 0 else \
        src[tuple(slice(0, s) for s in index.shape)]
    grids = list(np.indices(index.shape, sparse=True))
    grids[dim] = index
    key = tuple(grids)
    if reduce in ("add", "sum"):
        np.add.at(out, key, src)
    elif reduce in ("multiply", "prod"):
        np.multiply.at(out, key, src)
    elif reduce is None:
        out[key] = src
    else:
        raise RuntimeError(f"scatter: reduce argument must be 'add' or 'multiply', got {reduce!r}")
    return out


def _gather_grad(b, g, xs, out, dim):
    x, index = xs
    return b.scatter(b.zeros_like(x), index, g, dim=dim, reduce="add"), None


def _scatter_grad(b, g, xs, out, dim, reduce=None):
    x, index, src = xs
    if reduce is None:
        gx = b.scatter(g, index, 0.0, dim=dim, reduce=None)
    elif reduce in ("add", "sum"):
        gx = g
    else:
        raise NotImplementedError("scatter: gradient of reduce='multiply' is not implemented")
    gsrc = None
    if not isinstance(src, (int, float)):
        gsrc = b.gather(g, index, dim=dim)
        if tuple(src.shape) != tuple(index.shape):
            # src may be larger than index; the elements scatter never reads get zero
            pad = []
            for s, i in zip(reversed(src.shape), reversed(index.shape)):
                pad += [0, s - i]
            gsrc = b.pad(gsrc, pad=tuple(pad), mode="constant", value=0.0)
    return gx, None, gsrc


def _same(specs, attrs):
    return tuple(specs[0][0]), specs[0][1]


def _index_select_impl(x, index, dim):
    _check_index(index, x.shape[dim], "index_select")
    return np.take(x, index, axis=dim)


def _index_select_infer(specs, attrs):
    (shape, d), (ishape, _) = specs[0], specs[1]
    dim = attrs["dim"]
    if len(ishape) > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    out = list(shape)
    if out:
        out[dim] = ishape[0] if ishape else 1
    return tuple(out), d


def _index_select_grad(b, g, xs, out, dim):
    x, index = xs
    spec = tuple(("s", None, None, None) for _ in range(dim)) + (("t", 0),)
    return b.index_put(b.zeros_like(x), g, index, index=spec, accumulate=True), None


register(OpDef("gather", "indexing", _gather_impl, grad=_gather_grad, attrs=("dim",),
               infer=lambda specs, attrs: (tuple(specs[1][0]), specs[0][1]), saves=(1,),
               nondiff_inputs=(1,)))
register(OpDef("scatter", "indexing", _scatter_impl, grad=_scatter_grad, attrs=("dim", "reduce"),
               infer=_same, saves=(1,), nondiff_inputs=(1,)))
register(OpDef("index_select", "indexing", _index_select_impl, grad=_index_select_grad,
               attrs=("dim",), infer=_index_select_infer, saves=(1,), nondiff_inputs=(1,)))
