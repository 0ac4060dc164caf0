"""The bench command's plumbing (timings themselves are never asserted)."""
import pytest

from gcompile import bench, cli


def test_format_table_and_parser():
    row = {"workload": "gelu", "eager_ms": 10.0, "compiled_ms": 1.0, "speedup": 10.0,
           "kernels": 1, "bytes_moved": 128 << 20, "GB/s": 50.0, "pct_copy_bw": 80.0,
           "first_call_s": 1.5, "planned_bytes": 0, "unplanned_bytes": 10,
           "max_abs_err": 1e-7, "target": bench.TARGETS["gelu"],
           "torch_note": "torch not installed: torch columns skipped",
           "latency": {"cold": {"first_call_s": 2.5, "trace_s": 0.5, "first_run_s": 2.0},
                       "warm": {"error": ["boom"]}}}
    text = bench.format_table({"copy_GB/s": 30.0, "small": False, "results": [row]})
    assert "gelu" in text and "10.00x" in text and "torch not installed" in text
    assert "cold 2.50 s (trace 0.50, first run 2.00)" in text and "warm failed" in text
    assert bench.copy_bandwidth(1 << 20) > 0
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0
    with pytest.raises(ValueError, match="unknown workload"):
        bench.run_bench(["nope"])


def test_timeit_pair_alternates_rounds():
    order = []
    tf, tg = bench._timeit_pair(lambda: order.append("f"), lambda: order.append("g"), 5,
                                min_time=0.0, rounds=3)
    # 3 rounds of: f untimed + 2 timed, then g untimed + 2 timed
    assert order == (["f"] * 3 + ["g"] * 3) * 3
    assert tf >= 0.0 and tg >= 0.0
