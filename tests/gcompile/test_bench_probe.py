"""gcompile.bench_probe: the cross-core read probe answers a ratio and leaves the
process's CPUs as they were; ``near`` judges a run's probes against its best."""
import os

import pytest

from gcompile import bench_probe


def test_near_is_within_the_factor_of_a_low_percentile():
    f = bench_probe.NEAR_FACTOR
    assert bench_probe.near([2.0, 2.0 * f, 2.0 * f + 0.01, None]) == [True, True, False, True]
    assert bench_probe.near([None, None]) == [True, True]
    assert bench_probe.near([]) == []
    # one low try among twenty does not move the baseline (the 10th percentile)
    run = [0.5] + [1.4] * 15 + [2.1] * 4
    assert bench_probe.baseline(run) == 1.4
    assert bench_probe.near(run) == [True] * 16 + [False] * 4


def test_cross_core_ratio_measures_and_restores_the_affinity():
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        assert bench_probe.cross_core_ratio() is None
        pytest.skip("needs a Linux process allowed on two CPUs")
    before = os.sched_getaffinity(0)
    r = bench_probe.cross_core_ratio(repeat=3)
    assert os.sched_getaffinity(0) == before
    # reading what another core wrote is never free, and not 100x a local read
    assert r is not None and 0.2 < r < 100.0
