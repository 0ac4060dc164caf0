"""Eager softmax, log_softmax and layer_norm on the plans' rows kernels (runtime.eager_rows):
the NumPy reference's results, the compiled plan's bits, and the reference wherever the
kernel does not serve."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
import kernels.cpu
from ir.registry import REGISTRY
from runtime import eager_rows


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(eager_rows, "MIN_SIZE", 0)


def _x(shape, dtype=np.float32, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference on -inf rows
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 33), (1, 1), (64,)])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_matches_the_reference(small, op, shape, dtype, tol):
    x = _x(shape, dtype)
    x.reshape(-1)[::5] = -np.inf  # masked positions, as attention's
    got = REGISTRY[op].impl(x, dim=-1)
    want = REGISTRY[op].reference(x, dim=-1)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_softmax_of_a_fully_masked_row_is_nan_as_numpy(small):
    x = _x((3, 8))
    x[1] = -np.inf
    got = REGISTRY["softmax"].impl(x, dim=1)
    want = REGISTRY["softmax"].reference(x, dim=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1]).all()


@pytest.mark.parametrize("dtype,tol", [(np.float32, 3e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("k,weight,bias", [(1, True, True), (1, False, False), (2, True, False)])
def test_layer_norm_matches_the_reference(small, k, weight, bias, dtype, tol):
    x = _x((6, 5, 12), dtype)
    rng = np.random.default_rng(1)
    wb = [rng.standard_normal(x.shape[3 - k:]).astype(dtype) for f in (weight, bias) if f]
    attrs = dict(normalized_ndim=k, eps=1e-5, has_weight=weight, has_bias=bias)
    got = REGISTRY["layer_norm"].impl(x, *wb, **attrs)
    want = REGISTRY["layer_norm"].reference(x, *wb, **attrs)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_eager_ops_give_the_compiled_plans_bits(small):
    x = torch.tensor(_x((4, 16, 32)))
    w, b = torch.tensor(_x((32,), seed=2)), torch.tensor(_x((32,), seed=3))

    def f(x, w, b):
        return F.softmax(x, -1), F.log_softmax(x, -1), F.layer_norm(x, (32,), w, b)
    eager = f(x, w, b)
    cf = torch.compile(f)
    cf(x, w, b)  # the first call traces (eager values); the second runs the plan
    compiled = cf(x, w, b)
    assert cf.entries and cf.entries[0].executable.plan.num_kernels >= 1
    for a, c in zip(eager, compiled):
        np.testing.assert_array_equal(a.numpy(), c.numpy())


def test_the_reference_serves_what_the_kernel_does_not(small, monkeypatch):
    calls = []
    for name in ("softmax", "layer_norm"):
        ref = REGISTRY[name].reference
        monkeypatch.setattr(REGISTRY[name], "reference",
                            lambda *a, _ref=ref, **k: calls.append(1) or _ref(*a, **k))
        monkeypatch.setattr(REGISTRY[name].impl, "ref", REGISTRY[name].reference)
    x = _x((6, 8))
    REGISTRY["softmax"].impl(x, dim=0)                      # not the last dim
    REGISTRY["softmax"].impl(x.T, dim=1)                    # rows not of unit stride
    REGISTRY["softmax"].impl(x.astype(np.float16), dim=1)   # dtype
    REGISTRY["layer_norm"].impl(x, x[0].astype(np.float64), normalized_ndim=1, eps=1e-5,
                                has_weight=True, has_bias=False)  # mixed dtypes
    assert len(calls) == 4
    monkeypatch.setattr(eager_rows, "MIN_SIZE", 10 ** 9)
    REGISTRY["softmax"].impl(x, dim=1)                      # small
    assert len(calls) == 5


def test_gradients_flow_through_the_served_ops(small):
    x = torch.tensor(_x((3, 10)), requires_grad=True)
    w = torch.tensor(_x((10,), seed=4), requires_grad=True)
    (F.softmax(x, -1) * torch.arange(10.0)).sum().backward()
    (F.layer_norm(x, (10,), w) * torch.arange(10.0)).sum().backward()
    xn = x.detach().numpy().astype(np.float64)
    e = np.exp(xn - xn.max(1, keepdims=True))
    s = e / e.sum(1, keepdims=True)
    c = np.arange(10.0)
    g_soft = s * (c - (s * c).sum(1, keepdims=True))
    mu = xn.mean(1, keepdims=True)
    r = 1 / np.sqrt(xn.var(1, keepdims=True) + 1e-5)
    xh = (xn - mu) * r
    gy = np.broadcast_to(c * w.detach().numpy(), xn.shape)
    g_ln = r * (gy - gy.mean(1, keepdims=True) - xh * (gy * xh).mean(1, keepdims=True))
    np.testing.assert_allclose(x.grad.numpy(), g_soft + g_ln, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w.grad.numpy(), (c * xh).sum(0), rtol=1e-4, atol=1e-5)


def test_a_trace_does_not_compile_a_kernel_for_itself(small, monkeypatch):
    """A compiled function's first call (the trace, and the first step's eager rest)
    takes the reference where the rows kernel would compile: the plan runs its own."""
    monkeypatch.setattr(kernels.cpu, "needs_compile", lambda ks: True)  # an empty cache
    calls = []
    ref = REGISTRY["softmax"].reference
    monkeypatch.setattr(REGISTRY["softmax"].impl, "ref",
                        lambda *a, **k: calls.append(1) or ref(*a, **k))
    x = torch.tensor(_x((8, 16)))
    F.softmax(x, -1)
    assert calls == []  # eager: the kernel
    cf = torch.compile(lambda x: F.softmax(x, -1) * 2)
    cf(x)
    assert calls == [1]  # the trace: the reference
    np.testing.assert_allclose(cf(x).numpy(), 2 * ref(x.numpy(), -1), rtol=1e-6)


def test_a_trace_builds_no_rows_plan_even_when_cached(small, monkeypatch):
    """While a compiled function's first call runs, a rows plan not built yet is not
    built (graph passes and kernel loads a warm process paid for nothing: the plan runs
    its own kernel); outside it, the plan is built and serves."""
    native = REGISTRY["log_softmax"].impl
    built = []
    build = native._build
    monkeypatch.setattr(native, "_build", lambda *a: built.append(1) or build(*a))
    x = torch.tensor(_x((6, 37), np.float64))  # a row length no other test uses
    cf = torch.compile(lambda x: F.log_softmax(x, -1) + 1)
    want = REGISTRY["log_softmax"].reference(x.numpy(), dim=-1) + 1
    np.testing.assert_allclose(cf(x).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(cf(x).numpy(), want, rtol=1e-12)
    assert built == []
    np.testing.assert_allclose(F.log_softmax(x, -1).numpy(), want - 1, rtol=1e-12)
    assert built == [1]
