"""Native attention kernels (kernels/cpu/attention.py): ``sdpa`` and ``sdpa_backward``
served natively match their NumPy reference (``op.reference``) on one thread and split
over two, over strided, broadcast and several-block inputs, give the same bits whatever
the thread count, propagate NaNs as the reference does, and load from the disk cache
without Numba. The functional and its gradients are tested in
tests/gcompile/nn/test_attention_op.py."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile
import kernels.cpu.attention as att
from ir.registry import REGISTRY

TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-13)}
# (..., L, D): batch and heads, tiny, one item, odd sizes past a vector width, 2-D
SHAPES = [(2, 3, 5, 4), (1, 1, 1, 1), (1, 37, 19), (3, 2, 17, 33), (6, 3)]


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(4)]


def _check(g, q, k, v, scale, causal, dtype):
    fwd, bwd = REGISTRY["sdpa"], REGISTRY["sdpa_backward"]
    assert fwd.impl is att.NATIVE["sdpa"] and bwd.impl is att.NATIVE["sdpa_backward"]
    got = att.sdpa(q, k, v, scale, causal)
    np.testing.assert_allclose(got, fwd.reference(q, k, v, scale=scale, causal=causal),
                               **TOL[dtype])
    got = att.sdpa_backward(g, q, k, v, scale, causal)
    np.testing.assert_allclose(got, bwd.reference(g, q, k, v, scale=scale, causal=causal),
                               **TOL[dtype])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_native_matches_reference(shape, dtype, causal, threads):
    g, q, k, v = _inputs(shape, dtype)
    _check(g, q, k, v, 0.4, causal, dtype)


@pytest.mark.parametrize("causal", [False, True])
def test_query_rows_in_several_blocks(causal, monkeypatch):
    """Long sequences run in blocks of query rows; dk and dv sum over the blocks (under
    the causal mask each block's columns stop at its last row)."""
    monkeypatch.setattr(att, "BLOCK_VALUES", 7 * 23)
    assert att._block_rows(23, causal) == 7
    g, q, k, v = _inputs((2, 23, 5), "float64")
    _check(g, q, k, v, 0.6, causal, "float64")


def test_strided_broadcast_and_reversed_inputs():
    """Heads of a fused qkv projection are read in place (their row stride is the GEMM's
    leading dimension); broadcast batch dims and reversed rows work too."""
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((3, 6, 3, 2, 4)).astype(np.float32)  # (B, L, 3, H, D)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    g = rng.standard_normal((3, 6, 2, 4)).astype(np.float32).transpose(0, 2, 1, 3)
    assert not q.flags.c_contiguous and att._rows(q) is q
    _check(g, q, k, v, 0.5, True, "float32")
    kb = np.broadcast_to(k[:1], k.shape)   # one key set for every batch item
    _check(g, q, kb, v, 0.5, False, "float32")
    _check(g, q[:, :, ::-1], k, v[..., ::-1], 0.5, True, "float32")


def test_results_do_not_depend_on_the_thread_count():
    g, q, k, v = _inputs((4, 3, 20, 8), "float32", seed=3)
    res = []
    for n in (1, 2):
        old = gcompile.get_num_threads()
        gcompile.set_num_threads(n)
        try:
            res.append((att.sdpa(q, k, v, 0.3, True), att.sdpa_backward(g, q, k, v, 0.3, True)))
        finally:
            gcompile.set_num_threads(old)
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_and_inf_propagate_as_in_the_reference(dtype):
    g, q, k, v = _inputs((2, 6, 4), dtype, seed=4)
    q[0, 2, 1] = np.nan
    k[1, 3, 0] = np.inf
    for causal in (False, True):
        want = REGISTRY["sdpa"].reference(q, k, v, scale=0.5, causal=causal)
        got = att.sdpa(q, k, v, 0.5, causal)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], **TOL[dtype])


def test_other_dtypes_and_empty_shapes_use_the_reference():
    q = np.ones((2, 3, 4), np.float16)
    out = REGISTRY["sdpa"].impl(q, q, q, scale=0.5, causal=True)
    assert out.dtype == np.float16 and out.shape == (2, 3, 4)
    e = np.zeros((2, 0, 4), np.float32)
    assert att.sdpa(e, e, e, 0.5, False).shape == (2, 0, 4)
    assert att.sdpa_backward(e, e, e, e, 0.5, False).shape == (3, 2, 0, 4)


def test_out_buffer_is_written_in_place():
    g, q, k, v = _inputs((2, 5, 3), "float32")
    out = np.empty((3, 2, 5, 3), np.float32)
    assert att.sdpa_backward(g, q, k, v, 0.5, True, out=out) is out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("perm, cat_dim", [((0, 2, 1, 3), 2), ((0, 2, 1, 3), 3),
                                           ((1, 0, 2, 3), 0), ((0, 1, 2, 3), 1)])
def test_gradients_written_in_the_concatenated_layout(perm, cat_dim, dtype, causal,
                                                      threads):
    """With ``perm`` and ``cat_dim`` (a fused q/k/v projection's gradient), dq, dk and dv
    go straight where permuting and concatenating them would put them, from strided
    q, k, v (the heads of one qkv buffer) as the plan gives them."""
    b, t, h, d = 2, 7, 3, 4
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((b, t, 3 * h * d)).astype(dtype)
    q, k, v = (qkv[..., j * h * d:(j + 1) * h * d].reshape(b, t, h, d).transpose(0, 2, 1, 3)
               for j in range(3))
    g = rng.standard_normal((b, h, t, d)).astype(dtype)
    ref = REGISTRY["sdpa_backward"].reference
    want = np.concatenate([x.transpose(perm) for x in ref(g, q, k, v, scale=0.4,
                                                          causal=causal)], axis=cat_dim)
    np.testing.assert_array_equal(ref(g, q, k, v, scale=0.4, causal=causal, perm=perm,
                                      cat_dim=cat_dim), want)
    got = att.sdpa_backward(g, q, k, v, 0.4, causal, perm, cat_dim)
    np.testing.assert_allclose(got, want, **TOL[dtype])
    out = np.full(want.shape, np.nan, dtype)
    assert att.sdpa_backward(g, q, k, v, 0.4, causal, perm, cat_dim, out=out) is out
    np.testing.assert_allclose(out, want, **TOL[dtype])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("perm", [(0, 2, 1, 3), (1, 0, 2, 3), (2, 1, 0, 3), (0, 1, 3, 2)])
def test_output_written_permuted(perm, dtype, causal, threads):
    """With ``perm`` (the heads side by side again for the output projection), the
    output goes straight into that layout, from strided q, k, v; a permutation that
    moves the feature axis (its rows no longer contiguous) takes the reference."""
    b, t, h, d = 2, 7, 3, 4
    rng = np.random.default_rng(2)
    qkv = rng.standard_normal((b, t, 3 * h * d)).astype(dtype)
    q, k, v = (qkv[..., j * h * d:(j + 1) * h * d].reshape(b, t, h, d).transpose(0, 2, 1, 3)
               for j in range(3))
    ref = REGISTRY["sdpa"].reference
    want = ref(q, k, v, scale=0.4, causal=causal).transpose(perm)
    np.testing.assert_array_equal(ref(q, k, v, scale=0.4, causal=causal, perm=perm), want)
    got = att.sdpa(q, k, v, 0.4, causal, perm)
    assert got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, **TOL[dtype])
    out = np.full(want.shape, np.nan, dtype)
    assert att.sdpa(q, k, v, 0.4, causal, perm, out=out) is out
    np.testing.assert_allclose(out, want, **TOL[dtype])


def test_output_permutation_is_checked():
    from ir import dtypes as dt
    spec = ((2, 3, 5, 4), dt.float32)
    assert REGISTRY["sdpa"].infer([spec] * 3, {"scale": 1.0, "causal": False,
                                               "perm": (0, 2, 1, 3)})[0] == (2, 5, 3, 4)
    with pytest.raises(RuntimeError, match="does not permute"):
        REGISTRY["sdpa"].infer([spec] * 3, {"scale": 1.0, "causal": False, "perm": (0, 1)})


def test_bad_layout_attributes_are_refused():
    from ir import dtypes as dt
    spec = ((2, 3, 5, 4), dt.float32)
    with pytest.raises(RuntimeError, match="do not lay out"):
        REGISTRY["sdpa_backward"].infer([spec] * 4, {"scale": 1.0, "causal": False,
                                                     "perm": (0, 1, 2), "cat_dim": 1})


def test_kernels_load_without_numba_in_a_warm_process(two_processes):
    """The kernels come from the disk cache as machine code: a second process runs an
    attention forward and backward without importing Numba."""
    out = two_processes("import sys, numpy as np, kernels.cpu.attention as a\n"
                        "q = np.ones((2, 3, 5, 4), np.float32)\n"
                        "o = a.sdpa(q, q, q, 0.5, True)\n"
                        "a.sdpa_backward(o, q, q, q, 0.5, True)\n"
                        "print('numba' in sys.modules)\n")
    assert out[1] == "False"
