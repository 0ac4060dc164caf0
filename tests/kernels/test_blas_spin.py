"""kernels.cpu.blas_spin: OpenBLAS's idle spin shortened once, BLAS still right after."""
import os
import subprocess
import sys

import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

_PROBE = r"""
import ctypes, json, os, numpy as np
from threadpoolctl import threadpool_info
libs = [d["filepath"] for d in threadpool_info() if d.get("internal_api") == "openblas"]
if not libs:
    print(json.dumps({"skip": "NumPy is not linked to OpenBLAS"})); raise SystemExit
from kernels.cpu import blas_spin
changed = blas_spin.quiet()
again = blas_spin.quiet()
lib = ctypes.CDLL(libs[0])
lib.openblas_thread_timeout.restype = ctypes.c_int
a = np.random.default_rng(0).standard_normal((300, 200))
b = np.random.default_rng(1).standard_normal((200, 400))
ok = bool(np.allclose(a @ b, np.einsum("ik,kj->ij", a, b)))
print(json.dumps({"changed": len(changed), "again": len(again),
                  "timeout": lib.openblas_thread_timeout(), "gemm_ok": ok,
                  "short": blas_spin.short_spin()}))
"""


def _probe(env_extra: dict) -> dict:
    import json
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env=env, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    if "skip" in got:
        pytest.skip(got["skip"])
    return got


def test_quiet_shortens_the_spin_once_and_gemm_stays_right():
    from kernels.cpu.blas_spin import SPIN_LOG2_CYCLES
    got = _probe({})
    assert got["changed"] >= 1 and got["again"] == 0
    assert got["timeout"] == SPIN_LOG2_CYCLES
    assert got["gemm_ok"] and got["short"]


def test_a_users_own_timeout_is_left_alone():
    got = _probe({"OPENBLAS_THREAD_TIMEOUT": "26"})
    assert got["changed"] == 0
    assert got["timeout"] == 26
    assert got["gemm_ok"] and not got["short"]


def test_kernel_pool_quiets_blas():
    """The first parallel kernel call (the pool's creation) is what quiets BLAS."""
    code = ("import kernels.cpu as c, kernels.cpu.blas_spin as b; c._pool(1);"
            " print(b._DONE[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "True"


_EPILOGUE = r"""
import json, gcompile as torch
lin = torch.nn.Linear(512, 512)
f = torch.compile(lambda x: torch.relu(lin(x)))
x = torch.randn(256, 512)
with torch.no_grad():
    f(x)
steps = f.entries[-1].executable.plan.steps
print(json.dumps([s.run.serial for s in steps if s.kind == "kernel"]))
"""


@pytest.mark.parametrize("timeout, pool", [(None, "1"), ("26", "0"), ("26", "1")])
def test_epilogue_after_gemm_splits_only_when_blas_leaves_the_cores(timeout, pool):
    """A bias+ReLU right after a GEMM is kept on one thread only while OpenBLAS's own
    threads spin long after it (a user's OPENBLAS_THREAD_TIMEOUT=26 here). With
    OpenBLAS's jobs on the native pool (``native_pool``) its threads never run, and the
    epilogue splits whatever the timeout."""
    import json
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if timeout:
        env["OPENBLAS_THREAD_TIMEOUT"] = timeout
    env["GCOMPILE_NATIVE_POOL"] = pool
    code = _EPILOGUE + ("from kernels.cpu import native_pool\n"
                        "print(json.dumps(bool(native_pool.routed_blas())))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.strip().splitlines()
    flags, routed = json.loads(out[-2]), json.loads(out[-1])
    if pool == "0":
        assert not routed
    serial = timeout is not None and not routed
    assert flags and all(f is serial for f in flags)
