"""In-place elementwise writes land in the destination's own storage, eagerly and while a
function is traced (``Tensor._ew_into``), ``out=`` of the result's shape too, and the
in-place composites (``lerp_``, ``addcmul_``, ``addcdiv_``) go through one temporary:
with the same values, bit for bit, as the out-of-place ops, and the same compiled
results. Memory is measured with tracemalloc (NumPy reports its buffers there): an
optimizer traced op by op must peak where eager does (issue 20)."""
import tracemalloc
import types

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F
from gcompile.bench_models import train_step


def _peak(fn, *args):
    """Bytes allocated at the highest point of ``fn(*args)``, beyond what lived before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn(*args)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_inplace_op_in_a_trace_allocates_no_result_sized_buffer():
    x = torch.randn(256, 256)
    rec = types.SimpleNamespace(peak=None)  # not a guarded value: set during the trace

    def f(x):
        t = x * 2.0               # one temporary, made by the function
        tracing = tracemalloc.is_tracing()
        if tracing:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        t.mul_(0.5).add_(x).sub_(1.0)
        if tracing:
            rec.peak = tracemalloc.get_traced_memory()[1] - base
        return t

    c = torch.compile(f)
    tracemalloc.start()
    try:
        c(x)                      # the tracing call: computed eagerly, recorded
    finally:
        tracemalloc.stop()
    assert rec.peak is not None and rec.peak < x._data.nbytes / 4, rec.peak  # no copies
    for _ in range(2):
        np.testing.assert_array_equal(c(x).numpy(), f(x).numpy())
    assert c.entries and not c.graph_breaks


def test_out_equal_to_an_operand_is_written_in_place():
    a = torch.randn(64, 32)
    b = torch.rand(64, 32) + 0.5
    want = a.numpy() / b.numpy()
    keep = b._data
    r = torch.div(a, b, out=b)
    assert r is b and b._data is keep
    np.testing.assert_array_equal(b.numpy(), want)
    want = np.exp(a.numpy())
    torch.exp(a, out=a)
    np.testing.assert_array_equal(a.numpy(), want)


def test_out_of_a_lower_dtype_is_refused_as_torch_does():
    out = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="can't be cast"):
        torch.add(torch.ones(3), 1.5, out=out)
    np.testing.assert_array_equal(out.numpy(), 0)  # nothing written


def test_out_in_a_compiled_function_matches_eager():
    def f(a, b):
        t = b + 1.0
        torch.div(a, t, out=t)    # a / t into t's storage
        return t * 2.0

    c = torch.compile(f)
    a, b = torch.randn(8, 5), torch.rand(8, 5)
    for _ in range(3):
        np.testing.assert_array_equal(c(a, b).numpy(), f(a, b).numpy())
    assert c.entries and not c.graph_breaks


@pytest.mark.parametrize("value", [1, 0.25, -3.0])
def test_addc_inplace_composites_equal_the_functions_bitwise(value):
    torch.manual_seed(0)
    x, t1, t2 = torch.randn(33, 7), torch.randn(33, 7), torch.rand(7) + 0.1
    for name in ("addcmul", "addcdiv"):
        want = getattr(torch, name)(x, t1, t2, value=value)
        y = x.clone()
        keep = y._data
        getattr(y, name + "_")(t1, t2, value=value)
        assert y._data is keep
        np.testing.assert_array_equal(y.numpy(), want.numpy())


@pytest.mark.parametrize("weight", [0.3, "tensor"])
def test_lerp_inplace_equals_lerp_bitwise(weight):
    torch.manual_seed(1)
    x, end = torch.randn(16, 9), torch.randn(16, 9)
    w = torch.rand(16, 9) if weight == "tensor" else weight
    want = torch.lerp(x, end, w)
    y = x.clone()
    y.lerp_(end, w)
    np.testing.assert_array_equal(y.numpy(), want.numpy())


def test_inplace_composites_still_track_gradients():
    x = torch.randn(4, 3, requires_grad=True)
    t1, t2 = torch.randn(4, 3, requires_grad=True), torch.rand(4, 3) + 0.5
    y = x * 1.0
    y.addcdiv_(t1, t2, value=0.5)
    y.sum().backward()
    np.testing.assert_allclose(t1.grad.numpy(), 0.5 / t2.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((4, 3), np.float32))


def _adam_mlp(width):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))

    return model, train_step(model, opt, F.cross_entropy), x, y


@pytest.mark.parametrize("width,extra", [(384, 1.3), (640, 0.2)])
def test_traced_adam_step_peaks_at_eager_peak(width, extra):
    """The calls that trace a whole Adam step (computed op by op) allocate at their
    highest point no more than eager (one native kernel per parameter) plus one
    parameter-sized temporary; from four chunks of elements (``traced_in_chunks``) the
    update's composites and the weight gradients' copies add none. Before, each in-place
    op and composite held its own."""
    big = width * width * 4
    model, step, x, y = _adam_mlp(width)
    eager = max(_peak(step, x, y) for _ in range(2))
    model, step, x, y = _adam_mlp(width)
    c = torch.compile(step)
    traced = max(_peak(c, x, y) for _ in range(2))  # state made, then traced
    assert c.entries and c.entries[-1].kind == "step"
    assert traced <= eager + extra * big, (traced, eager, big)
    # the weight gradients go straight to the .grad buffers, not through the arena
    # (ir.passes.rewrites.drop_output_clones): it holds less than one of them
    c(x, y)
    assert c.entries[-1].planned_bytes < big / 4
