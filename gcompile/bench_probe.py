"""Whether two of this machine's cores are near each other right now, for the benchmarks.

A shared VM's virtual CPUs run on whichever host cores the host picks. On the 2-vCPU VMs
this project is measured on, the host at times places the two far apart (another core
complex or socket) for seconds to minutes. Then reading a buffer that the other core has
just written takes ~2.8x as long (768 KB: 14 us -> 39 us; reading data this core wrote:
8 us either way), and a training step whose two threads pass activations and GEMM panels
to each other slows down: GPT's step from 20 to 31 ms compiled and from 23 to 31 ms in
PyTorch, other steps less. A single-threaded probe of arithmetic or memory speed does
not see it.

``cross_core_ratio`` measures it directly: the time to read a buffer the other core
wrote over the time to read one this core wrote. The benchmark takes it around each
turn and reports the turns that ran with the cores near (the ratio within
``NEAR_FACTOR`` of the run's ``baseline``) apart from all turns.
"""
from __future__ import annotations

import os
import statistics
import threading
import time

import numpy as np

__all__ = ["NEAR_FACTOR", "baseline", "cross_core_ratio", "near"]

# Between the benchmark's turns near cores measure 1.3-1.6 here and far ones 2.0-2.5
# (a lone try as low as 1.0 now and then: the baseline is a low percentile, not the best)
NEAR_FACTOR = 1.35
_BYTES = 768 * 1024  # in one core's L2 (1 MB on the machines measured), not in L1


def _pinned_fill(buf: np.ndarray, cpu: int, value: float) -> None:
    def fill() -> None:
        os.sched_setaffinity(0, {cpu})  # this thread only
        buf.fill(value)
    t = threading.Thread(target=fill)
    t.start()
    t.join()


def cross_core_ratio(repeat: int = 5) -> float | None:
    """Median over ``repeat`` tries of (reading a buffer the second allowed CPU just
    wrote) / (reading one this, the first, CPU just wrote), both on the first CPU. None
    where threads cannot be pinned (not Linux) or the process has one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        return None
    here, there = sorted(allowed)[:2]
    buf = np.zeros(_BYTES // 8, np.float64)
    ratios = []
    os.sched_setaffinity(0, {here})
    try:
        for k in range(repeat + 1):
            _pinned_fill(buf, there, float(k))
            t0 = time.perf_counter()
            buf.sum()
            far = time.perf_counter() - t0
            buf.fill(float(k) + 0.5)
            t0 = time.perf_counter()
            buf.sum()
            local = time.perf_counter() - t0
            if k:  # the first try also pages the buffer in
                ratios.append(far / local)
    finally:
        os.sched_setaffinity(0, allowed)
    return statistics.median(ratios)


def baseline(ratios: list[float | None]) -> float | None:
    """A run's near-cores ratio: the 10th percentile of its probes (the lowest of fewer
    than 20)."""
    got = sorted(r for r in ratios if r is not None)
    return got[len(got) // 10] if got else None


def near(ratios: list[float | None], base: float | None = None) -> list[bool]:
    """For each probe, whether the cores were near: within ``NEAR_FACTOR`` of ``base``
    (default: these probes' ``baseline``; all True where no probe answered)."""
    base = base if base is not None else baseline(ratios)
    if base is None:
        return [True] * len(ratios)
    return [r is None or r <= NEAR_FACTOR * base for r in ratios]
