"""Independent lanes of BLAS-calling work on the kernel threads, BLAS on one thread
meanwhile.

Some library ops are many small GEMMs with a little native work between them: a
convolution a few images at a time, a recurrent scan step by step. Each GEMM alone is
too small for OpenBLAS to split well (a 32x128 @ 128x512 step product gains little from
a second thread), but the work itself splits into independent lanes: ranges of images,
ranges of batch rows. Here each lane runs on its own thread (the kernel pool's, plus
the caller's) and calls BLAS single-threaded, through threadpoolctl's controller of the
BLAS libraries loaded in the process. With one thread, or no BLAS threadpoolctl can
govern, the lanes run one after another on the caller's thread, with BLAS as it is.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["lanes", "run"]

_CTL: list = []
_LOCK = threading.Lock()


def _blas():
    """threadpoolctl's controller of the loaded BLAS libraries (None if unusable)."""
    with _LOCK:
        if not _CTL:
            try:
                from threadpoolctl import ThreadpoolController
                ctl = ThreadpoolController().select(user_api="blas")
                _CTL.append(ctl if ctl.lib_controllers else None)
            except Exception:  # noqa: BLE001 - no threadpoolctl or an odd library
                _CTL.append(None)
        return _CTL[0]


def lanes(units: int) -> int:
    """How many threads ``units`` independent units can use (at least 1)."""
    import kernels.cpu as cpu
    return max(1, min(cpu._nthreads(), units))


def run(tasks: list[Callable[[], None]], k: int) -> None:
    """Run ``tasks`` on ``k`` threads, task i on thread i % k (tasks must not depend on
    which thread runs them); with ``k`` > 1, BLAS runs single-threaded meanwhile."""
    ctl = _blas() if k > 1 and len(tasks) > 1 else None
    if ctl is None:
        for t in tasks:
            t()
        return
    import kernels.cpu as cpu

    def lane(j):
        for t in tasks[j::k]:
            t()
    with ctl.limit(limits=1):
        ex = cpu._pool(k - 1)
        futs = [ex.submit(lane, j) for j in range(1, k)]
        try:
            lane(0)
        finally:
            for f in futs:
                f.result()
