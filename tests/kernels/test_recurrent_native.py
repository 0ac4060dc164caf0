"""Native recurrent step kernels (kernels/cpu/recurrent.py): the scan ops served natively
match their NumPy reference (``op.reference``) forward and backward, on one thread and
split over two, and load from the disk cache without Numba. The layers built on them
are tested against torch in tests/gcompile/nn/test_rnn_native.py."""
from __future__ import annotations


import numpy as np
import pytest

import gcompile
import kernels.cpu as kcpu
import kernels.cpu.recurrent as rec
from kernels.cpu import handwritten as hw
from ir.registry import REGISTRY

# (T, B, H): odd, tiny, past a vector width, and rows split unevenly over two threads
SIZES = [(5, 3, 7), (1, 1, 1), (4, 2, 33), (3, 9, 20)]
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
    """One thread, or two with every step's rows split over the kernel pool."""
    n = request.param
    old_threads = gcompile.get_num_threads()
    monkeypatch.setenv("GCOMPILE_NUM_THREADS", str(n))
    gcompile.set_num_threads(n)
    old = kcpu.set_parallel_threshold(1 if n > 1 else 1 << 40)
    yield n
    kcpu.set_parallel_threshold(old)
    gcompile.set_num_threads(old_threads)


def _ops(name):
    fwd, bwd = REGISTRY[name], REGISTRY[name + "_backward"]
    assert fwd.impl is rec.NATIVE[name] and fwd.reference is not None
    assert bwd.impl is rec.NATIVE[name + "_backward"] and bwd.reference is not None
    return fwd, bwd


def _check(name, args, attrs, dtype, gplanes):
    """Forward native == reference; backward of native == backward of reference, with a
    random cotangent on the state planes ``gplanes``."""
    fwd, bwd = _ops(name)
    out = fwd.impl(*args, **attrs)
    ref = fwd.reference(*args, **attrs)
    assert out.dtype == ref.dtype == np.dtype(dtype) and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, **TOL[dtype])
    into = np.full(out.shape, 7, out.dtype)   # a plan's buffer: filled, bit for bit
    assert fwd.impl.writes_out and fwd.impl(*args, out=into, **attrs) is into
    np.testing.assert_array_equal(into, out)
    rng = np.random.default_rng(1)
    g = np.zeros_like(ref)
    if gplanes is None:
        g[...] = rng.standard_normal(ref.shape)
    else:
        for p in gplanes:
            g[p] = rng.standard_normal(ref.shape[1:])
    if name == "lstm_scan":
        rest = (args[2], args[3])        # c0, W_hh
    elif name == "gru_scan":
        rest = (args[1], args[2])        # h0, W_hh
    else:
        rest = (args[2],)                # W_hh
    got = bwd.impl(g, ref, *rest, **attrs)
    want = bwd.reference(g, ref, *rest, **attrs)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, **TOL[dtype])
    into = np.full(got.shape, 7, got.dtype)
    assert bwd.impl.writes_out and bwd.impl(g, ref, *rest, out=into, **attrs) is into
    np.testing.assert_array_equal(into, got)


def _arr(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_lstm_native_matches_reference(dtype, size, threads):
    t, b, h = size
    rng = np.random.default_rng(0)
    args = (_arr(rng, (t, b, 4 * h), dtype), _arr(rng, (b, h), dtype), _arr(rng, (b, h), dtype),
            _arr(rng, (4 * h, h), dtype, 0.4), _arr(rng, 4 * h, dtype))
    _check("lstm_scan", args, {}, dtype, (0, 1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_gru_native_matches_reference(dtype, size, threads):
    t, b, h = size
    rng = np.random.default_rng(0)
    args = (_arr(rng, (t, b, 3 * h), dtype), _arr(rng, (b, h), dtype),
            _arr(rng, (3 * h, h), dtype, 0.4), _arr(rng, 3 * h, dtype))
    _check("gru_scan", args, {}, dtype, (0,))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_rnn_native_matches_reference(nonlinearity, dtype, size, threads):
    t, b, h = size
    rng = np.random.default_rng(0)
    args = (_arr(rng, (t, b, h), dtype), _arr(rng, (b, h), dtype),
            _arr(rng, (h, h), dtype, 0.4))
    _check("rnn_scan", args, {"nonlinearity": nonlinearity}, dtype, None)


def test_strided_inputs_and_fallbacks():
    """Views are made contiguous; other dtypes, mixed dtypes and empty shapes take the
    reference; a bad nonlinearity is refused."""
    rng = np.random.default_rng(2)
    t, b, h = 4, 3, 5
    xw = _arr(rng, (b, t, 4 * h), "float32").transpose(1, 0, 2)   # batch-first view
    h0, c0 = _arr(rng, (b, h), "float32"), _arr(rng, (b, h), "float32")
    w = _arr(rng, (h, 4 * h), "float32", 0.4).T
    bias = _arr(rng, 8 * h, "float32")[::2]
    fwd, _ = _ops("lstm_scan")
    np.testing.assert_allclose(fwd.impl(xw, h0, c0, w, bias),
                               fwd.reference(xw, h0, c0, w, bias), **TOL["float32"])
    empty = np.zeros((0, b, 4 * h), np.float32)
    assert fwd.impl(empty, h0, c0, w, bias).shape == (7, 0, b, h)
    half = [a.astype(np.float16) for a in (xw, h0, c0, w, bias)]
    np.testing.assert_array_equal(fwd.impl(*half), fwd.reference(*half))
    rnn, _ = _ops("rnn_scan")
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn.impl(xw[..., :h], h0, w[:h], nonlinearity="sigmoid")


@pytest.mark.parametrize("layer", ["lstm", "gru"])
def test_scans_run_whole_sequences_in_one_kernel_and_leave_blas_threads(layer, threads):
    """With NumPy's OpenBLAS the LSTM and GRU scans run as one kernel per sequence (each
    thread's rows through every step, OpenBLAS's GEMM called from the kernel on one
    thread), and OpenBLAS's thread count is the caller's again afterwards."""
    from kernels.cpu import blas_calls
    if not blas_calls.provide():
        pytest.skip("NumPy's bundled OpenBLAS (scipy_openblas64_) is not loaded")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(3)
    t_len, b, h = 6, 8, 16
    gates = 4 if layer == "lstm" else 3
    xw, w = _arr(rng, (t_len, b, gates * h), "float32"), _arr(rng, (gates * h, h), "float32", 0.3)
    s0, bias = _arr(rng, (b, h), "float32"), _arr(rng, (gates * h,), "float32")
    fwd, bwd = _ops(f"{layer}_scan")
    args = (xw, s0, s0, w, bias) if layer == "lstm" else (xw, s0, w, bias)
    rest = (s0, w)  # (c0 or h0, W_hh)
    with threadpoolctl.threadpool_limits(2, "blas"):
        out = fwd.impl(*args)
        grad = bwd.impl(np.ones_like(out), out, *rest)
        after = [d["num_threads"] for d in threadpoolctl.threadpool_info()
                 if "numpy.libs" in d.get("filepath", "")
                 and "scipy_openblas64_" in d.get("filepath", "")]
    assert after and after[0] == 2
    for way in ("fwd", "bwd"):
        k = rec.seq_kernel(f"{layer}_{way}_seq", "float32")
        assert k._fn is not None
        # an exported program whose steps run the scan ships the kernel's machine code
        op = f"{layer}_scan" + ("_backward" if way == "bwd" else "")
        assert k in hw.loaded_for(op)
    np.testing.assert_allclose(out, fwd.reference(*args), **TOL["float32"])
    np.testing.assert_allclose(grad, bwd.reference(np.ones_like(out), out, *rest),
                               **TOL["float32"])


@pytest.mark.parametrize("layer", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bound_scans_equal_the_calls_and_read_current_values(layer, dtype, threads):
    """A plan step's binding of a scan (``impl.bind``: W_hh^T written into its own buffer,
    then the sequence kernel) gives the call's bits, and on a second run reads the
    operands' memory as it is then (a training step updates W_hh in place)."""
    from kernels.cpu import blas_calls
    if not blas_calls.provide():
        pytest.skip("NumPy's bundled OpenBLAS (scipy_openblas64_) is not loaded")
    rng = np.random.default_rng(5)
    t_len, b, h = 5, 9, 20
    gates = 4 if layer == "lstm" else 3
    xw, w = _arr(rng, (t_len, b, gates * h), dtype), _arr(rng, (gates * h, h), dtype, 0.3)
    s0, bias = _arr(rng, (b, h), dtype), _arr(rng, (gates * h,), dtype)
    fwd, bwd = _ops(f"{layer}_scan")
    args = (xw, s0, s0, w, bias) if layer == "lstm" else (xw, s0, w, bias)
    rest = (s0, w)
    out = fwd.impl(*args)   # loads the kernels (a binding needs them loaded)
    g = _arr(rng, out.shape, dtype)
    bwd.impl(g, out, *rest)
    y = np.full(out.shape, 7, out.dtype)
    run_f = fwd.impl.bind(*args, out=y)
    dx = np.full((t_len + 1, b, (4 if layer == "lstm" else 6) * h), 7, out.dtype)
    run_b = bwd.impl.bind(g, y, *rest, out=dx)
    assert run_f is not None and run_b is not None
    for _ in range(2):
        run_f()
        run_b()
        np.testing.assert_array_equal(y, fwd.impl(*args))
        np.testing.assert_array_equal(dx, bwd.impl(g, y, *rest))
        w *= 0.9   # in place, as an optimizer step
        xw += 0.1
    strided = (xw[:, ::2], s0[::2]) + args[2:]   # the call would copy: no binding
    strided = strided[:2] + (s0[::2],) + strided[3:] if layer == "lstm" else strided
    assert fwd.impl.bind(*strided, out=np.empty((7 if layer == "lstm" else 5, t_len, 5, h),
                                                 dtype)) is None


@pytest.mark.parametrize("small", [64, 4000], ids=["row-by-row", "uneven-blocks"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sequence_gemms_in_row_blocks(small, dtype, threads, monkeypatch):
    """Where OpenBLAS has small-matrix kernels, a thread's per-step GEMM runs in blocks of
    rows each within ``SMALL`` multiply-adds (``blas_calls.gemm_rows``); with limits that
    make single rows, or blocks of 3 and 2 of a thread's 5 rows, both layers still match
    their reference."""
    from kernels.cpu import blas_calls
    if not blas_calls.provide():
        pytest.skip("NumPy's bundled OpenBLAS (scipy_openblas64_) is not loaded")
    monkeypatch.setitem(blas_calls._STATE, "small", small)
    monkeypatch.setattr(rec, "_STEP_KERNELS", {})
    t, b, h = 3, 9, 20
    rng = np.random.default_rng(5)
    lstm = (_arr(rng, (t, b, 4 * h), dtype), _arr(rng, (b, h), dtype), _arr(rng, (b, h), dtype),
            _arr(rng, (4 * h, h), dtype, 0.4), _arr(rng, 4 * h, dtype))
    _check("lstm_scan", lstm, {}, dtype, (0, 1))
    gru = (_arr(rng, (t, b, 3 * h), dtype), _arr(rng, (b, h), dtype),
           _arr(rng, (3 * h, h), dtype, 0.4), _arr(rng, 3 * h, dtype))
    _check("gru_scan", gru, {}, dtype, (0,))
    for name in ("lstm_fwd_seq", "lstm_bwd_seq", "gru_fwd_seq", "gru_bwd_seq"):
        k = rec.seq_kernel(name, dtype)
        assert f"SMALL = {small}\n" in k.source and k._fn is not None


def test_kernels_load_without_numba_in_a_warm_process(two_processes):
    """The step kernels come from the disk cache as machine code: a second process runs
    an LSTM forward and backward without importing Numba."""
    out = two_processes("import sys, numpy as np, kernels.cpu.recurrent as r\n"
                        "x = np.ones((3, 2, 8), np.float32); s = np.zeros((2, 2), np.float32)\n"
                        "w = np.full((8, 2), .1, np.float32); b = np.zeros(8, np.float32)\n"
                        "o = r.lstm_scan(x, s, s, w, b)\n"
                        "r.lstm_scan_backward(np.ones_like(o), o, s, w)\n"
                        "print('numba' in sys.modules)\n")
    assert out[1] == "False"
