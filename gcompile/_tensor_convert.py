"""Tensor methods that convert: to Python values (``item``, ``tolist``, ``bool(t)``), to
NumPy and DLPack, to text (``repr``), to other dtypes and devices (``to``, ``float()``,
``type()``), copies for ``copy``/``pickle``, and ``new_*`` tensors like this one.

Layer: above creation (``new_zeros`` and the like are creation functions), ``cuda`` and
the printing module; below the functions and operators.
"""
from __future__ import annotations

import numpy as np

from ir import dtypes as dt

from . import cuda as _cuda
from ._creation import _check_format, empty, full, ones, tensor, zeros
from ._device import CPU, CudaArray, as_device
from ._dispatch import _graph_break, apply_op
from ._printing import tensor_repr
from ._state import state
from ._tape import Node, _type_name, grad_accumulator
from ._tensor_base import Tensor, _rebuild, _retype, tensor_methods


def _numpy_error(t) -> TypeError:
    return TypeError(f"can't convert {t.device} device type tensor to numpy. Use Tensor.cpu() "
                     "to copy the tensor to host memory first.")


def _dense_order(shape, strides, itemsize):
    """The dims ordered by decreasing stride when (shape, byte strides) is a permutation
    of a C-contiguous layout (a transposed or channels-last tensor), else None."""
    if len(shape) < 2 or 0 in shape:
        return None
    order = sorted(range(len(shape)), key=lambda d: -strides[d])
    if order == list(range(len(shape))):
        return None  # already C order (or not dense: the plain copy is C order anyway)
    acc = itemsize
    for d in reversed(order):
        if shape[d] == 1:
            continue
        if strides[d] != acc:
            return None
        acc *= shape[d]
    return order


def _move_data(data, dev):
    """``data`` (NumPy or CudaArray) copied to device ``dev``, keeping a dense layout's
    strides (torch's preserve_format: a transposed tensor stays transposed), else in C
    order."""
    order = _dense_order(data.shape, data.strides, data.dtype.itemsize)
    if order is not None:  # move the C-ordered permutation, then permute back
        inv = [order.index(d) for d in range(len(order))]
        moved = _move_data(data.transpose(order) if data.__class__ is np.ndarray else
                           data.view(tuple(data.shape[d] for d in order),
                                     tuple(data.strides[d] for d in order)), dev)
        if moved.__class__ is np.ndarray:
            return moved.transpose(inv)
        return moved.view(tuple(moved.shape[i] for i in inv),
                          tuple(moved.strides[i] for i in inv))
    if dev.type == "cpu":
        return data.host() if data.__class__ is CudaArray else data.copy()
    if data.__class__ is CudaArray:
        if data.device == dev:
            return data.copy()
        data = data.host()
    return CudaArray.from_host(data, dev)


class ToCopyBackward0(Node):
    """grad_fn of a copy to another device: the gradient goes back to the source's."""

    def __init__(self, src: Tensor) -> None:
        super().__init__()
        self._next = (src.grad_fn if src.grad_fn is not None else grad_accumulator(src),)
        nr = src.__dict__.get("_out_nr", 0) if src.grad_fn is not None else 0
        if nr:
            self._next_nr = [nr]
        self._device = src.device

    def apply(self, grad):
        return [grad.to(self._device)]


def _to_device(t: Tensor, dev) -> Tensor:
    """``t`` copied to device ``dev``, recorded on the tape."""
    out = Tensor._make(_move_data(t._data, dev))
    if t.requires_grad and state.grad_enabled and t.dtype.is_floating_point:
        out.grad_fn = ToCopyBackward0(t)
        out._requires_grad = True
    return out


def _rebuild_device(data, requires_grad, cls, device):
    """Unpickle a CUDA tensor: back onto its device (torch's behaviour)."""
    from . import cuda
    return _rebuild(CudaArray.from_host(data, cuda.check_device(device)) if device != "cpu"
                    else data, requires_grad, cls)


@tensor_methods
class _ConversionMethods:
    """Conversion methods of Tensor."""

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
        if self._data.__class__ is CudaArray:
            raise _numpy_error(self)
        if self.requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use "
                               "tensor.detach().numpy() instead.")
        return self._data

    def __array__(self, dtype=None, copy=None):
        """NumPy functions see the tensor's memory (no copy) unless ``dtype`` differs or
        ``copy=True``; ``copy=False`` raises ValueError when a copy would be needed, as
        NumPy 2 asks of ``__array__``."""
        a = self._data
        if a.__class__ is CudaArray:
            raise _numpy_error(self)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"Unable to avoid copy while converting a {self.dtype} "
                                 f"tensor to {np.dtype(dtype)}")
            return a.astype(dtype)
        return a.copy() if copy else a

    def __dlpack__(self, stream=None, **kwargs):
        """Export through NumPy's DLPack (versioned when the consumer asks, so the
        consumer sees writable, shared memory); a CUDA tensor through ``_dlpack``'s
        legacy capsule, after the device finished the work queued on it (kernels run on
        the default stream; ``stream=-1`` asks for no synchronisation)."""
        data = self._data
        if data.__class__ is CudaArray:
            if self.requires_grad:
                raise RuntimeError("Can't export tensors that require gradient, use "
                                   "tensor.detach()")
            if stream != -1:
                _cuda.synchronize(data.device)
            from ._dlpack import to_capsule
            return to_capsule(data, data.device.index or 0)
        if stream is not None:
            kwargs["stream"] = stream
        return data.__dlpack__(**kwargs)

    @property
    def __cuda_array_interface__(self):
        """CUDA tensors share their device memory with numba/CuPy (zero-copy)."""
        if self._data.__class__ is not CudaArray:
            raise AttributeError("Can't get __cuda_array_interface__ on non-CUDA tensor type: "
                                 f"{self.type()} If CUDA data is required use tensor.cuda() to "
                                 "copy tensor to device memory.")
        if self.requires_grad:
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires "
                               "grad. If gradients aren't required, use var.detach() to get "
                               "Variable that doesn't require grad.")
        return self._data.__cuda_array_interface__

    def __dlpack_device__(self):
        if self._data.__class__ is CudaArray:
            return (2, self._data.device.index or 0)  # kDLCUDA
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
        if self._data.__class__ is CudaArray:
            return (_rebuild_device, (self._data.host(), self.requires_grad, type(self),
                                      str(self.device)))
        return (_rebuild, (self._data.copy(), self.requires_grad, type(self)))

    # ---- dtype / device ---------------------------------------------------
    def to(self, *args, **kwargs):
        dtype = kwargs.pop("dtype", None)
        dev = kwargs.pop("device", None)
        copy = kwargs.pop("copy", False)
        kwargs.pop("non_blocking", None)
        fmt = kwargs.pop("memory_format", None)
        if fmt is not None:
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
        d = None
        if dev is not None:
            d = as_device(dev)
            if d.type == "cuda":
                d = _cuda.check_device(d)
            elif d.type != "cpu":
                raise RuntimeError(f"cannot move a tensor to {d}")
            if d == self.device:
                d = None
        out = self
        if dtype is not None and dt.as_dtype(dtype) is not self.dtype:
            out = apply_op("cast", (self,), {"dtype": dt.as_dtype(dtype)})
        elif copy and d is None:
            out = self.clone()
        if d is not None:
            _graph_break(f"Tensor.to({d})")
            out = _to_device(out, d)
        return out

    def cpu(self, memory_format=None):
        if self._data.__class__ is CudaArray:
            return _to_device(self, CPU)
        return self

    def cuda(self, device=None, non_blocking=False):
        return self.to("cuda" if device is None else device)

    def type(self, dtype=None):
        if dtype is None:
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
        return tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                      requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False, layout=None,
                  pin_memory=False):
        return zeros(*size, dtype=dtype or self.dtype, device=device or self.device,
                     requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False, layout=None,
                 pin_memory=False):
        return ones(*size, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False, layout=None,
                  pin_memory=False):
        return empty(*size, dtype=dtype or self.dtype, device=device or self.device,
                     requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False,
                 layout=None, pin_memory=False):
        return full(size, fill_value, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)
