"""kernels.cpu.handwritten: hand-written kernels load through the signed cache, run
split over threads with the same result, and a warm process never imports Numba."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kernels.cpu import handwritten as hw

ROOT = Path(__file__).resolve().parents[2]

BODY = '''
@njit(nogil=True, inline="always")
def body(x, xs, y, scale, tmp, lo, hi):
    for i in range(lo, hi):
        tmp[0] = x[i * xs]
        y[i] = tmp[0] * scale
'''


def _params(dtype: str) -> tuple:
    return (("x", "in", dtype), ("xs", "int", None), ("y", "out", dtype),
            ("scale", "int", None), ("tmp", "scratch", dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("parallel", [False, True])
def test_strided_input_scratch_and_split(dtype, parallel, monkeypatch):
    monkeypatch.setenv("GCOMPILE_NUM_THREADS", "2")
    k = hw.kernel("scale_test", _params(dtype), BODY)
    base = np.arange(40).astype(dtype)
    x = base[::3]  # a strided view: the kernel indexes with the element stride
    y = np.full(x.shape, -1, dtype)
    k(x, hw.strides(x)[0], y, 3, 1, n=x.size, parallel=parallel)
    np.testing.assert_array_equal(y, x * 3)
    assert hw.kernel("scale_test", _params(dtype), BODY) is k


def test_argument_checks():
    k = hw.kernel("scale_test", _params("float32"), BODY)
    x = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="float32"):
        k(x.astype(np.float64), 1, x, 1, 1, n=4)
    with pytest.raises(TypeError, match="takes 5 arguments"):
        k(x, 1, x, 1, n=4)
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        k(x, 1, ro, 1, 1, n=4)
    with pytest.raises(ValueError, match="negative"):
        k(x[::-1], 1, x, 1, 1, n=4)
    assert hw.operand(x[::-1]).strides == (4,)
    with pytest.raises(ValueError, match="bad parameter"):
        hw.kernel("bad", (("x", "inout", "float32"),), BODY)


def test_contiguous_operands_with_odd_strides_on_length_one_axes():
    """A C-contiguous operand skips the per-axis stride checks: a length-1 axis may
    carry any stride (its index is always 0), so such views run as their data says."""
    k = hw.kernel("scale_test", _params("float32"), BODY)
    x = np.arange(6, dtype=np.float32).reshape(1, 6)[::-1]  # stride -24 on its length-1 axis
    assert x.flags.c_contiguous and x.strides[0] < 0
    y = np.full((1, 6), -1, np.float32)
    k(x, 1, y, 2, 1, n=6)
    np.testing.assert_array_equal(y, x * 2)


def test_dtype_names_are_numpys():
    for d in (np.float32, np.float64, np.int64, np.int32, np.bool_, np.float16, ">f4",
              np.complex64, "V8"):
        dt = np.dtype(d)
        assert hw.dtype_name(dt) == dt.name == hw.dname(np.zeros(1, dt))


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from kernels.cpu import cache_stats, handwritten as hw
    body = '''
    @njit(nogil=True, inline="always")
    def body(x, y, lo, hi):
        for i in range(lo, hi):
            y[i] = x[i] + 1.0
    '''
    k = hw.kernel("plus_one", (("x", "in", "float64"), ("y", "out", "float64")), body)
    x = np.arange(5.0)
    y = np.empty_like(x)
    k(x, y, n=5)
    print(json.dumps(dict(cache_stats(), ok=bool((y == x + 1).all()),
                          numba="numba" in sys.modules)))
""")


def _run(cache_dir: Path) -> dict:
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(cache_dir),
               GCOMPILE_CACHE_KEY_FILE=str(cache_dir.parent / f"{cache_dir.name}.key"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_warm_process_loads_machine_code_without_numba(tmp_path):
    first = _run(tmp_path)
    assert first["ok"] and first["compiles"] == 1 and first["numba"]
    second = _run(tmp_path)
    assert second["ok"] and second["compiles"] == 0 and second["disk_hits"] == 1
    assert not second["numba"]
