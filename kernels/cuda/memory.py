"""The caching device allocator: every CUDA tensor's storage and every kernel output comes
from here, so ``gcompile.cuda.memory_allocated()`` counts them all and freed blocks are
reused without a driver call (cudaMalloc/cudaFree synchronise the device and cost tens of
microseconds; a training step allocates the same sizes every iteration).

Each device has its own pool and statistics: a block is allocated in, cached for and
reused on the device that was current when it was taken (``on_device(i)`` makes device
``i`` current around a piece of work, as torch's device guard does for each op).

Blocks are cached by rounded size (512 B granules up to 1 MiB, 2 MiB granules above) and
reused on an exact rounded-size match. A block goes back to the cache when the last device
array that points into it (views included) is garbage: on a GPU through numba's own
ownership (an ``AutoFreePointer`` whose finalizer returns the raw allocation here, views
take owned references to it), under the simulator (``NUMBA_ENABLE_CUDASIM=1``, where a
device array wraps a NumPy array) through the NumPy base chain of an object that holds
the raw block. ``free`` returns a block at once for callers that know nothing else uses it.

numba.cuda is imported on first use only: importing this module costs nothing and works
without numba-cuda.
"""
from __future__ import annotations

import functools
import threading
import weakref

import numpy as np

__all__ = ["empty", "free", "foreign", "on_device", "current_index", "select", "view",
           "offset_of", "copy", "to_host", "from_host", "write",
           "is_contiguous", "memory_allocated", "max_memory_allocated",
           "memory_reserved", "reset_peak_memory_stats", "empty_cache", "is_simulator"]

_SMALL = 1 << 20  # up to 1 MiB: 512-byte granules
_SMALL_GRAIN = 512
_LARGE_GRAIN = 2 << 20

_lock = threading.Lock()
_cache: dict[tuple, list] = {}  # (device, rounded size) -> raw blocks free for reuse
_live: dict[int, tuple] = {}  # key -> (release, size, device): blocks handed out
_stats: dict[int, dict] = {}  # device -> {"allocated", "peak", "cached"} bytes
_SIM_CURRENT = [0]  # the simulator's current device (it has one; tests pretend more)


def _st(dev: int) -> dict:
    st = _stats.get(dev)
    if st is None:
        st = _stats[dev] = {"allocated": 0, "peak": 0, "cached": 0}
    return st


def _cuda():
    from numba import cuda
    return cuda


def is_simulator() -> bool:
    """Whether numba.cuda runs its simulator (``NUMBA_ENABLE_CUDASIM=1``): device arrays
    are NumPy arrays in host memory and kernels run as Python threads."""
    from numba.core import config
    return bool(config.ENABLE_CUDASIM)


def current_index() -> int:
    """The ordinal of the device current on this thread (numba's context stack)."""
    if is_simulator():
        return _SIM_CURRENT[0]
    return int(_cuda().get_current_device().id)


def select(idx: int) -> None:
    """Make device ``idx`` current on this thread (``torch.cuda.set_device``)."""
    if is_simulator():
        _SIM_CURRENT[0] = int(idx)
    else:
        _cuda().select_device(int(idx))


class on_device:
    """``with on_device(i):`` makes device ``i`` current for the block (allocations,
    kernel launches and copies go there), then restores the previous one; free when
    ``i`` is already current."""

    __slots__ = ("idx", "_cm", "_prev")

    def __init__(self, idx: int | None) -> None:
        self.idx = idx
        self._cm = None
        self._prev = None

    def __enter__(self) -> on_device:
        idx = self.idx
        if idx is None or idx == current_index():
            return self
        if is_simulator():
            self._prev = _SIM_CURRENT[0]
            _SIM_CURRENT[0] = idx
        else:
            self._cm = _cuda().gpus[idx]
            self._cm.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._prev is not None:
            _SIM_CURRENT[0] = self._prev
            self._prev = None
        elif self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(*exc)


def _round(nbytes: int) -> int:
    grain = _SMALL_GRAIN if nbytes <= _SMALL else _LARGE_GRAIN
    return max(grain, -(-nbytes // grain) * grain)


def _take(size: int, dev: int):
    """A raw block of ``size`` bytes on device ``dev`` (the current one): a cached one,
    else a new one (on a GPU, after emptying the cache once when the driver reports out
    of memory)."""
    with _lock:
        blocks = _cache.get((dev, size))
        if blocks:
            _st(dev)["cached"] -= size
            return blocks.pop()
    if is_simulator():
        return np.empty(size, np.uint8)
    ctx = _cuda().current_context()
    try:
        return ctx.memalloc(size)
    except Exception as e:  # noqa: BLE001 - CudaAPIError (out of memory) is driver-specific
        if "OUT_OF_MEMORY" not in str(e).upper():
            raise
        empty_cache(dev)
        return ctx.memalloc(size)


def _give_back(key: int, raw, size: int) -> None:
    with _lock:
        entry = _live.pop(key, None)
        _roots.pop(key, None)
        if entry is None:
            return
        dev = entry[2]
        st = _st(dev)
        st["allocated"] -= size
        _cache.setdefault((dev, size), []).append(raw)
        st["cached"] += size


def _account(key: int, release, size: int, dev: int) -> None:
    with _lock:
        _live[key] = (release, size, dev)
        st = _st(dev)
        st["allocated"] += size
        if st["allocated"] > st["peak"]:
            st["peak"] = st["allocated"]


class _SimBlock:
    """Under the simulator: exposes a raw block through ``__array_interface__``, so every
    NumPy view of the block keeps this object (and so the block's accounting) alive."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw
        self.__array_interface__ = raw.__array_interface__


_roots: dict[int, object] = {}  # GPU: blocks handed out, until their last reference goes
_next_key = iter(range(1, 1 << 62)).__next__


def _block(nbytes: int):
    """A cached block of at least ``nbytes``, as what views are cut from: a NumPy uint8
    array under the simulator, an owned device pointer on a GPU."""
    size = _round(nbytes)
    dev = current_index()
    raw = _take(size, dev)
    key = _next_key()
    if is_simulator():
        handle = _SimBlock(raw)
        handle.key = key
        _account(key, weakref.finalize(handle, _give_back, key, raw, size), size, dev)
        return np.asarray(handle)
    from numba.cuda.cudadrv.driver import AutoFreePointer
    # numba's own ownership: owned references (views included) count on the root; when
    # the last one goes the root's finalizer returns the raw block to the cache
    root = AutoFreePointer(_cuda().current_context(), raw.device_pointer, size,
                           finalizer=functools.partial(_give_back, key, raw, size))
    root.key = key
    with _lock:
        _roots[key] = root
    _account(key, root.free, size, dev)
    return root.own()


class _ForeignBlock:
    """Under the simulator: host memory another library owns, exposed to NumPy; the
    owner's ``release`` runs when the last view of it is garbage."""

    def __init__(self, ptr: int, nbytes: int, release) -> None:
        self.__array_interface__ = {"data": (ptr, False), "shape": (nbytes,),
                                    "typestr": "|u1", "version": 3}
        self._done = weakref.finalize(self, release) if release is not None else None


def foreign(ptr: int, shape: tuple, strides: tuple, dtype, release=None):
    """A device array over memory another library allocated (DLPack, the CUDA array
    interface): ``shape``/``strides`` (bytes, none negative) from device address ``ptr``
    on the current device. ``release()`` runs once no array uses the memory any more.
    Not counted by ``memory_allocated`` (torch does not count foreign memory either)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    strides = tuple(int(s) for s in strides)
    if any(s < 0 for s in strides):
        raise BufferError("a device array with negative strides cannot be shared")
    nbytes = dtype.itemsize
    for n, st in zip(shape, strides):
        if n == 0:
            nbytes = 0
            break
        nbytes += (n - 1) * st
    if nbytes == 0:  # nothing to share: an empty array of our own
        if release is not None:
            release()
        return _cuda().device_array(shape, dtype)
    if is_simulator():
        root = np.asarray(_ForeignBlock(ptr, nbytes, release))
        arr = np.ndarray(shape, dtype, buffer=root, offset=0, strides=strides)
        return _cuda().simulator.cudadrv.devicearray.FakeCUDAArray(arr)
    from numba.cuda.cudadrv import driver
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    mem = driver.MemoryPointer(_cuda().current_context(), driver.binding.CUdeviceptr(ptr),
                               size=nbytes, finalizer=release)
    return DeviceNDArray(shape, strides, dtype, gpu_data=mem)


def _contiguous(shape: tuple, itemsize: int) -> tuple:
    strides, acc = [], itemsize
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(strides))


def empty(shape: tuple, dtype) -> object:
    """An uninitialised C-contiguous device array of ``shape`` and ``dtype`` from the
    cache (numba's ``DeviceNDArray``, or the simulator's ``FakeCUDAArray``)."""
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    n = 1
    for s in shape:
        n *= s
    return view(None, shape, _contiguous(shape, dtype.itemsize), 0, dtype, n * dtype.itemsize)


def view(base, shape: tuple, strides: tuple, offset: int, dtype, nbytes: int | None = None):
    """A device array of ``shape``/``strides`` (bytes) starting ``offset`` bytes into the
    allocation behind device array ``base`` (None: a new block of ``nbytes``). Views keep
    their block alive; no data moves."""
    cuda = _cuda()
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    strides = tuple(int(s) for s in strides)
    if base is None:
        if nbytes == 0:
            return cuda.device_array(shape, dtype)
        mem = _block(nbytes)
    else:
        mem = _memory_of(base)
        if mem is None:  # an empty array: nothing to point into
            return cuda.device_array(shape, dtype)
    if is_simulator():
        arr = np.ndarray(shape, dtype, buffer=mem, offset=offset, strides=strides)
        return cuda.simulator.cudadrv.devicearray.FakeCUDAArray(arr)
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    return DeviceNDArray(shape, strides, dtype, gpu_data=mem.view(offset))


def _memory_of(arr):
    """The whole allocation behind device array ``arr``, what ``view`` cuts from (None
    for an empty array)."""
    if is_simulator():
        root = arr._ary
        while isinstance(root.base, np.ndarray):
            root = root.base
        if not root.size:
            return None
        if root.dtype != np.uint8 or root.ndim != 1:  # not from this allocator
            if not root.flags.c_contiguous:
                raise ValueError("cannot view a non-contiguous foreign device array")
            root = np.frombuffer(root.data, np.uint8)
        return root
    if not arr.size:
        return None
    return arr.gpu_data.owner


def offset_of(arr) -> int:
    """Byte offset of device array ``arr``'s first element in its allocation."""
    root = _memory_of(arr)
    if root is None:
        return 0
    if is_simulator():
        return arr._ary.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return int(arr.gpu_data.device_pointer_value or 0) - int(root.device_pointer_value or 0)


def free(arr) -> None:
    """Return ``arr``'s block to the cache now. Only for an array the caller knows no one
    else uses (views included): its memory will be handed out again."""
    if is_simulator():
        a = arr._ary
        while isinstance(a, np.ndarray):
            a = a.base
        key = getattr(a, "key", None)
    else:
        key = getattr(arr.gpu_data.owner, "key", None) if arr.size else None
    with _lock:
        entry = _live.get(key)
    if entry is not None:
        entry[0]()


def _dev(device: int | None) -> int:
    return current_index() if device is None else int(device)


def memory_allocated(device: int | None = None) -> int:
    """Bytes in blocks handed out and still referenced on ``device`` (default: the
    current one), in rounded sizes as torch counts."""
    return _st(_dev(device))["allocated"]


def max_memory_allocated(device: int | None = None) -> int:
    """The peak of ``memory_allocated`` since start or ``reset_peak_memory_stats``."""
    return _st(_dev(device))["peak"]


def memory_reserved(device: int | None = None) -> int:
    """Bytes held by the allocator on ``device``: handed out plus cached for reuse."""
    st = _st(_dev(device))
    return st["allocated"] + st["cached"]


def reset_peak_memory_stats(device: int | None = None) -> None:
    """Restart the peak from the bytes allocated now."""
    with _lock:
        st = _st(_dev(device))
        st["peak"] = st["allocated"]


def empty_cache(device: int | None = None) -> None:
    """Release ``device``'s cached (unused) blocks to the driver (every device's when
    None); blocks in use stay."""
    with _lock:
        keys = [k for k in _cache if device is None or k[0] == device]
        blocks = [_cache.pop(k) for k in keys]
        for st_dev in {k[0] for k in keys}:
            _st(st_dev)["cached"] = 0
    blocks.clear()  # the raw allocations' own finalizers free them


# ---------------------------------------------------------------------------
# copies: device <-> host, and device -> device for any strides (and dtype casts)
# ---------------------------------------------------------------------------
_COPY_KERNEL = None
cuda = None  # numba.cuda, bound on first kernel build
_THREADS = 256


def _copy_kernel():
    """One grid-stride kernel for every strided copy: each thread turns flat indices into
    element offsets in the two allocations (viewed as flat typed arrays), casting on the
    store. Compiled per (dtypes, rank) by numba."""
    global _COPY_KERNEL, cuda
    if _COPY_KERNEL is None:
        cuda = _cuda()  # a module global: the simulator swaps the kernel's globals

        @cuda.jit
        def kernel(dst, dst_off, dst_st, src, src_off, src_st, shape, n):
            i = cuda.grid(1)
            step = cuda.gridsize(1)
            nd = len(shape)
            while i < n:
                rem = i
                do = dst_off
                so = src_off
                for j in range(nd):
                    k = nd - 1 - j
                    c = rem % shape[k]
                    rem //= shape[k]
                    do += c * dst_st[k]
                    so += c * src_st[k]
                dst[do] = src[so]
                i += step

        _COPY_KERNEL = kernel
    return _COPY_KERNEL


def _alloc_nbytes(root) -> int:
    return int(root.size)


def _flat(arr):
    """(1-D typed view of the whole allocation behind ``arr``, ``arr``'s offset and
    strides in elements)."""
    item = arr.dtype.itemsize
    off = offset_of(arr)
    if off % item or any(s % item for s in arr.strides):
        raise NotImplementedError("a device copy of an array whose offset or strides are not "
                                  "multiples of its element size is not supported")
    root = _memory_of(arr)
    n = _alloc_nbytes(root) // item
    flat = view(arr, (n,), (item,), 0, arr.dtype)
    return flat, off // item, tuple(s // item for s in arr.strides)


def copy(dst, src, *, kernel: bool | None = None) -> None:
    """``dst[...] = src`` on the device, any strides (``src`` may broadcast with 0 strides),
    casting to ``dst``'s dtype. Under the simulator the arrays are host memory and NumPy
    copies them, unless ``kernel=True`` asks for the device kernel (tests run it)."""
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"copy: shapes differ, {tuple(dst.shape)} and {tuple(src.shape)}")
    n = 1
    for s in dst.shape:
        n *= s
    if n == 0:
        return
    if kernel is None:
        kernel = not is_simulator()
    if not kernel:
        np.copyto(dst._ary, src._ary, casting="unsafe")
        return
    dflat, doff, dst_st = _flat(dst)
    sflat, soff, src_st = _flat(src)
    shape = tuple(int(s) for s in dst.shape) or (1,)
    if not dst_st:
        dst_st, src_st = (0,), (0,)
    threads = 32 if is_simulator() else _THREADS
    blocks = 1 if is_simulator() else min(-(-n // threads), 4096)
    _copy_kernel()[blocks, threads](dflat, doff, dst_st, sflat, soff, src_st, shape, n)


def is_contiguous(arr) -> bool:
    """C-contiguity by torch's rule (size-1 dimensions' strides do not matter)."""
    acc = arr.dtype.itemsize
    for n, s in zip(reversed(arr.shape), reversed(arr.strides)):
        if n != 1 and s != acc:
            return False
        acc *= n
    return True


def to_host(arr) -> np.ndarray:
    """A C-contiguous host copy of device array ``arr`` (any strides)."""
    if is_simulator():
        return np.array(arr._ary, order="C")
    if not arr.size:
        return np.empty(arr.shape, arr.dtype)
    if not is_contiguous(arr):
        tmp = empty(arr.shape, arr.dtype)
        copy(tmp, arr)
        arr = tmp
    out = np.empty(arr.shape, arr.dtype)
    arr.copy_to_host(out)
    return out


def from_host(a: np.ndarray):
    """A new C-contiguous device array holding ``a``'s values."""
    a = np.asarray(a)
    if not a.flags.c_contiguous:
        a = a.copy()  # (np.ascontiguousarray makes 0-d arrays 1-d)
    dev = empty(a.shape, a.dtype)
    if a.size:
        dev.copy_to_device(a)
    return dev


def write(dst, a: np.ndarray) -> None:
    """``dst[...] = a`` from host memory (``a`` broadcasts to ``dst``'s shape, casts)."""
    a = np.asarray(a)
    if is_simulator():
        np.copyto(dst._ary, a, casting="unsafe")
        return
    if not dst.size:
        return
    if a.shape == tuple(dst.shape) and a.dtype == dst.dtype and is_contiguous(dst):
        dst.copy_to_device(a if a.flags.c_contiguous else a.copy())
        return
    src = from_host(a)
    if src.shape != tuple(dst.shape):
        strides = (0,) * (len(dst.shape) - src.ndim) + tuple(
            0 if n == 1 else s for n, s in zip(src.shape, src.strides))
        src = view(src, dst.shape, strides, offset_of(src), src.dtype)
    copy(dst, src)
