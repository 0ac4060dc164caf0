"""Scheduler lr sequences over 20 epochs against values computed independently."""
from __future__ import annotations

import io
import math
from bisect import bisect_right

import pytest

import gcompile as torch
from gcompile import optim
from gcompile.optim import lr_scheduler as sched

EPOCHS = 20


def make_opt(lr=0.5, groups=1):
    ps = [torch.zeros(2, requires_grad=True) for _ in range(groups)]
    if groups == 1:
        return optim.SGD(ps, lr=lr)
    return optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(ps)], lr=lr)


def run(s, opt, epochs=EPOCHS):
    """lrs in effect for epochs 0..epochs-1 (read before each scheduler.step)."""
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return out


def close(got, want):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-15), (i, g, w)


def test_step_lr():
    opt = make_opt()
    got = run(sched.StepLR(opt, step_size=3, gamma=0.5), opt)
    close(got, [0.5 * 0.5 ** (e // 3) for e in range(EPOCHS)])


def test_multistep_lr_with_repeated_milestone():
    opt = make_opt()
    got = run(sched.MultiStepLR(opt, milestones=[4, 9, 9, 15], gamma=0.1), opt)
    ms = [4, 9, 9, 15]
    close(got, [0.5 * 0.1 ** bisect_right(ms, e) for e in range(EPOCHS)])


def test_exponential_lr():
    opt = make_opt()
    got = run(sched.ExponentialLR(opt, gamma=0.9), opt)
    close(got, [0.5 * 0.9 ** e for e in range(EPOCHS)])


def test_cosine_annealing_past_t_max():
    opt = make_opt()
    got = run(sched.CosineAnnealingLR(opt, T_max=7, eta_min=0.01), opt)
    want = [0.01 + (0.5 - 0.01) * (1 + math.cos(math.pi * e / 7)) / 2 for e in range(EPOCHS)]
    for i, (g, w) in enumerate(zip(got, want)):
        assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-12), (i, g, w)
    assert min(got) == pytest.approx(0.01) and got[14] == pytest.approx(0.5)


def test_lambda_lr_per_group():
    opt = make_opt(lr=0.1, groups=2)
    s = sched.LambdaLR(opt, [lambda e: 0.95 ** e, lambda e: 1 / (e + 1)])
    lrs = []
    for _ in range(EPOCHS):
        lrs.append(s.get_last_lr())
        opt.step()
        s.step()
    close([x[0] for x in lrs], [0.1 * 0.95 ** e for e in range(EPOCHS)])
    close([x[1] for x in lrs], [0.2 / (e + 1) for e in range(EPOCHS)])
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        sched.LambdaLR(make_opt(groups=2), [lambda e: 1.0])


def test_reduce_on_plateau_patience_min_lr():
    opt = make_opt(lr=1.0)
    s = sched.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2, threshold=0,
                                threshold_mode="abs", min_lr=0.1)
    metrics = [5, 4, 4, 4, 4] + [3] * 15
    got = []
    for m in metrics:
        s.step(m)
        got.append(opt.param_groups[0]["lr"])
    want = [1.0] * 4 + [0.5] * 4 + [0.25] * 3 + [0.125] * 3 + [0.1] * 6
    close(got, want)
    assert s.get_last_lr() == [0.1]


def test_reduce_on_plateau_cooldown_and_max_mode():
    opt = make_opt(lr=1.0)
    s = sched.ReduceLROnPlateau(opt, factor=0.1, patience=0, cooldown=2)
    got = []
    for _ in range(8):
        s.step(torch.tensor(1.0))
        got.append(opt.param_groups[0]["lr"])
    for g, w in zip(got, [1, .1, .1, .1, .01, .01, .01, .001]):
        assert g == pytest.approx(w)
    opt = make_opt(lr=1.0)
    s = sched.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1, threshold=0.1)
    for m in [1.0, 1.05, 1.2, 1.25, 1.3]:
        s.step(m)
    # 1.05 and 1.25 are not 10% better; 1.3 is the second bad epoch after 1.2
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        sched.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode avg is unknown"):
        sched.ReduceLROnPlateau(opt, mode="avg")
    with pytest.raises(ValueError, match="threshold mode x is unknown"):
        sched.ReduceLROnPlateau(opt, threshold_mode="x")


def test_construction_sets_initial_lr_and_last_epoch():
    opt = make_opt(lr=0.5)
    s = sched.StepLR(opt, step_size=2)
    assert s.last_epoch == 0 and opt.param_groups[0]["initial_lr"] == 0.5
    assert s.get_last_lr() == [0.5] and s.base_lrs == [0.5]
    with pytest.raises(KeyError, match="initial_lr"):
        sched.StepLR(make_opt(), step_size=2, last_epoch=3)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        sched.StepLR(object(), step_size=2)


def test_tensor_lr_is_updated_in_place():
    w = torch.zeros(2, requires_grad=True)
    lr = torch.tensor(0.5)
    opt = optim.SGD([w], lr=lr)
    s = sched.ExponentialLR(opt, gamma=0.5)
    opt.step()
    s.step()
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.25


@pytest.mark.parametrize("make", [
    lambda o: sched.StepLR(o, 3, 0.5),
    lambda o: sched.MultiStepLR(o, [2, 5, 8], 0.5),
    lambda o: sched.ExponentialLR(o, 0.8),
    lambda o: sched.CosineAnnealingLR(o, 6, 0.01),
])
def test_state_dict_round_trip_through_save(make):
    opt = make_opt()
    s = make(opt)
    full = run(s, opt, 12)
    opt = make_opt()
    s = make(opt)
    first = run(s, opt, 5)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": s.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf)
    opt2 = make_opt()
    s2 = make(opt2)
    opt2.load_state_dict(ck["opt"])
    s2.load_state_dict(ck["sched"])
    close(first + run(s2, opt2, 7), full)


def test_plateau_state_dict_round_trip():
    opt = make_opt(lr=1.0)
    s = sched.ReduceLROnPlateau(opt, patience=1)
    for m in [3, 2, 2]:
        s.step(m)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    s2 = sched.ReduceLROnPlateau(make_opt(lr=1.0), patience=1)
    s2.load_state_dict(torch.load(buf))
    assert s2.best == 2 and s2.num_bad_epochs == 1 and s2.mode_worse == math.inf
