"""``fastmath.gelu_grad_f32`` (float32 ``gelu_backward`` in generated kernels: erf and the
density share one exp) through a generated kernel (the eager op's, which serves any
size here), against the float64 NumPy reference: dense over the range where both terms
matter, at erf's branch points (|x|/sqrt2 = 1, 4), and for infinities, NaN and signed
zeros."""
import numpy as np
import pytest

from ir.ops.nn import _gelu_backward_impl
from ir.registry import REGISTRY
from kernels.cpu import codegen
from kernels.cpu import eager_ew as E


@pytest.fixture(autouse=True)
def small():
    old = E.set_min_size(0)
    yield
    E.set_min_size(old)


def _kernel_gelu_backward(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    impl = REGISTRY["gelu_backward"].impl
    calls = []
    ref, impl.ref = impl.ref, lambda *a, **k: calls.append(1) or ref(*a, **k)
    try:
        got = impl(g, x, approximate="none")
    finally:
        impl.ref = ref
    assert not calls   # the kernel served it
    return got


def _reference(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return _gelu_backward_impl(g.astype(np.float64), x.astype(np.float64))


def test_dense_range_matches_the_float64_reference():
    x = np.linspace(-12.0, 12.0, 100_001, dtype=np.float32)
    g = np.linspace(-3.0, 3.0, x.size, dtype=np.float32)
    got, want = _kernel_gelu_backward(g, x), _reference(g, x)
    assert got.dtype == np.float32
    # within a few float32 ulps of the result's scale (|g| times a derivative <= 1.13)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=4e-7 * np.abs(g).max())


def test_branch_points_and_special_values():
    s2 = np.sqrt(2.0)
    pts = [0.0, -0.0, 1e-30, -1e-30, s2, -s2, 4 * s2, -4 * s2, 40.0, -40.0, 1e30, -1e30]
    x = np.array(sum(([np.nextafter(np.float32(p), np.float32(-np.inf)), np.float32(p),
                       np.nextafter(np.float32(p), np.float32(np.inf))] for p in pts), []),
                 np.float32)
    g = np.ones_like(x)
    got, want = _kernel_gelu_backward(g, x), _reference(g, x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # infinities give NaN as the reference does (inf * exp(-inf) = inf * 0), NaN stays NaN
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32)
    g = np.array([1, 1, 1, np.nan, 2], np.float32)
    got, want = _kernel_gelu_backward(g, special), _reference(g, special)
    np.testing.assert_allclose(got, want, equal_nan=True)
    assert np.isnan(got[:4]).all() and got[4] == 1.0


def test_only_the_float32_erf_form_calls_it():
    def source(dtype, approximate):
        spec = E._spec("gelu_backward", dtype, (dtype, dtype), (("in", 0), ("in", 1)),
                       {"approximate": approximate})
        return codegen.elementwise_source(spec, ("flat", (-1, -1), None)).source
    assert "gelu_grad_f32(" in source("float32", "none")
    assert "gelu_grad_f32(" not in source("float32", "tanh")
    assert "gelu_grad_f32(" not in source("float64", "none")
