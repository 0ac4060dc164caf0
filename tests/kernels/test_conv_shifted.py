"""The weight gradient by shifted GEMMs (kernels.cpu.conv_shifted) against the NumPy
reference of ``conv_weight_grad`` over padding, dilation, 1-D/2-D, rectangular and 1x1
windows, the bias column and non-contiguous operands; results that do not depend on
the thread count; non-finite inputs; the convolutions it takes; finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile
import kernels.cpu as cpu
from gcompile.autograd import gradcheck
from ir.ops.nn import _spatial_out
from ir.registry import REGISTRY
from kernels.cpu import blas_calls, conv_shifted
from kernels.cpu import handwritten as hw

RNG = np.random.default_rng(11)
OP = REGISTRY["conv_weight_grad"]
pytestmark = pytest.mark.skipif(
    not (blas_calls.provide() and blas_calls.small_gemm_macs()),
    reason="NumPy's OpenBLAS has no small-matrix GEMM kernels here: the shifted path is off")

CASES = [  # n, c, spatial, cout, kernel, padding, dilation, ones_row
    (3, 8, (7, 9), 9, (3, 3), (1, 1), (1, 1), True),
    (2, 9, (6, 5), 8, (3, 2), (0, 2), (2, 1), False),
    (5, 10, (17,), 12, (5,), (2,), (3,), True),
    (2, 12, (8, 8), 10, (1, 1), (0, 0), (1, 1), True),
    (9, 8, (4, 11), 3, (2, 4), (1, 0), (1, 2), False),
]


def _operands(case, dtype):
    n, c, spatial, cout, kernel, padding, dilation, ones_row = case
    nd = len(spatial)
    attrs = dict(kernel=kernel, stride=(1,) * nd, padding=padding, dilation=dilation,
                 ones_row=ones_row)
    x = RNG.standard_normal((n, c) + spatial).astype(dtype)
    out_sp = _spatial_out(spatial, kernel, (1,) * nd, padding, dilation)
    g = RNG.standard_normal((n, cout) + out_sp).astype(dtype)
    return x, g, attrs


def _close(got, want):
    tol = 1e-5 if got.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.fixture
def taken(monkeypatch):
    """The runs of the shifted GEMMs' plan (1: asked), and those that computed their
    result (2)."""
    from kernels.cpu import handwritten as hw
    calls = []
    real = hw.run_checked

    def spy(p):
        shifted = any(t.kernel.name == "conv_wgrad_shifted" for t in p.tasks)
        if shifted:
            calls.append(1)     # asked
        done = real(p)
        if shifted and done:
            calls.append(2)     # computed
        return done
    monkeypatch.setattr(hw, "run_checked", spy)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_weight_gradient_equals_reference(case, threads, dtype, monkeypatch, taken):
    """Equal to the reference to rounding, also into ``out=`` and from non-contiguous
    operands, and its kernel ran (an exported program ships its machine code)."""
    monkeypatch.setattr(cpu, "_THREAD_LIMIT", [threads])
    x, g, attrs = _operands(case, dtype)
    assert conv_shifted.applies(x, g.shape[1], attrs["kernel"], attrs["stride"],
                                attrs["padding"], attrs["dilation"])
    want = OP.reference(x, g, **attrs)
    got = OP.impl(x, g, **attrs)
    assert got.shape == want.shape and got.dtype == want.dtype
    _close(got, want)
    assert taken.count(2) == 1
    assert any(k.name == "conv_wgrad_shifted" for k in hw.loaded_for("conv_weight_grad"))
    out = np.full(want.shape, 7, want.dtype)
    assert OP.impl(x, g, out=out, **attrs) is out
    np.testing.assert_array_equal(out, got)
    xs = np.swapaxes(np.swapaxes(x, 0, 1).copy(), 0, 1)
    gs = np.flip(np.flip(g, -1).copy(), -1)
    np.testing.assert_array_equal(OP.impl(xs, gs, **attrs), got)
    assert taken.count(2) == 3


def test_results_do_not_depend_on_threads(monkeypatch):
    x, g, attrs = _operands(CASES[0], np.float32)
    x, g = np.concatenate([x] * 5), np.concatenate([g] * 5)   # 15 images, 8 parts
    runs = []
    for nthreads in (1, 2, 3):
        monkeypatch.setattr(cpu, "_THREAD_LIMIT", [nthreads])
        runs.append(OP.impl(x, g, **attrs))
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_values(bad, taken):
    """A non-finite input goes back to im2col (the zero columns would meet it as NaN);
    a non-finite output gradient meets only what im2col's products meet."""
    x, g, attrs = _operands(CASES[0], np.float64)
    x[1, 2, 3, 4] = bad
    want = OP.reference(x, g, **attrs)
    got = OP.impl(x, g, **attrs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    _close(np.nan_to_num(got), np.nan_to_num(want))
    assert taken == [1]             # asked, and declined
    x, g, attrs = _operands(CASES[0], np.float64)
    g[0, 1, 2, 2] = bad
    want = OP.reference(x, g, **attrs)
    got = OP.impl(x, g, **attrs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert taken.count(2) == 1


def test_takes_only_the_convolutions_it_serves():
    """Strides, 3-D, few channels, other dtypes and images too large for the caches go
    to im2col; dilation, padding and 1-D are served."""
    x = np.zeros((2, 8, 9, 9), np.float32)
    ok = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    assert conv_shifted.applies(x, 4, **ok)
    assert conv_shifted.applies(x, 4, **(ok | dict(dilation=(2, 3), padding=(0, 2))))
    assert conv_shifted.applies(x[:, :, 0], 4, kernel=(3,), stride=(1,), padding=(1,),
                                dilation=(1,))
    for change in (dict(stride=(2, 1)), dict(padding=(-1, 0)), dict(kernel=(12, 3))):
        assert not conv_shifted.applies(x, 4, **(ok | change))
    assert not conv_shifted.applies(x[:, :7], 4, **ok)
    assert not conv_shifted.applies(x[:0], 4, **ok)
    assert not conv_shifted.applies(x.astype(np.float16), 4, **ok)
    assert not conv_shifted.applies(np.zeros((1, 8, 5, 5, 5), np.float32), 4, kernel=(3,) * 3,
                                    stride=(1,) * 3, padding=(1,) * 3, dilation=(1,) * 3)
    assert not conv_shifted.applies(np.zeros((1, 64, 224, 224), np.float32), 64, **ok)
    # a product too wide for the small kernels' K of at least MIN_K
    wide = blas_calls.small_gemm_macs() // (conv_shifted.MIN_K * 8) + 1
    assert not conv_shifted.applies(x, wide, **ok)


def test_weight_gradient_by_finite_differences(taken):
    """The weights' gradient of a layer whose weight gradient takes this path."""
    x = gcompile.tensor(RNG.standard_normal((2, 8, 6)), requires_grad=False)
    w = gcompile.tensor(RNG.standard_normal((2, 8, 2)) * 0.3, requires_grad=True)
    b = gcompile.tensor(RNG.standard_normal(2), requires_grad=True)

    def fn(w, b):
        return gcompile.nn.functional.conv1d(x, w, b, padding=1, dilation=2)
    assert gradcheck(fn, (w, b))
    assert taken.count(2) >= 1
