"""Caching allocator, executor profile, plan printing."""
import gc

import numpy as np

from ir import dtypes as dt
from ir.graph import Graph
from runtime.allocator import CachingAllocator
from runtime.lower import compile_graph, set_kernel_factory
from runtime.plan import Executor
from runtime.reference import ReferenceKernel


def test_caching_allocator_recycles_only_dead_blocks():
    a = CachingAllocator()
    x = a.empty((256, 256), np.float32)
    x[:] = 1
    view = x[::2].T
    ptr = x.__array_interface__["data"][0]
    del x
    gc.collect()
    y = a.empty((256, 256), np.float32)  # the view keeps the first block alive
    assert y.__array_interface__["data"][0] != ptr
    assert np.all(view == 1)
    del view
    gc.collect()
    z = a.empty((256, 256), np.float32)
    assert z.__array_interface__["data"][0] == ptr
    assert a.stats()["hits"] == 1
    small = a.empty((3,), np.float64)
    assert small.shape == (3,) and small.dtype == np.float64


def test_executor_profile_and_plan_text():
    from runtime import lower
    old = lower._KERNEL_FACTORY
    set_kernel_factory(ReferenceKernel)
    try:
        g = Graph()
        x = g.add_input((64, 64), dt.float32, "x")
        w = g.add_input((64, 64), dt.float32, "w")
        y = g.add_node("relu", [g.add_node("matmul", [x, w])])
        z = g.add_node("exp", [g.add_node("permute", [y], {"dims": (1, 0)})])
        g.set_outputs([z, y])
        comp = compile_graph(g)
        ex = Executor(comp.plan, profile=True)
        X = np.ones((64, 64), np.float32)
        outs = ex([X, X * 0.01])
        np.testing.assert_allclose(outs[1], np.maximum(X @ (X * 0.01), 0), rtol=1e-5)
        np.testing.assert_allclose(outs[0], np.exp(outs[1].T), rtol=1e-5)
        assert len(ex.records) == len(comp.plan.steps)
        assert all(r["bytes"] > 0 for r in ex.records)
        table = ex.profile_table()
        assert "GB/s" in table and "matmul" in table
        text = str(comp.plan)
        assert "kernel" in text and "fresh" in text
    finally:
        set_kernel_factory(old)


class _NoCompile:
    """A kernel whose machine code fails to build (as a Numba typing error would), on
    the plan's first call and when bound."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.calls = 0

    def __call__(self, inputs, outputs, parallel=None):
        self.calls += 1
        raise RuntimeError("does not compile")

    def bind(self, inputs, outputs, parallel=None):
        self.calls += 1
        raise RuntimeError("does not compile")


def test_a_kernel_that_fails_on_first_call_falls_back_to_its_spec_once():
    g = Graph()
    x = g.add_input((8, 16), dt.float32, "x")
    y = g.add_node("exp", [g.add_node("relu", [x])])
    g.set_outputs([y])
    made = []

    def factory(spec):
        made.append(_NoCompile(spec))
        return made[-1]
    comp = compile_graph(g, make_kernel=factory)
    ex = Executor(comp.plan)
    X = np.linspace(-2, 2, 128, dtype=np.float32).reshape(8, 16)
    for _ in range(2):
        np.testing.assert_allclose(ex([X])[0], np.exp(np.maximum(X, 0)), rtol=1e-6)
    assert made and all(k.calls == 1 for k in made)  # tried once, not again per call
    kinds = {type(s.run.kernel).__name__ for s in comp.plan.steps if hasattr(s.run, "kernel")}
    assert kinds == {"ReferenceKernel"}


def test_views_of_planned_buffers_are_made_once_per_arena_block():
    """A view of an arena buffer (or of a view of one) is the same array on every call:
    the plan makes it with the buffers and a call skips its step; a new block (the
    arena dropped) makes them again, and results stay right throughout."""
    g = Graph()
    x = g.add_input((8, 6), dt.float32, "x")
    e = g.add_node("exp", [x])                               # planned (an intermediate)
    t = g.add_node("reshape", [g.add_node("permute", [e], {"dims": (1, 0)})],
                   {"shape": (3, 16)})                       # a view of a planned copy
    s = g.add_node("mul", [g.add_node("permute", [e], {"dims": (1, 0)}), 2.0])
    g.set_outputs([s, g.add_node("add", [t, 1.0])])
    comp = compile_graph(g)
    plan = comp.plan
    ex = Executor(plan)
    X = np.linspace(-1, 1, 48, dtype=np.float32).reshape(8, 6)
    for _ in range(2):
        a, b = ex([X])
        np.testing.assert_allclose(a, 2 * np.exp(X).T, rtol=1e-6)
        np.testing.assert_allclose(b, np.exp(X).T.reshape(3, 16) + 1, rtol=1e-6)
    views = [st for st in plan.steps if st.kind == "view"]
    skipped = [st for st in views if st not in plan._run_steps]
    assert skipped
    before = dict(plan._planned_views)
    assert all(np.shares_memory(before[st.outputs[0]], plan.arena) for st in skipped)
    plan.drop_arena()
    a, b = ex([X * 0.5])
    np.testing.assert_allclose(a, 2 * np.exp(X * 0.5).T, rtol=1e-6)
    np.testing.assert_allclose(b, np.exp(X * 0.5).T.reshape(3, 16) + 1, rtol=1e-6)
    after = dict(plan._planned_views)
    assert set(after) == set(before) and any(after[k] is not before[k] for k in after)
