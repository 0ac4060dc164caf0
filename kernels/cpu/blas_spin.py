"""Stop OpenBLAS's idle threads from spinning on the cores gcompile's kernels run on.

After each parallel GEMM, OpenBLAS's worker threads busy-wait (``sched_yield`` in a
loop) for ``2**28`` cycles, about 0.1 s, before they sleep. A plan runs a kernel right
after most GEMMs, on the same cores: measured on the 2-core benchmark machine, im2col
after a GEMM took 4.2-5.3 ms instead of 2.1-2.6 ms alone, and the CNN train step's
layer kernels about twice their standalone time. OpenBLAS reads the spin length
(``OPENBLAS_THREAD_TIMEOUT``, log2 cycles) only when its thread server starts, which
happened when NumPy was imported, so ``quiet()`` sets it, has OpenBLAS read its
environment again and stops the server; the next parallel GEMM starts it again with
the short spin. A user's own ``OPENBLAS_THREAD_TIMEOUT`` is left alone.

Only OpenBLAS builds on their own pthreads server that export ``openblas_read_env`` and
``blas_thread_shutdown_`` (NumPy's and SciPy's wheels) are touched; anything else
(OpenMP builds, MKL, Accelerate) is left as it is.
"""
from __future__ import annotations

import ctypes
import os
import threading

__all__ = ["quiet", "short_spin", "pthreads_openblas", "SPIN_LOG2_CYCLES"]

# 2**18 cycles (~0.1 ms): long enough that back-to-back GEMMs find the threads awake,
# short enough that the kernel after a GEMM has the cores to itself.
SPIN_LOG2_CYCLES = 18

_DONE: list = [False]
_LOCK = threading.Lock()


def pthreads_openblas() -> list[str]:
    """Paths of the loaded OpenBLAS libraries built on their own pthreads server (the
    ones whose threads gcompile may tune or replace); empty without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
        return [d["filepath"] for d in threadpool_info()
                if d.get("internal_api") == "openblas" and d.get("threading_layer") == "pthreads"]
    except Exception:  # noqa: BLE001 - no threadpoolctl or an odd library: leave BLAS be
        return []


def quiet() -> list[str]:
    """Shorten the idle spin of every loaded OpenBLAS (once per process); returns the
    paths of the libraries changed."""
    with _LOCK:
        if _DONE[0]:
            return []
        _DONE[0] = True
        if "OPENBLAS_THREAD_TIMEOUT" in os.environ:
            return []
        libs = pthreads_openblas()
        if not libs:
            return []
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(SPIN_LOG2_CYCLES)
        changed = []
        for path in libs:
            try:
                lib = ctypes.CDLL(path)
                read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
            except (OSError, AttributeError):
                continue
            read_env()
            shutdown()
            changed.append(path)
        return changed


def short_spin() -> bool:
    """Whether OpenBLAS's idle threads spin only briefly after a GEMM (``quiet`` applied,
    or the user's own ``OPENBLAS_THREAD_TIMEOUT`` at most ours): then a kernel right
    after a GEMM may split over threads without fighting them. False where unknown."""
    quiet()
    try:
        return int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "")) <= SPIN_LOG2_CYCLES
    except ValueError:
        return False
