"""Native conv/pool/embedding/scatter-add kernels (kernels.cpu.nn_native) against the
NumPy implementations they replace (``op.reference``): the same results bit for bit,
with one thread and with the range split over two, over strides, padding, dilation,
ceil mode, 1-D/2-D/3-D, odd sizes and non-contiguous inputs; index errors raise as the
reference does; conv/pool gradients pass finite-difference checks and match torch. Each
also writes the same result into a given ``out=`` array (how plans run them)."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile
from ir.registry import REGISTRY
from kernels.cpu import nn_native, set_parallel_threshold

RNG = np.random.default_rng(1234)
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
    """Kernels split their range over this many threads (threshold 0: always split)."""
    monkeypatch.setenv("GCOMPILE_NUM_THREADS", str(request.param))
    old = set_parallel_threshold(0)
    yield request.param
    set_parallel_threshold(old)


@pytest.fixture(params=["planes", "rows"])
def col2im_units(request, monkeypatch):
    """col2im's two kernels: one unit per (n, c) plane, or per output row."""
    monkeypatch.setattr(nn_native, "_PLANES_MIN", 0 if request.param == "planes" else 1 << 60)
    return request.param


def _same(name, *args, **attrs):
    op = REGISTRY[name]
    assert op.reference is not None and op.impl is nn_native.NATIVE[name]
    got = op.impl(*args, **attrs)
    want = op.reference(*args, **attrs)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)  # NaNs compare equal here
    # into a given buffer (a plan's library step): every element written, no new array
    assert op.impl.writes_out
    out = np.full(want.shape, 7, want.dtype)
    assert op.impl(*args, out=out, **attrs) is out
    np.testing.assert_array_equal(out, want)
    return got


def _rand(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def _strided(a):
    """A non-contiguous array with the values of ``a`` (every other element of a
    larger array along the last axis)."""
    big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


CONV_CASES = [  # spatial, kernel, stride, padding, dilation
    ((11,), (3,), (1,), (0,), (1,)),
    ((12,), (4,), (3,), (2,), (2,)),
    ((7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((9, 8), (3, 2), (2, 3), (1, 0), (2, 1)),
    ((5, 6), (1, 1), (2, 2), (0, 0), (1, 1)),
    ((6, 7), (5, 5), (1, 2), (2, 2), (1, 1)),
    ((5, 6, 7), (2, 3, 2), (1, 2, 2), (1, 0, 1), (2, 1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{len(c[0])}d-{c}")
def test_im2col_col2im(case, dtype, threads, col2im_units):
    spatial, kernel, stride, padding, dilation = case
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    x = _rand((2, 3) + spatial, dtype)
    for ones_row in (False, True):
        for xin in (x, _strided(x), np.swapaxes(np.swapaxes(x, 0, 1).copy(), 0, 1)):
            cols = _same("im2col", xin, ones_row=ones_row, **attrs)
        g = _rand(cols.shape, dtype)
        _same("col2im", g, spatial=spatial, ones_row=ones_row, **attrs)
        _same("col2im", _strided(g), spatial=spatial, ones_row=ones_row, **attrs)
        _same("col2im", np.asfortranarray(g), spatial=spatial, ones_row=ones_row, **attrs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{len(c[0])}d-{c}")
def test_im2col_col2im_batch_last(case, batch, dtype, threads, col2im_units):
    """Batch-last columns (C*K [+1], N*L) (how conv lays them out for one GEMM over the
    batch): the native kernels equal the reference, which equals the (N, C*K [+1], L)
    columns with the batch moved next to L; col2im of batch-last columns equals col2im of
    the same columns in the (N, R, L) layout."""
    spatial, kernel, stride, padding, dilation = case
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    x = _rand((batch, 3) + spatial, dtype)
    for ones_row in (False, True):
        nrl = REGISTRY["im2col"].reference(x, ones_row=ones_row, **attrs)
        for xin in (x, _strided(x)):
            cols = _same("im2col", xin, ones_row=ones_row, batch_last=True, **attrs)
        rows, length = nrl.shape[1:]
        assert cols.shape == (rows, batch * length)
        np.testing.assert_array_equal(cols.reshape(rows, batch, length).transpose(1, 0, 2), nrl)
        g = _rand(cols.shape, dtype)
        want = REGISTRY["col2im"].reference(
            np.ascontiguousarray(g.reshape(rows, batch, length).transpose(1, 0, 2)),
            spatial=spatial, ones_row=ones_row, **attrs)
        for gin in (g, _strided(g), np.asfortranarray(g)):
            got = _same("col2im", gin, spatial=spatial, ones_row=ones_row, batch_last=True,
                        **attrs)
            np.testing.assert_array_equal(got, want)


CONV_LAYERS = [  # batch, C, Cout, groups, spatial, kernel, stride, padding, dilation, bias
    (4, 3, 6, 1, (9, 8), (3, 2), (2, 1), (1, 0), (1, 2), True),
    (2, 4, 6, 2, (7, 7), (3, 3), (1, 1), (1, 1), (1, 1), True),
    (1, 2, 3, 1, (5, 5), (3, 3), (1, 1), (0, 0), (1, 1), False),
    (3, 4, 4, 4, (6,), (3,), (1,), (1,), (1,), False),
    (2, 2, 4, 2, (4, 5, 4), (2, 2, 2), (1, 2, 1), (1, 0, 0), (1, 1, 2), True),
]


@pytest.mark.parametrize("case", CONV_LAYERS, ids=str)
def test_conv_matches_torch(case, threads):
    """conv1d/2d/3d forward and both gradients (one GEMM over the batch on batch-last
    columns; a GEMM per group) against torch, with groups, stride, padding, dilation,
    bias and batch 1; the output is C-contiguous like torch's."""
    torch = pytest.importorskip("torch")
    n, c, cout, groups, spatial, kernel, stride, padding, dilation, bias = case
    x = _rand((n, c) + spatial, np.float64)
    w = _rand((cout, c // groups) + kernel, np.float64)
    b = _rand((cout,), np.float64) if bias else None
    g = None

    def run(lib):
        nonlocal g
        ts = [lib.tensor(a, requires_grad=True) if a is not None else None for a in (x, w, b)]
        conv = getattr(lib.nn.functional, f"conv{len(spatial)}d")
        y = conv(ts[0], ts[1], ts[2], stride=stride, padding=padding, dilation=dilation,
                 groups=groups)
        if g is None:
            g = _rand(tuple(y.shape), np.float64)
        (y * lib.tensor(g)).sum().backward()
        return y, [t.grad.numpy() for t in ts if t is not None]

    y, grads = run(gcompile)
    assert y.is_contiguous()
    ty, tgrads = run(torch)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, tgrads):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


POOL_CASES = [  # kernel, stride, padding, dilation
    ((3,), (2,), (1,), (1,)),
    ((2, 2), (2, 2), (0, 0), (1, 1)),
    ((3, 3), (1, 1), (1, 1), (1, 1)),     # overlapping windows
    ((3, 2), (2, 1), (1, 1), (2, 1)),
    ((2, 3, 2), (2, 2, 1), (1, 1, 0), (1, 1, 2)),
    # no padding or dilation: the fixed-window kernel where every window fits
    ((3, 3), (1, 1), (0, 0), (1, 1)),
    ((2,), (3,), (0,), (1,)),
    ((2, 2, 2), (1, 2, 2), (0, 0, 0), (1, 1, 1)),
]


def _pool_input(nsp: int, dtype) -> np.ndarray:
    """A (2, 3, *spatial) input with ties, -inf and NaN: the first maximum wins, NaN
    propagates (the last NaN wins)."""
    x = _rand((2, 3) + (9, 7, 6)[-nsp:], dtype)
    x.reshape(-1)[::7] = 0.5
    x.reshape(-1)[5::31] = -np.inf
    x.reshape(-1)[11::53] = np.nan
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{len(c[0])}d-{c}")
def test_max_pool_gather_scatter(case, ceil_mode, dtype, threads):
    kernel, stride, padding, dilation = case
    x = _pool_input(len(kernel), dtype)
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                 ceil_mode=ceil_mode)
    for xin in (x, _strided(x)):
        idx = _same("max_pool_indices", xin, **attrs)
        _same("pool_gather", xin, idx)
    g = _rand(idx.shape, dtype)
    _same("pool_scatter", g, idx, shape=x.shape)
    _same("pool_scatter", _strided(g), _strided(idx), shape=x.shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{len(c[0])}d-{c}")
def test_max_pool_with_values_is_the_indices_and_their_gather(case, dtype, threads):
    """One pass for both (a plan's pool step): the reference's indices and values bit
    for bit where every window fits the contiguous input, nothing written elsewhere
    (padding, dilation, strided planes, an output that is not the result's array)."""
    kernel, stride, padding, dilation = case
    x = _pool_input(len(kernel), dtype)
    x.reshape(-1)[3::41] = np.inf
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                 ceil_mode=False)
    want_i = REGISTRY["max_pool_indices"].reference(x, **attrs)
    want_v = REGISTRY["pool_gather"].reference(x, want_i)
    fits = not any(padding) and all(d == 1 for d in dilation)
    both = REGISTRY["max_pool_indices"].impl.with_values
    for xin, contiguous in ((x, True), (_strided(x), False)):
        idx = np.full(want_i.shape, -5, np.int64)
        val = np.full(want_v.shape, 7, dtype)
        done = both(xin, indices=idx, values=val, **attrs)
        assert done == (fits and contiguous)
        if done:
            np.testing.assert_array_equal(idx, want_i)
            np.testing.assert_array_equal(val, want_v)
        else:
            assert (idx == -5).all() and (val == 7).all()
    if fits:
        wrong = np.empty(want_v.shape, np.float32 if dtype == np.float64 else np.float64)
        assert not both(x, indices=np.empty(want_i.shape, np.int64), values=wrong, **attrs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", [(1, 1), (0, 0)])
def test_all_minus_inf_window_keeps_first_position(dtype, padding, threads):
    x = np.full((1, 2, 5, 5), -np.inf, dtype)
    _same("max_pool_indices", x, kernel=(2, 2), stride=(2, 2), padding=padding,
          dilation=(1, 1), ceil_mode=padding == (1, 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fixed_window_pool_nan_runs_and_ties(dtype, threads):
    """The fixed-window kernel (MNIST's 2x2 pool) on windows of NaNs, infinities and
    ties: the first maximum wins, a NaN beats everything, the last NaN wins."""
    rng = np.random.default_rng(7)
    vals = np.array([np.nan, np.inf, -np.inf, 0.5, -0.5, 0.0, -0.0], dtype)
    x = vals[rng.integers(0, len(vals), (3, 4, 8, 10))]
    assert nn_native._maxpool_body((8, 10), (2, 2), (2, 2), (0, 0), (1, 1), (4, 5)) \
        is not nn_native._MAXPOOL
    # contiguous rows take the row-run form, the strided copy the fixed-window one
    assert "r_0_1" in nn_native._maxpool_body((8, 10), (2, 2), (2, 2), (0, 0), (1, 1),
                                              (4, 5), 1)
    for xin in (x, _strided(x)):
        _same("max_pool_indices", xin, kernel=(2, 2), stride=(2, 2), padding=(0, 0),
              dilation=(1, 1), ceil_mode=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("overlap", [False, True], ids=["disjoint", "overlapping"])
def test_pool_scatter_single_and_summed_positions_match_the_reference_bits(
        dtype, overlap, threads):
    """Disjoint windows write each value once (no float64 pass), overlapping ones sum
    in float64 in index order; both give the reference's bits, -0.0 landing as +0.0
    where it is a position's only value, and a plane whose indices repeat only in its
    last values taking the summed path."""
    x = _rand((2, 3, 6, 6), dtype)
    stride = (1, 1) if overlap else (2, 2)
    idx = REGISTRY["max_pool_indices"].impl(x, (2, 2), stride, (0, 0), (1, 1), False)
    g = _rand(idx.shape, dtype)
    g.reshape(-1)[::5] = -0.0
    got = _same("pool_scatter", g, idx, shape=x.shape)
    want = REGISTRY["pool_scatter"].reference(g, idx, x.shape)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    if not overlap:
        idx2 = idx.copy()
        idx2[1, 2, -1, -1] = idx2[1, 2, 0, 0]  # one repeat, found at the plane's end
        got = _same("pool_scatter", g, idx2, shape=x.shape)
        np.testing.assert_array_equal(np.signbit(got),
                                      np.signbit(REGISTRY["pool_scatter"].reference(
                                          g, idx2, x.shape)))


def test_pool_index_errors_match_reference():
    x = _rand((1, 2, 4, 4), np.float32)
    idx = np.zeros((1, 2, 2, 2), np.int64)
    idx[0, 1, 1, 1] = 16
    with pytest.raises(IndexError):
        REGISTRY["pool_gather"].impl(x, idx)
    with pytest.raises(IndexError):
        REGISTRY["pool_gather"].reference(x, idx)
    with pytest.raises(ValueError):
        REGISTRY["pool_scatter"].impl(_rand(idx.shape, np.float32), idx, shape=x.shape)


AVG_CASES = [  # kernel, stride, padding
    ((3,), (2,), (1,)),
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (1, 2), (1, 1)),
    ((3, 2), (2, 3), (1, 1)),
    ((2, 3, 3), (1, 2, 2), (1, 1, 0)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES, ids=lambda c: f"{len(c[0])}d-{c}")
def test_avg_pool_and_backward(case, dtype, threads):
    kernel, stride, padding = case
    spatial = (8, 7, 9)[-len(kernel):]
    x = _rand((2, 3) + spatial, dtype)
    for ceil_mode in (False, True):
        for cip, div in ((True, None), (False, None), (False, 5)):
            attrs = dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         count_include_pad=cip, divisor_override=div)
            out = _same("avg_pool", x, **attrs)
            _same("avg_pool", _strided(x), **attrs)
            g = _rand(out.shape, dtype)
            _same("avg_pool_backward", g, shape=x.shape, **attrs)
            _same("avg_pool_backward", _strided(g), shape=x.shape, **attrs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_embedding_lookup(dtype, idx_dtype, threads):
    w = _rand((13, 7), dtype)
    idx = RNG.integers(-13, 13, (6, 9)).astype(idx_dtype)  # negatives wrap, as take's
    _same("embedding", w, idx)
    _same("embedding", _strided(w), idx.T, padding_idx=2)
    with pytest.raises(IndexError):
        REGISTRY["embedding"].impl(w, np.array([3, 13], idx_dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_embedding_backward(dtype, idx_dtype, threads):
    idx = RNG.integers(0, 13, (6, 9)).astype(idx_dtype)
    idx[0, :4] = 5  # repeated rows: contributions add in index order
    g = _rand((6, 9, 7), dtype)
    for padding_idx in (None, 5, 0):
        _same("embedding_backward", g, idx, num_weights=13, padding_idx=padding_idx)
    _same("embedding_backward", _strided(g), idx.T.copy().T, num_weights=20)
    # leading axes that do not flatten by a view (a batch_first LSTM's transposed
    # gradient), with and without a skipped padding row: rows read in place, same sums
    gt = np.ascontiguousarray(g.transpose(1, 0, 2)).transpose(1, 0, 2)
    for padding_idx in (None, 5):
        _same("embedding_backward", gt, idx, num_weights=13, padding_idx=padding_idx)
        _same("embedding_backward", _strided(gt), idx, num_weights=13,
              padding_idx=padding_idx)
    bad = idx.copy()
    bad[2, 3] = 13
    with pytest.raises(IndexError):
        REGISTRY["embedding_backward"].impl(g, bad, num_weights=13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_put_accumulate_rows(dtype, threads):
    x = _rand((9, 4, 3), dtype)
    i = RNG.integers(-9, 9, 17)
    spec = (("t", 0),)
    _same("index_put", x, _rand((17, 4, 3), dtype), i, index=spec, accumulate=True)
    _same("index_put", x, _rand((3,), dtype), i.astype(np.int32), index=spec, accumulate=True)
    _same("index_put", _strided(x), _strided(_rand((17, 4, 3), dtype)), i, index=spec,
          accumulate=True)
    _same("index_put", x[:, 0, 0].copy(), _rand((17,), dtype), i, index=spec, accumulate=True)
    i2 = RNG.integers(0, 9, (5, 4))  # a 2-D index (the gradient of weight[idx])
    _same("index_put", x, _rand((5, 4, 4, 3), dtype), i2, index=spec, accumulate=True)
    _same("index_put", x, _rand((5, 1, 3), dtype), i2.T, index=spec, accumulate=True)
    # other layouts and accumulate=False go to the reference unchanged
    _same("index_put", x, _rand((9, 17, 3), dtype), i % 4,
          index=(("s", None, None, None), ("t", 0)), accumulate=True)
    _same("index_put", x, _rand((17, 4, 3), dtype), i % 9, index=spec, accumulate=False)
    with pytest.raises(IndexError):
        REGISTRY["index_put"].impl(x, _rand((2, 4, 3), dtype), np.array([0, 9]), index=spec,
                                   accumulate=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_scatter_add(dtype, idx_dtype, threads):
    x = _rand((7, 70), dtype)  # two column blocks
    src = _rand((9, 75), dtype)
    for dim, ishape in ((0, (9, 70)), (0, (5, 66)), (1, (7, 40)), (1, (4, 70))):
        hi = x.shape[dim]
        index = RNG.integers(-hi, hi, ishape).astype(idx_dtype)
        _same("scatter", x, index, src, dim=dim, reduce="add")
        _same("scatter", _strided(x), index, _strided(src), dim=dim, reduce="add")
    _same("scatter", x[:, 0].copy(), RNG.integers(0, 7, 8).astype(idx_dtype),
          src[:, 0].copy(), dim=0, reduce="add")
    _same("scatter", x, RNG.integers(0, 7, (3, 4)).astype(idx_dtype), src, dim=0, reduce=None)
    with pytest.raises(IndexError):
        REGISTRY["scatter"].impl(x, np.full((2, 3), 7, idx_dtype), src, dim=0, reduce="add")


def test_other_dtypes_fall_back_to_reference():
    x = RNG.integers(0, 9, (2, 3, 6, 6))
    _same("im2col", x, kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    _same("max_pool_indices", x, kernel=(2, 2), stride=(2, 2), padding=(0, 0),
          dilation=(1, 1), ceil_mode=False)


def test_layers_match_torch_and_finite_differences():
    """Conv2d -> max_pool2d -> avg_pool1d gradients through the native kernels: against
    torch, and finite differences in float64."""
    torch = pytest.importorskip("torch")
    x = _rand((2, 3, 9, 8), np.float64)
    w = _rand((4, 3, 3, 3), np.float64)

    def f(lib, x, w):
        y = lib.nn.functional.conv2d(x, w, stride=1, padding=1)
        y = lib.nn.functional.max_pool2d(y, 3, stride=2, padding=1, ceil_mode=True)
        y = lib.nn.functional.avg_pool1d(y.flatten(2), 3, stride=2, padding=1)
        return (y * y).sum()

    gx, gw = gcompile.tensor(x, requires_grad=True), gcompile.tensor(w, requires_grad=True)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    f(gcompile, gx, gw).backward()
    f(torch, tx, tw).backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw.grad.numpy(), tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    small = (gcompile.tensor(x[:1, :2, :5, :6], requires_grad=True),
             gcompile.tensor(w[:2, :2], requires_grad=True))
    assert gcompile.autograd.gradcheck(lambda a, b: f(gcompile, a, b), small)


def test_embedding_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    idx = RNG.integers(0, 11, (4, 6))
    w = _rand((11, 5), np.float32)
    gw = gcompile.tensor(w, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    g = _rand((4, 6, 5), np.float32)
    (gcompile.nn.functional.embedding(gcompile.tensor(idx), gw, padding_idx=2)
     * gcompile.tensor(g)).sum().backward()
    (torch.nn.functional.embedding(torch.tensor(idx), tw, padding_idx=2)
     * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(gw.grad.numpy(), tw.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_kernels_are_recorded_for_their_ops():
    """Exported programs ship the machine code handwritten.loaded_for(op) lists."""
    from kernels.cpu.handwritten import loaded_for
    x = _rand((1, 2, 5, 5), np.float32)
    REGISTRY["im2col"].impl(x, kernel=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1))
    assert any(k.name == "im2col" for k in loaded_for("im2col"))
    assert loaded_for("no_such_op") == []
