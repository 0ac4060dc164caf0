"""Eager dispatch overhead vs raw NumPy, measured in one run.

Prints:
  * the per-op cost of a 1-element ``add`` with grad off and with grad on,
    next to NumPy's own cost for the same add (targets: <= 8 us grad off,
    <= 20 us grad on);
  * a 4096x4096 float32 elementwise chain run eagerly vs the same NumPy calls
    (target: eager within 10% of NumPy).

Usage: ``python benchmarks/eager_overhead.py [--quick]``.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import gcompile as torch  # noqa: E402


def _median_per_call(fn, inner: int, repeats: int) -> float:
    """Median over ``repeats`` runs of the mean time of ``inner`` calls (seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def small_add(inner: int, repeats: int) -> dict:
    a_np = np.ones(1, np.float32)
    b_np = np.ones(1, np.float32)
    a = torch.ones(1)
    b = torch.ones(1)
    ag = torch.ones(1, requires_grad=True)
    bg = torch.ones(1, requires_grad=True)

    def np_add():
        return np.add(a_np, b_np)

    def off():
        return a + b

    def on():
        return ag + bg

    fns = {"numpy": np_add, "grad_off": off, "grad_on": on}
    for f in fns.values():  # warm caches
        for _ in range(1000):
            f()
    # interleave the three so load from other processes hits them alike
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            times[k].append(_median_per_call(f, inner, 1))
    return {k: statistics.median(v) for k, v in times.items()}


def large_chain(n: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((n, n), dtype=np.float32)
    y_np = rng.standard_normal((n, n), dtype=np.float32)
    x = torch.from_numpy(x_np)
    y = torch.from_numpy(y_np)

    def np_chain():
        a = np.multiply(x_np, y_np)
        b = np.add(a, x_np)
        c = np.tanh(b)
        d = np.multiply(c, np.float32(0.5))
        return np.subtract(d, y_np)

    def eager_chain():
        a = x * y
        b = a + x
        c = torch.tanh(b)
        d = c * 0.5
        return d - y

    np.testing.assert_allclose(eager_chain().numpy(), np_chain(), rtol=1e-6, atol=1e-6)
    # interleave the two so drift on a noisy machine hits both equally
    t_np, t_eager = [], []
    for _ in range(repeats):
        t_np.append(_median_per_call(np_chain, 1, 1))
        t_eager.append(_median_per_call(eager_chain, 1, 1))
    return {"numpy": statistics.median(t_np), "eager": statistics.median(t_eager)}


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    s = small_add(inner=2000 if quick else 20000, repeats=5 if quick else 9)
    us = {k: v * 1e6 for k, v in s.items()}
    print("1-element add, median per op:")
    print(f"  numpy add           {us['numpy']:7.2f} us")
    print(f"  eager, grad off     {us['grad_off']:7.2f} us   "
          f"(overhead {us['grad_off'] - us['numpy']:6.2f} us, {us['grad_off'] / us['numpy']:5.1f}x "
          f"numpy; target <= 8 us)")
    print(f"  eager, grad on      {us['grad_on']:7.2f} us   "
          f"(overhead {us['grad_on'] - us['numpy']:6.2f} us, {us['grad_on'] / us['numpy']:5.1f}x "
          f"numpy; target <= 20 us)")
    n = 1024 if quick else 4096
    c = large_chain(n, repeats=3 if quick else 7)
    print(f"{n}x{n} float32 elementwise chain (mul, add, tanh, mul, sub), median:")
    print(f"  numpy               {c['numpy'] * 1e3:8.2f} ms")
    print(f"  eager               {c['eager'] * 1e3:8.2f} ms   "
          f"(ratio eager/numpy {c['eager'] / c['numpy']:.3f}; target <= 1.10)")


if __name__ == "__main__":
    main(sys.argv[1:])
