"""The native (fused) eager optimizer updates: the default path of Adam/AdamW, SGD,
Adagrad and RMSprop. Each option combination, over many steps of a small model, must
match the op-by-op path (``fused=False``) to float rounding and torch; the state_dict
keeps its layout; a traced (compiled) step runs the op-by-op code."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch as real_torch

import gcompile as torch
from gcompile import _fused_optim, nn

STEPS = 25
RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 6)).astype(np.float32)
Y = RNG.standard_normal((16, 3)).astype(np.float32)
W1 = RNG.standard_normal((8, 6)).astype(np.float32) * 0.4
B1 = RNG.standard_normal(8).astype(np.float32) * 0.1
W2 = RNG.standard_normal((3, 8)).astype(np.float32) * 0.4


def _cases():
    for ams, wd, dec, mx in itertools.product([False, True], [0, 0.1], [False, True],
                                              [False, True]):
        yield "Adam", dict(lr=0.01, amsgrad=ams, weight_decay=wd, maximize=mx,
                           **({"decoupled_weight_decay": True} if dec else {}))
    for ams, mx in itertools.product([False, True], [False, True]):
        yield "AdamW", dict(lr=0.01, amsgrad=ams, weight_decay=0.05, maximize=mx)
    for mom, damp, nes, wd, mx in itertools.product([0, 0.9], [0, 0.3], [False, True], [0, 0.1],
                                                    [False, True]):
        if not (nes and (mom == 0 or damp)):
            yield "SGD", dict(lr=0.02, momentum=mom, dampening=damp, nesterov=nes,
                              weight_decay=wd, maximize=mx)
    for decay, wd, mx in itertools.product([0, 0.01], [0, 0.1], [False, True]):
        yield "Adagrad", dict(lr=0.05, lr_decay=decay, weight_decay=wd, maximize=mx,
                              initial_accumulator_value=0.1)
    for c, mom, wd, mx in itertools.product([False, True], [0, 0.5], [0, 0.1], [False, True]):
        yield "RMSprop", dict(lr=0.005, centered=c, momentum=mom, weight_decay=wd, maximize=mx)


CASES = list(_cases())


def _train(lib, name, kwargs, steps=STEPS, dtype=np.float32, **extra):
    """``steps`` updates of a two-layer model (one weight transposed in the forward, so
    its gradient arrives non-contiguous from the matmul backward)."""
    tdt = lib.float32 if dtype == np.float32 else lib.float64
    ps = [lib.tensor(a.astype(dtype), requires_grad=True) for a in (W1, B1, W2)]
    opt = getattr(lib.optim, name)(ps, **kwargs, **extra)
    x, y = lib.tensor(X, dtype=tdt), lib.tensor(Y, dtype=tdt)
    for _ in range(steps):
        opt.zero_grad()
        h = lib.tanh(x @ ps[0].t() + ps[1])
        loss = ((h @ ps[2].t() - y) ** 2).mean()
        loss.backward()
        opt.step()
    return [p.detach().numpy().copy() for p in ps], opt


@pytest.fixture
def calls(monkeypatch):
    """Counts the native updates run."""
    n = {"k": 0}
    for kind in ("adam", "sgd", "adagrad", "rmsprop"):
        real = getattr(_fused_optim, kind)

        def counted(*a, _real=real, **k):
            n["k"] += 1
            return _real(*a, **k)
        monkeypatch.setattr(_fused_optim, kind, counted)
    return n


@pytest.mark.parametrize("name,kwargs", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"
                              for n, kw in CASES])
def test_fused_matches_op_by_op_and_torch(name, kwargs, calls):
    fused, opt = _train(torch, name, kwargs)
    assert calls["k"] == 3 * STEPS  # the native path ran, once per parameter and step
    ops, opt_ops = _train(torch, name, kwargs, foreach=True)
    assert calls["k"] == 3 * STEPS  # foreach=True keeps the op-by-op code
    ref, _ = _train(real_torch, name, kwargs, foreach=False)
    for a, b, c in zip(fused, ops, ref):
        # float32 over 25 steps (maximize makes the loss grow): rounding differences of
        # an ulp per step (FMA contraction in the kernel) grow a little
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a, c, rtol=3e-4, atol=3e-5)
    # state_dict: same layout (keys, dtypes, shapes) and values as the op-by-op path
    sd, sd_ops = opt.state_dict(), opt_ops.state_dict()
    assert sd["param_groups"] == [dict(g, foreach=None) for g in sd_ops["param_groups"]]
    assert sd["state"].keys() == sd_ops["state"].keys()
    for i, st in sd["state"].items():
        assert st.keys() == sd_ops["state"][i].keys()
        for k, v in st.items():
            w = sd_ops["state"][i][k]
            assert (v.dtype, tuple(v.shape)) == (w.dtype, tuple(w.shape)), k
            w = w.numpy()
            np.testing.assert_allclose(v.numpy(), w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
                                         ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True))])
def test_float64_and_fused_false(name, kwargs, calls):
    fused, _ = _train(torch, name, kwargs, dtype=np.float64)
    n = calls["k"]
    assert n == 3 * STEPS
    ops, _ = _train(torch, name, kwargs, dtype=np.float64, fused=False)
    assert calls["k"] == n
    for a, b in zip(fused, ops):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_fused_and_foreach_together_raise():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        torch.optim.Adam(p, fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        torch.optim.SGD(p, lr=0.1, fused=True, foreach=True)


def test_scheduler_and_hand_edits_reach_the_kernel():
    runs = []
    for fused in (None, False):
        ps = [torch.tensor(W1.copy(), requires_grad=True)]
        opt = torch.optim.AdamW(ps, lr=0.01, fused=fused)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.3)
        for i in range(10):
            ps[0].grad = torch.tensor(np.sin(W1 * (i + 1)))
            opt.step()
            sched.step()
            if i == 5:
                opt.param_groups[0]["betas"] = (0.8, 0.99)
                opt.param_groups[0]["weight_decay"] = 0.3
        runs.append(ps[0].detach().numpy())
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5, atol=1e-7)


def test_versions_bump_and_state_round_trips():
    p = torch.tensor(W1.copy(), requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.01, amsgrad=True)
    p.grad = torch.ones_like(p)
    v0 = p._version
    opt.step()
    st = opt.state[p]
    assert p._version == v0 + 1
    assert all(st[k]._version >= 1 for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"))
    assert st["step"].dtype == torch.float32 and st["step"].item() == 1.0
    q = torch.tensor(W1.copy(), requires_grad=True)
    other = torch.optim.Adam([q], lr=0.01, amsgrad=True, fused=False)
    q.grad = torch.ones_like(q)
    other.step()
    other.load_state_dict(opt.state_dict())  # loads across paths
    for o in (opt, other):
        for _ in range(3):
            o.step()
    np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-6)


def test_unsupported_cases_fall_back(calls):
    # float16 params, a tensor lr: the op-by-op code serves them
    p = torch.zeros(4, dtype=torch.float16, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(4, dtype=torch.float16)
    opt.step()
    q = torch.zeros(4, requires_grad=True)
    opt2 = torch.optim.Adam([q], lr=torch.tensor(0.1))
    q.grad = torch.ones(4)
    opt2.step()
    assert calls["k"] == 0
    np.testing.assert_allclose(p.detach().float().numpy(), q.detach().numpy(), atol=1e-3)


def test_traced_step_runs_the_op_by_op_code(monkeypatch):
    from gcompile._state import state
    native = _fused_optim.adam

    def refuse(*a, **k):  # the first call runs eagerly from its backward on: native there
        if state.tracer is not None:
            raise AssertionError("native update under a tracer")
        return native(*a, **k)
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.1)
        x, y = torch.tensor(X), torch.tensor(Y)

        def step(x, y, model=model, opt=opt):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            return loss
        if compiled:
            monkeypatch.setattr(_fused_optim, "adam", refuse)
            step = torch.compile(step)
        for _ in range(8):
            step(x, y)
        runs.append([p.detach().numpy().copy() for p in model.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
