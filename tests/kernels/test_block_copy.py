"""Bound row copies for ``cat`` and ``select_block_backward`` (kernels/cpu/block_copy.py):
a plan step's binding writes what NumPy's concatenate and slice assignments write, for
inputs whose rows need one stride, two (a transposed gradient) or none, on one and two
threads, and reads the operands' memory as it is when called."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile
import kernels.cpu as kcpu
from ir.registry import REGISTRY
from kernels.cpu import block_copy


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    n = request.param
    old_threads = gcompile.get_num_threads()
    gcompile.set_num_threads(n)
    old = kcpu.set_parallel_threshold(1 if n > 1 else 1 << 40)
    yield n
    kcpu.set_parallel_threshold(old)
    gcompile.set_num_threads(old_threads)


def _arr(rng, shape, dtype):
    return (rng.standard_normal(shape) * 10).astype(dtype)


CATS = [  # (shapes, dim): trailing, leading, middle, one empty input, size-1 axes
    ([(3, 4), (3, 1)], 1),
    ([(1, 5, 6), (4, 5, 6)], 0),
    ([(2, 3, 4), (2, 5, 4), (2, 1, 4)], 1),
    ([(2, 0, 3), (2, 4, 3)], -2),
    ([(1, 7), (1, 2)], -1),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32"])
@pytest.mark.parametrize("case", CATS, ids=lambda c: f"dim{c[1]}-{len(c[0])}in")
def test_bound_cat_equals_concatenate(case, dtype, threads):
    shapes, dim = case
    rng = np.random.default_rng(0)
    xs = [_arr(rng, s, dtype) for s in shapes]
    want = np.concatenate(xs, axis=dim)
    out = np.full(want.shape, 7, want.dtype)
    op = REGISTRY["cat"]
    assert op.impl(*xs, dim=dim, out=out) is out
    np.testing.assert_array_equal(out, want)
    out[...] = 7
    run = op.impl.bind(*xs, dim=dim, out=out)
    assert run is not None
    run()
    np.testing.assert_array_equal(out, want)
    for x in xs:   # new values in the same memory: the binding reads them
        x += 1
    run()
    np.testing.assert_array_equal(out, np.concatenate(xs, axis=dim))


def test_bound_cat_takes_strided_inputs_and_refuses_what_it_cannot_view():
    rng = np.random.default_rng(1)
    base = _arr(rng, (6, 4, 5), "float32")
    t = base.transpose(1, 0, 2)            # rows over two strides
    other = _arr(rng, (4, 6, 2), "float32")
    out = np.empty((4, 6, 7), np.float32)
    run = block_copy.cat.bind(t, other, dim=2, out=out)
    assert run is not None
    run()
    np.testing.assert_array_equal(out, np.concatenate([t, other], axis=2))
    # a row that is not contiguous, mixed dtypes, a non-contiguous output: NumPy's
    assert block_copy.cat.bind(base[:, :, ::2], base[:, :, :2], dim=2,
                               out=np.empty((6, 4, 5), np.float32)) is None
    assert block_copy.cat.bind(other, other.astype(np.float64), dim=2,
                               out=np.empty((4, 6, 4), np.float32)) is None
    assert block_copy.cat.bind(other, other, dim=2,
                               out=np.empty((4, 6, 8), np.float32)[..., ::2]) is None
    assert block_copy.cat.bind(other, other, dim=2) is None   # no buffer: nothing to bind


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "transposed"])
def test_bound_select_block_backward_equals_the_reference(index, transposed, dtype, threads):
    rng = np.random.default_rng(2)
    g = _arr(rng, (5, 4, 6), dtype)
    if transposed:   # a batch_first layer's gradient: its rows need two strides
        g = _arr(rng, (4, 5, 6), dtype).transpose(1, 0, 2)
    shape = (3, 5, 4, 6)
    op = REGISTRY["select_block_backward"]
    want = op.reference(g, shape, index)
    assert op.impl(g, shape=shape, index=index) is not None
    np.testing.assert_array_equal(op.impl(g, shape=shape, index=index), want)
    out = np.full(shape, 7, g.dtype)
    assert op.impl(g, shape=shape, index=index, out=out) is out
    np.testing.assert_array_equal(out, want)
    out[...] = 7
    run = op.impl.bind(g, shape=shape, index=index, out=out)
    assert run is not None
    run()
    np.testing.assert_array_equal(out, want)
    g *= 2
    run()
    np.testing.assert_array_equal(out, op.reference(g, shape, index))


def test_cat_and_select_block_steps_bind_in_a_plan():
    """A compiled function's cat and select_block_backward steps bind while their
    operands stay in the same memory (parameters, updated in place), and its results
    stay the eager ones over those updates."""
    import gcompile as torch
    from runtime.steps import _IntoRun

    rng = np.random.default_rng(3)
    a = torch.tensor(_arr(rng, (4, 3), "float32"))
    b = torch.tensor(_arr(rng, (4, 2), "float32"))
    w = torch.tensor(_arr(rng, (4, 5), "float32"), requires_grad=True)

    def f():
        c = torch.cat([a, b], dim=1)
        s = torch.stack([c * w, c * 2])[0]  # select_block: its gradient select_block_backward
        return torch.autograd.grad(s.sum(), [w])[0] * 3

    step = torch.compile(f)
    for _ in range(4):
        np.testing.assert_allclose(step().numpy(), 3 * torch.cat([a, b], dim=1).numpy(),
                                   rtol=1e-6)
        a.add_(1.5)
        b.mul_(-1)
    runs = {st.run.op.name: st.run for st in step.entries[-1].executable.plan.steps
            if isinstance(st.run, _IntoRun)}
    assert runs["cat"].bound is not None
