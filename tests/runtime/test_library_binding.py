"""Library steps bound to their arrays (runtime.steps._IntoRun, NativeKernel.bind): after
the first call a step runs its prepared native call; the results stay those of eager
on later calls, with new values in the same arrays, with new arrays, and with another
thread count, and bad indices still raise as eager does."""
import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
from gcompile.bench_models import train_step
from kernels.cpu import handwritten as hw
from kernels.cpu import native_pool

pytestmark = pytest.mark.skipif(not native_pool.available(),
                                reason="bindings run through the native thread pool")

BODY = '''
@njit(nogil=True, inline="always")
def body(x, y, scale, tmp, lo, hi):
    for i in range(lo, hi):
        tmp[0] = x[i]
        y[i] = tmp[0] * scale
'''
PARAMS = (("x", "in", "float64"), ("y", "out", "float64"), ("scale", "int", None),
          ("tmp", "scratch", "float64"))


@pytest.mark.parametrize("parallel", [False, True])
def test_bound_kernel_call_equals_the_call(parallel, monkeypatch):
    monkeypatch.setenv("GCOMPILE_NUM_THREADS", "2")
    k = hw.kernel("bind_test", PARAMS, BODY)
    x = np.arange(1000.0)
    want = np.empty_like(x)
    k(x, want, 3, 1, n=x.size, parallel=parallel)
    y = np.full_like(x, np.nan)
    call = k.bind(x, y, 3, 1, n=x.size, parallel=parallel)
    assert call is not None
    call()
    np.testing.assert_array_equal(y, want)
    x[:] = -x  # the same memory, new values: the bound call reads them
    call()
    np.testing.assert_array_equal(y, -want)
    assert k.bind(x, y, 3, 1, n=0) is None


def _steps(fn, name):
    e = fn.entries[-1]
    exes = [e.executable] if hasattr(e, "executable") else [e.forward, e.backward]
    return [s for ex in exes for s in ex.plan.steps if s.name.startswith(name)]


def test_bound_index_checks_and_lookups_equal_eager_and_still_raise():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(11, 6)
    head = torch.nn.Linear(6, 11)

    def loss(idx, target):
        return F.cross_entropy(head(emb(idx)).reshape(-1, 11), target.reshape(-1))
    f = torch.compile(loss)
    idx = torch.randint(0, 11, (4, 5))
    target = torch.randint(0, 11, (4, 5))
    for _ in range(3):
        got = f(idx, target)
    assert float(got) == pytest.approx(float(loss(idx, target)), rel=1e-6)
    bound = [s for s in _steps(f, "check") + _steps(f, "embedding") if s.run.bound]
    assert bound, "the index check and the lookup run bound"
    # new values in new arrays: the step rebinds (or runs the op) and stays right
    idx2 = torch.randint(0, 11, (4, 5))
    assert float(f(idx2, target)) == pytest.approx(float(loss(idx2, target)), rel=1e-6)
    # bad indices through a bound step raise as eager does
    bad = target.clone()
    bad[1, 2] = 11
    with pytest.raises(IndexError) as compiled_err:
        f(idx2, bad)
    with pytest.raises(IndexError) as eager_err:
        loss(idx2, bad)
    assert str(compiled_err.value) == str(eager_err.value)
    bad_idx = idx2.clone()
    bad_idx[0, 0] = 40
    with pytest.raises(IndexError):
        f(bad_idx, target)
    assert float(f(idx2, target)) == pytest.approx(float(loss(idx2, target)), rel=1e-6)


def test_bound_embedding_gradient_and_attention_follow_the_thread_count():
    torch.manual_seed(1)
    emb = torch.nn.Embedding(13, 8)
    idx = torch.randint(0, 13, (3, 16))

    def step(idx):
        x = emb(idx).reshape(3, 16, 2, 4).transpose(1, 2)
        y = F.scaled_dot_product_attention(x, x, x, is_causal=True)
        loss = (y * y).sum()
        loss.backward()
        g = emb.weight.grad.clone()
        emb.weight.grad = None
        return loss, g
    f = torch.compile(step)
    want = [t.detach().numpy().copy() for t in step(idx)]
    n = torch.get_num_threads()
    try:
        for threads in (n, 1, n):
            torch.set_num_threads(threads)
            for _ in range(2):
                got = [t.detach().numpy() for t in f(idx)]
                for a, b in zip(got, want):
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(n)
    assert any(s.run.bound for s in _steps(f, "sdpa")), "attention runs bound"


def _train_pair(make, batch, steps=3):
    """A model trained eagerly and by a compiled step from the same start: the losses
    and the final weights, and the compiled step."""
    results = []
    for compiled in (False, True):
        torch.manual_seed(2)
        model = make()
        step = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                          F.cross_entropy)
        run = torch.compile(step) if compiled else step
        losses = [float(run(*batch)) for _ in range(steps)]
        results.append((losses, [p.detach().numpy().copy() for p in model.parameters()], run))
    (le, we, _), (lc, wc, f) = results
    np.testing.assert_allclose(lc, le, rtol=1e-5)
    for a, b in zip(wc, we):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    return f


def test_bound_pooling_steps_train_as_eager():
    """The max pool's indices-and-values step and its gradient's scatter run bound, and
    training stays eager's step by step (the weights change in place between calls)."""
    torch.manual_seed(0)
    x = torch.randn(4, 2, 10, 10)
    y = torch.randint(0, 5, (4,))

    def make():
        return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(),
                                   torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                   torch.nn.Linear(48, 5))
    f = _train_pair(make, (x, y))
    assert any(s.run.bound for s in _steps(f, "max_pool_indices")), "the pool pair runs bound"
    assert any(s.run.bound for s in _steps(f, "pool_scatter")), "the pool scatter runs bound"
    assert all(s.run.bound for s in _steps(f, "cat")), "the weight-and-bias cat runs bound"


class _Tagger(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.rnn = layer(3, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
def test_bound_recurrent_steps_train_as_eager(layer):
    """The scans and their gradients run bound (W_hh^T rewritten from the weights on
    every call), and training stays eager's step by step."""
    torch.manual_seed(0)
    x = torch.randn(5, 7, 3)
    y = torch.randint(0, 4, (5,))
    f = _train_pair(lambda: _Tagger(getattr(torch.nn, layer)), (x, y), steps=4)
    name = layer.lower() + "_scan"
    scans = _steps(f, name)
    assert scans and all(s.run.bound for s in scans), f"{name} and its backward run bound"


def test_a_binding_outdated_twice_returns_once_the_memory_settles():
    """Arrays that outdate two bindings (fresh outputs) stop the step binding on every
    call; once two calls in a row see the same memory it binds again."""
    from runtime.steps import _Binding
    made, ran = [], []

    def binder(x, out=None):
        made.append(out.ctypes.data)
        return lambda: ran.append(out.ctypes.data)
    b = _Binding((0,))
    keep = []

    def call(arr):
        env = [arr]
        if not b.run(env):
            b.make("test", binder, env, [arr], {}, out=arr)
    for _ in range(2):            # new memory on each call: bound, then outdated
        keep.append(np.zeros(4))
        call(keep[-1])
        call(keep[-1])            # (the same array: the binding holds)
    assert b.misses == 1 and len(made) == 2 and len(ran) == 2
    for _ in range(3):            # outdated twice: new memory never binds again ...
        keep.append(np.zeros(4))
        call(keep[-1])
        assert b.call is None
    assert b.misses == 2 and len(made) == 2
    settled = np.zeros(4)
    call(settled)
    assert b.call is None
    call(settled)                 # ... until two calls in a row see the same memory
    assert b.call is not None and len(made) == 3
    call(settled)
    assert ran[-1] == settled.ctypes.data and len(ran) == 3


def test_chained_bound_calls_run_in_order_from_one_native_call(monkeypatch):
    """Bound calls chained (``handwritten.chain``) run from one native call, in order:
    the second reads what the first wrote, serial and split over threads alike."""
    monkeypatch.setenv("GCOMPILE_NUM_THREADS", "2")
    k = hw.kernel("bind_test", PARAMS, BODY)
    x = np.arange(1000.0)
    y, z = np.full_like(x, np.nan), np.full_like(x, np.nan)
    first = k.bind(x, y, 3, 1, n=x.size, parallel=False)
    second = k.bind(y, z, 2, 1, n=x.size, parallel=True)
    both = hw.chain([first, second])
    assert both is not first and getattr(both, "keep", None) is not None  # one native call
    both()
    np.testing.assert_array_equal(z, 6 * x)
    x[:] = 1
    both()
    np.testing.assert_array_equal(z, np.full_like(x, 6))


def test_bound_embedding_gradient_with_a_bad_index_raises_as_the_op():
    """The bound sort and segment add of an embedding gradient meet an index out of
    range safely (no segments) and leave it to the op's reference, which raises."""
    from ir.registry import REGISTRY
    op = REGISTRY["embedding_backward"]
    g = np.ones((4, 3), np.float32)
    idx = np.array([0, 2, 1, 2])
    out = np.empty((5, 3), np.float32)
    op.impl(g, idx, 5, out=out)   # loads the kernels
    run = op.impl.bind(g, idx, 5, out=out)
    assert run is not None
    run()
    np.testing.assert_array_equal(out, op.reference(g, idx, 5))
    idx[1] = 9
    with pytest.raises(IndexError):
        run()
    idx[1] = 4
    run()
    np.testing.assert_array_equal(out, op.reference(g, idx, 5))
