"""The cyclic garbage collector is paused while a compiled function traces and builds
(``gcompile.compiler.gc_pause``), and garbage cycles holding arrays the trace computed
are collected before those arrays are taken for escapes."""
from __future__ import annotations

import gc
import threading

import numpy as np

import gcompile as torch
from gcompile import nn
from gcompile.compiler import api
from gcompile.compiler.gc_pause import gc_paused


def test_paused_nested_and_restored():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()


def test_concurrent_pauses_end_with_the_last():
    entered, release = threading.Event(), threading.Event()

    def other():
        with gc_paused():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    with gc_paused():
        t.start()
        assert entered.wait(10)
    assert not gc.isenabled()  # the other thread's pause is still running
    release.set()
    t.join()
    assert gc.isenabled()


def test_a_compile_runs_with_the_collector_paused(monkeypatch):
    seen = []
    cls = next(c for c in vars(api).values()
               if isinstance(c, type) and hasattr(c, "_miss_traced"))
    real = cls._miss_traced

    def spy(self, *a, **k):
        seen.append(gc.isenabled())
        return real(self, *a, **k)

    monkeypatch.setattr(cls, "_miss_traced", spy)
    f = torch.compile(lambda x: (x * 2).sum())
    assert f(torch.ones(3)).item() == 6.0
    assert seen == [False] and gc.isenabled()


def test_garbage_cycles_holding_trace_arrays_are_not_escapes():
    """A step that leaves an array it computed in a garbage reference cycle (here an
    exception kept with its traceback, as a deferred kernel's did) still compiles: the
    cycle is collected before the escape check, which counts references."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        opt.zero_grad()
        h = model(x)
        try:
            raise ValueError("kept")
        except ValueError as e:
            cycle = [h._data, e]  # the traceback holds this frame, which holds the list
            e.cycle = cycle
        loss = (h * h).sum()
        loss.backward()
        opt.step()
        return loss

    f = torch.compile(step)
    x = torch.randn(5, 4)
    for _ in range(3):
        f(x)
    assert f.entries, "the cycle was taken for an escape: no plan"
    assert np.isfinite(f(x).item())
