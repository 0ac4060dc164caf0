"""Convolution by lanes of images (kernels.cpu.conv_native) against the NumPy references
of ``conv``, ``conv_input_grad`` and ``conv_weight_grad`` over strides, padding,
dilation, 1-D/2-D/3-D, the bias column, odd sizes, lanes and parts that do not divide
the batch and non-contiguous inputs; results that do not depend on the thread count;
gradients (first and second order) against finite differences and torch."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile
import kernels.cpu as cpu
from gcompile.autograd import gradcheck, gradgradcheck
from gcompile.bench_models import train_step
from ir.registry import REGISTRY
from kernels.cpu import conv_native, conv_winograd

RNG = np.random.default_rng(7)
DTYPES = [np.float32, np.float64]
# Each geometry (window, strides, padding, dilation) builds its own column kernels, per
# dtype (``nn_native.fixed_args``), and this folder's tests compile into an empty cache:
# the cases are few, and the float64 ones share the finite-difference tests' geometries.
CASES = [  # spatial, kernel, stride, padding, dilation
    ((11,), (3,), (2,), (1,), (2,)),
    ((9, 8), (3, 2), (2, 3), (1, 0), (2, 1)),
    ((7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((5, 6, 7), (2, 3, 2), (1, 2, 2), (1, 0, 1), (2, 1, 1)),
]
F64_CASES = (0, 1, 3)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
    monkeypatch.setattr(cpu, "_THREAD_LIMIT", [request.param])
    return request.param


@pytest.fixture(params=["generic", "per-geometry"])
def columns(request, monkeypatch):
    """The column loops of one kernel per op and dtype, or of one built for the
    geometry (``FIXED_MIN_COLUMNS``: large convolutions)."""
    monkeypatch.setattr(conv_native, "FIXED_MIN_COLUMNS",
                        1 << 62 if request.param == "generic" else 0)
    return request.param


def _rand(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def _strided(a):
    """The values of ``a`` in every other element of a larger array's last axis."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _operands(case, dtype, n=5, c=3, cout=4, ones_row=True):
    spatial, kernel, stride, padding, dilation = case
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                 ones_row=ones_row)
    x = _rand((n, c) + spatial, dtype)
    w2 = _rand((cout, c * int(np.prod(kernel)) + ones_row), dtype)
    y = REGISTRY["conv"].reference(x, w2, **attrs)
    return x, w2, _rand(y.shape, dtype), attrs


def _check(name, args, attrs, exact):
    op = REGISTRY[name]
    assert op.impl is conv_native.NATIVE[name] and op.impl.writes_out
    want = op.reference(*args, **attrs)
    got = op.impl(*args, **attrs)
    assert got.shape == want.shape and got.dtype == want.dtype
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        # sums of many products: rounding scales with the largest of them, not the result
        tol = 1e-5 if got.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    out = np.full(want.shape, 7, want.dtype)
    assert op.impl(*args, out=out, **attrs) is out
    np.testing.assert_array_equal(out, got)
    return got


@pytest.mark.parametrize("ones_row", [False, True])
@pytest.mark.parametrize("case,dtype", [(c, np.float32) for c in CASES]
                         + [(CASES[i], np.float64) for i in F64_CASES],
                         ids=lambda v: f"{len(v[0])}d-{v}" if isinstance(v, tuple) else
                         np.dtype(v).name)
def test_native_equals_reference(case, ones_row, dtype, threads, columns):
    """Each image's output and input gradient is one GEMM, as in the reference: equal bit
    for bit; the weight gradient sums in another order: equal to rounding."""
    x, w2, g, attrs = _operands(case, dtype, ones_row=ones_row)
    spatial = case[0]
    for xin in (x, _strided(x), np.flip(x, -1), np.swapaxes(np.swapaxes(x, 0, 1).copy(), 0, 1)):
        _check("conv", (xin, w2), attrs, exact=True)
        _check("conv_weight_grad", (xin, g), attrs, exact=False)
    for gin in (g, np.swapaxes(np.swapaxes(g, 0, 1).copy(), 0, 1)):
        _check("conv_input_grad", (gin, w2), dict(attrs, spatial=spatial), exact=True)
    _check("conv", (x, np.asfortranarray(w2)), attrs, exact=True)


@pytest.mark.parametrize("case", CASES[2:4], ids=str)
def test_results_do_not_depend_on_threads(case, monkeypatch, columns):
    x, w2, g, attrs = _operands(case, np.float32, n=13)
    runs = []
    for nthreads in (1, 2, 3):
        monkeypatch.setattr(cpu, "_THREAD_LIMIT", [nthreads])
        runs.append((REGISTRY["conv"].impl(x, w2, **attrs),
                     REGISTRY["conv_input_grad"].impl(g, w2, spatial=case[0], **attrs),
                     REGISTRY["conv_weight_grad"].impl(x, g, **attrs)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_other_dtypes_and_empty_batches_use_the_reference():
    case = CASES[2]
    x, w2, g, attrs = _operands(case, np.float32)
    half = REGISTRY["conv"].impl(x.astype(np.float16), w2.astype(np.float16), **attrs)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, REGISTRY["conv"].reference(x, w2, **attrs), rtol=2e-2,
                               atol=5e-2)
    assert REGISTRY["conv"].impl(x[:0], w2, **attrs).shape == (0, 4, 7, 9)
    assert REGISTRY["conv_weight_grad"].impl(x[:0], g[:0], **attrs).shape == w2.shape


def test_a_steady_conv_keeps_its_column_buffers():
    """The caller's column buffers are reused, not allocated on every call."""
    x, w2, _, attrs = _operands(CASES[2], np.float32)
    REGISTRY["conv"].impl(x, w2, **attrs)
    kept = dict(conv_native._LOCAL.arrays)
    REGISTRY["conv"].impl(x, w2, **attrs)
    assert all(conv_native._LOCAL.arrays[k] is a for k, a in kept.items())


def _conv_fn(nsp, stride, padding, dilation):
    conv = getattr(gcompile.nn.functional, f"conv{nsp}d")
    return lambda x, w, b: conv(x, w, b, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("case", [CASES[i] for i in F64_CASES], ids=str)
def test_conv_gradients_by_finite_differences(case):
    """First and second order (the three ops differentiate into each other)."""
    spatial, kernel, stride, padding, dilation = case
    spatial = tuple(max(s - 2, 5) for s in spatial)  # the same kernels, fewer differences
    x = gcompile.tensor(_rand((2, 2) + spatial, np.float64), requires_grad=True)
    w = gcompile.tensor(_rand((2, 2) + kernel, np.float64), requires_grad=True)
    b = gcompile.tensor(_rand((2,), np.float64), requires_grad=True)
    fn = _conv_fn(len(spatial), stride, padding, dilation)
    assert fn(x, w, b).grad_fn.name() == "ConvolutionBackward0"
    assert gradcheck(fn, (x, w, b))
    assert gradgradcheck(fn, (x, w, b))


def test_double_backward_matches_torch():
    """A gradient penalty: d/dθ of |∂loss/∂x|², against torch."""
    torch = pytest.importorskip("torch")
    x0, w0, b0 = _rand((3, 2, 9, 8), np.float64), _rand((4, 2, 3, 2), np.float64), \
        _rand((4,), np.float64)
    grads = []
    for lib in (gcompile, torch):
        x, w, b = (lib.tensor(a, requires_grad=True) for a in (x0, w0, b0))
        y = lib.nn.functional.conv2d(x, w, b, stride=(2, 3), padding=(1, 0), dilation=(2, 1))
        gx, = lib.autograd.grad((y ** 2).sum(), x, create_graph=True)
        ((gx ** 2).sum() + (y ** 3).mean()).backward()
        grads.append([t.grad.numpy() for t in (x, w, b)])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_compiled_cnn_step_runs_conv_ops_and_equals_eager():
    torch = gcompile
    nn = gcompile.nn

    def make():
        torch.manual_seed(3)
        model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(6, 4, (3, 2), stride=2), nn.Flatten(),
                              nn.Linear(4 * 4 * 5, 5))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, train_step(model, opt, nn.functional.cross_entropy)
    x, y = torch.randn(7, 3, 9, 10), torch.randint(0, 5, (7,))
    (m1, s1), (m2, s2) = make(), make()
    f = torch.compile(s2)
    for _ in range(3):
        np.testing.assert_allclose(f(x, y).item(), s1(x, y).item(), rtol=1e-6)
    ops = {s.nodes[0].op for s in f.entries[-1].executable.plan.steps}
    assert {"conv", "conv_input_grad", "conv_weight_grad"} <= ops
    assert "im2col" not in ops and "col2im" not in ops
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5,
                                   atol=1e-7)


def test_column_kernels_are_built_for_the_geometry(monkeypatch):
    """Large convolutions use im2col / col2im with the window, strides and flags baked in
    (the index arithmetic folds), one kernel per geometry whatever the channels or sizes;
    small ones share one kernel per op and dtype."""
    x, w2, _, attrs = _operands(CASES[2], np.float32)
    assert conv_native._fixed_for(conv_native.im2col_args(x, attrs["kernel"], attrs["stride"],
                                                          attrs["padding"], attrs["dilation"],
                                                          True, 0)[0], ("s4",), 5) is None
    monkeypatch.setattr(conv_native, "FIXED_MIN_COLUMNS", 0)
    from kernels.cpu import handwritten as hw
    from kernels.cpu import nn_native

    def fixed():
        return {k.source for op in ("conv", "conv_input_grad")
                for k in hw.loaded_for(op) if k.name == f"{op}_lanes"}
    seen = []
    for c, sp in ((3, (7, 9)), (5, (11, 6))):
        before = fixed()
        x, w2, g, attrs = _operands((sp, (3, 3), (1, 2), (1, 0), (1, 1)), np.float32, c=c)
        REGISTRY["conv"].impl(x, w2, **attrs)
        REGISTRY["conv_input_grad"].impl(g, w2, spatial=sp, **attrs)
        seen.append(fixed() - before)
    im2col = [src for src in fixed() if "def im2col(x, out" in src and "    SW = 2\n" in src
              and "    KW = 3\n" in src and "    PH = 1\n" in src]
    assert im2col and not seen[1]  # the second layer reuses the first one's kernels
    with pytest.raises(ValueError, match="top line"):
        nn_native._fixed("def body(a, lo, hi):\n    pass\n", {"a": 1})


# Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions of at least MIN_CHANNELS channels:
# odd and even sizes (partial tiles), each padding up to 2 per side (the input gradient
# pads by 2 - P), the bias column, float64.
WINO_CASES = [  # n, c, h, w, cout, padding, ones_row
    (3, 8, 7, 9, 9, (1, 1), True),
    (2, 9, 6, 5, 8, (0, 2), False),
    (2, 12, 8, 8, 10, (2, 1), True),
    (1, 8, 4, 3, 8, (0, 0), False),
]
WINO_TOL = {np.float32: 2e-6, np.float64: 1e-14}


def _wino_operands(case, dtype):
    n, c, h, w, cout, padding, ones_row = case
    attrs = dict(kernel=(3, 3), stride=(1, 1), padding=padding, dilation=(1, 1),
                 ones_row=ones_row)
    x = _rand((n, c, h, w), dtype)
    w2 = _rand((cout, 9 * c + ones_row), dtype)
    y = REGISTRY["conv"].reference(x, w2, **attrs)
    return x, w2, _rand(y.shape, dtype), attrs


def _close(got, want, dtype):
    tol = WINO_TOL[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", WINO_CASES, ids=str)
def test_winograd_forward_and_input_gradient_match_reference(case, dtype, threads,
                                                             monkeypatch):
    """Forward and input gradient by Winograd (its kernel ran: a transform of the
    filters was asked for) equal the reference to rounding, also into ``out=``, from a
    non-contiguous input, and whatever the thread count."""
    x, w2, g, attrs = _wino_operands(case, dtype)
    assert conv_winograd.applies(x, w2.shape[0], (3, 3), (1, 1), attrs["padding"], (1, 1))
    calls = []
    real = conv_winograd.plan
    monkeypatch.setattr(conv_winograd, "plan",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    spatial = x.shape[2:]
    conv, igrad = REGISTRY["conv"], REGISTRY["conv_input_grad"]
    y = conv.impl(x, w2, **attrs)
    _close(y, conv.reference(x, w2, **attrs), dtype)
    gi = igrad.impl(g, w2, spatial=spatial, **attrs)
    _close(gi, igrad.reference(g, w2, spatial=spatial, **attrs), dtype)
    assert len(calls) == 2
    from kernels.cpu import handwritten as hw
    for op in ("conv", "conv_input_grad"):  # an exported program ships its machine code
        assert any(k.name == "conv_winograd" for k in hw.loaded_for(op))
    np.testing.assert_array_equal(conv.impl(_strided(x), w2, **attrs), y)
    out = np.full(y.shape, 7, y.dtype)
    assert conv.impl(x, w2, out=out, **attrs) is out
    np.testing.assert_array_equal(out, y)
    out = np.full(gi.shape, 7, gi.dtype)
    assert igrad.impl(g, w2, spatial=spatial, out=out, **attrs) is out
    np.testing.assert_array_equal(out, gi)


@pytest.mark.parametrize("ones_row", [False, True])
def test_winograd_filter_transform_is_g_g_gt(ones_row):
    """The native transform of the filters (and of the input gradient's turned ones)
    is G g Gᵀ per filter, computed in float64 and rounded once."""
    rng = np.random.default_rng(4)
    cout, c = 5, 3
    w2 = rng.standard_normal((cout, 9 * c + ones_row)).astype(np.float32)
    G = conv_winograd._G
    g = w2[:, :9 * c].reshape(cout, c, 3, 3).astype(np.float64)
    want = np.einsum("ai,ocij,bj->aboc", G, g, G).reshape(16, cout, c).astype(np.float32)
    np.testing.assert_array_equal(_filters(w2, c, False), want)
    turned = g[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)   # the input gradient's (c, cout)
    want = np.einsum("ai,ocij,bj->aboc", G, turned, G).reshape(16, c, cout).astype(np.float32)
    np.testing.assert_array_equal(_filters(w2, c, True), want)


def _filters(w2, c, flip):
    from kernels.cpu import handwritten as hw
    u, _, task = conv_winograd.filters_task(w2, c, flip, False, "conv")
    hw.run_tasks([task])
    return u


def test_winograd_results_do_not_depend_on_threads(monkeypatch):
    x, w2, g, attrs = _wino_operands(WINO_CASES[0], np.float32)
    x, g = np.concatenate([x] * 5), np.concatenate([g] * 5)  # 15 images over the lanes
    runs = []
    for nthreads in (1, 2, 3):
        monkeypatch.setattr(cpu, "_THREAD_LIMIT", [nthreads])
        runs.append((REGISTRY["conv"].impl(x, w2, **attrs),
                     REGISTRY["conv_input_grad"].impl(g, w2, spatial=x.shape[2:], **attrs)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_values_take_im2col(bad):
    """An inf in the input (or the output gradient, or the weights) gives what im2col
    gives, ±inf where the products are, not the NaN the transforms would make of it."""
    x, w2, g, attrs = _wino_operands(WINO_CASES[0], np.float32)
    spatial = x.shape[2:]
    conv, igrad = REGISTRY["conv"], REGISTRY["conv_input_grad"]
    for args in ((_with(x, bad), w2), (x, _with(w2, bad))):
        np.testing.assert_array_equal(conv.impl(*args, **attrs), conv.reference(*args, **attrs))
    for args in ((_with(g, bad), w2), (g, _with(w2, bad))):
        np.testing.assert_array_equal(igrad.impl(*args, spatial=spatial, **attrs),
                                      igrad.reference(*args, spatial=spatial, **attrs))


def _with(a, value):
    a = a.copy()
    a.flat[a.size // 2] = value
    return a


def test_winograd_takes_only_the_convolutions_it_serves():
    """Strides, dilation, other windows, few channels, padding past 2 (for the input
    gradient), 1-D and images too large for the caches go to im2col."""
    x = np.zeros((1, 8, 9, 9), np.float32)
    ok = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    assert conv_winograd.applies(x, 4, **ok)
    for change in (dict(stride=(2, 1)), dict(dilation=(1, 2)), dict(kernel=(3, 2)),
                   dict(padding=(-1, 0))):
        assert not conv_winograd.applies(x, 4, **(ok | change))
    assert not conv_winograd.applies(x[:, :7], 4, **ok)
    assert not conv_winograd.applies(np.zeros((1, 8, 9), np.float32), 4, kernel=(3,),
                                     stride=(1,), padding=(1,), dilation=(1,))
    big = np.zeros((1, 64, 224, 224), np.float32)
    assert not conv_winograd.applies(big, 64, **ok)
    assert not conv_winograd.applies(x.astype(np.float16), 4, **ok)


def test_winograd_conv_gradients_by_finite_differences():
    """First and second order through a layer whose forward and input gradient take the
    Winograd path (8 channels in and out; the weights' own gradient, by shifted GEMMs
    here, is checked in test_conv_shifted, and differencing their 576 entries would
    dominate the suite)."""
    x = gcompile.tensor(_rand((1, 8, 4, 5), np.float64), requires_grad=True)
    w = gcompile.tensor(_rand((8, 8, 3, 3), np.float64) * 0.3)
    b = gcompile.tensor(_rand((8,), np.float64), requires_grad=True)
    fn = _conv_fn(2, (1, 1), (1, 1), (1, 1))
    assert gradcheck(fn, (x, w, b))
    assert gradgradcheck(fn, (x, w, b))


def _bound_equals_calls(op, args, attrs, change):
    """A plan step's binding of ``op`` (``impl.bind``) writes the call's bits into its
    buffer, and after ``change()`` (new values in the same arrays) the call's bits for
    those values."""
    impl = REGISTRY[op].impl
    want = impl(*args, **attrs)
    out = np.full(want.shape, 7, want.dtype)
    run = impl.bind(*args, out=out, **attrs)
    assert run is not None
    run()
    np.testing.assert_array_equal(out, want)
    change()
    run()
    np.testing.assert_array_equal(out, impl(*args, **attrs))
    return run, out


@pytest.mark.parametrize("case", [CASES[1], CASES[2]], ids=str)
def test_bound_im2col_convolutions_equal_the_calls(case, threads):
    x, w2, g, attrs = _operands(case, np.float32)
    spatial = x.shape[2:]

    def change():
        np.multiply(x, -1.5, out=x)
        np.add(w2, 0.25, out=w2)
        np.multiply(g, 2, out=g)
    _bound_equals_calls("conv", (x, w2), attrs, change)
    _bound_equals_calls("conv_input_grad", (g, w2), dict(attrs, spatial=spatial), change)
    _bound_equals_calls("conv_weight_grad", (x, g), attrs, change)
    # an operand the call would copy (not C-contiguous): no binding
    assert REGISTRY["conv"].impl.bind(_strided(x), w2, out=np.empty(g.shape, g.dtype),
                                      **attrs) is None


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_bound_winograd_and_shifted_convolutions_equal_the_calls(bad, threads):
    """The bound Winograd forward and input gradient (the filter transform, then the
    lanes) and the shifted weight gradient give the calls' bits; a value that is not
    finite, arriving between calls, gives im2col's result as the call does."""
    x, w2, g, attrs = _wino_operands(WINO_CASES[0], np.float32)
    spatial = x.shape[2:]

    def change():
        np.multiply(w2, 0.5, out=w2)
        np.subtract(x, 1, out=x)
        np.add(g, 0.5, out=g)
    runs = [_bound_equals_calls("conv", (x, w2), attrs, change),
            _bound_equals_calls("conv_input_grad", (g, w2), dict(attrs, spatial=spatial),
                                change),
            _bound_equals_calls("conv_weight_grad", (x, g), attrs, change)]
    x.flat[x.size // 3] = bad
    g.flat[g.size // 3] = bad
    for (run, out), op, args, extra in zip(
            runs, ("conv", "conv_input_grad", "conv_weight_grad"),
            ((x, w2), (g, w2), (x, g)), ({}, {"spatial": spatial}, {})):
        run()
        np.testing.assert_array_equal(out, REGISTRY[op].impl(*args, **attrs, **extra))
        assert np.isinf(out).any() if bad == np.inf else np.isnan(out).any()
