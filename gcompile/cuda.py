"""torch.cuda: devices, streams, events and the caching allocator's statistics, on
numba.cuda (the ``[cuda]`` extra installs numba-cuda).

Under numba's simulator (``NUMBA_ENABLE_CUDASIM=1``) numba reports one device, so
``is_available()`` is True and CUDA tensors work (slowly: device memory is host memory
and kernels run as Python threads); the test suite runs that way on machines without a
GPU. Without numba-cuda, or with it but without a driver or a device, ``is_available()``
is False and making a CUDA tensor raises a RuntimeError that says which.
"""
from __future__ import annotations

import functools
import time

from ._device import _mem, as_device
from ._device import device as _device_cls

__all__ = ["is_available", "device_count", "current_device", "set_device", "synchronize",
           "Event", "Stream", "current_stream", "default_stream", "memory_allocated",
           "max_memory_allocated", "memory_reserved", "reset_peak_memory_stats",
           "empty_cache", "get_device_name", "get_device_capability", "manual_seed",
           "manual_seed_all", "is_initialized", "unavailable_reason", "get_device_properties",
           "mem_get_info", "device"]


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[bool, str]:
    """(available, why not): numba-cuda installed, a driver found, a device present."""
    try:
        from numba import cuda
    except ImportError:
        return False, ("numba-cuda is not installed (pip install 'gcompile[cuda]' installs "
                       "it)")
    try:
        ok = bool(cuda.is_available())
    except Exception as e:  # noqa: BLE001 - driver errors vary by platform
        return False, f"Found no NVIDIA driver on your system ({type(e).__name__}: {e})"
    if ok:
        return True, ""
    try:
        n = len(cuda.gpus)  # raises without a driver
    except Exception as e:  # noqa: BLE001
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        said = " ".join(lines[:2]) if lines else type(e).__name__
        return False, f"Found no NVIDIA driver on your system: numba.cuda says: {said}"
    if n == 0:
        return False, "No CUDA GPUs are available"
    return False, "numba.cuda reports the CUDA driver or toolkit unusable"


def is_available() -> bool:
    """True when numba.cuda finds a usable device (or runs its simulator)."""
    return _probe()[0]


def unavailable_reason() -> str:
    """Why CUDA cannot be used here ('' when it can)."""
    return _probe()[1]


def _cuda():
    from numba import cuda
    return cuda


def _simulator() -> bool:
    from kernels.cuda.memory import is_simulator
    return is_simulator()


def is_initialized() -> bool:
    return is_available()


def device_count() -> int:
    if not is_available():
        return 0
    return len(_cuda().gpus)


def current_device() -> int:
    _require()
    return _mem().current_index()


def set_device(device) -> None:
    """Make ``device`` (an index, 'cuda:N' or a device) the current one on this thread."""
    d = as_device(device)
    if d.type != "cuda":
        return
    _mem().select(check_device(d).index)


def _require() -> None:
    ok, why = _probe()
    if not ok:
        raise RuntimeError(why)


def check_device(d) -> _device_cls:
    """``d`` as a concrete CUDA device (``cuda`` -> ``cuda:<current>``), after checking
    that CUDA is usable and the index exists."""
    _require()
    d = as_device(d)
    idx = _mem().current_index() if d.index is None else d.index
    if idx < 0 or idx >= device_count():
        raise RuntimeError("CUDA error: invalid device ordinal")
    return _device_cls("cuda", idx)


def synchronize(device=None) -> None:
    """Wait for every kernel and copy on the device to finish."""
    if is_available():
        with _mem().on_device(_index(device)):
            _cuda().synchronize()


def get_device_name(device=None) -> str:
    _require()
    if _simulator():
        return "numba.cuda simulator"
    with _mem().on_device(_index(device)):
        name = _cuda().get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def get_device_capability(device=None) -> tuple[int, int]:
    _require()
    with _mem().on_device(_index(device)):
        return tuple(_cuda().get_current_device().compute_capability)


class _DeviceProperties:
    """torch.cuda.get_device_properties' answer: name, total_memory (bytes),
    major/minor (compute capability), multi_processor_count."""

    def __init__(self, name: str, total_memory: int, major: int, minor: int, sms: int) -> None:
        self.name, self.total_memory = name, total_memory
        self.major, self.minor, self.multi_processor_count = major, minor, sms

    def __repr__(self) -> str:
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, "
                f"minor={self.minor}, total_memory={self.total_memory // (1 << 20)}MB, "
                f"multi_processor_count={self.multi_processor_count})")


def get_device_properties(device=None) -> _DeviceProperties:
    _require()
    major, minor = get_device_capability(device)
    if _simulator():
        return _DeviceProperties(get_device_name(), mem_get_info()[1], major, minor, 1)
    with _mem().on_device(_index(device)):
        sms = int(_cuda().get_current_device().MULTIPROCESSOR_COUNT)
    return _DeviceProperties(get_device_name(device), mem_get_info(device)[1], major, minor,
                             sms)


def mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) bytes of device memory, as the driver reports them (under the
    simulator, whose device memory is host memory: the host's)."""
    _require()
    if _simulator():
        import os
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return (os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page)
        except (ValueError, OSError, AttributeError):  # not a POSIX host
            return 0, 0
    with _mem().on_device(_index(device)):
        info = _cuda().current_context().get_memory_info()
    return int(info[0]), int(info[1])


class device:
    """``with torch.cuda.device(i):`` makes device ``i`` current inside the block."""

    def __init__(self, device) -> None:
        d = as_device(device) if not isinstance(device, int) else _device_cls("cuda", device)
        self.idx = d.index if d.index is not None else current_device()
        self.prev = None

    def __enter__(self) -> device:
        self.prev = current_device()
        set_device(self.idx)
        return self

    def __exit__(self, *exc) -> None:
        set_device(self.prev)


def _index(device) -> int | None:
    """The ordinal torch's memory functions name (None: the current device)."""
    if device is None:
        return None
    if isinstance(device, int):
        return device
    d = as_device(device)
    return d.index


def memory_allocated(device=None) -> int:
    """Bytes of device memory held by tensors (the caching allocator's blocks in use)."""
    return _mem().memory_allocated(_index(device))


def max_memory_allocated(device=None) -> int:
    return _mem().max_memory_allocated(_index(device))


def memory_reserved(device=None) -> int:
    """Bytes the caching allocator holds: in use plus cached for reuse."""
    return _mem().memory_reserved(_index(device))


def reset_peak_memory_stats(device=None) -> None:
    _mem().reset_peak_memory_stats(_index(device))


def empty_cache() -> None:
    """Give every device's cached, unused blocks back to the driver."""
    _mem().empty_cache()


class Stream:
    """A CUDA stream (the simulator runs everything synchronously: its streams are
    placeholders numba provides). gcompile launches on the default stream."""

    def __init__(self, device=None, priority: int = 0) -> None:
        _require()
        self._s = _cuda().stream()

    def synchronize(self) -> None:
        self._s.synchronize()

    def wait_stream(self, other: Stream) -> None:
        other.synchronize()

    def query(self) -> bool:
        self.synchronize()
        return True

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.synchronize()


class _DefaultStream(Stream):
    def __init__(self) -> None:
        _require()
        self._s = _cuda().default_stream()


def current_stream(device=None) -> Stream:
    """The stream gcompile launches on: the default stream."""
    return _DefaultStream()


def default_stream(device=None) -> Stream:
    return _DefaultStream()


class Event:
    """A CUDA event; ``elapsed_time`` in milliseconds. Under the simulator, where
    execution is synchronous and numba's events record no time, the host clock at
    ``record`` is the event's time."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False) -> None:
        _require()
        self.enable_timing = enable_timing
        self._t = None
        self._e = None if _simulator() else _cuda().event(timing=enable_timing)

    def record(self, stream: Stream | None = None) -> None:
        if self._e is None:
            self._t = time.perf_counter()
        else:
            self._e.record(stream._s if stream is not None else 0)
            self._t = True

    def synchronize(self) -> None:
        if self._e is not None:
            self._e.synchronize()

    def wait(self, stream: Stream | None = None) -> None:
        if self._e is not None:
            self._e.wait(stream._s if stream is not None else 0)

    def query(self) -> bool:
        if self._e is not None:
            return bool(self._e.query())
        return True

    def elapsed_time(self, end_event: Event) -> float:
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self._t is None or end_event._t is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        if self._e is None:
            return (end_event._t - self._t) * 1e3
        end_event.synchronize()
        return float(self._e.elapsed_time(end_event._e))


def manual_seed(seed: int) -> None:
    """Seeds the (CPU-side) generator CUDA tensors' random values are drawn from (they
    are drawn on the host and copied)."""
    from ._random import default_generator
    default_generator.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    manual_seed(seed)
