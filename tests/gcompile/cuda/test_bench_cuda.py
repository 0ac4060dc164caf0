"""The GPU benchmark (``gcompile.bench_cuda``, ``gcompile bench --device cuda``,
``benchmarks/cuda_bench.py``) stays runnable: its kernel and GEMM parts run at toy sizes
under the simulator (timings meaningless there), and every entry point refuses to run
under the simulator."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gcompile import bench_cuda
from gcompile.cli import main as cli

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")


@pytest.mark.skipif(not SIM, reason="toy sizes are for the simulator")
def test_bench_parts_run_and_every_entry_refuses_the_simulator(monkeypatch):
    monkeypatch.setattr(bench_cuda, "_time_ms", lambda fn, reps: (fn(), 1.0)[1])
    k = bench_cuda.bench_kernels(64, 4, 8, 1)
    assert {"copy_kernel", "fused_gelu", "row_sum", "row_softmax"} <= set(k)
    assert bench_cuda.bench_gemm(8, 1)["n"] == 8
    calls = []
    assert bench_cuda._time_step(lambda: calls.append(1), 2, lambda: None) >= 0.0
    assert len(calls) == 5  # three warm-up calls (eager, trace, plan), then the timed ones
    with pytest.raises(SystemExit, match="simulator"):
        bench_cuda.main(["--out", os.devnull])
    with pytest.raises(SystemExit, match="simulator"):
        cli(["bench", "--device", "cuda", "-o", os.devnull])
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cuda_bench.py"),
                        "--quick"], capture_output=True, text=True,
                       env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"))
    assert r.returncode != 0 and "simulator" in r.stderr
