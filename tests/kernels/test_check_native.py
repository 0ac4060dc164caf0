"""kernels.cpu.check_native: integer range checks by one native pass (a copy into the
output plus a flag), equal to the NumPy implementation: the same values through, the
same error for the same offender, and every other check left to NumPy."""
import numpy as np
import pytest

from ir.ops.checks import _check_impl
from ir.registry import REGISTRY
from kernels.cpu import check_native

rng = np.random.default_rng(3)


def _native_calls(monkeypatch):
    """Run the kernel's own path (record the reference's calls)."""
    calls = []
    ref = REGISTRY["check"].reference
    monkeypatch.setattr(REGISTRY["check"], "reference",
                        lambda *a, **k: calls.append(1) or ref(*a, **k))
    return calls


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@pytest.mark.parametrize("low, high, ignore", [(0, 9, None), (0, None, None), (None, 9, None),
                                               (0, 9, -100)])
def test_in_range_values_pass_through_natively(dtype, low, high, ignore, monkeypatch):
    x = rng.integers(0, 10, (6, 7)).astype(dtype)
    if ignore is not None:
        x[2, 3] = ignore
    calls = _native_calls(monkeypatch)
    for _ in range(2):  # (the first call may load the kernel)
        calls.clear()
        out = np.full_like(x, -7)
        got = check_native.check(x, "range", low=low, high=high, ignore=ignore, out=out)
    assert got is out and not calls
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("bad", [10, -1])
def test_out_of_range_raises_as_numpy_does(bad):
    x = rng.integers(0, 10, 50)
    x[17] = bad
    kw = dict(low=0, high=9, error="IndexError", message="Target {bad} is out of bounds.")
    with pytest.raises(IndexError) as native:
        check_native.check(x, "range", out=np.empty_like(x), **kw)
    with pytest.raises(IndexError) as numpy:
        _check_impl(x, "range", **kw)
    assert str(native.value) == str(numpy.value) == f"Target {bad} is out of bounds."


def test_other_checks_stay_with_numpy(monkeypatch):
    calls = _native_calls(monkeypatch)
    x = rng.integers(0, 10, (4, 6))
    check_native.check(x[:, ::2], "range", low=0, high=9)          # not contiguous
    check_native.check(x.astype(np.float32), "range", low=0, high=9)  # float values
    check_native.check(x, "range", low=-0.5, high=9)               # a float bound
    check_native.check(x.astype(np.float32), "finite")
    assert len(calls) == 4
    bind = check_native.bind
    assert bind(x[:, ::2], "range", low=0, high=9, out=np.empty((4, 3), x.dtype)) is None
    assert bind(x, "range", low=0, high=9, out=None) is None
    assert bind(x, "range", low=0, high=9, out=x) is None  # the output is the input


def test_bound_check_copies_and_raises_on_later_values():
    x = rng.integers(0, 10, 40)
    out = np.empty_like(x)
    check_native.check(x, "range", low=0, high=9, out=out)  # loads the kernel
    run = check_native.bind(x, "range", low=0, high=9, error="IndexError",
                            message="bad {bad}", out=out)
    assert run is not None
    x[:] = rng.integers(0, 10, 40)
    run()
    np.testing.assert_array_equal(out, x)
    x[5] = 12
    with pytest.raises(IndexError, match="bad 12"):
        run()
    x[5] = 3
    run()  # the flag was cleared
    np.testing.assert_array_equal(out, x)
