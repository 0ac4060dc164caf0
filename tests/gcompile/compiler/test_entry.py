"""Entry inputs: a scalar read from Python on each call (an optimizer's lr) keeps its
0-d array while the value is the same, and is read anew when it changes."""
from __future__ import annotations

import numpy as np

import gcompile as torch


def _scalar_inputs(entry) -> dict:
    return {i: entry._scalar_tensor(i) for kind, i in entry.input_map if kind == "scalar"}


def test_unchanged_scalars_keep_their_arrays_and_a_new_lr_is_read(linear_step):
    model, opt, step = linear_step(torch.optim.Adam)
    x = torch.ones(4, 3)
    for _ in range(3):
        step(x)
    (entry,) = step.entries
    first = _scalar_inputs(entry)
    assert first and all(t is _scalar_inputs(entry)[i] for i, t in first.items())
    lrs = [i for i, t in first.items() if float(t.numpy()) == 0.1]
    assert lrs
    opt.param_groups[0]["lr"] = 0.05
    now = _scalar_inputs(entry)
    assert all(float(now[i].numpy()) == 0.05 and now[i] is not first[i] for i in lrs)
    # the step uses it: matches an eager Adam step from the same state
    w = model.weight.detach().numpy().copy()
    state = {k: v.detach().numpy().copy() for k, v in opt.state[model.weight].items()
             if hasattr(v, "detach")}
    step(x)
    t = float(np.asarray(opt.state[model.weight]["step"]))
    m = 0.9 * state["exp_avg"] + 0.1 * 4.0
    v = 0.999 * state["exp_avg_sq"] + 0.001 * 16.0
    want = w - 0.05 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(model.weight.detach().numpy(), want, rtol=1e-5, atol=1e-7)


def test_negative_zero_is_a_new_scalar(linear_step):
    model, opt, step = linear_step(torch.optim.Adam)
    x = torch.ones(4, 3)
    opt.param_groups[0]["weight_decay"] = 0.0
    step(x)
    step(x)
    entry = step.entries[-1]
    before = _scalar_inputs(entry)
    opt.param_groups[0]["lr"] = -0.0
    after = _scalar_inputs(entry)
    changed = [i for i in before if after[i] is not before[i]]
    assert changed and all(np.signbit(after[i].numpy()) for i in changed)
