"""Prepared GEMM calls (kernels.cpu.bound_gemm): the layouts bound are exactly those
NumPy's matmul runs as one plain GEMM, and the bound call's result is NumPy's bit for
bit, also after repointing; a plan's matmul steps use it. Two independent products
bound as one task (``bind_pair``) run side by side, each NumPy's result too."""
import numpy as np
import pytest

import gcompile as torch
from kernels.cpu import blas_calls, bound_gemm
from kernels.cpu import native_pool

pytestmark = pytest.mark.skipif(
    not (blas_calls.provide() and native_pool.available()),
    reason="needs NumPy's OpenBLAS and the native thread pool")

rng = np.random.default_rng(7)


def _mat(shape, dtype, order="C", pad=0):
    """A (shape) matrix in C or F order, inside a larger buffer when ``pad`` > 0 (a
    leading dimension past the row or column length)."""
    m, n = shape
    if order == "C":
        big = rng.standard_normal((m, n + pad)).astype(dtype)
        return big[:, :n]
    big = rng.standard_normal((n, m + pad)).astype(dtype)
    return big[:, :m].T


LAYOUTS = [(xo, yo, pad) for xo in "CF" for yo in "CF" for pad in (0, 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xo, yo, pad", LAYOUTS)
@pytest.mark.parametrize("m, k, n", [(2, 2, 2), (7, 13, 5), (64, 128, 96), (33, 65, 130)])
def test_bound_call_equals_numpy_bit_for_bit(dtype, xo, yo, pad, m, k, n):
    x, y = _mat((m, k), dtype, xo, pad), _mat((k, n), dtype, yo, pad)
    o = np.empty((m, n), dtype)
    bd = bound_gemm.bind(x, y, o)
    assert bd is not None
    bd()
    np.testing.assert_array_equal(o, np.matmul(x, y))
    # other arrays of the same layout: repointed, still NumPy's result
    x2, y2 = _mat((m, k), dtype, xo, pad), _mat((k, n), dtype, yo, pad)
    o2 = np.full((m, n), np.nan, dtype)
    assert bound_gemm.layout_of(x2, y2, o2) == bd.layout
    assert bd.repoint(x2, y2, o2)
    bd()
    np.testing.assert_array_equal(o2, np.matmul(x2, y2))


def test_output_rows_inside_a_larger_buffer():
    x, y = _mat((9, 6), np.float32), _mat((6, 5), np.float32)
    big = np.zeros((9, 8), np.float32)
    o = big[:, 2:7]
    bd = bound_gemm.bind(x, y, o)
    assert bd is not None
    bd()
    np.testing.assert_array_equal(o, np.matmul(x, y))
    assert not big[:, :2].any() and not big[:, 7:].any(), "nothing written outside o"


def _refused(x, y, o):
    return bound_gemm.numpy_gemm_args(x, y, o) is None and bound_gemm.bind(x, y, o) is None


@pytest.mark.parametrize("m, k, n", [(1, 8, 8), (8, 1, 8), (8, 8, 1), (0, 4, 4)])
def test_vector_and_empty_products_stay_with_numpy(m, k, n):
    """NumPy runs these as GEMV, a dot or its own loop, not GEMM."""
    x, y = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
    assert _refused(x, y, np.empty((m, n), np.float32))


def test_layouts_numpy_copies_or_runs_otherwise_stay_with_numpy():
    x, y = _mat((6, 8), np.float32), _mat((8, 5), np.float32)
    o = np.empty((6, 5), np.float32)
    assert _refused(x.astype(np.int64), y.astype(np.int64), o.astype(np.int64))
    assert _refused(x.astype(np.float16), y.astype(np.float16), o.astype(np.float16))
    assert _refused(x, y.astype(np.float64), o)
    assert _refused(x[:, ::2], y[:4], np.empty((6, 5), np.float32))  # no unit stride
    assert _refused(x[::-1], y, o)                                     # negative stride
    assert _refused(x, y, np.empty((5, 6), np.float32).T)              # F-ordered output
    assert _refused(x, y, np.empty((6, 10), np.float32)[:, ::2])       # strided output


def test_a_times_its_transpose_stays_with_numpy():
    """NumPy runs x @ x.T as SYRK and mirrors the triangle: another summation."""
    x = _mat((6, 9), np.float32)
    assert _refused(x, x.T, np.empty((6, 6), np.float32))


def test_overlapping_output_is_refused_and_repoint_declines_it():
    buf = rng.standard_normal((8, 8)).astype(np.float32)
    assert _refused(buf[:4, :4], buf[4:, :4], buf[2:6, 4:])
    x, y = _mat((4, 4), np.float32), _mat((4, 4), np.float32)
    bd = bound_gemm.bind(x, y, np.empty((4, 4), np.float32))
    assert bd is not None
    a = np.zeros((4, 4), np.float32)
    assert not bd.repoint(a, y, a.view()), "the output may not be an input"


def test_compiled_matmul_steps_run_bound_and_equal_eager():
    """A Linear on a 3-D input and a 2-D product with a transposed operand: bound after
    the first call, then equal to eager on new inputs (repointed) and on the same ones."""
    w = torch.randn(16, 12)
    b = torch.randn(9, 12)
    f = torch.compile(lambda x, z: ((x @ w).relu(), z @ b.t()))
    for _ in range(4):
        x, z = torch.randn(3, 5, 16), torch.randn(7, 12)
        got = f(x, z)
        want = ((x.numpy() @ w.numpy()).clip(0), z.numpy() @ b.numpy().T)
        for g, e in zip(got, want):
            np.testing.assert_array_equal(g.numpy(), e)
    steps = [s for s in f.entries[-1].executable.plan.steps if s.kind == "matmul"]
    assert len(steps) == 2 and all(s.run.bound is not None for s in steps)
    # an exported program ships the kernels loaded for its matmul steps' op
    from kernels.cpu.handwritten import loaded_for
    assert any(k.name == "gemm_call_float32" for k in loaded_for("matmul"))
    again = f(x, z)
    np.testing.assert_array_equal(again[1].numpy(), z.numpy() @ b.numpy().T)


def test_compiled_syrk_layout_keeps_numpy():
    x = torch.randn(6, 9)
    f = torch.compile(lambda x: x @ x.t())
    for _ in range(3):
        out = f(x)
    np.testing.assert_array_equal(out.numpy(), x.numpy() @ x.numpy().T)
    (st,) = [s for s in f.entries[-1].executable.plan.steps if s.kind == "matmul"]
    assert st.run.bound is None


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_pair_side_by_side_equals_numpy_bit_for_bit(dtype, two_threads):
    g, x, w = _mat((96, 40), dtype), _mat((96, 72), dtype), _mat((40, 72), dtype, "F", 3)
    first = (g.T, x, np.empty((40, 72), dtype))
    second = (g, w, np.empty((96, 72), dtype))
    pair = bound_gemm.bind_pair(first, second)
    assert pair is not None
    for _ in range(2):
        pair()
        np.testing.assert_array_equal(first[2], np.matmul(g.T, x))
        np.testing.assert_array_equal(second[2], np.matmul(g, w))
        g[...] = rng.standard_normal(g.shape)   # the same memory, new values


def test_bind_pair_refuses_what_cannot_run_side_by_side(two_threads):
    a, b = _mat((8, 6), np.float32), _mat((6, 5), np.float32)
    o1, o2 = np.empty((8, 5), np.float32), np.empty((8, 5), np.float32)
    assert bound_gemm.bind_pair((a, b, o1), (a, b, o2)) is not None
    # one output over the other product's operand
    big = np.zeros((8, 6), np.float32)
    assert bound_gemm.bind_pair((a, b, big[:, :5]), (big, b, o2)) is None
    # dtypes differ, a vector product
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert bound_gemm.bind_pair((a, b, o1), (a64, b64, o2.astype(np.float64))) is None
    assert bound_gemm.bind_pair((a, b, o1), (a[:1], b, o2[:1])) is None
    # one kernel thread: the products run one after the other, each on BLAS's threads
    torch.set_num_threads(1)
    assert bound_gemm.bind_pair((a, b, o1), (a, b, o2)) is None


@pytest.mark.parametrize("moved", ["none", "x", "y", "o"])
def test_repoint_to_fresh_views_and_one_moved_array(moved):
    """A plan's step sees fresh view objects of the same memory on every call (a
    parameter's transpose, an output the allocator hands back): the binding stays as it
    is; where one array moved, the call reads and writes the new one only."""
    x, y = _mat((9, 6), np.float32), _mat((6, 5), np.float32, "F")
    o = np.empty((9, 5), np.float32)
    bd = bound_gemm.bind(x, y, o)
    assert bd is not None
    bd()
    arrays = {"x": x.view(), "y": y.view(), "o": o.view()}
    if moved != "none":
        old = arrays[moved]
        arrays[moved] = np.asfortranarray(old) if moved == "y" else np.ascontiguousarray(old + 1)
    o_before = o.copy()
    assert bd.repoint(arrays["x"], arrays["y"], arrays["o"])
    arrays["o"][...] = np.nan
    bd()
    np.testing.assert_array_equal(arrays["o"], np.matmul(arrays["x"], arrays["y"]))
    if moved == "o":
        np.testing.assert_array_equal(o, o_before)  # the old output left alone
