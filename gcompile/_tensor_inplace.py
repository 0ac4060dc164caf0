"""Tensor methods that write into a tensor's memory: the in-place machinery (``_inplace``
for ``x.add_(y)``-style ops, ``_assign`` taking over a result's history, writes through
views), ``__setitem__``, ``copy_``, ``fill_``, ``zero_``, ``scatter_``, ``masked_fill_``.
Writes keep the tape and an active tracer informed (version counters, rebased history,
recorded mutations).

Layer: above the shape and indexing methods (``_tensor_shape``) it builds on.
"""
from __future__ import annotations

import numpy as np

from ir import dtypes as dt
from ir.ops.movement import np_index
from ir.registry import REGISTRY
from ir.shapes import normalize_dim

from ._dispatch import _BF16, _EMPTY, _ew_plan, _infer_error, apply_op
from ._state import state
from ._tensor_base import Tensor, tensor_methods
from ._tensor_shape import _check_index_tensor, _in_bounds, _normalize_index

_state = state


def _write_base(base, new_base) -> None:
    """A write through a view lands in its base: the base takes ``new_base``'s values
    and history (the tracer records it as the base's new value)."""
    if state.tracer is not None:
        state.tracer.before_write(base)
    np.copyto(base._data, new_base._data)
    base._vbox[0] += 1
    if state.tracer is not None:
        state.tracer.record_mutation(base, new_base)
    base.grad_fn = new_base.grad_fn
    base._requires_grad = new_base.requires_grad


@tensor_methods
class _InplaceMethods:
    """In-place writes of Tensor."""

    def _check_inplace(self):
        if state.grad_enabled and self.requires_grad and self.grad_fn is None:
            if self._base is not None:
                raise RuntimeError("a view of a leaf Variable that requires grad is being used in "
                                   "an in-place operation.")
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                               "operation.")
        if state.grad_enabled and self._base is not None and self._base.requires_grad and \
                self._base.grad_fn is None:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an "
                               "in-place operation.")

    def _inplace(self, name, args, attrs=_EMPTY, grad_name=None):
        """``self = op(self, *args)`` written into self's memory, history rebased."""
        self._check_inplace()
        op = REGISTRY[name]
        if self._ew_into(op, (self,) + tuple(args), attrs, name):
            return self
        tracking = state.grad_enabled and (self.requires_grad or any(
            isinstance(a, Tensor) and a.requires_grad for a in args))
        src = self
        if tracking and 0 in op.saves:
            # the gradient rule reads self's value from before the write: save a
            # copy that keeps self's history (torch's ``original_self``)
            src = Tensor._make(self._data.copy(), self._requires_grad, self.grad_fn)
            src._acc = self._acc
            if self.__dict__:
                src.__dict__.update(self.__dict__)
            if _state.tracer is not None:
                _state.tracer.alias(src, self)  # the copy holds self's current value
        result = apply_op(op, (src,) + tuple(args), attrs, grad_name)
        _check_cast(result.dtype, self.dtype, name)
        if state.tracer is not None and state.tracer.record_only:
            state.tracer.record_mutation(self, result)  # a stand-in: nothing to write
            return self
        return self._assign(result)

    def _ew_into(self, op, args, attrs=_EMPTY, name=None) -> bool:
        """Write elementwise ``op(*args)`` straight into self's storage (``x.add_(y)``,
        ``torch.div(a, b, out=b)``): no result-sized temporary, under a tracer too, where
        the op and the write are recorded as if computed out of place and assigned (so an
        optimizer traced op by op peaks at eager's memory, issue 20). False, having done
        nothing, where that cannot be done: autograd tracks the write, the op is not a
        NumPy ufunc, or bfloat16 or device storage is involved."""
        if not (op.is_elementwise and isinstance(op.impl, np.ufunc)):
            return False
        d = self._data
        if d.__class__ is not np.ndarray or d.dtype is _BF16:
            return False
        grad = state.grad_enabled
        tracer = state.tracer
        for a in args:
            if isinstance(a, Tensor):
                if (grad and a._requires_grad) or a._data.__class__ is not np.ndarray:
                    return False
        if grad and self._requires_grad:
            return False
        name = name or op.name
        if tracer is not None:
            # symbolic scalars (a traced lr or beta) become 0-d graph inputs, as in apply_op
            args, attrs = tracer.lift(op, args, attrs)
        cdt, odt, casts = _ew_plan(op, args)
        if odt is None or casts.__class__ is str:
            return False
        _check_cast(odt, self.dtype, name)
        arrays = [a._data if isinstance(a, Tensor) else (c(a) if c is not None else a)
                  for a, c in zip(args, casts)]
        if tracer is not None:
            tracer.before_write(self)
        # (under Tracer.recording_only the caller computes the values: only record)
        if tracer is None or not tracer.record_only:
            try:
                with np.errstate(all="ignore"):
                    op.impl(*arrays, out=d, casting="unsafe",
                            dtype=cdt.np if cdt is not None else None)
            except ValueError:
                _infer_error(op, args, attrs)
                shapes = [list(a.shape) for a in args if isinstance(a, Tensor)]
                bshape = list(np.broadcast_shapes(*[tuple(x) for x in shapes])) \
                    if _broadcastable(shapes) else shapes[1:]
                raise RuntimeError(f"{name}_: output with shape {list(self.shape)} doesn't "
                                   f"match the broadcast shape {bshape}") from None
            self._vbox[0] += 1
        if tracer is not None:
            # the graph sees ``self = op(*args)``: a node whose value has odt's dtype (a
            # stand-in) and a write of it into self
            tracer.record_mutation(self, tracer.stand_in(op, args, attrs, d.shape, odt))
        return True

    def _assign(self, result):
        """Write ``result`` into self's storage and take over its history."""
        if tuple(result.shape) != tuple(self.shape):
            try:
                result = result.expand(tuple(self.shape))
            except RuntimeError:
                raise RuntimeError(
                    f"output with shape {list(self.shape)} doesn't match the broadcast shape "
                    f"{list(result.shape)}") from None
        self._check_inplace()
        if state.grad_enabled and self.grad_fn is not None and not result.requires_grad:
            # overwritten by values without history (fill_, zero_, copy_ of a constant):
            # the old history must get zero gradient, as torch's FillBackward gives
            result = apply_op("where", (Tensor._make(np.zeros((), np.bool_)), self, result))
        if self._base is not None and state.grad_enabled and (
                result.requires_grad or self._base.requires_grad):
            return self._assign_view(result)
        if state.tracer is not None:
            state.tracer.before_write(self)
        np.copyto(self._data, result._data, casting="unsafe")
        self._vbox[0] += 1
        if state.tracer is not None:
            state.tracer.record_mutation(self, result)
        if result.requires_grad and state.grad_enabled:
            if result.dtype is not self.dtype:
                result = result.to(self.dtype)
            self.grad_fn = result.grad_fn
            self._requires_grad = True
        return self

    def _assign_view(self, result):
        """In-place write through a view: the base's history becomes an index_put."""
        base = self._base
        if self._view_spec is None:
            return self._assign_strided_view(result)
        spec, idx = self._view_spec
        new_base = apply_op("index_put", (base, result.to(base.dtype)) + tuple(idx),
                            {"index": spec, "accumulate": False}, "CopySlices")
        _write_base(base, new_base)
        if new_base.requires_grad:
            view = apply_op("getitem", (base,) + tuple(idx), {"index": spec}, "AsStridedBackward0")
            self.grad_fn = view.grad_fn
            self._requires_grad = True
        return self

    def _assign_strided_view(self, result):
        """In-place write through any view (view/transpose/expand chains): address the
        view's elements by their flat positions in the contiguous base, so the base's
        history becomes an index_put on its flattened form."""
        base = self._base
        b, v = base._data, self._data
        if not b.flags.c_contiguous:
            raise NotImplementedError(
                "in-place modification of a view of a non-contiguous tensor that takes part in "
                "autograd is not supported; call .contiguous() on the base first")
        el = b.itemsize
        if b.__class__ is np.ndarray:
            offset = (v.__array_interface__["data"][0] - b.__array_interface__["data"][0]) // el
        else:  # CUDA storage: offsets in the allocation
            offset = (v.offset - b.offset) // el
        flat = np.full(v.shape, offset, np.int64)
        for d, (n, s) in enumerate(zip(v.shape, v.strides)):
            shape = [1] * v.ndim
            shape[d] = n
            flat = flat + (np.arange(n, dtype=np.int64) * (s // el)).reshape(shape)
        if np.unique(flat).size != flat.size:
            raise RuntimeError("unsupported operation: more than one element of the written-to "
                               "tensor refers to a single memory location. Please clone() the "
                               "tensor before performing the operation.")
        idx = Tensor._make(flat)
        spec = (("t", 0),)
        n = b.size
        flat_base = apply_op("reshape", (base,), {"shape": (n,)}, "ViewBackward0")
        new_flat = apply_op("index_put", (flat_base, result.to(base.dtype), idx),
                            {"index": spec, "accumulate": False}, "CopySlices")
        new_base = apply_op("reshape", (new_flat,), {"shape": tuple(b.shape)}, "CopySlices")
        _write_base(base, new_base)
        if new_base.requires_grad:
            fb = apply_op("reshape", (base,), {"shape": (n,)}, "ViewBackward0")
            view = apply_op("getitem", (fb, idx), {"index": spec}, "AsStridedBackward0")
            self.grad_fn = view.grad_fn
            self._requires_grad = True
        return self

    def __setitem__(self, idx, value):
        spec, tensors = _normalize_index(tuple(self.shape), idx)
        tracking = state.grad_enabled and (self.requires_grad or (
            isinstance(value, Tensor) and value.requires_grad))
        if not tracking and state.tracer is None:
            v = value._data if isinstance(value, Tensor) else value
            self._data[np_index(spec, [t._data for t in tensors])] = v
            self._vbox[0] += 1
            return
        if not isinstance(value, Tensor):
            value = Tensor._make(np.asarray(value, dtype=self._data.dtype))
        self._check_inplace()
        result = apply_op("index_put", (self, value.to(self.dtype)) + tensors,
                          {"index": spec, "accumulate": False}, "IndexPutBackward0")
        self._assign(result)

    def copy_(self, src, non_blocking=False):
        if not isinstance(src, Tensor):
            src = Tensor._make(np.asarray(src))
        if state.grad_enabled and (src.requires_grad or self.requires_grad):
            return self._assign(apply_op("cast", (src.expand(tuple(self.shape)),),
                                         {"dtype": self.dtype}, "CopyBackwards"))
        if state.tracer is not None:
            state.tracer.before_write(self)
        np.copyto(self._data, np.broadcast_to(src._data, self._data.shape), casting="unsafe")
        self._vbox[0] += 1
        if state.tracer is not None:
            state.tracer.record_mutation(self, src)
        return self

    def fill_(self, value):
        if isinstance(value, Tensor):
            if value.dim() != 0:
                raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                                   f"with {value.dim()} dimensions.")
            if not value.requires_grad:
                value = value.item()
        if isinstance(value, Tensor) or (state.grad_enabled and self.requires_grad):
            return self._assign(apply_op("full_like", (self,), {"value": value, "dtype": None})
                                if not isinstance(value, Tensor) else value.expand(self.shape))
        self._check_inplace()
        if state.tracer is not None:
            state.tracer.before_write(self)
        self._data[...] = value
        self._vbox[0] += 1
        if state.tracer is not None:
            state.tracer.record_mutation(self, None)
        return self

    def zero_(self):
        return self.fill_(0)

    def set_(self, source):
        self._data = source._data
        self._vbox[0] += 1
        return self

    def scatter_(self, dim, index, src=None, value=None, reduce=None):
        _check_index_tensor(index, "scatter_")
        src = value if src is None else src
        d = normalize_dim(dim, self.dim())
        return self._inplace("scatter", (_in_bounds(index, self.shape[d], d), src),
                             {"dim": d, "reduce": reduce})

    def scatter_add_(self, dim, index, src):
        return self.scatter_(dim, index, src, reduce="add")

    def masked_fill_(self, mask, value):
        return self._assign(self.masked_fill(mask, value))


def _broadcastable(shapes) -> bool:
    try:
        np.broadcast_shapes(*[tuple(x) for x in shapes])
        return True
    except ValueError:
        return False


def _check_cast(src: dt.DType, dst: dt.DType, name: str) -> None:
    """An in-place op may not store a result of a higher category (``dt.can_cast``)."""
    if not dt.can_cast(src, dst):
        cap = {"float32": "Float", "float64": "Double", "int64": "Long", "int32": "Int",
               "bool": "Bool", "float16": "Half", "uint8": "Byte", "int8": "Char",
               "int16": "Short"}
        raise RuntimeError(f"result type {cap[src.name]} can't be cast to the desired output type "
                           f"{cap[dst.name]} (in-place {name})")
