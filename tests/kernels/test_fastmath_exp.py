"""``fastmath.exp_f32`` at the ends of its range, through a compiled kernel: the values
NumPy gives (to 2 ulp; exactly 0 where exp rounds to 0, inf above the overflow, NaN for
NaN), and no slow path for inputs far below the underflow (-inf from attention masks)."""
import numpy as np

import gcompile as torch


def _compiled_exp(x: np.ndarray) -> np.ndarray:
    f = torch.compile(lambda t: torch.exp(t * 1.0))
    got = f(torch.from_numpy(x)).numpy()
    assert f.entries and f.entries[-1].executable.plan.num_kernels >= 1
    return got


def test_exp_f32_edges_match_numpy():
    xs = np.array([-np.inf, -1e30, -200.0, -104.5, -104.0, -103.98, -103.95, -103.5, -100.0,
                   -90.0, -87.4, -87.3, -50.0, -1.0, -1e-8, 0.0, -0.0, 1e-8, 1.0, 50.0,
                   88.5, 88.72, 88.8, 100.0, np.inf, np.nan], np.float32)
    got = _compiled_exp(xs)
    with np.errstate(over="ignore"):
        want = np.exp(xs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = ~np.isnan(want)
    np.testing.assert_array_max_ulp(got[fin], want[fin], maxulp=2)
    assert np.all(got[xs < -104.0] == 0.0)


def test_exp_f32_dense_range_matches_numpy():
    xs = np.linspace(-110.0, 90.0, 200_001, dtype=np.float32)
    with np.errstate(over="ignore"):
        got, want = _compiled_exp(xs), np.exp(xs)
    normal = want >= np.finfo(np.float32).tiny
    np.testing.assert_array_max_ulp(got[normal], want[normal], maxulp=2)
    # results below the smallest normal float keep their absolute error below it
    tiny = np.finfo(np.float32).smallest_subnormal
    assert np.max(np.abs(got[~normal] - want[~normal])) <= 2 * tiny
