"""The eager Tensor: NumPy storage, torch semantics, and the op dispatcher."""
from __future__ import annotations

import math
import numbers
from collections import namedtuple

import numpy as np

from ir import dtypes as dt
from ir.registry import REGISTRY, compute_dtype, output_dtype
from ir.shapes import contiguous_strides, infer_size, normalize_dim, normalize_dims, view_strides

from ._device import CPU, as_device
from ._state import state
from ._symbolic import SymScalar
from .autograd.graph import AccumulateGrad, OpNode

_EMPTY: dict = {}
_SCALARS = (bool, int, float, SymScalar)
_EW_CACHE: dict = {}
_REGISTRY = REGISTRY
_state = state
_new_tensor = object.__new__

try:  # NumPy >= 2: set the ufunc error state through its context variable directly
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj
    _QUIET = _make_extobj(all="ignore")
    _set_errstate = _extobj_contextvar.set
    _reset_errstate = _extobj_contextvar.reset
except ImportError:  # pragma: no cover - older NumPy
    _QUIET = {"all": "ignore"}

    def _set_errstate(cfg):
        return np.seterr(**cfg)

    def _reset_errstate(tok):
        np.seterr(**tok)


def _quiet_call(fn, arrays, attrs):
    """Call ``fn`` with NumPy floating-point warnings off (torch returns inf/nan
    silently); ~10x cheaper than entering ``np.errstate``."""
    tok = _set_errstate(_QUIET)
    try:
        return fn(*arrays, **attrs)
    finally:
        _reset_errstate(tok)


_EW2_CACHE: dict = {}


def _clear_plans() -> None:
    """Dtype plans depend on the default dtype (int -> float ops, Python floats)."""
    _EW_CACHE.clear()
    _EW2_CACHE.clear()
    for op in REGISTRY.values():
        op._plans.clear()


dt.on_default_dtype_change.append(_clear_plans)

class values_indices(namedtuple("values_indices", ["values", "indices"])):
    """(values, indices) results; prints like torch.return_types.max(...)."""

    __slots__ = ()
    _op = "values_indices"

    def __repr__(self) -> str:
        return (f"torch.return_types.{self._op}(\nvalues={self.values!r},\n"
                f"indices={self.indices!r})")


_RETURN_TYPES: dict = {}


def return_type(op: str, values, indices) -> values_indices:
    """A (values, indices) pair named after ``op`` (torch.return_types.<op>)."""
    cls = _RETURN_TYPES.get(op)
    if cls is None:
        cls = _RETURN_TYPES[op] = type(op, (values_indices,), {"__slots__": (), "_op": op})
    return cls(values, indices)


# ---------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------
def _ew_plan(op, args):
    """Per-argument casts for an elementwise op, cached per signature.

    Returns ``(compute DType or None, output DType or None, casts)`` where
    ``casts[i]`` is the NumPy dtype argument ``i`` is converted to (None: use
    as is) or, for a Python scalar, the NumPy scalar type it becomes.
    """
    key = (op,) + tuple([(a._data.dtype, a._data.ndim == 0) if isinstance(a, Tensor)
                         else a.__class__ for a in args])
    plan = _EW_CACHE.get(key)
    if plan is None:
        plan = _EW_CACHE[key] = _make_ew_plan(op, args)
    return plan


def _make_ew_plan(op, args):
    specs = [(a.dtype, a._data.ndim) if isinstance(a, Tensor) else a for a in args]
    if op.dtype_rule == "where":
        specs = specs[1:]
    if op.dtype_rule == "cast":
        return None, None, (None,) * len(args)
    cdt = compute_dtype(op, specs)
    odt = output_dtype(op, specs)
    if cdt is dt.bfloat16:
        # bfloat16 computes in float32: the plan says so and marks the call for
        # _via_float32 instead of listing casts
        return dt.float32, odt, _VIA_FLOAT32
    casts = []
    for i, a in enumerate(args):
        if i == 0 and op.dtype_rule == "where":
            casts.append(None)
        elif isinstance(a, Tensor):
            casts.append(None if a._data.dtype == cdt.np else cdt.np)
        elif cdt.kind == "f":
            casts.append(cdt.np.type)
        else:
            casts.append(_int_scalar_cast(cdt.np))
    return cdt, odt, tuple(casts)


_BF16 = dt.bfloat16.np
_VIA_FLOAT32 = "via float32"  # the plan of an op that computes a bfloat16 result


def _via_float32(op, args, attrs, grad_name):
    """Run ``op`` where it would compute on (or produce) bfloat16: bfloat16 is a storage
    type, as on torch's CPU, so the operands are cast to float32, the op runs there and
    its result is rounded to the dtype the op's rule gives. The casts are ops of their
    own, so the tape differentiates through them (a bfloat16 input gets a bfloat16
    gradient) and a trace records float32 arithmetic between explicit casts, which
    compiled plans then run exactly as eager code does."""
    if op._ew:
        odt = _ew_plan(op, args)[1]
        skip = 0 if op.dtype_rule == "where" else -1  # where's condition stays bool
        args = tuple(apply_op("cast", (a,), {"dtype": dt.float32})
                     if isinstance(a, Tensor) and i != skip and a._data.dtype != np.float32
                     else a for i, a in enumerate(args))
        if not any(isinstance(a, Tensor) for a in args):  # numbers only (default bfloat16)
            args = (Tensor._make(np.asarray(args[0], np.float32)),) + args[1:]
        low = attrs
    else:
        specs = [(a.shape, a.dtype) if isinstance(a, Tensor) else a for a in args]
        odt = op.infer(specs, attrs)[1]
        args = tuple(apply_op("cast", (a,), {"dtype": dt.float32})
                     if isinstance(a, Tensor) and a._data.dtype is _BF16 else a for a in args)
        low = attrs
        if attrs.get("dtype") is dt.bfloat16:
            low = dict(attrs, dtype=dt.float32)
    out = apply_op(op, args, low, grad_name)
    if odt is dt.bfloat16:
        out = apply_op("cast", (out,), {"dtype": dt.bfloat16}, grad_name or op._grad_fn_name)
    return out


def _int_scalar_cast(npd):
    """A Python int becomes the op's integer dtype wrapping around, like torch
    (uint8 + 1000 is uint8 + 232), where NumPy would raise."""
    def cast(v):
        return np.array(v).astype(npd)[()]
    return cast


def _infer_error(op, args, attrs):
    """Re-run the shape rule to turn a NumPy error into a torch-style one."""
    specs = [(tuple(a.shape), a.dtype) if isinstance(a, Tensor) else a for a in args]
    op.infer(specs, attrs)


def _ew_arrays(args, casts):
    arrays = []
    for a, c in zip(args, casts):
        if isinstance(a, Tensor):
            arr = a._data
            arrays.append(arr if c is None else arr.astype(c))
        else:
            arrays.append(a if c is None else c(a))
    return arrays


def apply_op(name, args, attrs=_EMPTY, grad_name=None):
    """Run op ``name`` eagerly on ``args`` (Tensors, or Python numbers for
    elementwise operands), record it on the tape and on an active tracer.

    This is the hot path of eager mode: per-op facts are precomputed on the
    OpDef by ``ir.registry.register`` and dtype plans are cached per signature.
    """
    op = _REGISTRY[name] if name.__class__ is str else name
    tracer = _state.tracer
    if tracer is not None:
        args, attrs = tracer.lift(op, args, attrs)
    if op._ew:
        if len(args) == 2:
            x, y = args
            if isinstance(x, Tensor):
                xd = x._data
                dx = xd.dtype
                if isinstance(y, Tensor):
                    yd = y._data
                    if dx is yd.dtype:
                        # same dtypes: 0-d-ness cannot change the result type
                        casts = op._plans.get(dx)
                        if casts is None:
                            casts = op._plans[dx] = _ew_plan(op, args)[2]
                    else:
                        key = (op, dx, xd.ndim == 0, yd.dtype, yd.ndim == 0)
                        casts = _EW2_CACHE.get(key)
                        if casts is None:
                            casts = _EW2_CACHE[key] = _ew_plan(op, args)[2]
                    if casts is _VIA_FLOAT32:
                        return _via_float32(op, args, attrs, grad_name)
                    arrays = (xd if casts[0] is None else xd.astype(casts[0]),
                              yd if casts[1] is None else yd.astype(casts[1]))
                else:
                    # tensor (op) Python number: the tensor's rank cannot matter either
                    key = (dx, y.__class__)
                    casts = op._plans.get(key)
                    if casts is None:
                        casts = op._plans[key] = _ew_plan(op, args)[2]
                    if casts is _VIA_FLOAT32:
                        return _via_float32(op, args, attrs, grad_name)
                    c = casts[1]
                    arrays = (xd if casts[0] is None else xd.astype(casts[0]),
                              y if c is None else c(y))
            else:
                casts = _ew_plan(op, args)[2]
                if casts is _VIA_FLOAT32:
                    return _via_float32(op, args, attrs, grad_name)
                arrays = _ew_arrays(args, casts)
        else:
            casts = _ew_plan(op, args)[2]
            if casts is _VIA_FLOAT32:
                return _via_float32(op, args, attrs, grad_name)
            arrays = _ew_arrays(args, casts)
        tok = _set_errstate(_QUIET)
        try:
            out = op.impl(*arrays) if attrs is _EMPTY else op.impl(*arrays, **attrs)
        except (ValueError, TypeError) as e:
            _infer_error(op, args, attrs)  # a shape error, in torch's words
            raise RuntimeError(f"{op.name}: {e}") from None
        finally:
            _reset_errstate(tok)
    else:
        low = False
        for a in args:
            if isinstance(a, Tensor):
                if a._data.dtype is _BF16:
                    low = True
            elif not isinstance(a, _SCALARS):
                raise TypeError(f"{op.name}: expected Tensor arguments, got {type(a).__name__}")
        if (low or attrs.get("dtype") is dt.bfloat16) and not op._view:
            return _via_float32(op, args, attrs, grad_name)
        if op._eager_infer:
            specs = [(a.shape, a.dtype) if isinstance(a, Tensor) else a for a in args]
            op.infer(specs, attrs)
        arrays = [a._data if isinstance(a, Tensor) else a for a in args]
        out = _quiet_call(op.impl, arrays, attrs)
    if out.__class__ is not np.ndarray:
        out = np.asarray(out)
    result = _new_tensor(Tensor)
    result._data = out
    result.grad_fn = None
    result._requires_grad = False
    result._grad = None
    result._acc = None
    result._base = None
    result._view_spec = None
    if op._view and np.may_share_memory(out, args[0]._data):
        src = args[0]
        result._vbox = src._vbox
        result._base = src._base if src._base is not None else src
        if op.name == "getitem" and src._base is None:
            result._view_spec = (attrs["index"], args[1:])
    else:
        result._vbox = [0]
    if op._diff and _state.grad_enabled and (out.dtype.kind == "f" or out.dtype is _BF16):
        for a in args:
            if isinstance(a, Tensor) and a._requires_grad:
                result.grad_fn = OpNode(op, args, attrs, result, grad_name)
                result._requires_grad = True
                break
    if tracer is not None:
        tracer.record(op, args, attrs, result)
    return result


def _graph_break(what: str) -> None:
    if state.tracer is not None:
        state.tracer.graph_break(what)


def _wrap_scalar_or_tensor(x):
    if isinstance(x, Tensor) or isinstance(x, _SCALARS):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (np.ndarray, list, tuple)):
        from ._creation import tensor
        return tensor(x)
    if isinstance(x, numbers.Number):
        return float(x)
    raise TypeError(f"unsupported operand type {type(x).__name__}")


# ---------------------------------------------------------------------------
# index normalisation
# ---------------------------------------------------------------------------
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
        elif isinstance(it, (int, np.integer)) and not isinstance(it, bool):
            n = shape[dim]
            it = int(it)
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
                vals.append(None if v is None else int(v))
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


# ---------------------------------------------------------------------------
# the Tensor
# ---------------------------------------------------------------------------
class Tensor:
    """A strided n-d array on NumPy storage with torch's API and autograd."""

    __slots__ = ("_data", "grad_fn", "_requires_grad", "_grad", "_acc", "_vbox", "_base",
                 "_view_spec", "_retains", "__weakref__", "__dict__")
    __array_priority__ = 1000

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, dtype=None, device=None, requires_grad=False):
        """torch.Tensor(sizes...) is uninitialised float; torch.Tensor(data) copies data."""
        if not args:
            arr = np.empty((0,), (dtype or dt.get_default_dtype()).np)
        elif len(args) == 1 and not isinstance(args[0], (int, np.integer, Size)):
            from ._creation import _to_numpy
            arr = np.array(_to_numpy(args[0], dtype or dt.get_default_dtype()), copy=True)
            if arr.dtype.kind != "f":
                arr = arr.astype(dt.get_default_dtype().np)
        else:
            sizes = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
            arr = np.empty(tuple(int(s) for s in sizes), (dtype or dt.get_default_dtype()).np)
        _init(self, arr)
        self.requires_grad = bool(requires_grad)

    @classmethod
    def _make(cls, data, requires_grad=False, grad_fn=None):
        t = object.__new__(cls)
        _init(t, data)
        t._requires_grad = requires_grad
        t.grad_fn = grad_fn
        return t

    # ---- basic properties ----------------------------------------------------
    @property
    def shape(self):
        return Size(self._data.shape)

    @property
    def dtype(self):
        return dt.from_numpy(self._data.dtype)

    @property
    def device(self):
        return CPU

    @property
    def is_cuda(self) -> bool:
        return False

    @property
    def layout(self):
        return strided

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def _version(self) -> int:
        return self._vbox[0]

    @property
    def data(self):
        return Tensor._make(self._data)

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"data must be a Tensor, got {type(value).__name__}")
        self._data = value._data

    @property
    def T(self):
        return self.permute(*reversed(range(self.dim())))

    @property
    def mT(self):
        if self.dim() < 2:
            raise RuntimeError("tensor.mT is only supported on matrices or batches of matrices. "
                               f"Got {self.dim()}-D tensor.")
        return self.transpose(-2, -1)

    @property
    def is_floating_point_(self):
        return self.dtype.is_floating_point

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def size(self, dim=None):
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[normalize_dim(dim, self.dim())]

    def dim(self) -> int:
        return self._data.ndim

    ndimension = dim

    def numel(self) -> int:
        return int(self._data.size)

    nelement = numel

    def element_size(self) -> int:
        return self._data.itemsize

    def stride(self, dim=None):
        st = tuple(s // self._data.itemsize for s in self._data.strides)
        if self._data.size <= 1:
            # NumPy reports arbitrary strides for size-0/1 arrays; torch reports its own
            st = tuple(a if d != 1 else b for a, b, d in
                       zip(st, contiguous_strides(self._data.shape), self._data.shape)) \
                if self._data.size else contiguous_strides(self._data.shape)
        if dim is None:
            return st
        return st[normalize_dim(dim, self.dim())]

    def storage_offset(self) -> int:
        if self._base is None:
            return 0
        base = self._base._data
        start = self._data.__array_interface__["data"][0]
        return (start - base.__array_interface__["data"][0]) // self._data.itemsize

    def data_ptr(self) -> int:
        return self._data.__array_interface__["data"][0]

    def is_contiguous(self, memory_format=None) -> bool:
        return self._data.flags.c_contiguous or self._data.size <= 1

    def contiguous(self, memory_format=None):
        if self.is_contiguous():
            return self
        out = apply_op("clone", (self,), grad_name="CloneBackward0")
        # clone keeps a dense tensor's strides (torch's preserve_format); here we need C order
        out._data = np.ascontiguousarray(out._data)
        return out

    def __len__(self) -> int:
        if self.dim() == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self.dim() == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    def __hash__(self) -> int:
        return id(self)

    # ---- conversion ------------------------------------------------------------
    def item(self):
        _graph_break("Tensor.item()")
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to "
                               "Scalar")
        return self._data.reshape(()).item()

    def tolist(self):
        _graph_break("Tensor.tolist()")
        return self._data.tolist()

    def numpy(self, force: bool = False):
        _graph_break("Tensor.numpy()")
        if self.requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use "
                               "tensor.detach().numpy() instead.")
        return self._data

    def __array__(self, dtype=None, copy=None):
        """NumPy functions see the tensor's memory (no copy) unless ``dtype`` differs or
        ``copy=True``; ``copy=False`` raises ValueError when a copy would be needed, as
        NumPy 2 asks of ``__array__``."""
        a = self._data
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"Unable to avoid copy while converting a {self.dtype} "
                                 f"tensor to {np.dtype(dtype)}")
            return a.astype(dtype)
        return a.copy() if copy else a

    def __dlpack__(self, stream=None, **kwargs):
        """Export through NumPy's DLPack (versioned when the consumer asks, so the
        consumer sees writable, shared memory)."""
        if stream is not None:
            kwargs["stream"] = stream
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    def __bool__(self) -> bool:
        _graph_break("bool(Tensor)")
        if self._data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self._data.reshape(()))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __complex__(self):
        return complex(self.item())

    def __repr__(self) -> str:
        _graph_break("repr(Tensor)")
        from ._printing import tensor_repr
        return tensor_repr(self)

    def __str__(self) -> str:
        return self.__repr__()

    def __format__(self, spec: str) -> str:
        if self.dim() == 0:
            return self.item().__format__(spec)
        return object.__format__(self, spec)

    def __deepcopy__(self, memo):
        t = Tensor._make(self._data.copy(), self.requires_grad)
        t = _retype(t, type(self))
        if self.grad is not None:
            t.grad = Tensor._make(self.grad._data.copy())
        memo[id(self)] = t
        return t

    def __reduce_ex__(self, proto):
        return (_rebuild, (self._data.copy(), self.requires_grad, type(self)))

    # ---- dtype / device ---------------------------------------------------
    def to(self, *args, **kwargs):
        dtype = kwargs.pop("dtype", None)
        dev = kwargs.pop("device", None)
        copy = kwargs.pop("copy", False)
        kwargs.pop("non_blocking", None)
        fmt = kwargs.pop("memory_format", None)
        if fmt is not None:
            from ._creation import _check_format
            _check_format(fmt)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, dt.DType):
                dtype = a
            elif isinstance(a, Tensor):
                dtype, dev = a.dtype, a.device
            elif isinstance(a, str) and a.replace("torch.", "") in (
                    "float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8",
                    "bool", "float", "double", "half", "long", "int", "bfloat16"):
                dtype = dt.as_dtype(a)
            else:
                dev = a
        if dev is not None:
            d = as_device(dev)
            if d.type == "cuda":
                from . import cuda
                if not cuda.is_available():
                    raise RuntimeError("Found no NVIDIA driver on your system: CUDA is not "
                                       f"available, cannot move a tensor to {d}")
                raise NotImplementedError("gcompile tensors live on the CPU; CUDA runs through "
                                          "compiled plans")
        out = self
        if dtype is not None and dt.as_dtype(dtype) is not self.dtype:
            out = apply_op("cast", (self,), {"dtype": dt.as_dtype(dtype)})
        elif copy:
            out = self.clone()
        return out

    def cpu(self):
        return self

    def cuda(self, device=None, non_blocking=False):
        return self.to("cuda" if device is None else device)

    def type(self, dtype=None):
        if dtype is None:
            from .autograd.graph import _type_name
            return _type_name(self.dtype)
        if isinstance(dtype, type) and hasattr(dtype, "_dtype"):  # x.type(torch.LongTensor)
            dtype = dtype._dtype
        if isinstance(dtype, str) and dtype.endswith("Tensor"):
            names = {"torch.FloatTensor": dt.float32, "torch.DoubleTensor": dt.float64,
                     "torch.LongTensor": dt.int64, "torch.IntTensor": dt.int32,
                     "torch.BoolTensor": dt.bool_, "torch.HalfTensor": dt.float16,
                     "torch.BFloat16Tensor": dt.bfloat16,
                     "torch.ByteTensor": dt.uint8, "torch.CharTensor": dt.int8}
            dtype = names[dtype]
        return self.to(dt.as_dtype(dtype))

    def float(self):
        return self.to(dt.float32)

    def double(self):
        return self.to(dt.float64)

    def half(self):
        return self.to(dt.float16)

    def bfloat16(self):
        return self.to(dt.bfloat16)

    def int(self):
        return self.to(dt.int32)

    def long(self):
        return self.to(dt.int64)

    def short(self):
        return self.to(dt.int16)

    def char(self):
        return self.to(dt.int8)

    def byte(self):
        return self.to(dt.uint8)

    def bool(self):
        return self.to(dt.bool_)

    def type_as(self, other):
        return self.to(other.dtype)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False, layout=None,
                   pin_memory=False):
        from ._creation import tensor
        return tensor(data, dtype=dtype or self.dtype, device=device,
                      requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False, layout=None,
                  pin_memory=False):
        from ._creation import zeros
        return zeros(*size, dtype=dtype or self.dtype, device=device,
                     requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False, layout=None,
                 pin_memory=False):
        from ._creation import ones
        return ones(*size, dtype=dtype or self.dtype, device=device, requires_grad=requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False, layout=None,
                  pin_memory=False):
        from ._creation import empty
        return empty(*size, dtype=dtype or self.dtype, device=device,
                     requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False,
                 layout=None, pin_memory=False):
        from ._creation import full
        return full(size, fill_value, dtype=dtype or self.dtype, device=device,
                    requires_grad=requires_grad)

    # ---- autograd -------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True):
        self.requires_grad = requires_grad
        return self

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self._data.dtype.kind != "f" and self._data.dtype is not _BF16:
            raise RuntimeError("only Tensors of floating point and complex dtype can require "
                               f"gradients (got {self.dtype})")
        if not value and self.grad_fn is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If "
                               "you want to use a computed variable in a subgraph that doesn't "
                               "require differentiation use var_no_grad = var.detach().")
        self._requires_grad = bool(value)

    @property
    def grad(self):
        if state.tracer is not None and self._grad is not None:
            state.tracer.note_grad_value(self, self._grad)
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError("assigned grad expected to be a Tensor or None but got "
                                f"{type(value).__name__}")
            if tuple(value.shape) != tuple(self._data.shape):
                raise RuntimeError("assigned grad has data of a different size: "
                                   f"{tuple(value.shape)} vs {tuple(self._data.shape)}")
        if state.tracer is not None:
            state.tracer.record_grad(self, value)
        self._grad = value

    def _grad_accumulator(self):
        if self._acc is None:
            self._acc = AccumulateGrad(self)
        return self._acc

    def detach(self):
        # shares memory and the version counter, but is not an autograd view (torch:
        # ``x.detach()._base is None``), so in-place ops on it are allowed
        t = Tensor._make(self._data)
        t._vbox = self._vbox
        t._base = self._base
        if state.tracer is not None:
            # traced uses of t carry no gradient back to self
            state.tracer.note_detach(t, self.requires_grad)
        return t

    def detach_(self):
        if self._base is not None and self._base.requires_grad:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self.grad_fn = None
        self.requires_grad = False
        return self

    def retain_grad(self):
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is not None:
            import weakref
            self.grad_fn._retain = weakref.ref(self)
            self._retains = True

    @property
    def retains_grad(self) -> bool:
        return self.grad_fn is not None and getattr(self, "_retains", False)

    def register_hook(self, hook):
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        node = self.grad_fn if self.grad_fn is not None else self._grad_accumulator()
        return node.register_hook(hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        from .autograd import backward
        backward(self, gradient, retain_graph, create_graph, inputs=inputs)

    # ---- shape ops (views) ------------------------------------------------------
    def view(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], dt.DType):
            raise NotImplementedError("view(dtype) is not supported")
        shape = infer_size(_sizes(shape), self.numel())
        if view_strides(self._data.shape, self.stride(), shape) is None:
            raise RuntimeError(
                "view size is not compatible with input tensor's size and stride (at least one "
                "dimension spans across two contiguous subspaces). Use .reshape(...) instead. "
                f"[input shape {tuple(self.shape)}, stride {self.stride()}, view shape {shape}]")
        return apply_op("reshape", (self,), {"shape": shape}, "ViewBackward0")

    def view_as(self, other):
        return self.view(other.shape)

    def reshape(self, *shape):
        shape = infer_size(_sizes(shape), self.numel())
        if shape == tuple(self._data.shape):
            return apply_op("reshape", (self,), {"shape": shape}, "ViewBackward0")
        name = "ViewBackward0" if view_strides(self._data.shape, self.stride(), shape) \
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
        new = shp[:s] + (int(np.prod(shp[s:e + 1])),) + shp[e + 1:]
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
        # torch: the new dim's stride is size*stride of the dim it lands before
        return _restride(out, st[:d] + ((st[d] * shp[d]) if d < len(shp) else 1,) + st[d:])

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

    def scatter_(self, dim, index, src=None, value=None, reduce=None):
        _check_index_tensor(index, "scatter_")
        src = value if src is None else src
        d = normalize_dim(dim, self.dim())
        return self._inplace("scatter", (_in_bounds(index, self.shape[d], d), src),
                             {"dim": d, "reduce": reduce})

    def scatter_add_(self, dim, index, src):
        return self.scatter_(dim, index, src, reduce="add")

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

    def masked_fill_(self, mask, value):
        return self._assign(self.masked_fill(mask, value))

    def masked_select(self, mask):
        _graph_break("masked_select")
        m = mask.expand_as(self) if tuple(mask.shape) != tuple(self.shape) else mask
        return self[m]

    def where(self, condition, other):
        from ._functions import where
        return where(condition, self, other)

    def nonzero(self, as_tuple=False):
        _graph_break("nonzero")
        if self.dim() == 0:  # torch: (1, 0) or (0, 0); as_tuple gives one 1-element index
            if as_tuple:
                return (Tensor._make(np.zeros(int(bool(self._data)), np.int64)),)
            return Tensor._make(np.zeros((int(bool(self._data)), 0), np.int64))
        idx = np.nonzero(self._data)
        if as_tuple:
            return tuple(Tensor._make(i.astype(np.int64)) for i in idx)
        return Tensor._make(np.stack(idx, axis=1).astype(np.int64) if idx else
                            np.zeros((int(bool(self._data)), 0), np.int64))

    # ---- in-place machinery -------------------------------------------------------
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
        tracking = state.grad_enabled and (self.requires_grad or any(
            isinstance(a, Tensor) and a.requires_grad for a in args))
        if (not tracking and state.tracer is None and isinstance(op.impl, np.ufunc)
                and op.is_elementwise and self._data.dtype is not _BF16):
            cdt, odt, _ = _ew_plan(op, (self,) + tuple(args))
            _check_cast(odt, self.dtype, name)
            casts = _ew_plan(op, (self,) + tuple(args))[2][1:]
            arrays = [a._data if isinstance(a, Tensor) else (c(a) if c is not None else a)
                      for a, c in zip(args, casts)]
            try:
                with np.errstate(all="ignore"):
                    op.impl(self._data, *arrays, out=self._data, casting="unsafe",
                            dtype=cdt.np if cdt is not None else None)
            except ValueError:
                _infer_error(op, (self,) + tuple(args), attrs)
                shapes = [list(a.shape) for a in (self,) + tuple(args) if isinstance(a, Tensor)]
                bshape = list(np.broadcast_shapes(*[tuple(x) for x in shapes])) \
                    if _broadcastable(shapes) else shapes[1:]
                raise RuntimeError(f"{name}_: output with shape {list(self.shape)} doesn't match "
                                   f"the broadcast shape {bshape}") from None
            self._vbox[0] += 1
            return self
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
        return self._assign(result)

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
        if state.tracer is not None:
            state.tracer.before_write(base)
        np.copyto(base._data, new_base._data)
        base._vbox[0] += 1
        if state.tracer is not None:
            state.tracer.record_mutation(base, new_base)
        base.grad_fn = new_base.grad_fn
        base._requires_grad = new_base.requires_grad
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
        offset = (v.__array_interface__["data"][0] - b.__array_interface__["data"][0]) // el
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
        if state.tracer is not None:
            state.tracer.before_write(base)
        np.copyto(b, new_base._data)
        base._vbox[0] += 1
        if state.tracer is not None:
            state.tracer.record_mutation(base, new_base)
        base.grad_fn = new_base.grad_fn
        base._requires_grad = new_base.requires_grad
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
            from ._functions import _np_index
            v = value._data if isinstance(value, Tensor) else value
            self._data[_np_index(spec, tensors)] = v
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

    # random in-place fills live in _random; attached below
    # arithmetic, math, reductions and linalg methods are attached by _methods


class Size(tuple):
    """torch.Size: a tuple that prints as torch.Size([...])."""

    def __repr__(self) -> str:
        return f"torch.Size({list(self)})"

    def numel(self) -> int:
        n = 1
        for d in self:
            n *= d
        return n

    def __getitem__(self, item):
        r = tuple.__getitem__(self, item)
        return Size(r) if isinstance(item, slice) else r

    def __add__(self, other):
        return Size(tuple(self) + tuple(other))


class _Layout:
    def __repr__(self):
        return "torch.strided"


strided = _Layout()


def _init(t, arr):
    t._data = arr
    t.grad_fn = None
    t._requires_grad = False
    t._grad = None
    t._acc = None
    t._vbox = [0]
    t._base = None
    t._view_spec = None


def _retype(t, cls):
    if cls is Tensor:
        return t
    new = object.__new__(cls)
    for k in ("_data", "grad_fn", "_requires_grad", "_grad", "_acc", "_vbox", "_base",
              "_view_spec"):
        setattr(new, k, getattr(t, k))
    return new


def _rebuild(data, requires_grad, cls):
    t = Tensor._make(data)
    t = _retype(t, cls)
    t.requires_grad = requires_grad
    return t


def _sizes(args):
    """Accept f(2, 3), f((2, 3)), f([2, 3]) and f(torch.Size([2, 3]))."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = args[0]
    out = []
    for a in args:
        if isinstance(a, Tensor):
            a = a.item()
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"expected a sequence of integers for the size, got {a!r} of type "
                            f"{type(a).__name__}")
        out.append(int(a))
    return tuple(out)


def _restride(t, strides):
    """Give a view torch's strides on its size-1 dims (NumPy chooses its own there;
    the elements addressed are the same)."""
    arr = t._data
    if t._base is None or arr.size <= 1:
        return t
    want = tuple(s * arr.itemsize for s in strides)
    if arr.strides != want:
        t._data = np.lib.stride_tricks.as_strided(arr, arr.shape, want)
    return t


def _broadcastable(shapes) -> bool:
    try:
        np.broadcast_shapes(*[tuple(x) for x in shapes])
        return True
    except ValueError:
        return False


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


def _check_cast(src: dt.DType, dst: dt.DType, name: str) -> None:
    order = {"b": 0, "i": 1, "f": 2}
    if order[src.kind] > order[dst.kind]:
        cap = {"float32": "Float", "float64": "Double", "int64": "Long", "int32": "Int",
               "bool": "Bool", "float16": "Half", "uint8": "Byte", "int8": "Char",
               "int16": "Short"}
        raise RuntimeError(f"result type {cap[src.name]} can't be cast to the desired output type "
                           f"{cap[dst.name]} (in-place {name})")


__all__ = ["Tensor", "Size", "apply_op", "values_indices", "strided", "math"]
