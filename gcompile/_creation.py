"""Tensor creation: from data, filled, ranges, random; Python operands made tensors.

Layer: above the dispatcher, ``_random`` and ``cuda`` (device checks); the conversion
methods, autograd and the functions use it."""
from __future__ import annotations

import math
import numbers

import numpy as np

from ir import dtypes as dt

from . import cuda
from ._device import CudaArray, as_device
from ._device import device as device_cls
from ._dispatch import _SCALARS, apply_op, check_values
from ._interop import from_dlpack_array, shared_array
from ._random import _gen, random_tensor
from ._symshape import SymInt
from ._state import state
from ._tensor_base import Tensor, _sizes, _to_numpy


def _check_device(device):
    """The CUDA device ``device`` names (checked: CUDA usable, index valid), or None
    for the CPU."""
    if device is None:
        return None
    d = as_device(device)
    if d.type == "cuda":
        return cuda.check_device(d)
    if d.type != "cpu":
        raise RuntimeError(f"cannot create a tensor on {d}")
    return None


def _finish(arr, requires_grad=False, device=None):
    d = _check_device(device)
    t = Tensor._make(arr if d is None else CudaArray.from_host(arr, d))
    if requires_grad:
        t.requires_grad = True
    return t


def _finish_op(t, requires_grad=False, device=None):
    d = _check_device(device)
    if d is not None:
        t = Tensor._make(CudaArray.from_host(t._data, d))
    if requires_grad:
        t.requires_grad = True
    return t


def _like_device(input, device):
    """*_like's device: the input's unless given (torch's rule)."""
    return input.device if device is None and input._data.__class__ is CudaArray else device


def _symbolic(shape) -> bool:
    return any(isinstance(d, SymInt) for d in shape)


def _sym_full(shape, value, d, requires_grad=False, device=None):
    """A tensor whose size is a traced dynamic size: the graph makes it at run time
    at the call's size (``ir/ops/creation.py``) instead of baking in a constant."""
    return _finish_op(apply_op("full", (), {"shape": tuple(shape), "value": value,
                                            "dtype": dt.as_dtype(d)}), requires_grad, device)


def _infer_dtype(data):
    """torch's dtype for nested Python data: bool < int64 < default float."""
    kind = -1  # no element seen yet: an empty list is a float tensor in torch
    stack = [data]
    while stack:
        x = stack.pop()
        if isinstance(x, Tensor):
            kind = max(kind, dt.category(x.dtype))
            if x.dtype.kind == "f":
                return None if x.dtype is dt.get_default_dtype() else x.dtype
        elif isinstance(x, bool) or isinstance(x, np.bool_):
            kind = max(kind, dt.category(dt.bool_))
        elif isinstance(x, (int, np.integer)):
            kind = max(kind, dt.category(dt.int64))
        elif isinstance(x, (float, np.floating)):
            kind = dt.category(dt.float64)
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        else:
            raise TypeError(f"new(): invalid data type '{type(x).__name__}'")
    if kind == -1:
        return dt.get_default_dtype()
    return dt.category_dtype(kind)


def tensor(data, *, dtype=None, device=None, requires_grad=False, pin_memory=False):
    """Copy ``data`` into a new leaf tensor (torch.tensor). Also takes torch tensors,
    JAX arrays and anything with ``__array_interface__`` or ``__dlpack__``."""
    if not isinstance(data, (Tensor, np.ndarray)):
        shared = shared_array(data)
        if shared is not None:
            data = shared
    if isinstance(data, Tensor):
        if state.tracer is not None:
            # a copy of a tensor the trace computed: recorded (a NumPy copy would be
            # baked into the plan as a constant, stale on the next call)
            out = data.detach().clone()
            if dtype is not None:
                out = out.to(dt.as_dtype(dtype))
            return out.requires_grad_(requires_grad) if requires_grad else out
        src = data._data
        if src.__class__ is CudaArray:  # stays on its device unless told otherwise
            device = device if device is not None else src.device
            src = src.host()
        arr = np.array(src, copy=True)
        if dtype is not None:
            arr = arr.astype(dt.as_dtype(dtype).np)
        return _finish(arr, requires_grad, device)
    if isinstance(data, np.ndarray):
        d = dt.as_dtype(dtype) if dtype is not None else dt.from_numpy(data.dtype)
        return _finish(np.array(data, dtype=d.np, copy=True), requires_grad, device)
    if dtype is None:
        if isinstance(data, np.generic):
            d = dt.from_numpy(data.dtype)
        else:
            d = _infer_dtype(data) or dt.get_default_dtype()
    else:
        d = dt.as_dtype(dtype)
    try:
        arr = np.array(_to_numpy(data), dtype=d.np)
    except ValueError as e:
        raise ValueError(f"tensor(): could not build a tensor from the data: {e}") from None
    if arr.dtype == object:
        raise ValueError("tensor(): expected a sequence of numbers with a regular shape")
    return _finish(arr, requires_grad, device)


def _wrap_scalar_or_tensor(x):
    """An operand of a Tensor operator as ``apply_op`` takes it: tensors and Python
    numbers as they are, NumPy scalars as Python numbers, arrays and lists as tensors."""
    if isinstance(x, Tensor) or isinstance(x, _SCALARS):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, SymInt):  # a traced size used as a number (the tracer lifts it)
        return x
    if isinstance(x, (np.ndarray, list, tuple)):
        return tensor(x)
    if isinstance(x, numbers.Number):
        return float(x)
    raise TypeError(f"unsupported operand type {type(x).__name__}")


def as_tensor(data, dtype=None, device=None):
    """Share memory with ``data`` when it already has the right dtype: NumPy arrays,
    torch tensors (CPU), JAX arrays, ``__array_interface__`` and DLPack producers."""
    if not isinstance(data, (Tensor, np.ndarray)):
        shared = shared_array(data)
        if shared is not None:
            data = shared
    if isinstance(data, Tensor):
        out = data if dtype is None else data.to(dtype)
        return out if device is None else out.to(device)
    if isinstance(data, np.ndarray):
        d = dt.as_dtype(dtype) if dtype is not None else dt.from_numpy(data.dtype)
        arr = data if data.dtype == d.np else data.astype(d.np)
        return _finish(arr, device=device)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(ndarray) -> Tensor:
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(ndarray).__name__})")
    dt.from_numpy(ndarray.dtype)
    return Tensor._make(ndarray)


def from_dlpack(ext) -> Tensor:
    """Share memory with any DLPack producer (a Tensor, NumPy array, torch tensor, JAX
    array, ...) or a legacy DLPack capsule, without copying."""
    if isinstance(ext, Tensor):
        return Tensor._make(ext._data)
    from . import _dlpack
    dev = _dlpack.capsule_device(ext)
    if dev is None and hasattr(ext, "__dlpack_device__") and hasattr(ext, "__dlpack__"):
        dev = tuple(ext.__dlpack_device__())
        if dev[0] == _dlpack.KDL_CUDA:
            cuda.check_device(device_cls("cuda", int(dev[1])))
            ext = ext.__dlpack__(stream=1)  # gcompile launches on the legacy default stream
    if dev is not None and dev[0] == _dlpack.KDL_CUDA:
        idx, arr = _dlpack.from_capsule(ext)
        return Tensor._make(CudaArray(arr, device_cls("cuda", idx)))
    return from_numpy(from_dlpack_array(ext))


def _dtype(dtype, default=None):
    if dtype is None:
        return default or dt.get_default_dtype()
    return dt.as_dtype(dtype)


class memory_format:  # noqa: N801 - torch's name
    """A memory-format tag (torch.contiguous_format, channels_last...). Tensors here are
    always laid out row-major; the tags are accepted so programs that pass them run."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"torch.{self.name}"


contiguous_format = memory_format("contiguous_format")
preserve_format = memory_format("preserve_format")
channels_last = memory_format("channels_last")
channels_last_3d = memory_format("channels_last_3d")


def _check_format(fmt) -> None:
    if fmt is not None and not isinstance(fmt, memory_format):
        raise TypeError(f"memory_format must be torch.memory_format, not {type(fmt).__name__}")


def _shape_arg(size, kw_size, fn: str):
    """The size from positional arguments or ``size=`` (never both)."""
    if kw_size is not None:
        if size:
            raise TypeError(f"{fn}() got multiple values for argument 'size'")
        size = (kw_size,)
    return _sizes(size)


def empty(*size, dtype=None, device=None, requires_grad=False, out=None, layout=None,
          pin_memory=False, memory_format=None, **kw):
    """Uninitialised tensor (``size=`` accepted as a keyword, as torch)."""
    sz = _shape_arg(size, _size_kw(kw, "empty"), "empty")
    _check_format(memory_format)
    d = _check_device(device)
    if d is not None:  # uninitialised device memory: nothing to copy
        return _finish_op(Tensor._make(CudaArray.empty(sz, _dtype(dtype).np, d)), requires_grad)
    return _finish(np.empty(sz, _dtype(dtype).np), requires_grad, device)


def _size_kw(kw: dict, fn: str):
    """torch's ``size=`` keyword; any other unknown keyword is a TypeError, as in torch."""
    kw = dict(kw)
    size = kw.pop("size", None)
    if kw:
        name = next(iter(kw))
        raise TypeError(f"{fn}() got an unexpected keyword argument '{name}'")
    return size


def zeros(*size, dtype=None, device=None, requires_grad=False, out=None, layout=None,
          pin_memory=False, **kw):
    shape = _shape_arg(size, _size_kw(kw, "zeros"), "zeros")
    if out is None and _symbolic(shape):
        return _sym_full(shape, 0, _dtype(dtype), requires_grad, device)
    arr = np.zeros(shape, _dtype(dtype).np)
    if out is not None:
        out._data = arr
        return out
    return _finish(arr, requires_grad, device)


def ones(*size, dtype=None, device=None, requires_grad=False, out=None, layout=None,
         pin_memory=False, **kw):
    shape = _shape_arg(size, _size_kw(kw, "ones"), "ones")
    if out is None and _symbolic(shape):
        return _sym_full(shape, 1, _dtype(dtype), requires_grad, device)
    arr = np.ones(shape, _dtype(dtype).np)
    if out is not None:
        out._data = arr
        return out
    return _finish(arr, requires_grad, device)


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False, out=None,
         layout=None, pin_memory=False):
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if dtype is None:
        dtype = dt.scalar_dtype(fill_value) if isinstance(fill_value, (bool, int)) else \
            dt.get_default_dtype()
    shape = _sizes((size,))
    if out is None and _symbolic(shape):
        return _sym_full(shape, fill_value, _dtype(dtype), requires_grad, device)
    arr = np.full(shape, fill_value, _dtype(dtype).np)
    if out is not None:
        out._data = arr
        return out
    return _finish(arr, requires_grad, device)


def _like(input, dtype):
    return dt.as_dtype(dtype) if dtype is not None else input.dtype


def empty_like(input, *, dtype=None, device=None, requires_grad=False, layout=None,
               pin_memory=False, memory_format=None):
    _check_format(memory_format)
    device = _like_device(input, device)
    return _finish(np.empty(input.shape, _like(input, dtype).np), requires_grad, device)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False, layout=None,
               pin_memory=False, memory_format=None):
    _check_format(memory_format)
    device = _like_device(input, device)
    if _symbolic(input.shape):
        return _sym_full(input.shape, 0, _like(input, dtype), requires_grad, device)
    return _finish(np.zeros(input.shape, _like(input, dtype).np), requires_grad, device)


def ones_like(input, *, dtype=None, device=None, requires_grad=False, layout=None,
              pin_memory=False, memory_format=None):
    _check_format(memory_format)
    device = _like_device(input, device)
    if _symbolic(input.shape):
        return _sym_full(input.shape, 1, _like(input, dtype), requires_grad, device)
    return _finish(np.ones(input.shape, _like(input, dtype).np), requires_grad, device)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False, layout=None,
              pin_memory=False, memory_format=None):
    _check_format(memory_format)
    device = _like_device(input, device)
    return _finish(np.full(input.shape, fill_value, _like(input, dtype).np), requires_grad, device)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    return _finish(np.eye(n, n if m is None else m, dtype=_dtype(dtype).np), requires_grad,
                   device)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    vals = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    start, end, step = vals
    if any(isinstance(v, SymInt) for v in vals) and all(
            isinstance(v, (int, SymInt)) for v in vals) and dtype is None:
        # a traced dynamic size: the graph makes it at run time (ir/ops/creation.py)
        if step == 0:
            raise RuntimeError("arange: step must be nonzero")
        return _finish_op(apply_op("arange", (), {"start": start, "end": end, "step": step,
                                                  "dtype": dt.int64}), requires_grad, device)
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(f"arange: upper bound and larger bound inconsistent with step sign "
                           f"(start={start}, end={end}, step={step})")
    if dtype is None:
        dtype = dt.int64 if all(isinstance(v, int) for v in vals) else dt.get_default_dtype()
    d = dt.as_dtype(dtype)
    n = max(int(math.ceil((end - start) / step)), 0)
    if d.is_floating_point:
        arr = (start + np.arange(n, dtype=np.float64) * step).astype(d.np)
    else:
        arr = np.arange(start, start + n * step, step, dtype=np.float64)[:n].astype(d.np) \
            if not all(isinstance(v, int) for v in vals) else \
            np.arange(start, end, step, dtype=d.np)
    return _finish(arr, requires_grad, device)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    d = _dtype(dtype)
    return _finish(np.linspace(start, end, steps, dtype=np.float64).astype(d.np), requires_grad,
                   device)


def logspace(start, end, steps, base=10.0, *, dtype=None, device=None, requires_grad=False):
    d = _dtype(dtype)
    return _finish(np.logspace(start, end, steps, base=base).astype(d.np), requires_grad, device)


# ---- random ------------------------------------------------------------------
def _float_dtype(dtype, fn):
    d = _dtype(dtype)
    if not d.is_floating_point:
        raise RuntimeError(f"\"{fn}\" not implemented for '{d.scalar_name}' (it needs a "
                           f"floating-point dtype, got {d})")
    return d


def _sample(kind, size, d, generator, requires_grad, device):
    # through the registry's random ops: a compiled function draws fresh samples per call;
    # on CUDA drawn on the host (the same generator, so the same values) and copied
    t = _finish_op(random_tensor(kind, _sizes(size), d, generator), False, device)
    return t.requires_grad_() if requires_grad else t


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False, out=None,
         layout=None, pin_memory=False, **kw):
    d = _float_dtype(dtype, "check_uniform_bounds")
    shape = _shape_arg(size, _size_kw(kw, "rand"), "rand")
    return _into(out, _sample("uniform", shape, d, generator, requires_grad, device))


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False, out=None,
          layout=None, pin_memory=False, **kw):
    d = _float_dtype(dtype, "normal_kernel_cpu")
    shape = _shape_arg(size, _size_kw(kw, "randn"), "randn")
    return _into(out, _sample("normal", shape, d, generator, requires_grad, device))


def _into(out, t):
    """torch's out=: the result written into ``out`` (resized), which is returned."""
    if out is None:
        return t
    out._data = t._data.astype(out.dtype.np)
    return out


def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None,
            requires_grad=False):
    if size is None:
        if isinstance(high, (tuple, list)):
            size, high = high, None
        else:
            raise TypeError("randint() missing required argument 'size'")
    if high is None:
        low, high = 0, low
    if low >= high:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= "
                           f"to={high}")
    d = _dtype(dtype, dt.int64)
    arr = _gen(generator).integers(low, high, _sizes((size,))).astype(d.np)
    return _finish(arr, requires_grad, device)


def randint_like(input, low=0, high=None, *, generator=None, dtype=None, device=None):
    if high is None:
        low, high = 0, low
    return randint(low, high, tuple(input.shape), generator=generator, dtype=dtype or input.dtype,
                   device=_like_device(input, device))


def rand_like(input, *, generator=None, dtype=None, device=None):
    return rand(tuple(input.shape), generator=generator, dtype=dtype or input.dtype,
                device=_like_device(input, device))


def randn_like(input, *, generator=None, dtype=None, device=None):
    return randn(tuple(input.shape), generator=generator, dtype=dtype or input.dtype,
                 device=_like_device(input, device))


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False):
    d = _dtype(dtype, dt.int64)
    return _finish(_gen(generator).permutation(n).astype(d.np), requires_grad, device)


def _on_host(fn, *tensors):
    """CUDA operands of a host-drawn random function: drawn from host copies, returned
    on their device (None: no CUDA operand)."""
    dev = next((t.device for t in tensors if isinstance(t, Tensor) and t.is_cuda), None)
    if dev is None:
        return None
    out = fn(*[t.cpu() if isinstance(t, Tensor) else t for t in tensors])
    return out.to(dev)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, out=None):
    moved = _on_host(lambda m, s: normal(m, s, size, generator=generator, dtype=dtype),
                     mean, std)
    if moved is not None:
        return moved
    rng = _gen(generator)
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        m = mean._data if isinstance(mean, Tensor) else mean
        s = std._data if isinstance(std, Tensor) else std
        if np.any(np.asarray(s) < 0):
            raise RuntimeError("normal expects all elements of std >= 0.0")
        shape = np.broadcast_shapes(np.shape(m), np.shape(s))
        ref = mean if isinstance(mean, Tensor) else std
        arr = (m + s * rng.standard_normal(shape)).astype(ref.dtype.np)
        return Tensor._make(arr)
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    if size is None:
        raise TypeError("normal() with float mean and std needs a size")
    d = _float_dtype(dtype, "normal")
    return Tensor._make((mean + std * rng.standard_normal(_sizes((size,)))).astype(d.np))


def bernoulli(input, p=None, *, generator=None):
    """1 with probability ``p`` (or each element of ``input``), else 0; in ops, so a
    compiled function draws at run time and checks the probabilities every call."""
    probs = input if p is None else apply_op("full_like", (input,), {"value": float(p),
                                                                      "dtype": None})
    if not probs.dtype.is_floating_point:
        probs = probs.to(dt.get_default_dtype())
    probs = check_values(probs, "range", low=0.0, high=1.0,
                         message="bernoulli: all probabilities must be in [0, 1] (got {bad})")
    u = random_tensor("uniform", tuple(input.shape), probs.dtype, generator)
    if input.is_cuda:  # drawn on the host, compared on the device
        u = u.to(input.device)
    return apply_op("cast", (apply_op("lt", (u, probs)),), {"dtype": input.dtype})


def multinomial(input, num_samples, replacement=False, *, generator=None):
    moved = _on_host(lambda x: multinomial(x, num_samples, replacement, generator=generator),
                     input)
    if moved is not None:
        return moved
    p = input._data.astype(np.float64)
    if p.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got shape "
                           f"{tuple(input.shape)}")
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or "
                           "element < 0")
    rows = p.reshape(-1, p.shape[-1])
    rng = _gen(generator)
    out = np.empty((rows.shape[0], num_samples), np.int64)
    for i, row in enumerate(rows):
        s = row.sum()
        if s <= 0:
            raise RuntimeError("multinomial: invalid multinomial distribution (sum of "
                               "probabilities <= 0)")
        if not replacement and num_samples > np.count_nonzero(row):
            raise RuntimeError("multinomial: cannot sample n_sample > prob_dist.size(-1) samples "
                               "without replacement")
        out[i] = rng.choice(row.size, num_samples, replace=replacement, p=row / s)
    return Tensor._make(out.reshape(p.shape[:-1] + (num_samples,)))


def poisson(input, generator=None):
    moved = _on_host(lambda x: poisson(x, generator), input)
    if moved is not None:
        return moved
    return Tensor._make(_gen(generator).poisson(input._data).astype(input.dtype.np))


# in-place random fills, as methods
def _uniform_(self, a=0.0, b=1.0, *, generator=None):
    return _fill_random(self, _gen(generator).uniform(a, b, self.shape))


def _normal_(self, mean=0.0, std=1.0, *, generator=None):
    return _fill_random(self, mean + std * _gen(generator).standard_normal(self.shape))


def _bernoulli_(self, p=0.5, *, generator=None):
    probs = p._data if isinstance(p, Tensor) else p
    return _fill_random(self, _gen(generator).random(self.shape) < probs)


def _random_(self, from_=0, to=None, *, generator=None):
    if to is None:
        from_, to = 0, (from_ if from_ else (2 ** 24 if self.dtype.is_floating_point else
                                             np.iinfo(self.dtype.np).max))
    return _fill_random(self, _gen(generator).integers(from_, to, self.shape))


def _exponential_(self, lambd=1.0, *, generator=None):
    return _fill_random(self, _gen(generator).exponential(1.0 / lambd, self.shape))


def _fill_random(self, values):
    self._check_inplace()
    self._data[...] = values
    self._vbox[0] += 1
    if state.tracer is not None:
        state.tracer.graph_break("random in-place fill")
    return self


Tensor.uniform_ = _uniform_
Tensor.normal_ = _normal_
Tensor.bernoulli_ = _bernoulli_
Tensor.random_ = _random_
Tensor.exponential_ = _exponential_
Tensor.bernoulli = lambda self, p=None, *, generator=None: bernoulli(self, p, generator=generator)
Tensor.multinomial = lambda self, num_samples, replacement=False, *, generator=None: multinomial(
    self, num_samples, replacement, generator=generator)


# ---- legacy typed constructors: torch.FloatTensor(2, 3), torch.LongTensor([1, 2]) ----------
class _LegacyMeta(type):
    """isinstance(t, torch.FloatTensor) is a dtype check, as in torch."""

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, Tensor) and obj.dtype is cls._dtype


def _legacy(name: str, dtype) -> type:
    def __new__(cls, *args, device=None):  # noqa: N807
        if not args:
            return empty(0, dtype=dtype, device=device)
        if len(args) == 1 and isinstance(args[0], Tensor):
            return args[0].to(dtype)
        if all(isinstance(a, int) and not isinstance(a, bool) for a in args) or (
                len(args) == 1 and type(args[0]).__name__ == "Size"):
            return empty(*args, dtype=dtype, device=device)  # uninitialised, of that shape
        if len(args) == 1:
            return tensor(args[0], dtype=dtype, device=device)
        raise TypeError(f"{name}(): expected sizes or one sequence of data, got {args!r}")
    return _LegacyMeta(name, (), {"__new__": __new__, "_dtype": dtype,
                                  "__doc__": f"torch.{name}: a {dtype.name} tensor from sizes "
                                             "or data (legacy constructor)."})


FloatTensor = _legacy("FloatTensor", dt.float32)
DoubleTensor = _legacy("DoubleTensor", dt.float64)
HalfTensor = _legacy("HalfTensor", dt.float16)
BFloat16Tensor = _legacy("BFloat16Tensor", dt.bfloat16)
LongTensor = _legacy("LongTensor", dt.int64)
IntTensor = _legacy("IntTensor", dt.int32)
ShortTensor = _legacy("ShortTensor", dt.int16)
CharTensor = _legacy("CharTensor", dt.int8)
ByteTensor = _legacy("ByteTensor", dt.uint8)
BoolTensor = _legacy("BoolTensor", dt.bool_)
