"""Each optimiser against a NumPy implementation of torch's documented update
rule, 10 steps on a fixed least-squares problem, in float64."""
from __future__ import annotations

import copy
import io

import numpy as np
import pytest

import gcompile as torch
from gcompile import optim

RNG = np.random.default_rng(0)
A = RNG.standard_normal((6, 4))
B = RNG.standard_normal(6)
W0 = RNG.standard_normal(4)
STEPS = 10


def np_grad(w):
    return 2 * A.T @ (A @ w - B)


def run_gcompile(cls, kwargs, steps=STEPS, w0=W0):
    w = torch.tensor(w0.copy(), dtype=torch.float64, requires_grad=True)
    opt = cls([w], **kwargs)
    a, b = torch.tensor(A), torch.tensor(B)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((a @ w - b) ** 2).sum()
        loss.backward()
        opt.step()
    return w.detach().numpy().copy(), opt


# ---- NumPy references, transcribed from the algorithm boxes in torch's docs ----------
def ref_sgd(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False):
    th, b = W0.copy(), None
    for _ in range(STEPS):
        g = np_grad(th)
        if maximize:
            g = -g
        if weight_decay:
            g = g + weight_decay * th
        if momentum:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        th = th - lr * g
    return th


def ref_adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
             maximize=False, decoupled=False):
    b1, b2 = betas
    th, m, v, vmax = W0.copy(), np.zeros(4), np.zeros(4), np.zeros(4)
    for t in range(1, STEPS + 1):
        g = np_grad(th)
        if maximize:
            g = -g
        if weight_decay and decoupled:
            th = th - lr * weight_decay * th
        elif weight_decay:
            g = g + weight_decay * th
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            vhat = vmax / (1 - b2 ** t)
        else:
            vhat = v / (1 - b2 ** t)
        th = th - lr * mhat / (np.sqrt(vhat) + eps)
    return th


def ref_rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                maximize=False):
    th, v, gave, b = W0.copy(), np.zeros(4), np.zeros(4), np.zeros(4)
    for _ in range(STEPS):
        g = np_grad(th)
        if maximize:
            g = -g
        if weight_decay:
            g = g + weight_decay * th
        v = alpha * v + (1 - alpha) * g * g
        vt = v
        if centered:
            gave = alpha * gave + (1 - alpha) * g
            vt = vt - gave * gave
        if momentum > 0:
            b = momentum * b + g / (np.sqrt(vt) + eps)
            th = th - lr * b
        else:
            th = th - lr * g / (np.sqrt(vt) + eps)
    return th


def ref_adagrad(lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                maximize=False):
    th, s = W0.copy(), np.full(4, float(initial_accumulator_value))
    for t in range(1, STEPS + 1):
        g = np_grad(th)
        if maximize:
            g = -g
        clr = lr / (1 + (t - 1) * lr_decay)
        if weight_decay:
            g = g + weight_decay * th
        s = s + g * g
        th = th - clr * g / (np.sqrt(s) + eps)
    return th


def ref_adadelta(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False):
    th, v, u = W0.copy(), np.zeros(4), np.zeros(4)
    for _ in range(STEPS):
        g = np_grad(th)
        if maximize:
            g = -g
        if weight_decay:
            g = g + weight_decay * th
        v = rho * v + (1 - rho) * g * g
        dx = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * dx * dx
        th = th - lr * dx
    return th


def ref_adamax(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False):
    b1, b2 = betas
    th, m, u = W0.copy(), np.zeros(4), np.zeros(4)
    for t in range(1, STEPS + 1):
        g = np_grad(th)
        if maximize:
            g = -g
        if weight_decay:
            g = g + weight_decay * th
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        th = th - lr * m / ((1 - b1 ** t) * u)
    return th


def ref_nadam(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
              decoupled_weight_decay=False):
    b1, b2 = betas
    th, m, v = W0.copy(), np.zeros(4), np.zeros(4)
    prod = np.float32(1.0)  # torch keeps the running product of mu in a float32 tensor
    for t in range(1, STEPS + 1):
        g = np_grad(th)
        if weight_decay and decoupled_weight_decay:
            th = th * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * th
        mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        prod = np.float32(prod * np.float32(mu))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = mu_next * m / (1 - float(prod) * mu_next) + (1 - mu) * g / (1 - float(prod))
        vhat = v / (1 - b2 ** t)
        th = th - lr * mhat / (np.sqrt(vhat) + eps)
    return th


def ref_radam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
              decoupled_weight_decay=False):
    b1, b2 = betas
    th, m, v = W0.copy(), np.zeros(4), np.zeros(4)
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, STEPS + 1):
        g = np_grad(th)
        if weight_decay and decoupled_weight_decay:
            th = th * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * th
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho > 5:
            lt = np.sqrt(1 - b2 ** t) / (np.sqrt(v) + eps)
            rt = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            th = th - lr * mhat * rt * lt
        else:
            th = th - lr * mhat
    return th


CASES = [
    (optim.SGD, dict(lr=0.01), ref_sgd),
    (optim.SGD, dict(lr=0.01, momentum=0.9), ref_sgd),
    (optim.SGD, dict(lr=0.01, momentum=0.9, dampening=0.3, weight_decay=0.1), ref_sgd),
    (optim.SGD, dict(lr=0.01, momentum=0.8, nesterov=True, weight_decay=0.05), ref_sgd),
    (optim.SGD, dict(lr=0.01, momentum=0.5, maximize=True), ref_sgd),
    (optim.Adam, dict(lr=0.05), ref_adam),
    (optim.Adam, dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1), ref_adam),
    (optim.Adam, dict(lr=0.05, amsgrad=True, eps=1e-3), ref_adam),
    (optim.Adam, dict(lr=0.05, maximize=True), ref_adam),
    (optim.AdamW, dict(lr=0.05), lambda **k: ref_adam(decoupled=True, weight_decay=1e-2, **k)),
    (optim.AdamW, dict(lr=0.05, weight_decay=0.3, amsgrad=True),
     lambda **k: ref_adam(decoupled=True, **k)),
    (optim.RMSprop, dict(lr=0.01), ref_rmsprop),
    (optim.RMSprop, dict(lr=0.01, centered=True, weight_decay=0.1), ref_rmsprop),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9, alpha=0.9), ref_rmsprop),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True), ref_rmsprop),
    (optim.Adagrad, dict(lr=0.1), ref_adagrad),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.1,
                         initial_accumulator_value=0.5), ref_adagrad),
    (optim.Adadelta, dict(), ref_adadelta),
    (optim.Adadelta, dict(lr=0.5, rho=0.8, weight_decay=0.1, eps=1e-4), ref_adadelta),
    (optim.Adamax, dict(lr=0.05), ref_adamax),
    (optim.Adamax, dict(lr=0.05, betas=(0.8, 0.95), weight_decay=0.1, maximize=True),
     ref_adamax),
    (optim.NAdam, dict(lr=0.05), ref_nadam),
    (optim.NAdam, dict(lr=0.05, weight_decay=0.1, momentum_decay=0.01), ref_nadam),
    (optim.NAdam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True), ref_nadam),
    (optim.RAdam, dict(lr=0.05), ref_radam),
    (optim.RAdam, dict(lr=0.05, betas=(0.9, 0.5), weight_decay=0.1), ref_radam),
    (optim.RAdam, dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.1,
                       decoupled_weight_decay=True), ref_radam),
]


@pytest.mark.parametrize("cls,kwargs,ref", CASES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_matches_documented_update(cls, kwargs, ref):
    got, _ = run_gcompile(cls, kwargs)
    want = ref(**kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert not np.allclose(got, W0)


def test_float32_params_stay_float32():
    w = torch.randn(5, requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    (w ** 2).sum().backward()
    opt.step()
    assert w.dtype is torch.float32
    assert opt.state[w]["exp_avg"].dtype is torch.float32
    assert opt.state[w]["step"].dim() == 0 and opt.state[w]["step"].item() == 1.0


def test_tensor_lr_matches_float_lr():
    got_f, _ = run_gcompile(optim.Adam, dict(lr=0.05))
    got_t, _ = run_gcompile(optim.Adam, dict(lr=torch.tensor(0.05, dtype=torch.float64)))
    np.testing.assert_allclose(got_t, got_f, rtol=1e-12)
    got_s, _ = run_gcompile(optim.SGD, dict(lr=torch.tensor(0.01, dtype=torch.float64),
                                            momentum=0.9))
    np.testing.assert_allclose(got_s, ref_sgd(lr=0.01, momentum=0.9), rtol=1e-10)


def test_param_groups_per_group_lr():
    w1 = torch.tensor(W0.copy(), requires_grad=True)
    w2 = torch.tensor(W0.copy(), requires_grad=True)
    opt = optim.SGD([{"params": [w1]}, {"params": w2, "lr": 0.1}], lr=0.01, momentum=0.9)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[1]["lr"] == 0.1
    assert opt.param_groups[1]["momentum"] == 0.9
    g = torch.ones(4, dtype=torch.float64)
    w1.grad, w2.grad = g.clone(), g.clone()
    opt.step()
    np.testing.assert_allclose(w1.detach().numpy(), W0 - 0.01)
    np.testing.assert_allclose(w2.detach().numpy(), W0 - 0.1)


def test_add_param_group_and_errors():
    w1 = torch.randn(2, requires_grad=True)
    w2 = torch.randn(2, requires_grad=True)
    opt = optim.Adam([w1], lr=0.1)
    opt.add_param_group({"params": [w2], "lr": 0.5})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [w1]})
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([w1 * 2], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD({w1}, lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.SGD([w1], lr=-1)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        optim.Adam([w1], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        optim.SGD([w1], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid rho value"):
        optim.Adadelta([w1], rho=2.0)


def test_zero_grad_default_sets_none_and_zeroes_on_request():
    w = torch.randn(3, requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    (w * 2).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert w.grad is not None and w.grad.abs().sum().item() == 0
    (w * 2).sum().backward()
    opt.zero_grad()
    assert w.grad is None


def test_params_without_grad_are_skipped_and_closure_used():
    w1 = torch.randn(3, requires_grad=True)
    w2 = torch.randn(3, requires_grad=True)
    before = w2.detach().clone()
    opt = optim.Adam([w1, w2], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w1 ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() > 0
    assert torch.equal(w2.detach(), before) and w2 not in opt.state


@pytest.mark.parametrize("cls,kwargs", [
    (optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
    (optim.Adam, dict(lr=0.05, amsgrad=True)),
    (optim.AdamW, dict(lr=0.05)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.01)),
    (optim.Adadelta, dict()),
])
def test_state_dict_round_trip_resumes_identically(cls, kwargs):
    full, _ = run_gcompile(cls, kwargs, steps=10)
    half, opt = run_gcompile(cls, kwargs, steps=5)
    buf = io.BytesIO()
    torch.save({"w": torch.tensor(half), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf)
    sd = ck["opt"]
    assert sorted(sd) == ["param_groups", "state"] and sd["param_groups"][0]["params"] == [0]
    w = ck["w"].requires_grad_()
    opt2 = cls([w], **{**kwargs, "lr": 123.0})  # lr is restored from the state dict
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    a, b = torch.tensor(A), torch.tensor(B)
    for _ in range(5):
        opt2.zero_grad()
        ((a @ w - b) ** 2).sum().backward()
        opt2.step()
    np.testing.assert_array_equal(w.detach().numpy(), full)


def test_state_dict_torch_layout_and_load_errors():
    w1 = torch.randn(2, requires_grad=True)
    w2 = torch.randn(3, requires_grad=True)
    opt = optim.SGD([{"params": [w1]}, {"params": [w2], "lr": 0.5}], lr=0.1, momentum=0.9)
    w1.grad, w2.grad = torch.ones(2), torch.ones(3)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0] and sd["param_groups"][1]["params"] == [1]
    assert set(sd["state"]) == {0, 1} and "momentum_buffer" in sd["state"][1]
    sd2 = copy.deepcopy(sd)
    other = optim.SGD([w1], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        other.load_state_dict(sd2)
    bad = optim.SGD([{"params": [w1, w2]}, {"params": [torch.randn(1, requires_grad=True)]}],
                    lr=0.1)
    with pytest.raises(ValueError, match="doesn't match the size"):
        bad.load_state_dict(sd2)


def test_load_state_dict_copies_and_casts():
    w = torch.randn(3, requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    (w ** 2).sum().backward()
    opt.step()
    sd = opt.state_dict()
    w64 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    opt2 = optim.Adam([w64], lr=0.1)
    opt2.load_state_dict(sd)
    st = opt2.state[w64]
    assert st["exp_avg"].dtype is torch.float64 and st["step"].dtype is torch.float32
    st["exp_avg"].add_(1.0)
    assert not torch.equal(st["exp_avg"].float(), opt.state[w]["exp_avg"])


def test_repr_lists_groups():
    w = torch.randn(2, requires_grad=True)
    text = repr(optim.Adam([w], lr=0.1))
    assert text.startswith("Adam (") and "Parameter Group 0" in text and "lr: 0.1" in text


def test_capturable_adam_matches_default():
    for cls, kw in ((optim.Adam, dict(lr=0.05, amsgrad=True)), (optim.AdamW, dict(lr=0.05))):
        got, opt = run_gcompile(cls, {**kw, "capturable": True})
        want, _ = run_gcompile(cls, kw)
        np.testing.assert_allclose(got, want, rtol=1e-10)
        assert opt.param_groups[0]["capturable"] is True


@pytest.mark.parametrize("cls,kwargs", [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (optim.Adam, dict(lr=0.1, capturable=True, amsgrad=True)),
    (optim.Adam, dict(lr=0.1)),
    (optim.AdamW, dict(lr=0.1, capturable=True)),
    (optim.RMSprop, dict(lr=0.1, centered=True, momentum=0.5)),
    (optim.Adagrad, dict(lr=0.1)),
    (optim.Adadelta, dict()),
    (optim.Adamax, dict(lr=0.1, weight_decay=0.1)),
    (optim.NAdam, dict(lr=0.1)),
    (optim.NAdam, dict(lr=0.1, decoupled_weight_decay=True, weight_decay=0.1)),
    (optim.RAdam, dict(lr=0.1)),
])
def test_updates_trace_without_graph_breaks(cls, kwargs):
    from gcompile._state import state
    from gcompile.compiler.tracer import Tracer
    w = torch.randn(4, requires_grad=True)
    opt = cls([w], **kwargs)
    for _ in range(2):
        opt.zero_grad()
        (w ** 2).sum().backward()
        tracer = Tracer()
        state.tracer = tracer
        try:
            opt.step()
        finally:
            state.tracer = None
        assert tracer.breaks == [] and len(tracer.mutated) >= 1
        # hyper-parameters are plan inputs, not constants
        assert tracer.scalars


def test_step_hooks_and_scheduler_order_warning():
    import warnings

    from gcompile.optim.lr_scheduler import StepLR
    from gcompile.optim.optimizer import register_optimizer_step_post_hook
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.ones(2)
    opt = optim.SGD([w], lr=0.1)
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o is opt)))
    h2 = opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o is opt)))
    g = register_optimizer_step_post_hook(lambda o, a, k: calls.append(("global", True)))
    opt.step()
    assert calls == [("pre", True), ("post", True), ("global", True)]
    h1.remove(), h2.remove(), g.remove()
    opt.step()
    assert len(calls) == 3
    fresh = optim.Adam([w], lr=0.1)
    s = StepLR(fresh, 1)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        s.step()
    s2 = StepLR(opt, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s2.step()  # opt has stepped: no warning
