"""Derived eager gradients run as compiled plans (runtime.eager_gradients): the same
gradients as the op-by-op replay of the decomposition, and the replay wherever a plan
does not serve (double backward, traces, small sizes)."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
from runtime import eager_gradients


@pytest.fixture
def plans(monkeypatch):
    monkeypatch.setattr(eager_gradients, "MIN_SIZE", 0)


def _t(shape, seed, grad=True, dtype=np.float32):
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return torch.tensor(a, requires_grad=grad)


CASES = {
    "layer_norm": lambda x, w, b, t: F.layer_norm(x, (12,), w, b),
    "layer_norm_2d": lambda x, w, b, t: F.layer_norm(x, (5, 12), None, None),
    "cross_entropy": lambda x, w, b, t: F.cross_entropy(x.reshape(-1, 12), t,
                                                        label_smoothing=0.1),
    "mse_loss": lambda x, w, b, t: F.mse_loss(x, x.detach() * 0.5 + 1.0),
    "silu": lambda x, w, b, t: F.silu(x),
}


def _grads(name, dtype):
    x = _t((3, 5, 12), 0, dtype=dtype)
    w, b = _t((12,), 1, dtype=dtype), _t((12,), 2, dtype=dtype)
    t = torch.tensor(np.random.default_rng(3).integers(0, 12, 15))
    out = CASES[name](x, w, b, t)
    weight = torch.tensor(np.random.default_rng(4).standard_normal(out.shape).astype(dtype))
    (out * weight).sum().backward()
    return [p.grad.numpy().copy() for p in (x, w, b) if p.grad is not None]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_plans_give_the_replays_gradients(plans, monkeypatch, name, dtype, tol):
    calls = []
    run = eager_gradients.run
    monkeypatch.setattr(eager_gradients, "run",
                        lambda *a: (lambda r: calls.append(r is not None) or r)(run(*a)))
    got = _grads(name, dtype)
    assert any(calls), "no gradient ran as a plan"
    monkeypatch.setattr(eager_gradients, "MIN_SIZE", 10 ** 9)
    want = _grads(name, dtype)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_double_backward_replays_the_primitives(plans, monkeypatch):
    calls = []
    monkeypatch.setattr(eager_gradients, "run", lambda *a: calls.append(1))
    x = _t((4, 12), 0)
    y = F.layer_norm(x, (12,))
    (g,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
    assert calls == [] and g.requires_grad  # differentiable: built op by op
    g.sum().backward()
    assert x.grad is not None


def test_small_gradients_replay(monkeypatch):
    calls = []
    monkeypatch.setattr(eager_gradients, "run", lambda *a: calls.append(1))
    x = _t((2, 12), 0)
    F.layer_norm(x, (12,)).sum().backward()
    assert calls == []


def test_a_whole_step_trace_records_the_primitives(plans, monkeypatch):
    """Under a trace the gradient is recorded op by op (a plan run would hide it from
    the graph): no gradient plan runs while tracing, and the compiled step matches
    eager."""
    from gcompile._state import state
    run = eager_gradients.run
    traced = []

    def spy(*a):
        traced.append(state.tracer is not None)
        return run(*a)
    monkeypatch.setattr(eager_gradients, "run", spy)
    def make():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(12, 12), torch.nn.LayerNorm(12))
        return m, torch.optim.SGD(m.parameters(), lr=0.1)
    x, target = _t((6, 12), 5, grad=False), _t((6, 12), 6, grad=False)
    runs = []
    for compiled in (False, True):
        m, opt = make()

        def step(m=m, opt=opt):
            opt.zero_grad()
            ((m(x) - target) ** 2).mean().backward()
            opt.step()
        f = torch.compile(step) if compiled else step
        for _ in range(6):
            f()
        if compiled:
            assert f.entries, "the step did not compile"
        runs.append([p.detach().numpy().copy() for p in m.parameters()])
    assert traced and not any(traced)
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_parameters_and_loss_tangents_take_the_plan(monkeypatch):
    """A module's Parameters are tensors, and a loss's tangent is 0-d: the size that
    decides is the largest input's."""
    monkeypatch.setattr(eager_gradients, "MIN_SIZE", 100)
    ran = []
    run = eager_gradients.run
    monkeypatch.setattr(eager_gradients, "run",
                        lambda r, key, a: (lambda o: ran.append((key[0], o is not None)) or o)(
                            run(r, key, a)))
    ln = torch.nn.LayerNorm(12)
    x = _t((3, 5, 12), 0)
    t = torch.tensor(np.random.default_rng(3).integers(0, 12, 15))
    F.cross_entropy(ln(x).reshape(-1, 12), t).backward()
    assert ("layer_norm", True) in ran and ("cross_entropy", True) in ran
    assert ln.weight.grad is not None and x.grad is not None


def test_a_compiled_steps_first_call_builds_no_gradient_plan(plans, monkeypatch):
    """The first call of a compiled step runs its backward eagerly (the optimizer's state
    is made then): no gradient plan is built for it, the replay serves. An eager step
    afterwards builds the plan."""
    built = []
    build = eager_gradients._build
    monkeypatch.setattr(eager_gradients, "_build", lambda r: built.append(1) or build(r))
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(9, 9), torch.nn.LayerNorm(9))
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    x, target = _t((7, 9), 5, grad=False), _t((7, 9), 6, grad=False)

    def step():
        opt.zero_grad()
        loss = ((m(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
        return loss
    f = torch.compile(step)
    for _ in range(3):
        f()
    assert f.entries and built == []
    step()
    assert built
