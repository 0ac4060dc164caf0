"""A caching allocator for fresh graph outputs, and the arena pool of compiled plans.

Outputs must be memory the user owns, but fresh large allocations pay page
faults on every call. Blocks handed out here come back to a size-keyed pool
when the last array viewing them dies: each block is exposed through a small
holder object (``__array_interface__``), so every array and view made from an
output has the holder as its ``base``; the holder's finaliser returns the
block, which the pool kept alive all along.
"""
from __future__ import annotations

import math
import mmap
import os
import time
import threading

import numpy as np

_MIN_BYTES = 1 << 16  # small arrays: plain NumPy allocation is cheaper

# glibc's malloc maps every block above M_MMAP_THRESHOLD (128 KiB at first, raised only
# as such blocks are freed) afresh and unmaps it on free, and gives the heap's free top
# back to the OS beyond M_TRIM_THRESHOLD (twice that): an eager step's activations and
# temporaries (a few MB each; an im2col buffer 42 MB) were faulted in page by page at
# every op. With blocks up to HOST_MMAP_THRESHOLD served from the heap, and up to
# HOST_TRIM_THRESHOLD of freed memory kept for the next step, eager training ran faster
# (interleaved A/B, 3 rounds: cnn_train 93 -> 70 ms, gpt_train 45 -> 39 ms; the MLP and
# compiled steps unchanged), as PyTorch's own CPU allocation does not fault each step.
# Plans' arenas are mappings of their own (``Arena``), released as before.
HOST_MMAP_THRESHOLD = 64 << 20
HOST_TRIM_THRESHOLD = 128 << 20
HOST_HEAP: dict = {"tuned": False, "why": "not set up"}


def tune_host_heap() -> bool:
    """Set glibc's malloc thresholds (above); True if they were set. Leaves malloc
    alone off glibc, where the user set their own (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``), or with
    ``GCOMPILE_HOST_HEAP=default``; ``HOST_HEAP`` says which (``gcompile env``)."""
    if os.environ.get("GCOMPILE_HOST_HEAP", "").strip().lower() == "default":
        HOST_HEAP.update(tuned=False, why="GCOMPILE_HOST_HEAP=default")
        return False
    mine = [k for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
            if k in os.environ]
    if mine:
        HOST_HEAP.update(tuned=False, why=f"{mine[0]} is set")
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)  # the process's own symbols: no library search at import
        libc.gnu_get_libc_version  # noqa: B018 - glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        HOST_HEAP.update(tuned=False, why="not glibc")
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    ok = bool(mallopt(m_mmap_threshold, HOST_MMAP_THRESHOLD)) and \
        bool(mallopt(m_trim_threshold, HOST_TRIM_THRESHOLD))
    HOST_HEAP.update(tuned=ok, why=(f"glibc malloc: mmap threshold {HOST_MMAP_THRESHOLD >> 20} "
                                    f"MB, trim threshold {HOST_TRIM_THRESHOLD >> 20} MB")
                     if ok else "mallopt refused")
    return ok


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


# ---------------------------------------------------------------------------
# arenas of compiled plans
# ---------------------------------------------------------------------------
# Arenas at least this large give their pages back to the OS after every call
# (``keep_arena`` not set). The next call faults them in again: with huge pages about
# 0.1 ms per MB (49 MB: ~4.5 ms, against ~130 ms for the MLP step that fills it, 4x2048
# Adam at batch 512; ~0.6 ms per MB with 4 KiB pages), measured on a loaded 2-core
# machine. Held between calls, an arena that size made compiled training cost more
# than eager, which frees its activations (``benchmarks/memory.py``: 191 vs 161 MB
# beyond the parameters). Smaller arenas stay resident: little memory, and a short
# call would feel the faults more. ``GCOMPILE_ARENA_RELEASE_BYTES`` or
# ``compile(..., options={"keep_arena": True | False})`` override it.
ARENA_RELEASE_BYTES = int(os.environ.get("GCOMPILE_ARENA_RELEASE_BYTES", 16 << 20))
# ... and only while faulting the arena back in costs at most this share of the call
# (``refault_seconds`` against the plan's fastest call so far): a short call over a big
# arena keeps it (the GPT step of bench_models, 29 MB over ~26 ms, ran 13% slower when
# it released, measured on a loaded machine), a long one releases (4x2048 MLP step).
RELEASE_COST_SHARE = 0.05
_PAGE = 4096
_HUGE = 2 << 20
_REFAULT: list = []  # seconds per byte to fault a released arena back in (measured once)


def refault_seconds(nbytes: int) -> float:
    """Estimated time to fault ``nbytes`` of a released arena back in, from one
    measurement per process (an 8 MB arena written, released, written again)."""
    if not _REFAULT:
        probe = Arena(8 << 20)
        probe.fault_in()
        if probe.release_pages():
            t0 = time.perf_counter()
            probe.fault_in()
            _REFAULT.append((time.perf_counter() - t0) / probe.nbytes)
        else:
            _REFAULT.append(0.0)
        probe.release_pages()
    return _REFAULT[0] * nbytes


class Arena:
    """One arena block: a page-aligned anonymous mapping where the OS has one (so its
    pages can be handed back while the addresses, and the plan's views and bound
    kernels over them, stay valid), else a NumPy buffer."""

    __slots__ = ("nbytes", "array", "_map", "_resident", "__weakref__")

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._map = None
        self._resident = True  # False: the mapping's pages are not (all) faulted in
        if nbytes >= _PAGE and hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap, "MAP_PRIVATE"):
            # private: MADV_DONTNEED then frees the pages (a shared anonymous mapping,
            # mmap's default, would keep them in shared memory, only unmapped)
            self._map = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if nbytes >= _HUGE and hasattr(mmap, "MADV_HUGEPAGE"):
                # transparent huge pages: faulting the arena back in after a release
                # costs ~0.1 ms per MB instead of ~0.6 ms with 4 KiB pages (measured)
                self._map.madvise(mmap.MADV_HUGEPAGE)
            self.array = np.frombuffer(self._map, np.uint8)
            self._resident = False
        else:
            self.array = np.empty(max(nbytes, 1), np.uint8)

    def fault_in(self) -> bool:
        """Fault a fresh or released mapping's pages in, here, in one thread, before a
        call's kernels write it: pages faulted in by two or more threads at once (a
        parallel kernel, BLAS) cost ~2.5 ms per MB here against ~0.05 ms in one thread
        (measured; a released GPT-step arena made its step ~15 ms slower). True if it
        faulted pages in."""
        if self._resident:
            return False
        self.array[::_PAGE] = 0
        self._resident = True
        return True

    def release_pages(self) -> bool:
        """Give the pages back to the OS (their contents are lost; the next write
        faults in zeroed pages). False where that is not possible."""
        if self._map is None:
            return False
        self._map.madvise(mmap.MADV_DONTNEED)
        self._resident = False
        return True


class ArenaPool:
    """The arenas of every compiled plan in the process, shared: a plan takes a block
    for the length of one call and gives it back, so plans that never run at the
    same time (a forward and its backward, the plans of other shapes or of a retrace)
    reuse one block instead of each keeping its own. A plan gets back the block it had
    last time when it is free (its views over the block, and the kernels bound to
    them, stay valid); a block too small for the next taker is replaced by a larger
    one. After a call the block's pages go back to the OS when the plan asks for it
    (see ``ARENA_RELEASE_BYTES``)."""

    def __init__(self) -> None:
        # id -> free block. Single dict operations are atomic under the GIL, so the
        # per-call path (take the block a plan had, give it back) takes no lock; the
        # lock serialises the rare searches and replacements
        self._free: dict[int, Arena] = {}
        self._lock = threading.Lock()
        self.created = 0
        self.reused = 0
        self.released = 0

    def take(self, nbytes: int, prefer: Arena | None = None) -> Arena:
        """A block of at least ``nbytes``: ``prefer`` if free and large enough, else
        the smallest free block that fits, else a new one (free blocks smaller than it
        are dropped: whoever used them fits in the new one)."""
        if prefer is not None and prefer.nbytes >= nbytes and \
                self._free.pop(id(prefer), None) is not None:
            self.reused += 1
            return prefer
        with self._lock:
            while True:
                fits = [a for a in list(self._free.values()) if a.nbytes >= nbytes]
                if not fits:
                    break
                a = min(fits, key=lambda f: f.nbytes)
                if self._free.pop(id(a), None) is not None:
                    self.reused += 1
                    return a
            dropped = [self._free.pop(k, None) for k in list(self._free)]
            self.created += 1
        for a in dropped:  # superseded: let go of their pages now, not when last viewed
            if a is not None:
                a.release_pages()
        return Arena(nbytes)

    def give(self, arena: Arena, release: bool) -> None:
        """Return a block after a call; ``release``: its pages go back to the OS."""
        if release and arena.release_pages():
            self.released += 1
        self._free[id(arena)] = arena

    def discard(self, arena: Arena) -> None:
        """Forget a block (a plan not used lately): its pages go back to the OS."""
        with self._lock:
            if self._free.get(id(arena)) is arena:
                del self._free[id(arena)]
        arena.release_pages()

    def clear(self) -> None:
        with self._lock:
            dropped = [self._free.pop(k, None) for k in list(self._free)]
        for a in dropped:
            if a is not None:
                a.release_pages()

    def stats(self) -> dict:
        free = [a.nbytes for a in list(self._free.values())]
        return {"created": self.created, "reused": self.reused, "released": self.released,
                "free_blocks": len(free), "free_bytes": sum(free)}


default_arena_pool = ArenaPool()
