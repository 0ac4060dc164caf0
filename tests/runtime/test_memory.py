"""Memory of compiled plans, as structure (no timing, no RSS): plans share arena blocks
from one pool, large arenas give their pages back after a call, parameters, gradients
and optimizer state exist once (no shadow copy survives a call), and nothing the trace
made stays referenced once the plan is built."""
import gc
import os
import weakref

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F
from gcompile.compiler import tracer as tracer_mod
from runtime import allocator
from runtime.allocator import ArenaPool


def _mlp_step(width=32, batch=16, **compile_kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 5))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(batch, 12), torch.randint(0, 5, (batch,))

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return model, opt, torch.compile(step, **compile_kw), x, y


def test_pool_reuses_a_block_and_grows_it():
    pool = ArenaPool()
    a = pool.take(10_000)
    pool.give(a, release=False)
    assert pool.take(8_000) is a  # fits: reused, not a second block
    pool.give(a, release=False)
    b = pool.take(20_000)  # too small: replaced by a larger block
    assert b is not a and b.nbytes >= 20_000
    pool.give(b, release=False)
    assert pool.take(10_000) is b
    pool.give(b, release=False)
    assert pool.stats()["free_blocks"] == 1


def test_pool_prefers_the_block_a_plan_had():
    pool = ArenaPool()
    a, b = pool.take(50_000), pool.take(60_000)
    pool.give(a, release=False)
    pool.give(b, release=False)
    assert pool.take(40_000, prefer=b) is b  # not the best fit: the plan's own views
    assert pool.take(40_000, prefer=b) is a  # b is taken


def test_released_block_keeps_its_address_and_loses_its_pages():
    pool = ArenaPool()
    a = pool.take(1 << 20)
    addr = a.array.__array_interface__["data"][0]
    a.array[:] = 7
    pool.give(a, release=True)
    if a._map is None:
        pytest.skip("no anonymous mappings here")
    assert pool.stats()["released"] == 1
    assert a.array.__array_interface__["data"][0] == addr
    assert not a.array.any()  # the OS hands back zeroed pages: the old ones went back


def test_forward_and_backward_plans_share_one_arena():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 64), nn.Tanh(), nn.Linear(64, 3))
    f = torch.compile(model)
    x = torch.randn(32, 12)
    for _ in range(3):
        f(x).sum().backward()
    (entry,) = f.entries
    fwd, bwd = entry.forward.plan, entry.backward.plan
    assert fwd.arena_bytes > 0 and bwd.arena_bytes > 0
    assert fwd._block is bwd._block  # one block for both, not one arena per plan


def test_keep_arena_option(monkeypatch):
    *_, kept, x, y = _mlp_step(options={"keep_arena": True})
    *_, freed, _, _ = _mlp_step(options={"keep_arena": False})
    *_, default, _, _ = _mlp_step()
    for f in (kept, freed, default):
        for _ in range(4):
            f(x, y)
    pk, pf, pd = (f.entries[-1].executable.plan for f in (kept, freed, default))
    assert (pk.keep_arena, pf.keep_arena, pd.keep_arena) == (True, False, None)
    assert not pk.releases_arena and pf.releases_arena
    assert not pd.releases_arena  # a small arena stays resident by default
    monkeypatch.setattr(allocator, "ARENA_RELEASE_BYTES", 1)
    assert pd.releases_arena  # ... a large one does not
    freed(x, y)
    if pf._block._map is not None:
        assert not pf.arena.any()  # its pages went back after the call
    kept(x, y)
    assert pk.arena.any()
    with pytest.raises(TypeError, match="'keep_arena' must be bool"):
        torch.compile(lambda a: a, options={"keep_arena": 1})


def test_released_arena_gives_the_same_results():
    model, _, freed, x, y = _mlp_step(options={"keep_arena": False})
    model2, _, kept, _, _ = _mlp_step(options={"keep_arena": True})
    for _ in range(4):
        a, b = freed(x, y), kept(x, y)
        assert float(a) == float(b)
    for p, q in zip(model.parameters(), model2.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_no_copy_of_parameters_grads_or_state_survives_a_call(monkeypatch):
    model, opt, f, x, y = _mlp_step()
    for _ in range(3):
        f(x, y)
    assert f.entries and f.entries[-1].kind == "step"
    params = list(model.parameters())
    data = [p._data for p in params]
    state = [t._data for st in opt.state.values() for t in st.values()
             if isinstance(t, torch.Tensor)]
    handed_out = []
    real_empty = allocator.default_allocator.empty

    def spy(shape, dtype):
        a = real_empty(shape, dtype)
        handed_out.append(weakref.ref(a))
        return a

    monkeypatch.setattr(allocator.default_allocator, "empty", spy)
    old_grads = [weakref.ref(p.grad._data) for p in params]
    old_bytes = sum(p.grad._data.nbytes for p in params)
    allocator.default_allocator.clear()  # blocks other tests left
    loss = f(x, y)
    gc.collect()
    # parameters and optimizer state were updated in place: the same arrays
    assert all(p._data is d for p, d in zip(params, data))
    now = [t._data for st in opt.state.values() for t in st.values()
           if isinstance(t, torch.Tensor)]
    assert len(now) == len(state) and all(a is b for a, b in zip(now, state))
    # the previous gradients are gone; of the arrays the call allocated, only the
    # new gradients and the loss are alive (no shadow copy of a parameter or state)
    assert all(r() is None for r in old_grads)
    alive = [r() for r in handed_out if r() is not None]
    allowed = {id(p.grad._data) for p in params} | {id(loss._data)}
    assert all(id(a) in allowed or a.size <= 1 for a in alive), \
        [a.shape for a in alive if id(a) not in allowed]
    # at most the previous gradients' blocks wait in the pool for the next call
    assert allocator.default_allocator.stats()["cached_bytes"] <= old_bytes


def test_nothing_from_the_trace_stays_referenced(monkeypatch):
    tracers, arrays = [], []
    real_set = tracer_mod.Tracer._set

    def spy(self, t, v):
        if not tracers or tracers[-1]() is not self:
            tracers.append(weakref.ref(self))
        if v.kind == "node":
            arrays.append(weakref.ref(t._data))
        return real_set(self, t, v)

    monkeypatch.setattr(tracer_mod.Tracer, "_set", spy)
    model, opt, f, x, y = _mlp_step()
    for _ in range(3):
        f(x, y)
    monkeypatch.setattr(tracer_mod.Tracer, "_set", real_set)
    for _ in range(2):
        f(x, y)
    assert f.entries and tracers
    gc.collect()
    assert all(r() is None for r in tracers)
    # what the step writes in place (parameters, optimizer state) and the new gradients
    keep = {id(p.grad._data) for p in model.parameters()}
    keep |= {id(p._data) for p in model.parameters()}
    keep |= {id(t._data) for st in opt.state.values() for t in st.values()
             if isinstance(t, torch.Tensor)}
    leftover = [a for r in arrays if (a := r()) is not None and id(a) not in keep]
    assert not leftover, [a.shape for a in leftover]


def test_trace_holds_captured_tensors_by_reference(monkeypatch):
    caps = []
    real_value_of = tracer_mod.Tracer.value_of

    def spy(self, t):
        v = real_value_of(self, t)
        seen = {id(c) for c in caps}
        caps.extend(c for c in self.captures if id(c) not in seen)
        return v

    monkeypatch.setattr(tracer_mod.Tracer, "value_of", spy)
    model, opt, f, x, y = _mlp_step()
    for _ in range(3):
        f(x, y)
    arrays = {id(p._data) for p in model.parameters()}
    captured = [c for c in caps if id(c.data) in arrays]
    assert {id(c.data) for c in captured} == arrays  # their own arrays, not copies


def test_captured_view_written_then_dropped_is_a_graph_break():
    # a view captured from outside, released during the call after its base was written
    # in place: the trace holds its array by reference, so its first value is gone
    holder = {"b": torch.ones(3)}

    def f(x):
        y = x * holder.pop("v")
        holder["b"].add_(1)
        return y

    cf = torch.compile(f)
    holder["v"] = holder["b"][:]
    with pytest.warns(UserWarning, match="released during it"):
        out = cf(torch.full((3,), 2.0))
    np.testing.assert_array_equal(out.numpy(), [2.0, 2.0, 2.0])  # eager's result
    assert cf.graph_breaks and "released during it" in str(cf.graph_breaks[0])
    holder["v"] = holder["b"][:]
    np.testing.assert_array_equal(cf(torch.full((3,), 2.0)).numpy(), [4.0, 4.0, 4.0])


def test_explain_shows_planned_peak_and_what_a_step_saves():
    model, opt, f, x, y = _mlp_step(width=32, batch=16)
    e = torch.explain(f, x, y)
    text = str(e)
    assert "planned arena (peak of intermediates)" in text and "kept between calls" in text
    assert e.saved_detail and e.saved_bytes == sum(n for _, n, _ in e.saved_detail)
    assert "kept from the forward for the backward" in text
    # the two hidden activations (16 x 32 float32) are kept for the weight gradients
    assert sum(1 for _, n, _ in e.saved_detail if n >= 16 * 32 * 4) >= 2
    for _ in range(3):
        f(x, y)
    entry = f.entries[-1]
    assert entry.saved_bytes == e.saved_bytes
    assert entry.planned_bytes == e.planned_bytes > entry.saved_bytes


def test_step_computes_relu_mask_in_the_backward(monkeypatch):
    # ReLU's gradient reads a mask of its input; fused into the forward kernel that makes
    # the activation, the mask would be kept for the backward beside it. The step's
    # min-cut keeps each matmul's output and recomputes bias, ReLU and mask there
    model, opt, f, x, y = _mlp_step(width=32, batch=16)
    e = torch.explain(f, x, y)
    steps = [st for st in e.plan.steps if any(n.op == "gt" for n in st.nodes)]
    assert steps
    for st in steps:
        assert all(n.meta.get("step_backward") or n.meta.get("recomputed") or
                   any(a.producer is not None and a.producer.meta.get("step_backward")
                       for a in n.value_inputs) for n in st.nodes), st.name
    assert e.saved_bytes >= 2 * 16 * 32 * 4  # the two ReLU outputs (weight gradients)
    values = {n.out.name: n.out for n in e.graph.nodes}
    kept = [values[name] for name in e.saved if name in values]
    assert not any(v.dtype is torch.bool and v.shape == (16, 32) for v in kept), \
        "a ReLU mask is kept for the backward"
    # without the min-cut, and with the mask fused into the forward, more is kept
    import ir.passes.fusion as fusion
    monkeypatch.setattr(fusion, "recompute_for_backward", lambda g: None)
    monkeypatch.setattr(fusion, "_stays_in_backward", lambda n, bw: False)
    *_, f2, x2, y2 = _mlp_step(width=32, batch=16)
    fused = torch.explain(f2, x2, y2)
    assert fused.saved_bytes > e.saved_bytes


def test_plans_in_threads_take_separate_blocks():
    import threading

    def make(k):
        w = torch.randn(64, 64)
        return torch.compile(lambda a: ((a @ w).relu() * k + 1).tanh().sum(1)), w

    (f, wf), (g, wg) = make(2.0), make(3.0)
    a = torch.randn(32, 64)
    want = {f: ((a @ wf).relu() * 2.0 + 1).tanh().sum(1).numpy(),
            g: ((a @ wg).relu() * 3.0 + 1).tanh().sum(1).numpy()}
    for _ in range(3):  # traced and planned here: the threads run the plans
        f(a), g(a)
    bad = []

    def run(fn):
        try:
            for _ in range(40):
                got = fn(a).numpy()
                if not np.allclose(got, want[fn], rtol=1e-5, atol=1e-5):
                    bad.append("wrong result")
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            bad.append(repr(e))

    threads = [threading.Thread(target=run, args=(fn,)) for fn in (f, g, f, g)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, bad[:3]


def test_default_release_weighs_refault_cost_against_the_call(monkeypatch):
    *_, f, x, y = _mlp_step()
    for _ in range(3):
        f(x, y)
    plan = f.entries[-1].executable.plan
    monkeypatch.setattr(allocator, "ARENA_RELEASE_BYTES", 1)
    # the plan's first call (kernels loaded and bound) is not timed: kept after it
    assert plan.calls == 1 and plan.fastest_call is None and not plan.releases_arena
    f(x, y)
    assert plan.fastest_call is not None and plan.fastest_call > 0
    monkeypatch.setattr(allocator, "refault_seconds", lambda n: 0.0)
    assert plan.releases_arena  # cheap to fault back in: released
    monkeypatch.setattr(allocator, "refault_seconds", lambda n: plan.fastest_call)
    assert not plan.releases_arena  # would double the call: kept
    plan.fastest_call = None
    monkeypatch.setattr(allocator, "refault_seconds", lambda n: 0.0)
    assert not plan.releases_arena  # no call timed yet: kept


def test_refault_estimate_is_measured_once_and_scales():
    a = allocator.refault_seconds(1 << 20)
    assert a >= 0 and allocator.refault_seconds(2 << 20) == pytest.approx(2 * a)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_a_released_arena_is_faulted_in_before_the_plan_runs_on_it(monkeypatch):
    # pages faulted in by a parallel kernel's threads at once cost ~50x more than in one
    # thread: the plan faults a released block in itself before its steps run
    big = 24 << 20
    a = allocator.Arena(big)
    before = _rss_bytes()
    a.fault_in()
    assert _rss_bytes() - before > big // 2
    assert a.release_pages()
    low = _rss_bytes()
    assert before - low < big // 4 and a.array[::4096].max() == 0
    a.fault_in()
    assert _rss_bytes() - low > big // 2
    # a plan that releases its block faults it in again when the next call takes it
    *_, f, x, y = _mlp_step()
    monkeypatch.setattr(allocator, "ARENA_RELEASE_BYTES", 1)
    monkeypatch.setattr(allocator, "refault_seconds", lambda n: 0.0)
    # a tiny plan's measured fault-in (~15 us) can exceed 5% of its call: allow any here
    share = allocator.RELEASE_COST_SHARE
    monkeypatch.setattr(allocator, "RELEASE_COST_SHARE", 1e9)
    calls = []
    real = allocator.Arena.fault_in
    monkeypatch.setattr(allocator.Arena, "fault_in",
                        lambda self: calls.append(self._resident) or real(self))
    for _ in range(6):  # eager, trace, then plan calls: released after the second timed
        want = f(x, y)
    plan = f.entries[-1].executable.plan
    assert plan.releases_arena and False in calls[-2:]
    assert not plan._block._resident  # given back released after the last call
    assert np.isfinite(float(want))
    # the block's own measured fault-in time, once seen, outweighs the probe's estimate
    assert plan.fault_seconds is not None and plan.fault_seconds > 0
    monkeypatch.setattr(allocator, "RELEASE_COST_SHARE", share)
    plan.fault_seconds = plan.fastest_call
    assert not plan.releases_arena
