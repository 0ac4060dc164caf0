"""kernels.cpu.native_pool: parallel kernels and OpenBLAS's jobs on one pool of native
threads. Each test runs in a fresh process: the pool and OpenBLAS's threads callback
are per process."""
import json
import os
import subprocess
import sys

import pytest

_PRELUDE = r"""
import json, os, sys, threading, time
import numpy as np
import gcompile as gc
import kernels.cpu as kc
from kernels.cpu import native_pool as P
gc.set_num_threads(int(os.environ.get("THREADS", "2")))
kc.set_parallel_threshold(0)   # every kernel call with two or more rows splits

def ew(x):  # a fused elementwise kernel and a row reduction
    return (x * 2.0 + 1.0).relu().sum(1)

def ref(a):
    return np.maximum(a * np.float32(2.0) + np.float32(1.0), np.float32(0.0)).sum(1)

def serial(a):  # a compiled plan's result with every kernel on one thread
    old = kc.set_parallel_threshold(1 << 62)
    try:
        return planned(gc.compile(ew), a)
    finally:
        kc.set_parallel_threshold(old)

def planned(f, a):  # a compiled call's result from its plan (the first call traces)
    x = gc.from_numpy(a)
    for _ in range(3):
        r = f(x).numpy()
    return r

def gemm_ok(a, b):
    return bool(np.allclose(a @ b, a.astype(np.float64) @ b.astype(np.float64),
                            rtol=1e-4, atol=1e-3))
"""


def _run(body: str, **env) -> dict:
    e = dict(os.environ)
    e.update({k: str(v) for k, v in env.items()})
    out = subprocess.run([sys.executable, "-c", _PRELUDE + body], capture_output=True,
                         text=True, env=e, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _needs_pool():
    got = _run("print(json.dumps({'ok': P.available()}))")
    if not got["ok"]:
        pytest.skip("the native pool is not available here (not POSIX, or no pause "
                    "instruction known for this CPU)")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_kernels_give_the_serial_bits(threads):
    _needs_pool()
    got = _run(r"""
f = gc.compile(ew)
rng = np.random.default_rng(0)
same = close = True
for rows in (1, 2, 3, 7, 64, 1000):
    a = rng.standard_normal((rows, 37)).astype(np.float32)
    want = serial(a)
    close &= bool(np.allclose(want, ref(a), rtol=1e-5, atol=1e-4))
    for _ in range(3):
        same &= bool(np.array_equal(planned(f, a), want))
print(json.dumps({"same": same, "close": close, **P.stats()}))
""", THREADS=threads)
    assert got["same"] and got["close"]
    assert got.get("workers", 0) == threads - 1
    if threads > 1:
        assert got["tasks"] > 0


def test_openblas_jobs_run_on_the_pool():
    _needs_pool()
    got = _run(r"""
P.ensure_workers(2)
rng = np.random.default_rng(1)
t0 = P.stats()["tasks"]
ok = True
for n in (64, 300, 512):
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, 2 * n)).astype(np.float32)
    ok &= gemm_ok(a, b)
    ok &= gemm_ok(a.astype(np.float64), b.astype(np.float64))
s = P.stats()
print(json.dumps({"ok": ok, "tasks": s["tasks"] - t0, "blas": s["blas"]}))
""")
    assert got["ok"]
    if not got["blas"]:
        pytest.skip("NumPy's BLAS has no threads callback (OpenBLAS < 0.3.27 or not OpenBLAS)")
    assert got["tasks"] > 0  # the large GEMMs split over the pool


@pytest.mark.parametrize("spin_us", [2000, 40])
def test_many_threads_at_once_stay_right(spin_us):
    """Python threads calling parallel kernels and GEMMs together: one task holds the
    pool, the others run theirs alone; GEMMs take turns on OpenBLAS's buffers. With a
    short spin the worker also parks and wakes between tasks (a task that arrived
    while it went to sleep was once missed there, which hung a GEMM's jobs)."""
    _needs_pool()
    got = _run(r"""
f = gc.compile(ew)
rng = np.random.default_rng(2)
a = rng.standard_normal((512, 64)).astype(np.float32)
x = gc.from_numpy(a)
want = serial(a)
planned(f, a)  # traced and bound before the threads start
m = rng.standard_normal((200, 200)).astype(np.float32)
mw = m.astype(np.float64) @ m.astype(np.float64)
bad = []
def work(i):
    for _ in range(100):
        if not np.array_equal(f(x).numpy(), want):
            bad.append(("kernel", i))
        if not np.allclose(m @ m, mw, rtol=1e-4, atol=1e-3):
            bad.append(("gemm", i))
ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({"bad": bad, **P.stats()}))
""", GCOMPILE_SPIN_US=spin_us)
    assert got["bad"] == []


def test_sleeping_workers_wake_for_the_next_task():
    """With no spin at all every worker sleeps between tasks; tasks still finish (the
    caller takes the chunks nobody took) and give the same bits."""
    _needs_pool()
    got = _run(r"""
f = gc.compile(ew)
a = np.random.default_rng(3).standard_normal((256, 33)).astype(np.float32)
want = serial(a)
same = True
slept = 0
for _ in range(50):
    same &= bool(np.array_equal(planned(f, a), want))
    time.sleep(0.001)
    slept = max(slept, P.stats()["sleeping"])
print(json.dumps({"same": same, "slept": slept}))
""", GCOMPILE_SPIN_US=0)
    assert got["same"]
    assert got["slept"] >= 1


def test_quiesce_sends_spinning_workers_to_sleep():
    _needs_pool()
    got = _run(r"""
f = gc.compile(ew)
a = np.random.default_rng(4).standard_normal((256, 33)).astype(np.float32)
want = serial(a)
planned(f, a)
P.quiesce()
deadline = time.time() + 5
while P.stats()["sleeping"] < 1 and time.time() < deadline:
    time.sleep(0.001)
asleep = P.stats()["sleeping"]
same = bool(np.array_equal(planned(f, a), want))
print(json.dumps({"asleep": asleep, "same": same}))
""", GCOMPILE_SPIN_US=10_000_000)
    assert got["asleep"] == 1
    assert got["same"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_parallel_work():
    """The child has none of the parent's workers and starts from a clean pool."""
    _needs_pool()
    got = _run(r"""
import warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
f = gc.compile(ew)
a = np.random.default_rng(5).standard_normal((300, 40)).astype(np.float32)
m = np.random.default_rng(6).standard_normal((256, 256)).astype(np.float32)
want = serial(a)
parent = bool(np.array_equal(planned(f, a), want)) and gemm_ok(m, m)
pid = os.fork()
if pid == 0:
    ok = bool(np.array_equal(planned(f, a), want)) and gemm_ok(m, m)
    os._exit(0 if ok and P.stats()["workers"] == 1 else 3)
_, status = os.waitpid(pid, 0)
print(json.dumps({"parent": parent, "child": os.waitstatus_to_exitcode(status)}))
""")
    assert got["parent"]
    assert got["child"] == 0


def test_switched_off_keeps_the_python_pool():
    got = _run(r"""
f = gc.compile(ew)
a = np.random.default_rng(7).standard_normal((128, 30)).astype(np.float32)
same = bool(np.allclose(planned(f, a), ref(a), rtol=1e-5, atol=1e-4))
print(json.dumps({"same": same, "available": P.available(),
                  "python_pool": kc._POOL[0] is not None}))
""", GCOMPILE_NATIVE_POOL=0)
    assert got == {"same": True, "available": False, "python_pool": True}


@pytest.mark.parametrize("pool", ["1", "0"])
def test_serial_bound_calls_through_the_trampoline(pool):
    """A serial kernel call binds its C arguments once; with the pool they reach the
    kernel through its two-argument trampoline (``SerialCall``), else through ctypes
    (``BoundCall``): the same results, on repointed operands too."""
    got = _run(r"""
old = kc.set_parallel_threshold(1 << 62)
f = gc.compile(ew)
rng = np.random.default_rng(3)
ok = True
kinds = set()
for rows in (1, 5, 64):
    for _ in range(3):   # a new input array each call: the binding repoints it
        a = rng.standard_normal((rows, 37)).astype(np.float32)
        ok &= bool(np.allclose(planned(f, a), ref(a), rtol=1e-5, atol=1e-4))
    for st in f.entries[-1].executable.plan.steps:
        b = getattr(st.run, "bound", None)
        if b is not None:
            kinds.add(type(b).__name__)
print(json.dumps({"ok": ok, "kinds": sorted(kinds)}))
""", GCOMPILE_NATIVE_POOL=pool)
    assert got["ok"]
    if pool == "1" and not got["kinds"] == ["SerialCall"]:
        _needs_pool()
    assert got["kinds"] == (["SerialCall"] if pool == "1" else ["BoundCall"])
