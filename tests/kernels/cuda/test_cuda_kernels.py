"""Generated CUDA kernels (simulator at tiny sizes) against NumPy: every elementwise
family, reductions with dims/keepdim, rows kernels (softmax, log_softmax, layer_norm),
the tiled GEMM with transposed and batched operands, and ``launch``'s refusals."""
from __future__ import annotations

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")

from kernels.cuda import compile_kernel, launch  # noqa: E402
from kernels.cuda import codegen  # noqa: E402
from kernels.cuda.gemm import tiled_gemm  # noqa: E402
from kernels.cuda.views import strided  # noqa: E402
from kernels.spec import KernelSpec, Phase, Stmt  # noqa: E402

RNG = np.random.default_rng(0)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def host(d):
    return d.copy_to_host()


def run(op, attrs, ins, shape, dtype):
    out = launch(op, attrs, [dev(a) if isinstance(a, np.ndarray) else a for a in ins],
                 [shape], [dtype])
    assert out is not None, op
    return host(out[0])


@pytest.mark.parametrize("op", ["neg", "exp", "tanh", "sigmoid", "relu", "abs", "sqrt",
                                "log1p", "erf", "floor"])
def test_unary(op):
    import math
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    if op in ("sqrt", "log1p"):
        x = np.abs(x)
    ref = {"neg": np.negative, "exp": np.exp, "tanh": np.tanh,
           "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "relu": lambda x: np.maximum(x, 0),
           "abs": np.abs, "sqrt": np.sqrt, "log1p": np.log1p, "floor": np.floor,
           "erf": lambda x: np.vectorize(math.erf)(x.astype(np.float64)).astype(np.float32),
           }[op](x)
    got = run(op, {}, [x], x.shape, "float32")
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)


def test_gelu_and_backward():
    x = RNG.standard_normal((2, 5)).astype(np.float64)
    g = RNG.standard_normal((2, 5)).astype(np.float64)
    from ir.registry import REGISTRY
    for approx in ("none", "tanh"):
        ref = REGISTRY["gelu"].impl(x, approximate=approx)
        np.testing.assert_allclose(run("gelu", {"approximate": approx}, [x], x.shape,
                                       "float64"), ref, rtol=1e-12, atol=1e-14)
        ref = REGISTRY["gelu_backward"].impl(g, x, approximate=approx)
        np.testing.assert_allclose(run("gelu_backward", {"approximate": approx}, [g, x],
                                       x.shape, "float64"), ref, rtol=1e-12, atol=1e-14)


def test_binary_broadcast_and_promotion():
    a = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    b = RNG.standard_normal((3, 1)).astype(np.float32)
    np.testing.assert_allclose(run("add", {}, [a, b], a.shape, "float32"), a + b, rtol=1e-6)
    np.testing.assert_allclose(run("div", {}, [a, b], a.shape, "float32"), a / b, rtol=1e-6)
    # int64 tensor * float64 tensor computes in float64
    i = np.arange(4, dtype=np.int64)
    f = RNG.standard_normal(4)
    np.testing.assert_allclose(run("mul", {}, [i, f], (4,), "float64"), i * f)
    # a Python scalar keeps the tensor's dtype
    np.testing.assert_allclose(run("sub", {}, [a, 1.5], a.shape, "float32"), a - 1.5,
                               rtol=1e-6)
    np.testing.assert_array_equal(run("remainder", {}, [np.arange(-4, 4).astype(np.float32),
                                                        3.0], (8,), "float32"),
                                  np.remainder(np.arange(-4, 4).astype(np.float32), 3))


def test_where_compare_cast():
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    b = RNG.standard_normal((4,)).astype(np.float32)
    m = run("gt", {}, [a, b], a.shape, "bool")
    np.testing.assert_array_equal(m, a > b)
    np.testing.assert_array_equal(run("eq", {}, [a, a], a.shape, "bool"),
                                  np.ones(a.shape, bool))
    np.testing.assert_array_equal(run("where", {}, [a > b, a, b], a.shape, "float32"),
                                  np.where(a > b, a, b))
    np.testing.assert_array_equal(run("where", {}, [a > 0, a, 0.0], a.shape, "float32"),
                                  np.where(a > 0, a, np.float32(0)))
    np.testing.assert_array_equal(run("cast", {"dtype": "int32"}, [a * 10], a.shape,
                                      "int32"), (a * 10).astype(np.int32))
    np.testing.assert_array_equal(run("cast", {"dtype": "float64"}, [a], a.shape, "float64"),
                                  a.astype(np.float64))


def test_strided_operands():
    a = RNG.standard_normal((4, 3)).astype(np.float32)
    da = dev(a)
    at = strided(da, (3, 4), (1, 3))  # the transpose as a view
    out = launch("mul", {}, [at, at], [(3, 4)], ["float32"])[0]
    np.testing.assert_allclose(host(out), a.T * a.T, rtol=1e-6)


@pytest.mark.parametrize("op,dims,keep", [("sum", (1,), False), ("sum", (0, 2), True),
                                          ("mean", None, False), ("amax", (0,), False),
                                          ("amin", (2,), True), ("prod", (1,), False),
                                          ("var", (2,), False), ("std", (0, 1), True)])
def test_reductions(op, dims, keep):
    x = RNG.standard_normal((3, 4, 5)).astype(np.float64)
    ax = dims if dims is not None else (0, 1, 2)
    fn = {"sum": np.sum, "mean": np.mean, "amax": np.amax, "amin": np.amin,
          "prod": np.prod, "var": lambda x, axis, keepdims: np.var(x, axis=axis, ddof=1,
                                                                   keepdims=keepdims),
          "std": lambda x, axis, keepdims: np.std(x, axis=axis, ddof=1,
                                                  keepdims=keepdims)}[op]
    ref = np.asarray(fn(x, axis=ax, keepdims=keep))
    attrs = {"dims": dims, "keepdim": keep}
    if op in ("var", "std"):
        attrs["correction"] = 1
    np.testing.assert_allclose(run(op, attrs, [x], ref.shape, "float64"), ref, rtol=1e-12)


def test_sum_of_ints_and_bools():
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.testing.assert_array_equal(run("sum", {"dims": (1,), "keepdim": False}, [x], (3,),
                                      "int64"), x.sum(1))
    b = x % 3 == 0
    np.testing.assert_array_equal(run("sum", {"dims": (0,), "keepdim": False}, [b], (4,),
                                      "int64"), b.sum(0))


def test_softmax_log_softmax_layer_norm():
    x = RNG.standard_normal((3, 7)).astype(np.float32)
    x[1, 2] = -np.inf
    e = np.exp(x - x.max(1, keepdims=True))
    sm = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(run("softmax", {"dim": -1}, [x], x.shape, "float32"), sm,
                               rtol=1e-5, atol=1e-7)
    with np.errstate(divide="ignore"):
        lsm = np.log(sm)
    np.testing.assert_allclose(run("log_softmax", {"dim": 1}, [x], x.shape, "float32"),
                               lsm, rtol=1e-5, atol=1e-6)
    y = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run("softmax", {"dim": 0}, [y], y.shape, "float32"),
                               np.exp(y) / np.exp(y).sum(0), rtol=1e-5)
    w = RNG.standard_normal(4).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    from ir.registry import REGISTRY
    ref = REGISTRY["layer_norm"].impl(y, w, b, normalized_ndim=1, eps=1e-5, has_weight=True,
                                      has_bias=True)
    got = run("layer_norm", {"normalized_ndim": 1, "eps": 1e-5, "has_weight": True,
                             "has_bias": True}, [y, w, b], y.shape, "float32")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_transposed_and_batched(dtype):
    tol = 1e-5 if dtype == "float32" else 1e-12
    a = RNG.standard_normal((5, 7)).astype(dtype)
    b = RNG.standard_normal((6, 7)).astype(dtype)  # used transposed
    out = cuda.device_array((5, 6), dtype)
    db = dev(b)
    tiled_gemm(dev(a), strided(db, (7, 6), (1, 7)), out)
    np.testing.assert_allclose(host(out), a @ b.T, rtol=tol, atol=tol)
    x = RNG.standard_normal((2, 3, 5)).astype(dtype)
    y = RNG.standard_normal((2, 5, 4)).astype(dtype)
    np.testing.assert_allclose(run("matmul", {}, [x, y], (2, 3, 4), dtype), x @ y,
                               rtol=tol, atol=tol)
    # a stacked input times a matrix (the batch broadcast by a zero stride), and vectors
    np.testing.assert_allclose(run("matmul", {}, [x, y[0]], (2, 3, 4), dtype), x @ y[0],
                               rtol=tol, atol=tol)
    v = RNG.standard_normal(5).astype(dtype)
    np.testing.assert_allclose(run("matmul", {}, [a[:, :5], v], (5,), dtype), a[:, :5] @ v,
                               rtol=tol, atol=tol)
    w = RNG.standard_normal((4, 5)).astype(dtype)
    bias = RNG.standard_normal(4).astype(dtype)
    np.testing.assert_allclose(run("linear", {}, [x, w, bias], (2, 3, 4), dtype),
                               x @ w.T + bias, rtol=tol, atol=tol)


def test_launch_refuses_what_it_cannot_run():
    x = dev(np.ones((2, 2), np.float32))
    assert launch("roll", {"shifts": (1,), "dims": (0,)}, [x], [(2, 2)], ["float32"]) is None
    assert launch("no_such_op", {}, [x], [(2, 2)], ["float32"]) is None
    # an integer division by a run-time divisor raises in torch: the host path serves it
    xi = dev(np.ones(3, np.int64))
    assert launch("floor_divide", {}, [xi, xi], [(3,)], ["int64"]) is None
    # host arrays are not device arrays
    assert launch("add", {}, [np.ones(2), np.ones(2)], [(2,)], ["float64"]) is None


def test_one_kernel_per_canonical_spec():
    st = (Stmt("a", "mul", (("in", 0), ("in", 0)), (), "float32"),)
    s1 = KernelSpec(("float32",), (("float32", "full"),),
                    (Phase("map", st, stores=((0, ("v", "a")),)),), "elementwise")
    st2 = (Stmt("b", "mul", (("in", 0), ("in", 0)), (), "float32"),)
    s2 = KernelSpec(("float32",), (("float32", "full"),),
                    (Phase("map", st2, stores=((0, ("v", "b")),)),), "elementwise")
    assert compile_kernel(s1) is compile_kernel(s2)


def test_rows_source_uses_warp_shuffles_only_off_the_simulator():
    from kernels.cuda.ops import softmax_spec
    spec = softmax_spec("float32", False)
    assert "shfl_down_sync" in codegen.rows_source(spec, 1, 1, 256, True)
    assert "shfl_down_sync" not in codegen.rows_source(spec, 1, 1, 16, False)


@pytest.mark.gpu
def test_large_softmax_on_gpu():
    x = RNG.standard_normal((64, 1000)).astype(np.float32)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(run("softmax", {"dim": 1}, [x], x.shape, "float32"),
                               e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    a = RNG.standard_normal((300, 200)).astype(np.float32)
    b = RNG.standard_normal((200, 100)).astype(np.float32)
    np.testing.assert_allclose(run("matmul", {}, [a, b], (300, 100), "float32"), a @ b,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_block_reductions_with_warp_shuffles_on_gpu(dtype):
    # rows longer than 128 run 256 threads per block: tree to 32, then warp shuffles
    x = (RNG.standard_normal((37, 3000)) * 10).astype(dtype)
    for op, ref, odt in (("sum", x.sum(1, dtype=np.int64 if dtype in ("int64", "bool")
                                         else dtype), "int64" if dtype in ("int64", "bool")
                          else dtype),
                         ("amax", x.max(1), dtype), ("amin", x.min(0), dtype)):
        dims = (0,) if op == "amin" else (1,)
        got = run(op, {"dims": dims, "keepdim": False}, [x], ref.shape, odt)
        if dtype.startswith("float"):
            np.testing.assert_allclose(got, ref, rtol=1e-4 if dtype == "float32" else 1e-12)
        else:
            np.testing.assert_array_equal(got, ref)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiled_gemm_at_odd_sizes_on_gpu(dtype):
    a = RNG.standard_normal((3, 131, 77)).astype(dtype)
    b = RNG.standard_normal((3, 65, 77)).astype(dtype)
    out = cuda.device_array((3, 131, 65), dtype)
    db = dev(b)
    tiled_gemm(dev(a), strided(db, (3, 77, 65), (65 * 77, 1, 77)), out)
    tol = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(host(out), a @ b.transpose(0, 2, 1), rtol=tol, atol=tol)


@pytest.mark.gpu
def test_elementwise_broadcast_at_size_on_gpu():
    a = RNG.standard_normal((512, 1, 300)).astype(np.float32)
    b = RNG.standard_normal((700, 1)).astype(np.float32)
    np.testing.assert_allclose(run("mul", {}, [a, b], (512, 700, 300), "float32"), a * b,
                               rtol=1e-6)


def test_sum_to_size_logsumexp_any_all_and_fills():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run("sum_to_size", {"shape": (3, 1)}, [x], (3, 1), "float32"),
                               x.sum(axis=(0, 2)).reshape(3, 1), rtol=1e-5)
    np.testing.assert_allclose(run("sum_to_size", {"shape": (4,)}, [x], (4,), "float32"),
                               x.sum(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_array_equal(run("sum_to_size", {"shape": (3, 4)}, [x], (3, 4),
                                      "float32")[None], x.sum(0, keepdims=True))
    m = x.max(axis=2, keepdims=True)
    ref = (np.log(np.exp(x - m).sum(axis=2, keepdims=True)) + m)[..., 0]
    np.testing.assert_allclose(run("logsumexp", {"dims": (2,), "keepdim": False}, [x],
                                   (2, 3), "float32"), ref, rtol=1e-5)
    b = x > 0.5
    np.testing.assert_array_equal(run("any", {"dims": (1,), "keepdim": False}, [b], (2, 4),
                                      "bool"), b.any(1))
    np.testing.assert_array_equal(run("all", {"dims": (0, 2), "keepdim": True}, [x], (1, 3, 1),
                                      "bool"), np.all(x, axis=(0, 2), keepdims=True))
    np.testing.assert_array_equal(run("ones_like", {}, [x], x.shape, "float32"),
                                  np.ones_like(x))
    np.testing.assert_array_equal(run("full_like", {"value": 2.5}, [x], x.shape, "float64"),
                                  np.full(x.shape, 2.5))


def test_gather_scatter_check():
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    idx = np.array([[0, 4], [-1, 2], [3, 3]], np.int64)
    ref = np.take_along_axis(x, np.where(idx < 0, idx + 5, idx), axis=1)
    np.testing.assert_array_equal(run("gather", {"dim": 1}, [x, idx], (3, 2), "float32"), ref)
    src = RNG.standard_normal((3, 2)).astype(np.float32)
    from ir.registry import REGISTRY
    for reduce in (None, "add"):
        ref = REGISTRY["scatter"].impl(x, idx, src, dim=1, reduce=reduce)
        got = run("scatter", {"dim": 1, "reduce": reduce}, [x, idx, src], x.shape, "float32")
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    # an index out of range: no device result, the host path raises torch's IndexError
    bad = dev(np.array([[5, 0], [0, 0], [0, 0]], np.int64))
    assert launch("gather", {"dim": 1}, [dev(x), bad], [(3, 2)], ["float32"]) is None
    t = np.array([0, 2, -100, 1], np.int64)
    attrs = {"kind": "range", "low": 0, "high": 2, "ignore": -100, "error": "IndexError",
             "message": "bad {bad}"}
    np.testing.assert_array_equal(run("check", attrs, [t], (4,), "int64"), t)
    assert launch("check", attrs, [dev(np.array([0, 3]))], [(2,)], ["int64"]) is None
    f = np.array([1.0, np.inf], np.float32)
    assert launch("check", {"kind": "finite"}, [dev(f)], [(2,)], ["float32"]) is None


@pytest.mark.parametrize("ones,batch_last", [(False, False), (True, True)])
def test_im2col_col2im(ones, batch_last):
    from ir.registry import REGISTRY
    x = RNG.standard_normal((2, 2, 5, 4)).astype(np.float32)
    attrs = {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 0), "dilation": (1, 1),
             "ones_row": ones, "batch_last": batch_last}
    ref = REGISTRY["im2col"].impl(x, **attrs)
    got = run("im2col", attrs, [x], ref.shape, "float32")
    np.testing.assert_array_equal(got, ref)
    back = REGISTRY["col2im"].impl(ref, spatial=(5, 4), **attrs)
    np.testing.assert_allclose(run("col2im", dict(attrs, spatial=(5, 4)), [ref], back.shape,
                                   "float32"), back, rtol=1e-6)


def test_cat():
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    b = np.arange(4, dtype=np.int64).reshape(2, 2)
    np.testing.assert_allclose(run("cat", {"dim": 1}, [a, b], (2, 5), "float32"),
                               np.concatenate([a, b.astype(np.float32)], axis=1))
    np.testing.assert_array_equal(run("cat", {"dim": 0}, [a, a], (4, 3), "float32"),
                                  np.concatenate([a, a]))


def test_max_pool_indices_gather_scatter():
    from ir.registry import REGISTRY
    x = RNG.standard_normal((2, 2, 5, 5)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    x[1, 1, :2, :2] = 7.0  # ties keep the first maximum
    attrs = {"kernel": (2, 2), "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1),
             "ceil_mode": True}
    ref = REGISTRY["max_pool_indices"].impl(x, **attrs)
    idx = run("max_pool_indices", attrs, [x], ref.shape, "int64")
    np.testing.assert_array_equal(idx, ref)
    vals = REGISTRY["pool_gather"].impl(x, ref)
    np.testing.assert_array_equal(run("pool_gather", {}, [x, ref], ref.shape, "float32"), vals)
    g = RNG.standard_normal(ref.shape).astype(np.float32)
    back = REGISTRY["pool_scatter"].impl(g, ref, shape=x.shape)
    np.testing.assert_allclose(run("pool_scatter", {"shape": x.shape}, [g, ref], x.shape,
                                   "float32"), back, rtol=1e-6)


def test_composite_ops_run_their_decomposition_on_the_device():
    from ir.registry import REGISTRY
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    t = np.array([0, 2, -100, 1], np.int64)
    for attrs in ({"reduction": "mean", "ignore_index": -100, "label_smoothing": 0.0},
                  {"reduction": "none", "ignore_index": -100, "label_smoothing": 0.1}):
        ref = np.asarray(REGISTRY["cross_entropy"].impl(x, t, **attrs))
        np.testing.assert_allclose(run("cross_entropy", attrs, [x, t], ref.shape, "float32"),
                                   ref, rtol=1e-5, atol=1e-6)
    y = RNG.standard_normal((4, 3)).astype(np.float32)
    ref = np.asarray(REGISTRY["mse_loss"].impl(x, y, reduction="sum"))
    np.testing.assert_allclose(run("mse_loss", {"reduction": "sum"}, [x, y], (), "float32"),
                               ref, rtol=1e-5)


def test_index_select_embedding_cumsum():
    from ir.registry import REGISTRY
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    i = np.array([3, 0, 3], np.int64)
    np.testing.assert_array_equal(run("index_select", {"dim": 0}, [x, i], (3, 3), "float32"),
                                  x[i])
    np.testing.assert_array_equal(run("index_select", {"dim": 1}, [x, i[:2] % 3], (4, 2),
                                      "float32"), x[:, i[:2] % 3])
    idx = np.array([[1, 3], [3, 0]], np.int64)
    np.testing.assert_array_equal(run("embedding", {"padding_idx": None}, [x, idx], (2, 2, 3),
                                      "float32"), x[idx])
    g = RNG.standard_normal((2, 2, 3)).astype(np.float32)
    ref = REGISTRY["embedding_backward"].impl(g, idx, num_weights=4, padding_idx=0)
    np.testing.assert_allclose(run("embedding_backward", {"num_weights": 4, "padding_idx": 0},
                                   [g, idx], (4, 3), "float32"), ref, rtol=1e-6)
    np.testing.assert_allclose(run("cumsum", {"dim": 1}, [x], x.shape, "float32"),
                               np.cumsum(x, axis=1), rtol=1e-6)
    b = np.arange(6, dtype=np.int32).reshape(2, 3)
    np.testing.assert_array_equal(run("cumsum", {"dim": 0}, [b], b.shape, "int64"),
                                  np.cumsum(b, axis=0, dtype=np.int64))

