"""The Tensor class itself: NumPy storage and the metadata read from it (shape, strides,
dtype, device, views' bases, the version counter). A CUDA tensor's storage is a
``CudaArray`` (``_device.py``): a device array with the same metadata.

This is the bottom of the eager core: it imports nothing of gcompile but the device and
dtype names, the per-thread state and symbolic sizes (a tracer with dynamic dimensions
answers ``shape``/``size()``/``numel()`` with SymInts, ``_symshape.py``). Every other
concern defines its Tensor methods in its own module, higher up, and attaches them here
with ``tensor_methods`` (shape and indexing in ``_tensor_shape``, in-place writes in
``_tensor_inplace``, conversion in ``_tensor_convert``, autograd in
``_tensor_autograd``, operators in ``_methods``), so ``gcompile.Tensor`` stays one class
while no module needs one above it.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from ir import dtypes as dt
from ir.shapes import contiguous_strides, normalize_dim

from ._device import CPU, CudaArray
from ._state import state
from ._symshape import SymInt


def tensor_methods(body: type) -> type:
    """Copy the methods and properties defined in the class ``body`` onto Tensor.

    Why: a concern module above this one (which may import ops, autograd, printing) writes
    its Tensor methods as an ordinary class body; attaching them keeps one ``Tensor`` class
    for users without this module importing upward."""
    for name, value in vars(body).items():
        if name in ("__module__", "__qualname__", "__doc__", "__dict__", "__weakref__"):
            continue
        fn = value.fget if isinstance(value, property) else value
        if hasattr(fn, "__qualname__"):
            try:
                fn.__qualname__ = f"Tensor.{fn.__name__}"
            except (AttributeError, TypeError):
                pass
        setattr(Tensor, name, value)
    return body


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


_RESULTS: dict = {}


def named_result(name: str, fields: str, *values) -> tuple:
    """torch.return_types.<name>: a named tuple with torch's field names."""
    cls = _RESULTS.get(name)
    if cls is None:
        cls = _RESULTS[name] = namedtuple(name, fields)
        cls.__module__ = "torch.return_types"
    return cls(*values)


class Tensor:
    """A strided n-d array on NumPy storage with torch's API and autograd.

    Defined here with its storage and metadata only; the rest of its methods are attached
    by the modules of the eager core above (see this module's docstring)."""

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
        tracer = state.tracer
        if tracer is not None and tracer.shape_env is not None:
            return Size(tracer.sym_size(self))  # dynamic dimensions as SymInts
        return Size(self._data.shape)

    @property
    def dtype(self):
        return dt.from_numpy(self._data.dtype)

    @property
    def device(self):
        d = self._data
        return CPU if d.__class__ is not CudaArray else d.device

    @property
    def is_cuda(self) -> bool:
        return self._data.__class__ is CudaArray

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
        tracer = state.tracer
        shape = self._data.shape if tracer is None or tracer.shape_env is None else \
            tracer.sym_size(self)
        if dim is None:
            return Size(shape)
        return shape[normalize_dim(dim, self.dim())]

    def dim(self) -> int:
        return self._data.ndim

    ndimension = dim

    def numel(self) -> int:
        tracer = state.tracer
        if tracer is not None and tracer.shape_env is not None:
            return Size(tracer.sym_size(self)).numel()
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
        if self._data.__class__ is CudaArray:
            return self._data.offset // self._data.itemsize
        if self._base is None:
            return 0
        base = self._base._data
        start = self._data.__array_interface__["data"][0]
        return (start - base.__array_interface__["data"][0]) // self._data.itemsize

    def data_ptr(self) -> int:
        d = self._data
        if d.__class__ is CudaArray:
            return d.__cuda_array_interface__["data"][0]
        return d.__array_interface__["data"][0]

    def is_contiguous(self, memory_format=None) -> bool:
        return self._data.flags.c_contiguous or self._data.size <= 1

    def __len__(self) -> int:
        if self.dim() == 0:
            raise TypeError("len() of a 0-d tensor")
        tracer = state.tracer
        if tracer is not None and tracer.shape_env is not None:
            return int(tracer.sym_size(self)[0])  # len() must be an int: guarded
        return self._data.shape[0]

    def __hash__(self) -> int:
        return id(self)


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
        if isinstance(a, SymInt):  # a traced dynamic size: kept symbolic
            out.append(a)
            continue
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"expected a sequence of integers for the size, got {a!r} of type "
                            f"{type(a).__name__}")
        out.append(int(a))
    return tuple(out)


def _to_numpy(data, dtype=None):
    """The NumPy array behind ``data`` (a Tensor, an array, or nested lists that may hold
    tensors), without copying what is already an array."""
    if isinstance(data, Tensor):
        return data._data
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in data):
        data = [(_to_numpy(x) if isinstance(x, (Tensor, list, tuple)) else x) for x in data]
    return np.asarray(data)
