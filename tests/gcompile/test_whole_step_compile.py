"""Whole-step compile: forward, loss.backward() and optimizer.step() in one plan."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn
from gcompile.bench_models import train_step


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def _opt(kind, params):
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-2)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def _close(a, b, rtol=1e-4, atol=1e-6):
    np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_compiled_step_matches_eager_with_scheduler_and_no_recompile(kind):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(24, 10, generator=g)
    y = torch.randint(0, 3, (24,), generator=g)
    crit = nn.CrossEntropyLoss()
    runs = []
    for compiled in (False, True):
        model = _model()
        opt = _opt(kind, model.parameters())
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5)

        def train_step(x, y, model=model, opt=opt):
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
            return loss

        step = torch.compile(train_step) if compiled else train_step
        losses = []
        for _ in range(20):
            losses.append(step(x, y).item())
            sched.step()
        runs.append((model, opt, losses, step))
    (m_e, o_e, l_e, _), (m_c, o_c, l_c, step) = runs
    np.testing.assert_allclose(l_c, l_e, rtol=1e-4)
    for p, q in zip(m_e.parameters(), m_c.parameters()):
        _close(p, q)
        _close(p.grad, q.grad)  # .grad stays visible and correct
    # optimizer state is visible too
    for p, q in zip(o_e.param_groups[0]["params"], o_c.param_groups[0]["params"]):
        for key, val in o_e.state[p].items():
            if isinstance(val, torch.Tensor):
                _close(val, o_c.state[q][key])
    # one plan for all later steps: the lr changes (3 of them) are runtime inputs. The
    # first step may trace a plan for .grad None (kept, guarded) or create state
    assert step.num_traces <= 2
    assert type(step.entries[0]).__name__ == "StepEntry"
    # every in-place update (parameters, optimizer state) is computed straight into the
    # tensor by its fused kernel: one pass per parameter, no copy back
    entry = step.entries[0]
    assert entry.direct and len(entry.direct) == len(entry.writebacks)


def test_accumulating_gradients_across_calls_is_guarded():
    """Without zero_grad inside, backward accumulates into existing .grad: the
    plan traced with .grad None must not be reused once grads exist."""
    crit = nn.MSELoss()
    x = torch.randn(8, 10)
    y = torch.randn(8, 3)
    models = [_model(), _model()]

    def accumulate(model):
        loss = crit(model(x), y)
        loss.backward()
        return loss

    step = torch.compile(accumulate)
    for _ in range(3):
        accumulate(models[0])
        step(models[1])
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        _close(p.grad, q.grad)


def test_grads_of_parameters_are_fresh_tensors_each_step():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    crit = nn.MSELoss()
    x, y = torch.randn(4, 10), torch.randn(4, 3)

    @torch.compile
    def step():
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()

    step()
    step()
    w = model[0].weight
    g1 = w.grad.clone()
    step()
    assert w.grad is not None and w.grad.shape == w.shape
    assert not np.allclose(g1.numpy(), 0)


def test_the_first_step_runs_eagerly_instead_of_building_a_plan_for_grads_none():
    """The first step runs while every .grad is None; a plan for it would serve only
    that call, so it runs eagerly and the second call traces the steady state."""
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    crit = nn.MSELoss()
    x, y = torch.randn(4, 10), torch.randn(4, 3)

    @torch.compile
    def step():
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()

    step()
    assert step.entries == []
    for _ in range(5):
        step()
    assert len(step.entries) == 1


def test_the_first_step_stops_tracing_at_its_backward():
    """The first step's trace would be thrown away: from backward() on it runs as plain
    eager code (the optimizer step untraced, its native update), and its numbers are
    eager's bit for bit; the second call traces, then the plan runs."""
    from gcompile._state import state

    def run(compiled):
        torch.manual_seed(0)
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        seen = []
        opt.register_step_pre_hook(lambda o, a, k: seen.append(state.tracer is not None))
        x, y = torch.randn(4, 10), torch.randn(4, 3)
        step = train_step(model, opt, nn.MSELoss())
        fn = torch.compile(step) if compiled else step
        fn(x, y)
        after_one = [p.detach().numpy().copy() for p in model.parameters()]
        for _ in range(3):
            fn(x, y)
        return fn, seen, after_one

    fn, seen, first = run(True)
    _, _, eager_first = run(False)
    assert fn.num_traces == 2 and len(fn.entries) == 1
    assert seen[:2] == [False, True]  # the first call's step untraced, the second's traced
    for a, b in zip(first, eager_first):
        np.testing.assert_array_equal(a, b)


def test_an_entry_no_longer_used_gives_back_its_arena():
    """A plan traced for calls made while .grad is None (the user cleared them) stays
    (guarded) but gives back its arena once idle, and gets it again when needed."""
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    crit = nn.MSELoss()
    x, y = torch.randn(4, 10), torch.randn(4, 3)

    @torch.compile
    def step():
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    for p in model.parameters():
        p.grad = None
    step()
    assert len(step.entries) == 2
    steady, grads_none = step.entries
    for _ in range(4):
        step()
    assert grads_none.executable.plan.arena is None
    assert steady.executable.plan.arena is not None
    for p in model.parameters():
        p.grad = None
    step()
    assert grads_none.executable.plan.arena is not None
