"""optim group of issue 13: LBFGS (with and without strong-Wolfe line search), CyclicLR and
OneCycleLR schedules against their closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn


def _rosen(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_lbfgs_minimises_rosenbrock(line_search):
    x = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=1 if line_search else 0.5, max_iter=200,
                            tolerance_change=1e-14, tolerance_grad=1e-12,
                            line_search_fn=line_search)
    evals = []

    def closure():
        opt.zero_grad()
        loss = _rosen(x)
        loss.backward()
        evals.append(loss.item())
        return loss
    first = opt.step(closure)
    assert first.item() == pytest.approx(_rosen(np.array([-1.5, 2.0])))
    for _ in range(10):
        opt.step(closure)
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0], atol=1e-5)
    assert len(evals) <= 11 * 250
    assert opt.state[x]["func_evals"] == len(evals)


def test_lbfgs_solves_least_squares_in_few_iterations():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((20, 4)), rng.standard_normal(20)
    model = nn.Linear(4, 1, bias=False).double()
    opt = torch.optim.LBFGS(model.parameters(), history_size=10, max_iter=50,
                            tolerance_change=1e-14, tolerance_grad=1e-12,
                            line_search_fn="strong_wolfe")
    A, B = torch.tensor(a), torch.tensor(b)

    def closure():
        opt.zero_grad()
        loss = ((model(A).squeeze(1) - B) ** 2).mean()
        loss.backward()
        return loss
    opt.step(closure)
    np.testing.assert_allclose(model.weight.detach().numpy()[0],
                               np.linalg.lstsq(a, b, rcond=None)[0], atol=1e-6)


def test_lbfgs_argument_errors():
    p = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="per-parameter options"):
        torch.optim.LBFGS([{"params": [p]}, {"params": [nn.Parameter(torch.ones(1))]}])
    opt = torch.optim.LBFGS([p], line_search_fn="armijo")
    with pytest.raises(RuntimeError, match="strong_wolfe"):
        opt.step(lambda: (p ** 2).sum())
    assert torch.optim.LBFGS([p], max_iter=8).defaults["max_eval"] == 10


def _cyclic(i, base, mx, up, down, mode, gamma=1.0):
    total = up + down
    cycle = math.floor(1 + i / total)
    x = 1 + i / total - cycle
    ratio = up / total
    sf = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1),
             "exp_range": gamma ** i}[mode]
    return base + (mx - base) * sf * scale


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_lr_values_and_momentum(mode):
    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=3, step_size_down=5,
                                              mode=mode, gamma=0.95)
    for i in range(25):
        want = _cyclic(i, 0.01, 0.1, 3, 5, mode, 0.95)
        assert sched.get_last_lr()[0] == pytest.approx(want)
        base_h = (0.9 - 0.8) * ((want - 0.01) / (0.1 - 0.01))
        assert opt.param_groups[0]["momentum"] == pytest.approx(0.9 - base_h)
        opt.step()
        sched.step()


def test_cyclic_lr_adam_betas_custom_scale_and_errors():
    p = nn.Parameter(torch.ones(1))
    adam = torch.optim.Adam([p], lr=1e-3)
    s = torch.optim.lr_scheduler.CyclicLR(adam, 1e-4, 1e-2, step_size_up=2,
                                          scale_fn=lambda c: 0.5, scale_mode="cycle")
    assert adam.param_groups[0]["betas"][0] == pytest.approx(0.9)
    adam.step()
    s.step()
    assert s.get_last_lr()[0] == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5 * 0.5)
    assert adam.param_groups[0]["betas"][0] == pytest.approx(0.9 - 0.1 * 0.5 * 0.5)
    sd = s.state_dict()
    assert "_scale_fn_custom" not in sd
    with pytest.raises(ValueError, match="mode is invalid"):
        torch.optim.lr_scheduler.CyclicLR(adam, 1e-4, 1e-2, mode="bogus")
    with pytest.raises(ValueError, match="momentum or beta1"):
        torch.optim.lr_scheduler.CyclicLR(torch.optim.Adagrad([p]), 1e-4, 1e-2)


def test_one_cycle_lr_matches_closed_form():
    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    total, max_lr, pct = 20, 1.0, 0.3
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total,
                                                pct_start=pct)
    initial, min_lr = max_lr / 25, max_lr / 25 / 1e4
    up_end = pct * total - 1

    def cos(start, end, frac):
        return end + (start - end) / 2 * (math.cos(math.pi * frac) + 1)
    for i in range(total):
        if i <= up_end:
            want = cos(initial, max_lr, i / up_end)
            mom = cos(0.95, 0.85, i / up_end)
        else:
            frac = (i - up_end) / (total - 1 - up_end)
            want = cos(max_lr, min_lr, frac)
            mom = cos(0.85, 0.95, frac)
        assert sched.get_last_lr()[0] == pytest.approx(want)
        assert opt.param_groups[0]["momentum"] == pytest.approx(mom)
        opt.step()
        if i < total - 1:
            sched.step()
    with pytest.raises(ValueError):
        sched.step()
        sched.step()
