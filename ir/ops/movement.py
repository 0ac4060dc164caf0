"""Views (results share the input's memory) and data-movement ops."""
from __future__ import annotations

import numpy as np

from ..registry import OpDef, register
from ..shapes import broadcast_shapes, view_strides


def _same(specs, attrs):
    return tuple(specs[0][0]), specs[0][1]


def _expand_impl(x, shape):
    shape = tuple(shape)
    lead = len(shape) - x.ndim
    strides = [0] * lead + [0 if (x.shape[i] == 1 and shape[i + lead] != 1) else x.strides[i]
                            for i in range(x.ndim)]
    return np.lib.stride_tricks.as_strided(x, shape, strides)


def _expand_infer(specs, attrs):
    shape, d = specs[0]
    target = tuple(attrs["shape"])
    if len(target) < len(shape):
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(target)}) must be greater or equal to "
            f"the number of dimensions in the tensor ({len(shape)})")
    lead = len(target) - len(shape)
    for i, s in enumerate(shape):
        if s != 1 and target[i + lead] != s:
            raise RuntimeError(
                f"expand: the expanded size of the tensor ({target[i + lead]}) must match the "
                f"existing size ({s}) at non-singleton dimension {i}.  Target sizes: "
                f"{list(target)}.  Tensor sizes: {list(shape)}")
    return target, d


def _permute_infer(specs, attrs):
    shape, d = specs[0]
    return tuple(shape[p] for p in attrs["dims"]), d


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _reshape_impl(x, shape):
    """np.reshape, but a view gets torch's strides (computeStride) even on size-1
    dims, where NumPy picks its own; only the reported strides differ."""
    out = np.reshape(x, shape)
    # NumPy's strides can differ from torch's only on size-1 dims
    if 1 in shape and out.size > 1 and np.may_share_memory(out, x):
        el = x.itemsize
        st = view_strides(x.shape, tuple(s // el for s in x.strides), tuple(shape))
        if st is not None:
            want = tuple(s * el for s in st)
            if out.strides != want:
                out = np.lib.stride_tricks.as_strided(x, tuple(shape), want)
    return out


register(OpDef("reshape", "view", _reshape_impl,
               infer=lambda specs, attrs: (tuple(attrs["shape"]), specs[0][1]),
               grad=lambda b, g, xs, out, shape: (b.reshape(g, shape=tuple(xs[0].shape)),),
               attrs=("shape",), backward_name="ViewBackward0",
               # Tensor.view/reshape/squeeze/unsqueeze validate the shape before dispatch
               extra={"eager_infer": False}))
register(OpDef("permute", "view", lambda x, dims: np.transpose(x, dims), infer=_permute_infer,
               grad=lambda b, g, xs, out, dims: (b.permute(g, dims=_inverse(dims)),),
               attrs=("dims",), extra={"eager_infer": False}))
register(OpDef("expand", "view", _expand_impl, infer=_expand_infer,
               grad=lambda b, g, xs, out, shape: (b.sum_to(g, xs[0].shape),),
               attrs=("shape",)))
register(OpDef("clone", "movement", lambda x: np.array(x, copy=True), infer=_same,
               grad=lambda b, g, xs, out: (g,), expr="{0}"))
# x.detach() in a traced function: the same data, no gradient path back to x (the
# autodiff pass stops at it; the back end then drops it, see decompositions.py)
register(OpDef("detach", "view", lambda x: x, infer=_same,
               doc="the input itself, cut off from gradients", extra={"cuts_gradient": True}))


def _slice_norm(s, n):
    start, stop, step = s.indices(n) if isinstance(s, slice) else s
    return start, stop, step


# ---- index spec ------------------------------------------------------------
# An index is a tuple of items: ("s", start, stop, step) | ("i", n) | ("n",) |
# ("e",) | ("t", k) where k is the position of an index tensor among the op's
# extra inputs. It is plain data, so graphs with indexing serialise to JSON.

def np_index(spec, tensors):
    out = []
    for item in spec:
        kind = item[0]
        if kind == "s":
            out.append(slice(item[1], item[2], item[3]))
        elif kind == "i":
            out.append(item[1])
        elif kind == "n":
            out.append(None)
        elif kind == "e":
            out.append(Ellipsis)
        elif kind == "t":
            out.append(tensors[item[1]])
        else:
            raise ValueError(f"bad index item {item!r}")
    return tuple(out)


def spec_has_tensors(spec):
    return any(item[0] == "t" for item in spec)


def _getitem_impl(x, *idx, index):
    key = np_index(index, idx)
    out = x[key]
    if not isinstance(out, np.ndarray):
        # all-integer indexing gives a NumPy scalar (a copy); torch gives a 0-d view
        out = x[key + (Ellipsis,)]
    return out


def _symbolic_index_shape(shape, index):
    """The result shape of a basic index (slices, ints, None, ...) in plain integer
    arithmetic, so traced symbolic sizes (duck-typed SymInts) stay symbolic."""
    shape = list(shape)
    consumed = sum(1 for it in index if it[0] in ("s", "i"))
    out, dim = [], 0
    for it in index:
        kind = it[0]
        if kind == "n":
            out.append(1)
        elif kind == "e":
            k = len(shape) - consumed
            out.extend(shape[dim:dim + k])
            dim += k
        elif kind == "i":
            dim += 1
        else:
            n = shape[dim]
            start, stop, step = it[1], it[2], 1 if it[3] is None else it[3]
            start = 0 if start is None else start + n if start < 0 else start
            stop = n if stop is None else stop + n if stop < 0 else stop
            start = 0 if start < 0 else n if start > n else start
            stop = 0 if stop < 0 else n if stop > n else stop
            out.append((stop - start + step - 1) // step if stop > start else 0)
            dim += 1
    return tuple(out) + tuple(shape[dim:])


def _getitem_infer(specs, attrs):
    shape, d = specs[0]
    if len(specs) == 1 and any(hasattr(v, "expr") for v in shape + tuple(
            x for it in attrs["index"] for x in it[1:])):
        return _symbolic_index_shape(shape, attrs["index"]), d
    dummies = []
    for s in specs[1:]:
        ishape, idt = s
        if idt.kind == "b":
            raise RuntimeError("getitem: the result shape of boolean-mask indexing depends on data")
        dummies.append(np.zeros(ishape, np.int64))
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), shape, (0,) * len(shape))
    return probe[np_index(attrs["index"], dummies)].shape, d


def _getitem_grad(b, g, xs, out, index):
    x = xs[0]
    zeros = b.zeros_like(x)
    return (b.index_put(zeros, g, *xs[1:], index=index, accumulate=True),) + (None,) * (len(xs) - 1)


def _index_put_impl(x, values, *idx, index, accumulate):
    out = np.array(x, copy=True)
    key = np_index(index, idx)
    values = np.asarray(values, dtype=x.dtype)
    if accumulate:
        if spec_has_tensors(index):
            np.add.at(out, key, values)
        else:
            out[key] += values
    else:
        out[key] = values
    return out


def _index_put_grad(b, g, xs, out, index, accumulate):
    v = xs[1]
    idx = xs[2:]
    gx = g if accumulate else b.index_put(g, b.zeros_like(v) if v.shape else 0.0, *idx,
                                          index=index, accumulate=False)
    gv = b.getitem(g, *idx, index=index)
    return (gx, b.sum_to(gv, v.shape)) + (None,) * len(idx)


register(OpDef("getitem", "view", _getitem_impl, infer=_getitem_infer, grad=_getitem_grad,
               attrs=("index",), backward_name="IndexBackward0", saves=tuple(range(1, 16)),
               # eager indices are validated by Tensor.__getitem__; boolean masks
               # have a data-dependent shape the static rule cannot give
               extra={"eager_infer": False}))
register(OpDef("index_put", "indexing", _index_put_impl, infer=_same, grad=_index_put_grad,
               attrs=("index", "accumulate"), backward_name="IndexPutBackward0",
               saves=tuple(range(2, 16))))


# ---- joining, copies ---------------------------------------------------------
def _cat_infer(specs, attrs):
    dim = attrs["dim"]
    from .. import dtypes as dt
    shapes = [s[0] for s in specs]
    ref = shapes[0]
    for s in shapes[1:]:
        if len(s) != len(ref) or any(a != c for i, (a, c) in enumerate(zip(s, ref)) if i != dim):
            raise RuntimeError(
                f"cat: sizes of tensors must match except in dimension {dim}. Got shapes "
                + ", ".join(str(tuple(x)) for x in shapes))
    d = specs[0][1]
    for s in specs[1:]:
        d = dt.promote_types(d, s[1])
    out = list(ref)
    out[dim] = sum(s[dim] for s in shapes)
    return tuple(out), d


def _cat_grad(b, g, xs, out, dim):
    grads, start = [], 0
    for x in xs:
        n = x.shape[dim]
        spec = tuple(("s", None, None, None) for _ in range(dim)) + (("s", start, start + n, 1),)
        grads.append(b.getitem(g, index=spec))
        start += n
    return tuple(grads)


def _cat_impl(*xs, dim, out=None):
    from .. import dtypes as dt
    d = xs[0].dtype
    for x in xs[1:]:
        d = dt.promote_types(dt.from_numpy(d), dt.from_numpy(x.dtype)).np
    if out is not None and out.dtype == d:
        return np.concatenate(xs, axis=dim, out=out)
    res = np.concatenate(xs, axis=dim, dtype=d)
    if out is not None:
        np.copyto(out, res, casting="unsafe")
        return out
    return res


_cat_impl.writes_out = True  # a plan's library step concatenates into its planned buffer


register(OpDef("cat", "movement", _cat_impl, infer=_cat_infer, grad=_cat_grad, attrs=("dim",)))
register(OpDef("flip", "movement", lambda x, dims: np.flip(x, dims).copy(), infer=_same,
               grad=lambda b, g, xs, out, dims: (b.flip(g, dims=dims),), attrs=("dims",)))
register(OpDef("roll", "movement", lambda x, shifts, dims: np.roll(x, shifts, dims), infer=_same,
               grad=lambda b, g, xs, out, shifts, dims: (
                   b.roll(g, shifts=tuple(-s for s in shifts), dims=dims),),
               attrs=("shifts", "dims")))


def _repeat_infer(specs, attrs):
    shape, d = specs[0]
    reps = tuple(attrs["repeats"])
    if len(reps) < len(shape):
        raise RuntimeError("repeat: number of dimensions of repeat dims can not be smaller than "
                           "number of dimensions of tensor")
    shape = (1,) * (len(reps) - len(shape)) + tuple(shape)
    return tuple(s * r for s, r in zip(shape, reps)), d


def _repeat_grad(b, g, xs, out, repeats):
    x = xs[0]
    shape = (1,) * (len(repeats) - len(x.shape)) + tuple(x.shape)
    split = []
    for r, s in zip(repeats, shape):
        split += [r, s]
    summed = b.sum(b.reshape(g, shape=tuple(split)), dims=tuple(range(0, 2 * len(shape), 2)),
                   keepdim=False)
    return (b.reshape(summed, shape=tuple(x.shape)),)


register(OpDef("repeat", "movement", lambda x, repeats: np.tile(x, repeats), infer=_repeat_infer,
               grad=_repeat_grad, attrs=("repeats",)))


def _pad_infer(specs, attrs):
    shape, d = specs[0]
    pad = attrs["pad"]
    out = list(shape)
    for i in range(len(pad) // 2):
        dim = len(shape) - 1 - i
        out[dim] = shape[dim] + pad[2 * i] + pad[2 * i + 1]
        if out[dim] < 0:
            raise RuntimeError(f"pad: padding {list(pad)} makes dimension {dim} negative")
    return tuple(out), d


def _pad_widths(ndim, pad):
    widths = [(0, 0)] * ndim
    for i in range(len(pad) // 2):
        widths[ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return widths


def _pad_impl(x, pad, mode="constant", value=0.0):
    widths = _pad_widths(x.ndim, pad)
    crop = tuple(slice(max(-lo, 0), x.shape[i] - max(-hi, 0)) for i, (lo, hi) in enumerate(widths))
    x = x[crop]
    pos = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}[mode]
    if np_mode == "constant":
        return np.pad(x, pos, mode="constant", constant_values=x.dtype.type(value))
    return np.pad(x, pos, mode=np_mode)


def _pad_grad(b, g, xs, out, pad, mode="constant", value=0.0):
    if mode != "constant":
        return (b.pad_backward(g, shape=tuple(xs[0].shape), pad=pad, mode=mode),)
    spec = []
    x = xs[0]
    for dim, (lo, _hi) in enumerate(_pad_widths(len(x.shape), pad)):
        spec.append(("s", lo, lo + x.shape[dim], 1))
    neg = [(lo, hi) for lo, hi in _pad_widths(len(x.shape), pad) if lo < 0 or hi < 0]
    if neg:
        # negative padding crops: pad the gradient back with zeros instead
        return (b.pad(g, pad=tuple(-p for p in pad), mode="constant", value=0.0),)
    return (b.getitem(g, index=tuple(spec)),)


def _pad_backward_impl(g, shape, pad, mode):
    """Adjoint of a non-constant pad: scatter-add each padded cell to its source."""
    ndim = len(shape)
    idx = [np.arange(s) for s in shape]
    src = []
    for dim, (lo, hi) in enumerate(_pad_widths(ndim, pad)):
        n = shape[dim]
        pos = np.arange(-lo, n + hi)
        if mode == "reflect":
            period = 2 * (n - 1) if n > 1 else 1
            pos = np.abs(pos) % period
            pos = np.where(pos >= n, period - pos, pos)
        elif mode == "replicate":
            pos = np.clip(pos, 0, n - 1)
        elif mode == "circular":
            pos = pos % n
        src.append(pos)
    del idx
    out = np.zeros(shape, g.dtype)
    np.add.at(out, np.ix_(*src), g)
    return out


register(OpDef("pad", "movement", _pad_impl, infer=_pad_infer, grad=_pad_grad,
               attrs=("pad", "mode", "value"), backward_name="ConstantPadNdBackward0"))
register(OpDef("pad_backward", "movement", _pad_backward_impl,
               infer=lambda specs, attrs: (tuple(attrs["shape"]), specs[0][1]),
               attrs=("shape", "pad", "mode"),
               # linear, the adjoint of pad: its own adjoint is pad again
               grad=lambda b, g, xs, out, shape, pad, mode: (
                   b.pad(g, pad=pad, mode=mode, value=0.0),)))
def _tri_infer(name: str):
    def infer(specs, attrs):
        if len(specs[0][0]) < 2:  # np.tril would turn a vector into a matrix
            raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions")
        return _same(specs, attrs)
    return infer


register(OpDef("tril", "movement", lambda x, diagonal: np.tril(x, diagonal),
               infer=_tri_infer("tril"),
               grad=lambda b, g, xs, out, diagonal: (b.tril(g, diagonal=diagonal),),
               attrs=("diagonal",)))
register(OpDef("triu", "movement", lambda x, diagonal: np.triu(x, diagonal),
               infer=_tri_infer("triu"),
               grad=lambda b, g, xs, out, diagonal: (b.triu(g, diagonal=diagonal),),
               attrs=("diagonal",)))


# ---- creation from a template ------------------------------------------------
def _like_infer(specs, attrs):
    d = attrs.get("dtype") or specs[0][1]
    return tuple(specs[0][0]), d


def _full_like(x, value, dtype=None):
    return np.full(x.shape, value, dtype=(dtype.np if dtype is not None else x.dtype))


register(OpDef("zeros_like", "creation",
               lambda x, dtype=None: np.zeros(x.shape, dtype.np if dtype else x.dtype),
               infer=_like_infer, attrs=("dtype",)))
register(OpDef("ones_like", "creation",
               lambda x, dtype=None: np.ones(x.shape, dtype.np if dtype else x.dtype),
               infer=_like_infer, attrs=("dtype",)))
register(OpDef("full_like", "creation", _full_like, infer=_like_infer, attrs=("value", "dtype")))

__all__ = ["np_index", "spec_has_tensors", "broadcast_shapes"]
