"""The Python a compiled training step's plan steps run, measured in one run.

For each of ``gcompile.bench_models``' real models (``cnn_train``, ``lstm_lm_train``,
``gpt_train``) this builds the whole-step compiled plan, then replaces the native pool's
entry points (the task runner, the serial trampoline, the task list) with Python no-ops
that count their calls, binds every step again (a binding captures those entries), and
times each library and matmul step's ``run``: what remains is the step's own Python (the
binding's checks, its closure, flag checks) plus a no-op call per native call. A ctypes
call into the pool costs ~0.14 us more than the no-op (printed as measured here).
Steps that are not bound are marked: their time is the op's whole Python wrapper.
Generated (fused) kernel steps are summarised the same way; view steps are made once
per arena and not run on a call.

Usage: ``python benchmarks/step_python.py [workload ...]`` (default: the three models).
The target (issue "Real models at PyTorch speed"): <= 2 us of Python per plan step.
"""
from __future__ import annotations

import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import gcompile as gc  # noqa: E402
from gcompile.bench_models import build, train_step  # noqa: E402
from kernels.cpu import native_pool  # noqa: E402

WORKLOADS = ("cnn_train", "lstm_lm_train", "gpt_train")
KINDS = ("library", "matmul", "kernel")


def _median(fn, n: int = 400) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _env_of(step, x, y):
    """A compiled step's plan and an environment of its slots as one call sees them."""
    ex = step.entries[-1].executable
    seen = {}
    run = type(ex)._run

    def spy(self, plan, inputs, out_into):
        seen["inputs"] = inputs
        return run(self, plan, inputs, out_into)
    type(ex)._run = spy
    try:
        step(x, y)
    finally:
        type(ex)._run = run
    plan = ex.plan
    plan.materialize()
    env = [None] * plan.n_slots
    for s, a in zip(plan.input_slots, seen["inputs"]):
        env[s] = a
    for s, a in list(plan.const_slots) + list(plan._planned_views):
        env[s] = a
    for s, shape, dtype in ex._fresh:
        env[s] = np.empty(shape, dtype)
    return plan, env


def _bound(run) -> bool:
    for name in ("binding", "swapped"):
        b = getattr(run, name, None)
        if b is not None and b.call is not None:
            return True
    return getattr(run, "bound", None) is not None


def measure(workload: str) -> list[tuple[str, bool, float, float]]:
    """(step, kind, bound, Python us, native calls) per library, matmul and kernel
    step."""
    gc.set_num_threads(2)
    model, opt, (x, y), loss_fn = build(gc, workload)
    step = gc.compile(train_step(model, opt, loss_fn))
    for _ in range(6):
        step(x, y)
    plan, env = _env_of(step, x, y)
    p = native_pool._P
    saved = {k: p[k] for k in ("run", "run_one", "chunk", "chunk_one", "run_list")}
    calls = [0]

    def count(*_args) -> None:
        calls[0] += 1
    for k in saved:
        p[k] = count
    rows = []
    try:
        for st in plan.steps:   # bind again: the bindings capture the no-op entries
            for name in ("binding", "swapped"):
                b = getattr(st.run, name, None)
                if b is not None:
                    b.call, b.misses = None, 0
            if st.kind == "matmul":   # a pair step (runtime.matmul_pairs): its two products
                for run in (st.run.first, st.run.second) if hasattr(st.run, "first") \
                        else (st.run,):
                    run.bound = None
                    run.binds.clear()
            elif st.kind == "kernel" and hasattr(st.run, "bound"):
                st.run.bound = None
        for _ in range(3):
            for st in plan.steps:
                st.run(env)
        for st in plan.steps:
            if st.kind not in KINDS:
                continue
            calls[0] = 0
            t = _median(functools.partial(st.run, env))
            rows.append((st.name, st.kind, _bound(st.run), t * 1e6, calls[0] / 400))
    finally:
        p.update(saved)
        plan.give_back()
    return rows


def ctypes_call_us() -> float:
    """One ctypes call into the pool: an empty task list."""
    p = native_pool._load()
    empty = np.zeros(1, np.int64)
    call = functools.partial(p["run_list"], empty.ctypes.data)
    return _median(call, 20000) * 1e6


def main(argv: list[str]) -> int:
    if not native_pool.available():
        print("the native pool is not available here: steps are not bound")
        return 1
    for w in argv or WORKLOADS:
        rows = measure(w)
        print(f"{w}:")
        for kind in KINDS:
            ts = [t for _, k, _, t, _ in rows if k == kind]
            bound = sum(b for _, k, b, _, _ in rows if k == kind)
            if ts:
                print(f"  {kind} steps: {len(ts)}, {bound} bound, Python per step median "
                      f"{statistics.median(ts):.2f} us, max {max(ts):.2f} us")
        for name, kind, bound, t, n in rows:
            if kind != "kernel":
                print(f"    {name[:48]:50s} {'bound' if bound else 'NOT BOUND':9s} {t:6.2f} us"
                      f"  native calls {n:.0f}")
    print(f"a ctypes call into the native pool: {ctypes_call_us():.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
