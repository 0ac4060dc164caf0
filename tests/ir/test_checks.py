"""The ``check`` op: its two-reduction fast path agrees with the masks on every case
(NaN, infinities, the ignored value, overflow of min + max), and errors name the first
offending value."""
import numpy as np
import pytest

from ir.ops.checks import _check_impl

RANGE = dict(kind="range", low=0, high=9, error="IndexError", message="bad {bad}")


@pytest.mark.parametrize("values, kw, bad", [
    ([0, 9, 3], RANGE, None),
    ([3, 10, -1], RANGE, 10),
    ([-1, 3], RANGE, -1),
    ([-100, 3], dict(RANGE, ignore=-100), None),
    ([-100, 30], dict(RANGE, ignore=-100), 30),
    ([1.0, np.nan], RANGE, "nan"),
    ([1.0, np.inf], dict(RANGE, high=None), None),
    ([1.0, -np.inf], dict(RANGE, low=None), None),
    ([1.0, np.nan], dict(kind="finite", error="RuntimeError", message="bad {bad}"), "nan"),
    ([np.inf, -np.inf], dict(kind="finite", error="RuntimeError", message="bad {bad}"), "inf"),
    ([3e38, 3e38], dict(kind="finite", error="RuntimeError", message="bad {bad}"), None),
    ([5, 7], dict(kind="finite", error="RuntimeError", message="bad {bad}"), None),
])
def test_check_passes_or_names_the_first_offender(values, kw, bad):
    a = np.array(values, np.float32 if isinstance(values[0], float) else np.int64)
    if bad is None:
        out = _check_impl(a, **kw)
        np.testing.assert_array_equal(out, a)
        assert out is not a
    else:
        err = IndexError if kw["error"] == "IndexError" else RuntimeError
        with pytest.raises(err, match=f"bad {bad}"):
            _check_impl(a, **kw)
