"""benchmarks/cuda_bench.py stays runnable: its kernel and GEMM parts run at toy sizes
under the simulator (timings meaningless there), and the script itself refuses to run
under the simulator."""
from __future__ import annotations

import importlib.util
import os

import pytest

pytest.importorskip("numba")

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks", "cuda_bench.py")


def _load():
    spec = importlib.util.spec_from_file_location("cuda_bench", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"),
                    reason="toy sizes are for the simulator")
def test_bench_parts_run_and_script_refuses_the_simulator():
    b = _load()
    b._time_ms = lambda fn, reps: (fn(), 1.0)[1]  # one call each: only the code paths
    k = b.bench_kernels(64, 4, 8, 1)
    assert {"copy_kernel", "fused_gelu", "row_sum", "row_softmax"} <= set(k)
    assert b.bench_gemm(8, 1)["n"] == 8
    with pytest.raises(SystemExit, match="simulator"):
        b.main(["--out", os.devnull])
