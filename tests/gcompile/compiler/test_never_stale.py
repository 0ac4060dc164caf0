"""Compiled results are never wrong or stale: each test here failed before the
mechanism it names was fixed (write-backs bound to this call's arguments,
per-thread state, aliasing and guard checks, run-time index checks)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn


# ---- 1. in-place writes bind to the current call's arguments -----------------------------
def test_inplace_write_goes_to_this_calls_argument():
    @torch.compile
    def f(t):
        t.mul_(2)

    a, b = torch.ones(3), torch.ones(3)
    f(a)
    f(b)
    np.testing.assert_array_equal(a.numpy(), [2, 2, 2])
    np.testing.assert_array_equal(b.numpy(), [2, 2, 2])
    assert f.entries


def test_returned_mutated_argument_is_this_calls_tensor():
    @torch.compile
    def f(x):
        return x.add_(1)

    a, b = torch.zeros(2), torch.zeros(2)
    assert f(a) is a
    assert f(b) is b
    np.testing.assert_array_equal(b.numpy(), [1, 1])
    np.testing.assert_array_equal(a.numpy(), [1, 1])


def test_write_through_contiguous_alias_of_argument():
    @torch.compile
    def f(x):
        y = x.contiguous()  # x itself
        y.add_(5)
        return y * 2

    a, b = torch.zeros(3), torch.ones(3)
    f(a)
    out = f(b)
    np.testing.assert_array_equal(b.numpy(), [6, 6, 6])
    np.testing.assert_array_equal(out.numpy(), [12, 12, 12])


# ---- 2. threads -------------------------------------------------------------------------
def test_concurrent_calls_of_one_compiled_function():
    @torch.compile
    def f(x):
        h = torch.relu(x @ x)  # an intermediate in the plan's arena
        return (h * 2).sum(0) + h.mean(0)

    xs = [torch.randn(192, 192) for _ in range(4)]
    want = [f(x).numpy().copy() for x in xs]  # traced and warm
    errors = []

    def worker(i):
        for _ in range(20):
            got = f(xs[i]).numpy()
            if not np.allclose(got, want[i], rtol=1e-5, atol=1e-5):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_no_grad_is_per_thread():
    seen = {}

    def other():
        seen["enabled"] = torch.is_grad_enabled()
        x = torch.ones(2, requires_grad=True)
        seen["requires_grad"] = (x * 2).requires_grad

    with torch.no_grad():
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert not torch.is_grad_enabled()
    assert seen == {"enabled": True, "requires_grad": True}


def test_another_threads_ops_are_not_recorded_into_a_trace():
    go, done = threading.Event(), threading.Event()

    def noisy():
        go.wait()
        for _ in range(200):
            torch.ones(3) + torch.ones(3)
        done.set()

    t = threading.Thread(target=noisy)
    t.start()

    @torch.compile
    def f(x):
        go.set()
        done.wait(5)  # the other thread runs its ops while this one is being traced
        y = x
        for _ in range(5):
            y = y * 1.0001
        return y

    f(torch.ones(3))
    t.join()
    assert " add" not in f.entries[0].traced_text


# ---- 3. aliasing between arguments --------------------------------------------------------
def test_aliased_arguments_are_part_of_the_guard():
    @torch.compile
    def f(x, y):
        x.add_(1)
        return x + y

    x = torch.zeros(3)
    np.testing.assert_array_equal(f(x, x).numpy(), [2, 2, 2])
    x2, y2 = torch.zeros(3), torch.zeros(3)
    np.testing.assert_array_equal(f(x2, y2).numpy(), [1, 1, 1])
    assert f.num_traces == 2


# ---- 4. guards ----------------------------------------------------------------------------
SCALE = 2.0


def test_global_number_is_guarded():
    global SCALE

    @torch.compile
    def f(x):
        return x * SCALE

    x = torch.ones(2)
    assert f(x).numpy().tolist() == [2, 2]
    SCALE = 3.0
    try:
        assert f(x).numpy().tolist() == [3, 3]
    finally:
        SCALE = 2.0


def test_closure_number_and_rebound_tensor_are_guarded():
    k = 2.0
    w = torch.ones(2)

    @torch.compile
    def f(x):
        return x * k + w

    x = torch.ones(2)
    assert f(x).numpy().tolist() == [3, 3]
    k = 5.0
    assert f(x).numpy().tolist() == [6, 6]
    w = torch.zeros(2)
    assert f(x).numpy().tolist() == [5, 5]


def test_closure_list_contents_are_guarded():
    values = [1.0, 2.0]

    @torch.compile
    def f(x):
        return x * torch.tensor(values)

    x = torch.ones(2)
    assert f(x).numpy().tolist() == [1, 2]
    values[1] = 7.0
    assert f(x).numpy().tolist() == [1, 7]


def test_module_attribute_the_forward_branches_on():
    class Scaler(nn.Module):
        def __init__(self):
            super().__init__()
            self.double = False

        def forward(self, x):
            return x * 2 if self.double else x + 1

    m = Scaler()
    cm = torch.compile(m)
    x = torch.ones(2)
    assert cm(x).numpy().tolist() == [2, 2]
    m.double = True
    assert cm(x).numpy().tolist() == [2, 2] and cm(torch.full((2,), 3.0)).numpy().tolist() == [6, 6]


def test_replaced_submodule_and_parameter_through_a_closure():
    model = nn.Sequential(nn.Linear(2, 2))

    @torch.compile
    def f(x):
        return model(x)

    x = torch.ones(1, 2)
    f(x)
    model[0] = nn.Linear(2, 2)
    np.testing.assert_allclose(f(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6)
    model[0].weight = nn.Parameter(torch.zeros(2, 2))
    np.testing.assert_allclose(f(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6)


def test_hook_added_after_compile():
    lin = nn.Linear(2, 2)

    @torch.compile
    def f(x):
        return lin(x)

    x = torch.ones(1, 2)
    f(x)
    lin.register_forward_hook(lambda m, i, o: o * 0)
    assert f(x).detach().numpy().tolist() == [[0, 0]]


def test_negative_zero_is_not_zero():
    @torch.compile
    def f(x, s):
        return x / s

    x = torch.ones(1)
    assert f(x, 0.0).numpy()[0] == np.inf
    assert f(x, -0.0).numpy()[0] == -np.inf


def test_random_draws_with_an_explicit_generator_are_not_baked():
    g = torch.Generator().manual_seed(0)

    @torch.compile
    def f(x):
        return x + torch.randn(3, generator=g)

    a = f(torch.zeros(3))
    b = f(torch.zeros(3))
    assert f.entries and not f.graph_breaks  # a plan that draws from g on every call
    assert not np.array_equal(a.numpy(), b.numpy())
    with pytest.warns(UserWarning, match="graph break"):  # a Python-side draw: a break
        torch.compile(lambda x: x + torch.randint(0, 5, (3,), generator=g))(torch.zeros(3))


# ---- 6. ops that bypassed the registry ----------------------------------------------------
def test_integer_fmod_is_traced():
    @torch.compile
    def f(x):
        return torch.fmod(x, 3)

    f(torch.tensor([5, -7, 9]))
    got = f(torch.tensor([-5, 7, -10]))
    np.testing.assert_array_equal(got.numpy(), np.fmod([-5, 7, -10], 3))


# ---- 7. index checks run on every call ---------------------------------------------------
def test_index_checks_run_in_the_plan():
    emb = nn.Embedding(5, 3)
    fe = torch.compile(lambda i: emb(i))
    fe(torch.tensor([0, 1]))
    fe(torch.tensor([2, 3]))
    with pytest.raises(IndexError, match="index out of range"):
        fe(torch.tensor([-1, 1]))

    fc = torch.compile(lambda x, t: nn.functional.cross_entropy(x, t))
    x = torch.randn(2, 3)
    fc(x, torch.tensor([0, 1]))
    with pytest.raises(IndexError, match="Target -1 is out of bounds"):
        fc(x, torch.tensor([0, -1]))
    fc(x, torch.tensor([0, -100]))  # ignore_index still allowed

    fg = torch.compile(lambda x, i: x.gather(0, i))
    fg(torch.arange(3.0), torch.tensor([0]))
    with pytest.raises(RuntimeError, match="index -1 is out of bounds"):
        fg(torch.arange(3.0), torch.tensor([-1]))
    fs = torch.compile(lambda i: torch.zeros(3).scatter_add(0, i, torch.ones(1)))
    fs(torch.tensor([1]))
    with pytest.raises(RuntimeError, match="index -1 is out of bounds"):
        fs(torch.tensor([-1]))


# ---- 6. views and overwritten history -----------------------------------------------------
def test_returned_view_of_an_argument_stays_a_view():
    f = torch.compile(lambda x: x[0])
    f(torch.ones(3, 2))
    x = torch.ones(3, 2)
    v = f(x)
    x.add_(1)  # eager: v sees the write
    np.testing.assert_array_equal(v.numpy(), [2, 2])


def test_returned_view_of_a_base_written_after_it_was_taken():
    @torch.compile
    def f(x):
        h = x * 2
        v = h.reshape(-1)
        h.add_(x)
        return v

    with pytest.warns(UserWarning, match="returning a view whose base was modified"):
        np.testing.assert_array_equal(f(torch.ones(2)).numpy(), [3, 3])
    np.testing.assert_array_equal(f(torch.ones(2)).numpy(), [3, 3])


@pytest.mark.parametrize("how", ["zero_", "fill_", "copy_"])
def test_overwriting_a_tensor_with_history_replaces_its_history(how):
    a = torch.randn(3, requires_grad=True)
    x = a * 2
    if how == "zero_":
        x.zero_()
    elif how == "fill_":
        x.fill_(3.0)
    else:
        x.copy_(torch.ones(3))
    assert x.requires_grad
    (x * a.detach()).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0, 0, 0])


def test_integer_division_by_zero_raises_compiled_and_eager():
    def f(x, y):
        return x // y + x % y

    cf = torch.compile(f)
    x = torch.tensor([5, -7, 9])
    for _ in range(2):
        np.testing.assert_array_equal(cf(x, torch.tensor([2, 3, 4])).numpy(),
                                      f(x, torch.tensor([2, 3, 4])).numpy())
    for fn in (f, cf):
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            fn(x, torch.tensor([2, 0, 4]))
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        x // 0


def test_a_returned_view_of_an_intermediate_compiles():
    """conv2d with stride 2 returns reshape(matmul(...)): the matmul result is kept alive
    by the returned view's base tensor, which is not an escape."""
    conv = nn.Conv2d(3, 4, 3, stride=2).eval()
    cm = torch.compile(conv)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        for _ in range(3):
            out = cm(x)
    assert cm.entries and not cm._eager and cm.num_traces == 1
    np.testing.assert_allclose(out.numpy(), conv(x).detach().numpy(), rtol=1e-5, atol=1e-6)

    stash = []

    @torch.compile
    def leaks(x):
        h = x * 2
        stash.append(h)  # really escapes: the plan would not update it
        return h.reshape(-1)

    leaks(torch.ones(2))
    leaks(torch.ones(2))
    assert not leaks.entries  # retraced (eager) rather than a plan leaving stash stale


def test_a_captured_tensor_first_seen_through_detach_stays_live():
    """The first tensor the trace saw for a buffer was a temporary (b.detach()); the
    buffer itself must still be a live input, so in-place updates persist per call."""
    b = torch.zeros((), dtype=torch.int64)
    c = torch.zeros(3)

    @torch.compile
    def step():
        with torch.no_grad():
            b.copy_(b.detach() * 1)
            b.add_(1)
            c.copy_(c.detach().clone())
            c.add_(1)

    for i in range(1, 5):
        step()
        assert b.item() == i and c.tolist() == [i, i, i]
    assert step.num_traces == 1


def test_compiled_gradients_stop_at_detach():
    """x * x.detach() has gradient x, not 2x: the trace reads a detached tensor through
    a detach node (same data, no gradient path), also after an in-place write."""
    f = torch.compile(lambda x: (x * x.detach()).sum())
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    f(x).backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0, 3.0])
    x.grad = None
    f(x).backward()  # the plan this time
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0, 3.0])

    def g(x):
        y = x * 2
        d = y.detach()
        d.add_(1)  # writes y's storage: y keeps its gradient path, with the new values
        return (x * d).sum() + (x * y).sum()

    cg = torch.compile(g)
    a = torch.tensor([1.0, -2.0], requires_grad=True)
    b = torch.tensor([1.0, -2.0], requires_grad=True)
    g(a).backward()
    from gcompile.compiler import GraphBreakWarning
    with pytest.warns(GraphBreakWarning, match="x.detach"):
        out = cg(b)  # graph autodiff cannot express that: a named graph break, eager
    out.backward()
    np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy())

    def h(p, x):
        p.data.mul_(0.5)  # a write through .data inside a whole training step is fine
        loss = (p * x).sum()
        loss.backward()
        return loss

    p1, p2 = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    ch = torch.compile(h)
    for _ in range(3):
        h(p1, torch.full((3,), 2.0))
        ch(p2, torch.full((3,), 2.0))
    np.testing.assert_allclose(p2.detach().numpy(), p1.detach().numpy())
    np.testing.assert_allclose(p2.grad.numpy(), p1.grad.numpy())
    assert not torch.compile(lambda x: x.detach() * 2)(a).requires_grad


def test_autocast_state_is_part_of_the_signature():
    mm = torch.compile(lambda a, b: a @ b)
    a, b = torch.randn(3, 4), torch.randn(4, 2)
    assert mm(a, b).dtype == torch.float32
    with torch.autocast("cpu"):
        assert mm(a, b).dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.float16):
            assert mm(a, b).dtype == torch.float16
    assert mm(a, b).dtype == torch.float32
    traced_inside = torch.compile(lambda a, b: a @ b)
    with torch.autocast("cpu"):
        traced_inside(a, b)
    out = traced_inside(a, b)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), (a @ b).numpy())


def test_a_python_value_the_function_changes_is_not_baked():
    """The function replaces the dict entry it read: a plan would keep mutating the first
    tensor and never write the dict again (it gave 6, 10, 18 where eager gives 4)."""
    def run(compiled):
        holder = {"t": torch.ones(1)}

        def f(x):
            t = holder["t"]
            t.mul_(2)
            holder["t"] = torch.ones(1)
            return t + holder["t"] + x

        g = torch.compile(f) if compiled else f
        with pytest.warns(torch.compiler.GraphBreakWarning, match="changes a Python value") \
                if compiled else _nullcontext():
            first = g(torch.ones(1)).item()
        return [first] + [g(torch.ones(1)).item() for _ in range(3)]

    assert run(True) == run(False) == [4.0] * 4


def test_a_counter_the_function_increments_counts_every_call():
    calls = [0]

    @torch.compile
    def f(x):
        calls[0] += 1
        return x * 2

    with pytest.warns(torch.compiler.GraphBreakWarning):
        f(torch.ones(2))
    for _ in range(3):
        f(torch.ones(2))
    assert calls == [4]


def _nullcontext():
    import contextlib
    return contextlib.nullcontext()
