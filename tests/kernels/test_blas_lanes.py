"""kernels.cpu.blas_lanes: lanes run on the kernel threads with BLAS single-threaded
meanwhile, and BLAS gets its threads back afterwards."""
import threading

import pytest

from kernels.cpu import blas_lanes


def _blas_threads():
    ctl = blas_lanes._blas()
    if ctl is None:
        pytest.skip("no BLAS library threadpoolctl can govern")
    return [lib.num_threads for lib in ctl.lib_controllers]


def test_lanes_run_every_task_once_on_k_threads_with_blas_on_one():
    before = _blas_threads()
    seen, threads, blas = [], set(), []
    lock = threading.Lock()

    def task(i):
        def run():
            with lock:
                seen.append(i)
                threads.add(threading.get_ident())
                blas.append(_blas_threads())
        return run
    blas_lanes.run([task(i) for i in range(7)], 2)
    assert sorted(seen) == list(range(7))
    assert len(threads) <= 2
    assert all(b == [1] * len(before) for b in blas)
    assert _blas_threads() == before


def test_one_lane_runs_in_order_on_the_caller_with_blas_as_it_is():
    before = _blas_threads()
    seen = []
    blas_lanes.run([lambda i=i: seen.append((i, threading.get_ident(), _blas_threads()))
                    for i in range(3)], 1)
    assert [s[0] for s in seen] == [0, 1, 2]
    assert {s[1] for s in seen} == {threading.get_ident()}
    assert all(s[2] == before for s in seen)


def test_an_error_in_a_lane_propagates_and_restores_blas():
    before = _blas_threads()

    def bad():
        raise ValueError("lane failed")
    with pytest.raises(ValueError, match="lane failed"):
        blas_lanes.run([lambda: None, bad, lambda: None, lambda: None], 2)
    assert _blas_threads() == before
