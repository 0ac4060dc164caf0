"""Every collective on 2 ranks against NumPy references (one mpiexec job)."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

_spec = importlib.util.spec_from_file_location(
    "_dist_mpi_helpers", pathlib.Path(__file__).with_name("mpi_helpers.py"))
H = importlib.util.module_from_spec(_spec)
sys.modules["_dist_mpi_helpers"] = H
_spec.loader.exec_module(H)

CHECKS = ["init", "all_reduce", "async_many", "broadcast", "all_gather",
          "all_gather_into_tensor", "reduce_scatter_tensor", "send_recv", "barrier", "errors",
          "compiled_all_reduce", "allreduce_grad", "destroy"]


def test_collectives_on_two_ranks_match_numpy():
    proc = H.run_workers("collectives_worker.py", timeout=180)
    assert proc.returncode == 0, H.report(proc)
    got = H.passed(proc)
    missing = [c for c in CHECKS if got.get(c) != 2]
    assert not missing, f"checks not passed on both ranks: {missing}\n{H.report(proc)}"
