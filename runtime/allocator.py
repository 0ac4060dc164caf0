"""A caching allocator for fresh graph outputs.

Outputs must be memory the user owns, but fresh large allocations pay page
faults on every call. Blocks handed out here come back to a size-keyed pool
when the last array viewing them dies: each block is exposed through a small
holder object (``__array_interface__``), so every array and view made from an
output has the holder as its ``base``; the holder's finaliser returns the
block, which the pool kept alive all along.
"""
from __future__ import annotations

import math
import threading

import numpy as np

_MIN_BYTES = 1 << 16  # small arrays: plain NumPy allocation is cheaper


class _Holder:
    __slots__ = ("__array_interface__", "_block", "_pool", "__weakref__")

    def __init__(self, block: np.ndarray, shape, dtype: np.dtype, pool) -> None:
        self._block = block
        self._pool = pool
        self.__array_interface__ = {
            "shape": tuple(shape), "typestr": dtype.str, "version": 3,
            "data": (block.__array_interface__["data"][0], False), "strides": None}

    def __del__(self) -> None:
        pool = self._pool
        if pool is not None:
            pool._release(self._block)


class CachingAllocator:
    """``empty(shape, dtype)`` returning C-contiguous arrays from pooled blocks."""

    def __init__(self, max_cached_bytes: int = 1 << 30) -> None:
        self._free: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.max_cached_bytes = max_cached_bytes
        self.cached_bytes = 0
        self.hits = 0
        self.misses = 0

    def empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        if n < _MIN_BYTES:
            return np.empty(shape, dtype)
        with self._lock:
            blocks = self._free.get(n)
            if blocks:
                block = blocks.pop()
                self.cached_bytes -= n
                self.hits += 1
            else:
                block = None
                self.misses += 1
        if block is None:
            block = np.empty(n, np.uint8)
        arr = np.asarray(_Holder(block, shape, dtype, self))
        return arr

    def _release(self, block: np.ndarray) -> None:
        n = block.nbytes
        with self._lock:
            if self.cached_bytes + n > self.max_cached_bytes:
                return
            self._free.setdefault(n, []).append(block)
            self.cached_bytes += n

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self.cached_bytes = 0

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "cached_bytes": self.cached_bytes}


default_allocator = CachingAllocator()
