"""Eager activations served by generated kernels (kernels/cpu/eager_ew.py) against the
NumPy references they replace: every served (op, dtype) on contiguous, broadcast,
strided, transposed and flipped inputs, special values, sizes around the threshold, one
and two kernel threads; gradients through the public API; a warm process without Numba."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import gcompile as torch
from gcompile.autograd import gradcheck
from ir.registry import REGISTRY
from kernels import cpu
from kernels.cpu import eager_ew as E

CASES = [("gelu", {"approximate": "none"}), ("gelu", {"approximate": "tanh"}),
         ("gelu", {}),
         ("gelu_backward", {"approximate": "none"}), ("gelu_backward", {"approximate": "tanh"}),
         ("erf", {}), ("sigmoid", {}), ("silu", {}),
         ("leaky_relu", {"negative_slope": 0.01}), ("leaky_relu", {"negative_slope": 0}),
         ("softplus", {"beta": 1.0, "threshold": 20.0}), ("softplus", {"beta": 2, "threshold": 5}),
         ("elu", {"alpha": 1.0}), ("elu", {"alpha": 0.5})]
SERVED = [(op, at, d) for op, at in CASES for d in ("float32", "float64")
          if d in E.SERVED[(op, at.get("approximate", "none") if op.startswith("gelu")
                            else None)][0]]
SPECIAL = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100.0, -100.0,
           1e30, -1e30, 20.0, 2.5, -2.5]


def _ids(p):
    op, at, d = p
    return "-".join([op, d] + [f"{k}={v}" for k, v in at.items()])


def _tol(op, at, d):
    """float32 kernels use kernels.cpu.fastmath (3 ulp tanh; erf/exp ~1-2 ulp) where the
    references use NumPy's functions: ~1e-6. gelu_backward(tanh) multiplies (1 - t^2)
    near t = 1 by ~x^3, so those ulps become ~1e-5."""
    if d == "float64":
        return dict(rtol=1e-13, atol=1e-15)
    if op == "gelu_backward" and at.get("approximate") == "tanh":
        return dict(rtol=1e-6, atol=3e-5)
    return dict(rtol=1e-6, atol=2e-6)


@pytest.fixture
def small():
    """Serve arrays of any size from kernels."""
    old = E.set_min_size(0)
    yield
    E.set_min_size(old)


@pytest.fixture
def calls(monkeypatch):
    """Counts each served op's reference calls (0 means the kernel served)."""
    n = {}
    for op in E.served():
        impl = REGISTRY[op].impl
        ref = impl.ref

        def counted(*a, _ref=ref, _op=op, **k):
            n[_op] = n.get(_op, 0) + 1
            return _ref(*a, **k)
        monkeypatch.setattr(impl, "ref", counted)
    return n


def _inputs(op, d, x):
    rng = np.random.default_rng(1)
    if op == "gelu_backward":
        return [np.asarray(rng.standard_normal(x.shape) * 2, dtype=d), x]
    return [x]


def _check(op, at, d, ins, calls, native=True):
    od = REGISTRY[op]
    before = calls.get(op, 0)
    with np.errstate(all="ignore"):
        got = od.impl(*ins, **at)
        if all(a.ndim == 0 for a in ins):
            # np_erf (gelu's float64 reference) cannot take 0-d arrays: compare on (1,)
            want = od.reference(*[a.reshape(1) for a in ins], **at).reshape(())
        else:
            want = od.reference(*ins, **at)
    assert (calls.get(op, 0) == before) == native
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, equal_nan=True, **_tol(op, at, d))
    return got, want


@pytest.mark.parametrize("case", SERVED, ids=_ids)
def test_layouts_match_reference(case, small, calls):
    op, at, d = case
    rng = np.random.default_rng(0)
    base = (rng.standard_normal((37, 64)) * 4).astype(d)
    base[0, :len(SPECIAL)] = SPECIAL
    layouts = {
        "contiguous": base,
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "flipped": base[::-1, ::-2],
        "broadcast": np.broadcast_to(base[3], (5, 64)),
        "0-d": np.array(base[1, 1]),
    }
    for name, x in layouts.items():
        got, _ = _check(op, at, d, _inputs(op, d, x), calls)
        if name == "transposed" and op != "gelu_backward":
            assert got.flags.f_contiguous  # the input's layout, as NumPy's order="K"
    if op == "gelu_backward":
        g = (rng.standard_normal((37, 64))).astype(d)
        _check(op, at, d, [g, base[5]], calls)  # x broadcast along rows
        _check(op, at, d, [g[:, :1], base], calls)  # g broadcast along columns
        _check(op, at, d, [g[::2].T, base[::2].T], calls)


@pytest.mark.parametrize("case", SERVED, ids=_ids)
def test_threshold(case, calls):
    """The reference below MIN_SIZE times the op's tier, the kernel from there on."""
    op, at, d = case
    tier = E.SERVED[(op, at.get("approximate", "none") if op.startswith("gelu") else None)][1]
    n = E.MIN_SIZE * tier
    rng = np.random.default_rng(2)
    for size in (n - 1, n, n + 1):
        x = rng.standard_normal(size).astype(d) * 3
        got, want = _check(op, at, d, _inputs(op, d, x), calls, native=size >= n)
        if size < n:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("case", [c for c in SERVED if c[2] == "float32"] +
                         [c for c in SERVED if c[0] == "gelu" and c[2] == "float64"], ids=_ids)
def test_threads(case, threads, small, calls, monkeypatch):
    """Above PARALLEL_THRESHOLD a call splits over the kernel thread pool: the same
    results (each element computed alone) on one or two threads."""
    op, at, d = case
    monkeypatch.setenv("GCOMPILE_NUM_THREADS", threads)
    old = cpu.set_parallel_threshold(1000)
    try:
        x = (np.random.default_rng(3).standard_normal((65, 97)) * 4).astype(d)
        ins = _inputs(op, d, x)
        got, _ = _check(op, at, d, ins, calls)
        serial = REGISTRY[op].impl.kernel(np.dtype(d), at)[0]
        out = np.empty_like(got)
        serial(ins, [out], parallel=False)
        np.testing.assert_array_equal(got, out)
    finally:
        cpu.set_parallel_threshold(old)


@pytest.mark.filterwarnings("error")
def test_unserved_go_to_reference(small, calls):
    x64 = np.linspace(-3, 3, 50)
    for op, at, d in [("gelu", {"approximate": "tanh"}, "float64"), ("silu", {}, "float64"),
                      ("gelu", {}, "float16"), ("sigmoid", {}, "float16")]:
        _check(op, at, d, [x64.astype(d)], calls, native=False)
    x = np.linspace(-3, 3, 50, dtype=np.float32)
    _check("gelu_backward", {}, "float32", [x, x.astype(np.float64)], calls, native=False)
    _check("gelu", {"approximate": "sometimes"}, "float32", [x], calls, native=False)
    unaligned = np.frombuffer(b"\0" + x.tobytes(), np.float32, x.size, 1)
    assert not unaligned.flags.aligned
    _check("gelu", {}, "float32", [unaligned], calls, native=False)
    swapped = x.astype(">f4")
    _check("erf", {}, "float32", [swapped], calls, native=False)
    with pytest.raises(ValueError):
        REGISTRY["gelu_backward"].impl(x[:7], x[:5])


def test_eager_api_uses_kernels(small, calls):
    x = torch.randn(4, 33, 20) * 3
    for fn, op in [(torch.nn.functional.gelu, "gelu"), (torch.sigmoid, "sigmoid"),
                   (torch.erf, "erf"), (torch.nn.functional.silu, "silu"),
                   (torch.nn.functional.softplus, "softplus"), (torch.nn.functional.elu, "elu"),
                   (torch.nn.functional.leaky_relu, "leaky_relu")]:
        before = calls.get(op, 0)
        got = fn(x).numpy()
        assert calls.get(op, 0) == before, op
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(got, REGISTRY[op].reference(x.numpy()), rtol=1e-6,
                                       atol=2e-6)
    # a bfloat16 activation computes in float32 (through the float32 kernel)
    y = torch.nn.functional.gelu(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("module", ["GELU", "GELU_tanh", "SiLU", "Sigmoid", "Softplus", "ELU",
                                    "LeakyReLU"])
def test_module_gradients(module, small, calls):
    """float64 gradcheck through the modules with the kernels serving every size."""
    m = (torch.nn.GELU(approximate="tanh") if module == "GELU_tanh"
         else getattr(torch.nn, module)())
    x = (torch.randn(3, 7, dtype=torch.float64) * 2).requires_grad_()
    assert gradcheck(m, (x,))
    y = m(x)
    y.backward(torch.ones_like(y))
    assert x.grad is not None and np.isfinite(x.grad.numpy()).all()


def test_gelu_double_backward(small):
    x = (torch.randn(5, 6, dtype=torch.float64) * 2).requires_grad_()
    from gcompile.autograd import gradgradcheck
    for approx in ("none", "tanh"):
        assert gradgradcheck(lambda t, a=approx: torch.nn.functional.gelu(t, approximate=a),
                             (x,))


def test_kernels_load_without_numba_in_a_warm_process(two_processes):
    """import gcompile registers the kernels without Numba; the first process compiles
    gelu's kernel, the second loads it from the disk cache as machine code."""
    out = two_processes("import sys, gcompile as torch\n"
                        "x = torch.randn(64, 256)\n"
                        "torch.nn.functional.gelu(x)\n"
                        "print('numba' in sys.modules)\n")
    assert out == ["True", "False"]  # compiled (the first had a cold cache), then loaded


def test_a_kernel_that_cannot_be_built_warns_once(small, monkeypatch):
    """No Numba on a cold cache, or a compiler error: one warning, then the reference."""
    class Broken:
        def __call__(self, inputs, outputs, parallel=None):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(E, "_FAILED", set())
    monkeypatch.setattr(E, "compile_kernel", lambda spec: Broken())
    impl = E._Native("sigmoid")
    x = np.linspace(-5, 5, 300, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        got = impl(x)
    np.testing.assert_array_equal(got, REGISTRY["sigmoid"].reference(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(impl(x), got)
        assert E._Native("sigmoid")(x) is not None  # a new instance: no second warning


@pytest.mark.parametrize("d", ["float32", "float64"])
@pytest.mark.parametrize("form", ["x, 0.0", "-0.0, x", "x, -0.0", "x, nan", "x, y", "x, y[0]",
                                  "cond row", "x.T, 1", "x, np scalar"])
def test_where_served_bit_for_bit(d, form, small, calls):
    """where(cond, x, y) on float arrays (or one Python number): a kernel serves it, and the
    result equals np.where bit for bit (NaN, -0.0 and broadcasting included)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 7)).astype(d)
    x[0, :3] = [np.nan, -0.0, np.inf]
    y = rng.standard_normal((6, 7)).astype(d)
    c = rng.standard_normal((6, 7)) > 0
    args = {"x, 0.0": (c, x, 0.0), "-0.0, x": (c, -0.0, x), "x, y": (c, x, y),
            "x, y[0]": (c, x, y[0]), "cond row": (c[0], x, y),
            "x.T, 1": (c.T, x.T, 1), "x, -0.0": (c, x, -0.0), "x, nan": (c, x, float("nan")),
            "x, np scalar": (c, x, np.dtype(d).type(0.5))}[form]
    before = calls.get("where", 0)
    got = REGISTRY["where"].impl(*args)
    want = np.where(*args)
    assert calls.get("where", 0) == before
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(f"i{got.itemsize}"), want.view(f"i{want.itemsize}"))


def test_where_unserved_forms_go_to_numpy(small, calls):
    """Mixed dtypes, integer or bool values, two Python numbers: NumPy's rules, NumPy's code."""
    c = np.array([True, False, True])
    cases = [(c, np.ones(3, np.float32), np.ones(3)), (c, np.arange(3), 0),
             (c, 1.0, 2.0), (c.astype(np.int8), np.ones(3), 0.0), (c, np.ones(3), True),
             (c, np.ones(3, np.float32), np.float64(2.0))]
    for args in cases:
        before = calls.get("where", 0)
        got = REGISTRY["where"].impl(*args)
        assert calls.get("where", 0) == before + 1
        np.testing.assert_array_equal(got, np.where(*args))
