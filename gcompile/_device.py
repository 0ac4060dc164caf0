"""torch.device, and the device checks ops share."""
from __future__ import annotations

import numpy as np


class device:
    """A device name: ``cpu`` or ``cuda[:n]``. Compares equal to its string."""

    __slots__ = ("type", "index")

    def __init__(self, type: str | device, index: int | None = None) -> None:  # noqa: A002
        if isinstance(type, device):
            self.type, self.index = type.type, type.index
            return
        if not isinstance(type, str):
            raise TypeError(f"device() expected a string, got {type!r}")
        if ":" in type:
            if index is not None:
                raise RuntimeError(f"device string {type!r} already has an index")
            type, idx = type.split(":", 1)
            try:
                index = int(idx)
            except ValueError:
                raise RuntimeError(f"Invalid device string: '{type}:{idx}'") from None
        if type not in ("cpu", "cuda", "meta"):
            raise RuntimeError(
                f"Expected one of cpu, cuda device type at start of device string: {type}")
        self.type = type
        self.index = index

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return (f"device(type='{self.type}')" if self.index is None else
                f"device(type='{self.type}', index={self.index})")

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = device(other)
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and (self.index or 0) == (other.index or 0)

    def __hash__(self) -> int:
        return hash((self.type, self.index or 0))


CPU = device("cpu")


def as_device(d) -> device:
    if d is None:
        return CPU
    if isinstance(d, device):
        return d
    if isinstance(d, int):
        return device("cuda", d)
    return device(d)


# ---------------------------------------------------------------------------
# CUDA storage
# ---------------------------------------------------------------------------
LIVE = [False]  # True once a CUDA array exists: until then dispatch skips device checks


def _mem():
    from kernels.cuda import memory
    return memory


def mixed_devices(a, b) -> RuntimeError:
    """torch's error for operands on two devices (``a``, ``b``: devices or names)."""
    return RuntimeError("Expected all tensors to be on the same device, but found at least two "
                        f"devices, {a} and {b}!")


def on(dev: device):
    """The device guard: ``dev`` current for the block (allocations, launches, copies)."""
    return _mem().on_device(dev.index)


class _Flags:
    __slots__ = ("c_contiguous", "f_contiguous", "writeable")

    def __init__(self, c: bool, f: bool) -> None:
        self.c_contiguous, self.f_contiguous, self.writeable = c, f, True

    def __getitem__(self, key: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "WRITEABLE": True}[key]


class CudaArray:
    """The storage of a CUDA tensor: a numba device array (``dev``, from the caching
    allocator, any strides and offset) with the NumPy metadata the eager core reads
    (shape, strides in bytes, dtype, flags), so shape logic, dtype plans and views run
    unchanged on it.

    The few NumPy calls the eager core makes on storage work on it too, through the
    host: reading (``np.asarray``, ``item``, ``max``) copies to the host; writing
    (``np.copyto``, ``a[idx] = v``, a ufunc's ``out=``) copies device to device or
    writes the host result back. Ops never take that road: dispatch routes CUDA tensors
    to ``kernels.cuda`` or to a logged host fallback (``_dispatch``)."""

    __slots__ = ("dev", "device", "shape", "strides", "dtype", "__weakref__")
    __array_priority__ = 2000

    def __init__(self, dev, device: device) -> None:
        self.dev = dev
        self.device = device
        self.shape = tuple(int(n) for n in dev.shape)
        self.strides = tuple(int(s) for s in dev.strides)
        self.dtype = dev.dtype
        LIVE[0] = True

    # ---- metadata ----------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def flags(self) -> _Flags:
        item = self.dtype.itemsize
        return _Flags(_dense(self.shape, self.strides, item),
                      _dense(self.shape[::-1], self.strides[::-1], item))

    @property
    def offset(self) -> int:
        """Byte offset of the first element in the allocation."""
        return _mem().offset_of(self.dev)

    @property
    def __cuda_array_interface__(self) -> dict:
        dev = self.dev
        if hasattr(dev, "_ary"):  # the simulator's arrays live in host memory
            ai = dev._ary.__array_interface__
            return {"shape": self.shape, "strides": self.strides if self.size else None,
                    "typestr": ai["typestr"], "data": ai["data"], "version": 3}
        return dev.__cuda_array_interface__

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (f"CudaArray(shape={self.shape}, strides={self.strides}, dtype={self.dtype}, "
                f"device={self.device})")

    # ---- construction ------------------------------------------------------
    @classmethod
    def from_host(cls, a, dev: device) -> CudaArray:
        """Copy host array ``a`` to a new contiguous device array."""
        with on(dev):
            return cls(_mem().from_host(np.asarray(a)), dev)

    @classmethod
    def empty(cls, shape: tuple, dtype, dev: device) -> CudaArray:
        with on(dev):
            return cls(_mem().empty(tuple(shape), np.dtype(dtype)), dev)

    def view(self, shape: tuple, strides: tuple, offset: int | None = None,
             dtype=None) -> CudaArray:
        """A device view into the same allocation (byte strides and offset)."""
        return CudaArray(_mem().view(self.dev, shape, strides,
                                     self.offset if offset is None else offset,
                                     self.dtype if dtype is None else dtype), self.device)

    def host(self) -> np.ndarray:
        """A C-contiguous host copy."""
        with on(self.device):
            return _mem().to_host(self.dev)

    def write(self, value) -> None:
        """``self[...] = value``: a device array is copied on the device (cast,
        broadcast), anything else from the host (a device array on another device too)."""
        if isinstance(value, CudaArray) and value.device != self.device:
            value = value.host()
        with on(self.device):
            if isinstance(value, CudaArray):
                src = value
                if src.shape != self.shape:
                    src = src.broadcast_to(self.shape)
                _mem().copy(self.dev, src.dev)
            else:
                _mem().write(self.dev, np.asarray(value))

    def broadcast_to(self, shape: tuple) -> CudaArray:
        shape = tuple(shape)
        pad = len(shape) - self.ndim
        if pad < 0:
            raise ValueError(f"cannot broadcast {self.shape} to {shape}")
        strides = [0] * pad
        for n, want, s in zip(self.shape, shape[pad:], self.strides):
            if n == want:
                strides.append(s)
            elif n == 1:
                strides.append(0)
            else:
                raise ValueError(f"operands could not be broadcast together with shapes "
                                 f"{self.shape} {shape}")
        return self.view(shape, tuple(strides))

    def copy(self, order: str = "C") -> CudaArray:
        out = CudaArray.empty(self.shape, self.dtype, self.device)
        out.write(self)
        return out

    def astype(self, dtype, copy: bool = True, **kwargs) -> CudaArray:
        dtype = np.dtype(dtype)
        if dtype == self.dtype and not copy:
            return self
        out = CudaArray.empty(self.shape, dtype, self.device)
        out.write(self)
        return out

    def reshape(self, *shape) -> CudaArray:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if -1 in shape:
            known = 1
            for s in shape:
                if s != -1:
                    known *= s
            shape = tuple(self.size // max(known, 1) if s == -1 else s for s in shape)
        src = self if self.flags.c_contiguous else self.copy()
        strides, acc = [], self.itemsize
        for n in reversed(shape):
            strides.append(acc)
            acc *= max(n, 1)
        return src.view(shape, tuple(reversed(strides)))

    # ---- reads through the host -------------------------------------------
    def __array__(self, dtype=None, copy=None):
        a = self.host()
        return a if dtype is None else a.astype(dtype)

    def item(self, *args):
        return self.host().item(*args)

    def tolist(self):
        return self.host().tolist()

    def __bool__(self) -> bool:
        return bool(self.host())

    def __getitem__(self, idx):
        return self.host()[_host(idx)]

    def max(self, *args, **kwargs):
        return self.host().max(*args, **kwargs)

    def min(self, *args, **kwargs):
        return self.host().min(*args, **kwargs)

    def any(self, *args, **kwargs):
        return self.host().any(*args, **kwargs)

    def all(self, *args, **kwargs):
        return self.host().all(*args, **kwargs)

    def sum(self, *args, **kwargs):
        return self.host().sum(*args, **kwargs)

    # ---- writes ------------------------------------------------------------
    def __setitem__(self, idx, value) -> None:
        """``a[idx] = value``: through a device view for basic indices (ints, slices,
        ``...``, None), else through a host copy."""
        target = self.view_by(lambda a: a[idx]) if _basic(idx) else None
        if target is not None:
            target.write(value)
            return
        h = self.host()
        h[_host(idx)] = _host(value)
        self.write(h)

    def view_by(self, fn) -> CudaArray | None:
        """The device view ``fn`` (a NumPy view function of one array) makes of this
        array, found by running it on a host array of the same layout over uninitialised
        memory: None when ``fn``'s result is not a view of its argument."""
        lo, hi = self.span()
        if hi - lo > 1 << 32:  # a dummy buffer that large is not worth it
            return None
        dummy = np.empty(hi - lo + self.itemsize, np.uint8)
        host = np.ndarray(self.shape, self.dtype, buffer=dummy, offset=self.offset - lo,
                          strides=self.strides)
        r = fn(host)
        if not isinstance(r, np.ndarray) or not np.may_share_memory(r, dummy):
            return None
        off = r.__array_interface__["data"][0] - dummy.__array_interface__["data"][0] + lo
        return self.view(r.shape, r.strides, off, r.dtype)

    def span(self) -> tuple[int, int]:
        """(lowest, highest) byte offsets of the elements in the allocation."""
        lo = hi = self.offset
        if self.size:
            for n, s in zip(self.shape, self.strides):
                if s > 0:
                    hi += (n - 1) * s
                else:
                    lo += (n - 1) * s
        return lo, hi

    def __iadd__(self, other):
        """``a += b`` (gradient accumulation): a device add when a kernel serves it."""
        if isinstance(other, CudaArray):
            try:
                from kernels.cuda import launch
            except ImportError:
                launch = None
            if other.device != self.device:
                raise mixed_devices(self.device, other.device)
            with on(self.device):
                out = None if launch is None else launch(
                    "add", {}, [self.dev, other.dev], [self.shape], [self.dtype.name])
            if out is not None:
                self.write(CudaArray(out[0], self.device))
                return self
        self.write(self.host() + _host(other))
        return self

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        """A NumPy ufunc on device arrays runs on host copies; results written to a
        device ``out`` go back to the device."""
        outs = () if out is None else out if isinstance(out, tuple) else (out,)
        if any(isinstance(o, np.ndarray) for o in outs):  # x_cpu.add_(y_cuda)
            raise mixed_devices(next(a.device for a in inputs if isinstance(a, CudaArray)),
                                "cpu")
        res = getattr(ufunc, method)(*_host(inputs), **kwargs)
        if out is None:
            return res
        results = res if isinstance(res, tuple) else (res,)
        for o, r in zip(outs, results):
            if isinstance(o, CudaArray):
                o.write(r)
            else:
                np.copyto(o, r, casting="unsafe")
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out

    def __array_function__(self, func, types, args, kwargs):
        if func is np.copyto:
            dst, src = args[0], args[1]
            if isinstance(dst, CudaArray):
                if kwargs.get("where", True) is not True:
                    h = dst.host()
                    np.copyto(h, _host(src), **kwargs)
                    src = h
                dst.write(src)
                return None
        if func in (np.may_share_memory, np.shares_memory):
            a, b = args[0], args[1]
            if not (isinstance(a, CudaArray) and isinstance(b, CudaArray)):
                return False
            return a.same_allocation(b)
        if func is np.broadcast_to and isinstance(args[0], CudaArray):
            return args[0].broadcast_to(args[1] if len(args) > 1 else kwargs["shape"])
        if func is np.ascontiguousarray and isinstance(args[0], CudaArray):
            return args[0] if args[0].flags.c_contiguous else args[0].copy()
        return func(*_host(args), **_host(kwargs))

    def same_allocation(self, other: CudaArray) -> bool:
        """Whether both point into one device allocation (a conservative overlap test)."""
        m = _mem()
        a, b = m._memory_of(self.dev), m._memory_of(other.dev)
        return a is not None and b is not None and _root_id(a) == _root_id(b)


def _basic(idx) -> bool:
    """Whether ``idx`` is a basic NumPy index (views, never copies)."""
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, slice) or
               (isinstance(i, (int, np.integer)) and not isinstance(i, bool)) for i in items)


def _dense(shape: tuple, strides: tuple, itemsize: int) -> bool:
    """C-contiguity of (shape, byte strides) by torch's rule (size-1 dims do not count)."""
    acc = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != acc:
            return False
        acc *= n
    return True


def _root_id(root) -> int:
    if isinstance(root, np.ndarray):
        return root.__array_interface__["data"][0]
    return int(root.device_pointer_value or 0)


def _host(x):
    """``x`` with every CudaArray in it (lists, tuples, dicts) copied to the host."""
    if isinstance(x, CudaArray):
        return x.host()
    if isinstance(x, tuple):
        return tuple(_host(v) for v in x)
    if isinstance(x, list):
        return [_host(v) for v in x]
    if isinstance(x, dict):
        return {k: _host(v) for k, v in x.items()}
    return x
