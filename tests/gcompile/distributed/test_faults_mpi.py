"""A raising, killed or stalled rank ends the job with an error within the timeout;
mismatched collectives are detected in DETAIL debug mode."""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import time

import pytest

_spec = importlib.util.spec_from_file_location(
    "_dist_mpi_helpers", pathlib.Path(__file__).with_name("mpi_helpers.py"))
H = importlib.util.module_from_spec(_spec)
sys.modules["_dist_mpi_helpers"] = H
_spec.loader.exec_module(H)


@pytest.mark.parametrize("scenario", ["raise", "kill", "timeout"])
def test_a_failing_rank_ends_the_job(scenario):
    t0 = time.monotonic()
    proc = H.run_workers("faults_worker.py", timeout=60, args=(scenario,))
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0, H.report(proc)
    assert "UNREACHABLE" not in proc.stdout
    assert elapsed < 45, f"took {elapsed:.0f}s\n{H.report(proc)}"
    text = proc.stdout + proc.stderr
    if scenario == "raise":
        assert "rank 1 failed on purpose" in text and "aborting the MPI job" in text, \
            H.report(proc)
    if scenario == "timeout":
        assert "CAUGHT [Rank 0] collective operation timeout" in proc.stdout, H.report(proc)
        assert "OpType=ALLREDUCE" in proc.stdout and "Timeout(ms)=1000" in proc.stdout
        assert "uncaught DistBackendError: aborting the MPI job" in proc.stderr, H.report(proc)


def test_mismatched_shapes_raise_in_detail_mode():
    proc = H.run_workers("faults_worker.py", timeout=60, args=("mismatch",),
                         env={"GCOMPILE_DISTRIBUTED_DEBUG": "DETAIL"})
    assert proc.returncode == 0, H.report(proc)
    assert H.passed(proc).get("mismatch") == 2, H.report(proc)
    assert "Detected mismatch between collectives on ranks" in proc.stdout
    assert "TensorShape=[3]" in proc.stdout and "TensorShape=[4]" in proc.stdout
