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


def test_multiplicative_lr():
    opt = make_opt()
    got = run(sched.MultiplicativeLR(opt, lambda e: 0.9 if e % 2 else 1.0), opt)
    close(got, [0.5 * math.prod(0.9 if k % 2 else 1.0 for k in range(1, e + 1))
                for e in range(EPOCHS)])


def test_constant_linear_polynomial_lr():
    opt = make_opt()
    close(run(sched.ConstantLR(opt, factor=0.25, total_iters=6), opt),
          [0.5 * (0.25 if e < 6 else 1.0) for e in range(EPOCHS)])
    opt = make_opt()
    got = run(sched.LinearLR(opt, start_factor=0.2, end_factor=0.9, total_iters=8), opt)
    want = [0.5 * (0.2 + 0.7 * min(e, 8) / 8) for e in range(EPOCHS)]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12)
    opt = make_opt()
    got = run(sched.PolynomialLR(opt, total_iters=10, power=2.0), opt)
    want = [0.5 * (1 - min(e, 10) / 10) ** 2 for e in range(EPOCHS)]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-9, abs=1e-15)
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        sched.LinearLR(make_opt(), start_factor=0)


def test_cosine_annealing_warm_restarts():
    opt = make_opt()
    got = run(sched.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=0.05), opt)
    want = []
    for e in range(EPOCHS):
        t_cur, t_i = (e, 3) if e < 3 else (e - 3, 6) if e < 9 else (e - 9, 12)
        want.append(0.05 + 0.45 * (1 + math.cos(math.pi * t_cur / t_i)) / 2)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12)
    s = sched.CosineAnnealingWarmRestarts(make_opt(), T_0=4)
    s.step(5.5)  # fractional epochs, as used per batch
    assert s.T_cur == pytest.approx(1.5) and s.get_last_lr()[0] == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 1.5 / 4)) / 2)


def test_one_cycle_lr_and_momentum():
    w = torch.zeros(2, requires_grad=True)
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    s = sched.OneCycleLR(opt, max_lr=1.0, total_steps=20, pct_start=0.25)
    lrs, moms = [], []
    for _ in range(EPOCHS):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        if len(lrs) < EPOCHS:
            s.step()

    def cos_anneal(a, b, pct):
        return b + (a - b) * (1 + math.cos(math.pi * pct)) / 2

    for e in range(EPOCHS):
        if e <= 4:
            lr, mom = cos_anneal(0.04, 1.0, e / 4), cos_anneal(0.95, 0.85, e / 4)
        else:
            lr = cos_anneal(1.0, 0.04 / 1e4, (e - 4) / 15)
            mom = cos_anneal(0.85, 0.95, (e - 4) / 15)
        assert lrs[e] == pytest.approx(lr, rel=1e-12) and moms[e] == pytest.approx(mom)
    with pytest.raises(ValueError, match="Tried to step 21 times"):
        s.step()
        s.step()
    a = optim.Adam([torch.zeros(1, requires_grad=True)])
    sched.OneCycleLR(a, max_lr=0.1, epochs=2, steps_per_epoch=5, anneal_strategy="linear")
    assert a.param_groups[0]["betas"] == (0.95, 0.999)
    with pytest.raises(ValueError, match="either total_steps OR"):
        sched.OneCycleLR(a, max_lr=0.1)


def test_sequential_and_chained_schedulers():
    opt = make_opt()
    warm = sched.LinearLR(opt, start_factor=0.1, total_iters=4)
    decay = sched.ExponentialLR(opt, gamma=0.9)
    got = run(sched.SequentialLR(opt, [warm, decay], milestones=[4]), opt)
    want = [0.5 * (0.1 + 0.9 * e / 4) if e < 4 else 0.5 * 0.9 ** (e - 4) for e in range(EPOCHS)]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12)
    opt = make_opt()
    chained = sched.ChainedScheduler([sched.ConstantLR(opt, factor=0.5, total_iters=3),
                                      sched.ExponentialLR(opt, gamma=0.9)])
    got = run(chained, opt)
    want = [0.5 * 0.9 ** e * (0.5 if e < 3 else 1.0) for e in range(EPOCHS)]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12)
    with pytest.raises(ValueError, match="one more than the number of milestone"):
        sched.SequentialLR(opt, [sched.StepLR(opt, 2)], milestones=[3])
