"""Tensor methods that reshape, view, index and gather: view/reshape/permute/expand,
``__getitem__`` and its index normalisation, split/chunk, flip/roll, gather/scatter,
masked_fill. Each runs registered ops through ``apply_op``.

Layer: above the dispatcher; the in-place writes (``_tensor_inplace``) build on it.
"""
from __future__ import annotations

import math

import numpy as np

from ir import dtypes as dt
from ir.shapes import infer_size, normalize_dim, normalize_dims, view_strides

from ._dispatch import _graph_break, apply_op
from ._symshape import SymInt, hints
from ._tensor_base import Tensor, _sizes, tensor_methods


def _normalize_index(shape, idx):
    """Python index -> (spec, index tensors), with torch's bounds errors."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    spec, tensors = [], []
    consumed = 0
    for it in idx:
        if it is None or it is Ellipsis:
            continue
        if isinstance(it, Tensor) and it.dtype is dt.bool_:
            consumed += it.dim()
        else:
            consumed += 1
    if consumed > len(shape):
        raise IndexError(f"too many indices for tensor of dimension {len(shape)}")
    dim = 0
    for it in idx:
        if it is None:
            spec.append(("n",))
        elif it is Ellipsis:
            spec.append(("e",))
            dim += len(shape) - consumed
        elif isinstance(it, bool):
            tensors.append(Tensor._make(np.asarray(it)))
            spec.append(("t", len(tensors) - 1))
        elif isinstance(it, (int, np.integer, SymInt)) and not isinstance(it, bool):
            n = shape[dim]
            it = it if isinstance(it, SymInt) else int(it)
            if it < -n or it >= n:
                raise IndexError(f"index {it} is out of bounds for dimension {dim} with size {n}")
            spec.append(("i", it))
            dim += 1
        elif isinstance(it, slice):
            if it.step is not None and it.step <= 0:
                raise ValueError("step must be greater than zero")
            vals = []
            for v in (it.start, it.stop, it.step):
                if isinstance(v, Tensor):
                    v = int(v.item())
                vals.append(None if v is None else v if isinstance(v, SymInt) else int(v))
            spec.append(("s", *vals))
            dim += 1
        else:
            t = it if isinstance(it, Tensor) else _index_tensor(it)
            if t.dtype.is_floating_point:
                raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
            if t.dtype is dt.bool_:
                want = tuple(shape[dim:dim + t.dim()])
                if tuple(t.shape) != want:
                    raise IndexError(
                        f"The shape of the mask {list(t.shape)} at index {dim} does not match the "
                        f"shape of the indexed tensor {list(shape)}")
                dim += t.dim()
            else:
                n = shape[dim]
                if t.numel() and (int(t._data.max()) >= n or int(t._data.min()) < -n):
                    bad = int(t._data.max()) if int(t._data.max()) >= n else int(t._data.min())
                    raise IndexError(
                        f"index {bad} is out of bounds for dimension {dim} with size {n}")
                dim += 1
            tensors.append(t)
            spec.append(("t", len(tensors) - 1))
    return tuple(spec), tuple(tensors)


def _index_tensor(it):
    arr = np.asarray(it)
    if arr.dtype == np.bool_:
        return Tensor._make(arr)
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iub":
        raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
    return Tensor._make(arr.astype(np.int64, copy=False))


@tensor_methods
class _ShapeMethods:
    """Shape, view and indexing methods of Tensor."""

    def contiguous(self, memory_format=None):
        if self.is_contiguous():
            return self
        out = apply_op("clone", (self,), grad_name="CloneBackward0")
        # clone keeps a dense tensor's strides (torch's preserve_format); here we need C order
        d = out._data
        out._data = np.ascontiguousarray(d) if d.__class__ is np.ndarray else \
            d if d.flags.c_contiguous else d.copy()  # CUDA storage stays on the device
        return out

    def __iter__(self):
        if self.dim() == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    # ---- shape ops (views) ------------------------------------------------------
    def view(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], dt.DType):
            raise NotImplementedError("view(dtype) is not supported")
        shape = infer_size(_sizes(shape), self.numel())
        if view_strides(self._data.shape, self.stride(), hints(shape)) is None:
            raise RuntimeError(
                "view size is not compatible with input tensor's size and stride (at least one "
                "dimension spans across two contiguous subspaces). Use .reshape(...) instead. "
                f"[input shape {tuple(self.shape)}, stride {self.stride()}, view shape {shape}]")
        return apply_op("reshape", (self,), {"shape": shape}, "ViewBackward0")

    def view_as(self, other):
        return self.view(other.shape)

    def reshape(self, *shape):
        shape = infer_size(_sizes(shape), self.numel())
        # (symbolic sizes, when tracing dynamic dimensions: checked at their traced values)
        if hints(shape) == tuple(self._data.shape):
            return apply_op("reshape", (self,), {"shape": shape}, "ViewBackward0")
        name = "ViewBackward0" if view_strides(self._data.shape, self.stride(), hints(shape)) \
            is not None else "UnsafeViewBackward0"
        return apply_op("reshape", (self,), {"shape": shape}, name)

    def reshape_as(self, other):
        return self.reshape(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.dim() == 0:
            return self.reshape(1)
        s = normalize_dim(start_dim, self.dim())
        e = normalize_dim(end_dim, self.dim())
        if s > e:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        shp = tuple(self.shape)
        new = shp[:s] + (math.prod(shp[s:e + 1]),) + shp[e + 1:]
        return self.reshape(new)

    def unflatten(self, dim, sizes):
        d = normalize_dim(dim, self.dim())
        shp = tuple(self.shape)
        sizes = infer_size(sizes, shp[d], "unflatten")
        return self.view(shp[:d] + tuple(sizes) + shp[d + 1:])

    def squeeze(self, dim=None):
        shp = tuple(self.shape)
        if dim is None:
            keep = [i for i, s in enumerate(shp) if s != 1]
        else:
            dims = normalize_dims(dim, self.dim()) if self.dim() else ()
            keep = [i for i, s in enumerate(shp) if not (i in dims and s == 1)]
        st = self.stride()
        out = apply_op("reshape", (self,), {"shape": tuple(shp[i] for i in keep)},
                       "SqueezeBackward0")
        return _restride(out, tuple(st[i] for i in keep))

    def unsqueeze(self, dim):
        d = normalize_dim(dim, self.dim() + 1)
        shp = tuple(self.shape)
        st = self.stride()
        out = apply_op("reshape", (self,), {"shape": shp[:d] + (1,) + shp[d:]},
                       "UnsqueezeBackward0")
        # torch: the new dim's stride is size*stride of the dim it lands before (strides
        # are this array's, so the traced size even when the dimension is dynamic)
        n = self._data.shape[d] if d < len(shp) else 1
        return _restride(out, st[:d] + ((st[d] * n) if d < len(shp) else 1,) + st[d:])

    def permute(self, *dims):
        dims = _sizes(dims)
        if len(dims) != self.dim():
            raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input "
                               f"does not match the length of the desired ordering of dimensions "
                               f"i.e. input.dim() = {self.dim()} is not equal to len(dims) = "
                               f"{len(dims)}")
        dims = tuple(normalize_dim(d, self.dim()) for d in dims)
        if len(set(dims)) != len(dims):
            raise RuntimeError("permute(): duplicate dims are not allowed.")
        return apply_op("permute", (self,), {"dims": dims})

    def transpose(self, dim0, dim1):
        n = self.dim()
        if n == 0:
            return self.reshape(())
        a, b = normalize_dim(dim0, n), normalize_dim(dim1, n)
        perm = list(range(n))
        perm[a], perm[b] = perm[b], perm[a]
        return apply_op("permute", (self,), {"dims": tuple(perm)}, "TransposeBackward0")

    swapaxes = transpose
    swapdims = transpose

    def t(self):
        if self.dim() > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                               f"{self.dim()}D")
        return self.transpose(0, 1) if self.dim() == 2 else self.reshape(tuple(self.shape))

    def expand(self, *sizes):
        sizes = _sizes(sizes)
        lead = len(sizes) - self.dim()
        if lead < 0:
            raise RuntimeError(
                f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
                f"the number of dimensions in the tensor ({self.dim()})")
        shp = tuple(self.shape)
        target = tuple(shp[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(sizes))
        return apply_op("expand", (self,), {"shape": target})

    def expand_as(self, other):
        return self.expand(tuple(other.shape))

    def __getitem__(self, idx):
        spec, tensors = _normalize_index(tuple(self.shape), idx)
        name = "IndexBackward0" if tensors else (
            "SelectBackward0" if len(spec) == 1 and spec[0][0] == "i" else "SliceBackward0")
        return apply_op("getitem", (self,) + tensors, {"index": spec}, name)

    def narrow(self, dim, start, length):
        d = normalize_dim(dim, self.dim())
        if isinstance(start, Tensor):
            start = int(start.item())
        if start < 0:
            start += self.shape[d]
        if start < 0 or start + length > self.shape[d]:
            raise IndexError(f"narrow(): start ({start}) + length ({length}) exceeds dimension "
                             "size "
                             f"({self.shape[d]}).")
        return self[(slice(None),) * d + (slice(start, start + length),)]

    def select(self, dim, index):
        d = normalize_dim(dim, self.dim())
        return self[(slice(None),) * d + (index,)]

    def unbind(self, dim=0):
        d = normalize_dim(dim, self.dim())
        return tuple(self.select(d, i) for i in range(self.shape[d]))

    def split(self, split_size_or_sections, dim=0):
        d = normalize_dim(dim, self.dim())
        n = self.shape[d]
        if isinstance(split_size_or_sections, int):
            if split_size_or_sections <= 0 and n:
                raise RuntimeError("split_size can only be 0 if dimension size is 0")
            step = split_size_or_sections
            sizes = [min(step, n - i) for i in range(0, n, step)] if n else [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} "
                                   f"(input tensor's size at dimension {d}), but got "
                                   f"split_sizes={sizes}")
        out, start = [], 0
        for s in sizes:
            out.append(self[(slice(None),) * d + (slice(start, start + s),)])
            start += s
        return tuple(out)

    def chunk(self, chunks, dim=0):
        if chunks <= 0:
            raise RuntimeError("chunk expects `chunks` to be greater than 0")
        d = normalize_dim(dim, self.dim())
        n = self.shape[d]
        size = -(-n // chunks) if n else 1
        return self.split(max(size, 1), d)

    def tensor_split(self, sections, dim=0):
        d = normalize_dim(dim, self.dim())
        n = self.shape[d]
        if isinstance(sections, int):
            q, r = divmod(n, sections)
            sizes = [q + 1] * r + [q] * (sections - r)
        else:
            bounds = [0] + list(sections) + [n]
            sizes = [max(b - a, 0) for a, b in zip(bounds, bounds[1:])]
        return self.split(sizes, d)

    # ---- copies ---------------------------------------------------------------
    def clone(self, memory_format=None):
        return apply_op("clone", (self,), grad_name="CloneBackward0")

    def repeat(self, *sizes):
        return apply_op("repeat", (self,), {"repeats": _sizes(sizes)})

    def flip(self, *dims, **kw):
        if "dims" in kw:  # x.flip(dims=(0,)) as torch
            if dims:
                raise TypeError("flip() got multiple values for argument 'dims'")
            dims = (kw.pop("dims"),)
        if kw:
            raise TypeError(f"flip() got an unexpected keyword argument '{next(iter(kw))}'")
        dims = normalize_dims(_sizes(dims), self.dim(), "flip")
        return apply_op("flip", (self,), {"dims": dims})

    def fliplr(self):
        return self.flip(1)

    def flipud(self):
        return self.flip(0)

    def roll(self, shifts, dims=None):
        if dims is None:
            return self.flatten().roll(shifts, 0).view(tuple(self.shape))
        shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if len(shifts) != len(dims):
            raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims:"
                               f"{len(dims)}")
        dims = tuple(normalize_dim(d, self.dim()) for d in dims)
        return apply_op("roll", (self,), {"shifts": shifts, "dims": dims})

    def tril(self, diagonal=0):
        return apply_op("tril", (self,), {"diagonal": diagonal})

    def triu(self, diagonal=0):
        return apply_op("triu", (self,), {"diagonal": diagonal})

    def gather(self, dim, index):
        _check_index_tensor(index, "gather")
        if self.dim() == 0 and index.dim() == 0:  # torch: one element along dim 0
            normalize_dim(dim, 1)
            return self.reshape(1).gather(0, index.reshape(1)).reshape(())
        if index.dim() != self.dim():
            raise RuntimeError("gather(): Index tensor must have the same number of dimensions as "
                               f"input tensor (index {tuple(index.shape)}, input "
                               f"{tuple(self.shape)})")
        d = normalize_dim(dim, self.dim())
        index = _in_bounds(index, self.shape[d], d)
        return apply_op("gather", (self, index), {"dim": d})

    def scatter(self, dim, index, src=None, value=None, reduce=None):
        _check_index_tensor(index, "scatter")
        src = value if src is None else src
        if self.dim() == 0 and index.dim() == 0:  # torch: one element along dim 0
            normalize_dim(dim, 1)
            s1 = src.reshape(1) if isinstance(src, Tensor) else src
            return self.reshape(1).scatter(0, index.reshape(1), s1, reduce=reduce).reshape(())
        d = normalize_dim(dim, self.dim())
        return apply_op("scatter", (self, _in_bounds(index, self.shape[d], d), src),
                        {"dim": d, "reduce": reduce})

    def scatter_add(self, dim, index, src):
        return self.scatter(dim, index, src, reduce="add")

    def index_select(self, dim, index):
        _check_index_tensor(index, "index_select")
        if self.dim() == 0:  # torch: one element along dim 0, result 0-d
            normalize_dim(dim, 1)
            return self.reshape(1).index_select(0, index.reshape(-1)).reshape(())
        return apply_op("index_select", (self, index), {"dim": normalize_dim(dim, self.dim())})

    def masked_fill(self, mask, value):
        if not isinstance(mask, Tensor) or mask.dtype is not dt.bool_:
            raise RuntimeError("masked_fill only supports boolean masks, but got mask with dtype "
                               f"{getattr(mask, 'dtype', type(mask).__name__)}")
        if np.broadcast_shapes(mask._data.shape, self._data.shape) != self._data.shape:
            raise RuntimeError(f"masked_fill: the mask of shape {list(mask.shape)} does not "
                               f"broadcast to the tensor's shape {list(self.shape)}")
        if isinstance(value, Tensor):
            if value.dim() != 0:
                raise RuntimeError("masked_fill_ only supports a 0-dimensional value tensor, but "
                                   f"got tensor with {value.dim()} dimension(s).")
            if value.dtype is not self.dtype:  # traced as a cast, not read with .item()
                value = value.to(self.dtype)
        out = apply_op("where", (mask, value, self), grad_name="MaskedFillBackward0")
        if out.dtype is not self.dtype:
            out = out.to(self.dtype)
        return out

    def masked_select(self, mask):
        _graph_break("masked_select")
        m = mask.expand_as(self) if tuple(mask.shape) != tuple(self.shape) else mask
        return self[m]

    def nonzero(self, as_tuple=False):
        _graph_break("nonzero")
        if self.dim() == 0:  # torch: (1, 0) or (0, 0); as_tuple gives one 1-element index
            if as_tuple:
                return (Tensor._make(np.zeros(int(bool(self._data)), np.int64)),)
            return Tensor._make(np.zeros((int(bool(self._data)), 0), np.int64))
        idx = np.nonzero(self._data)
        if as_tuple:
            out = tuple(Tensor._make(i.astype(np.int64)) for i in idx)
        else:
            out = Tensor._make(np.stack(idx, axis=1).astype(np.int64) if idx else
                               np.zeros((int(bool(self._data)), 0), np.int64))
        if self.is_cuda:  # found on the host: the indices go back to the tensor's device
            return tuple(i.to(self.device) for i in out) if as_tuple else out.to(self.device)
        return out


def _restride(t, strides):
    """Give a view torch's strides on its size-1 dims (NumPy chooses its own there;
    the elements addressed are the same)."""
    arr = t._data
    if t._base is None or arr.size <= 1:
        return t
    want = tuple(s * arr.itemsize for s in strides)
    if arr.strides != want:
        t._data = np.lib.stride_tricks.as_strided(arr, arr.shape, want) \
            if arr.__class__ is np.ndarray else arr.view(arr.shape, want)  # CUDA storage
    return t


def _in_bounds(index, size: int, dim: int):
    """``index``, checked on every call (compiled plans too) to lie in [0, size):
    gather and scatter raise like torch instead of wrapping negative indices."""
    return apply_op("check", (index,), {
        "kind": "range", "low": 0, "high": size - 1, "ignore": None, "error": "RuntimeError",
        "message": f"index {{bad}} is out of bounds for dimension {dim} with size {size}"})


def _check_index_tensor(index, op):
    if not isinstance(index, Tensor) or index.dtype not in (dt.int64, dt.int32):
        raise RuntimeError(f"{op}(): Expected dtype int64 for index, got "
                           f"{getattr(index, 'dtype', type(index).__name__)}")
