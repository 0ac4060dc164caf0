"""Random ops are graph nodes: compiled functions with dropout, rand/randn(_like)
and bernoulli build a plan (no graph break), draw fresh samples on every call,
advance the Generator exactly as eager code does, and so give eager's numbers."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn
from gcompile.compiler.api import GraphBreakWarning


def _compiled(fn):
    return torch.compile(fn)


def _no_break(cf):
    assert cf.entries and not cf.graph_breaks and not cf._eager
    assert cf.entries[0].executable.compiled.plan is not None


@pytest.mark.parametrize("make", [
    lambda x: torch.rand_like(x),
    lambda x: torch.randn_like(x) * 2 + x,
    lambda x: torch.bernoulli(torch.full_like(x, 0.3)),
    lambda x: nn.functional.dropout(x, 0.5, training=True),
    lambda x: torch.rand(3, 4) + torch.randn(3, 4),
], ids=["rand_like", "randn_like", "bernoulli", "dropout", "rand+randn"])
def test_random_ops_compile_and_match_eager_draw_for_draw(make):
    cf = _compiled(make)
    x = torch.ones(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphBreakWarning)
        torch.manual_seed(7)
        got = [cf(x).numpy().copy() for _ in range(4)]
    torch.manual_seed(7)
    want = [make(x).numpy().copy() for _ in range(4)]
    _no_break(cf)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[-1], got[-2])  # fresh samples on every call


def test_explicit_generator_advances_like_eager():
    def f(x, g):
        return x + torch.randn(x.shape, generator=g)

    cf = _compiled(f)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x = torch.zeros(5)
    for _ in range(3):
        np.testing.assert_array_equal(cf(x, g1).numpy(), f(x, g2).numpy())
    np.testing.assert_array_equal(g1.get_state().numpy(), g2.get_state().numpy())


def test_manual_seed_reproduces_a_compiled_run():
    cf = _compiled(lambda x: nn.functional.dropout(x, 0.3))
    x = torch.ones(64)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        runs.append([cf(x).numpy().copy() for _ in range(3)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_dropout_mask_statistics():
    p = 0.3
    cf = _compiled(lambda x: nn.functional.dropout(x, p))
    x = torch.ones(200_000)
    cf(x)
    out = cf(x).numpy()
    kept = out != 0
    assert abs(kept.mean() - (1 - p)) < 0.005
    np.testing.assert_allclose(out[kept], 1 / (1 - p), rtol=1e-6)
    assert abs(out.mean() - 1.0) < 0.01  # unbiased
    u = _compiled(lambda x: torch.rand_like(x))(x).numpy()
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    n = _compiled(lambda x: torch.randn_like(x))(x).numpy()
    assert abs(n.mean()) < 0.01 and abs(n.var() - 1) < 0.02


def test_compiled_training_with_dropout_equals_eager():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))
    init = copy.deepcopy(model.state_dict())
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    runs = []
    for compiled in (False, True):
        model.load_state_dict(init)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

        def step(opt=opt):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        fn = torch.compile(step) if compiled else step
        torch.manual_seed(5)
        with warnings.catch_warnings():
            warnings.simplefilter("error", GraphBreakWarning)
            runs.append(([fn().item() for _ in range(6)],
                         [p.detach().numpy().copy() for p in model.parameters()]))
        if compiled:
            _no_break(fn)
            assert fn.num_traces <= 2
    (le, pe), (lc, pc) = runs
    np.testing.assert_allclose(lc, le, rtol=2e-5)
    for a, b in zip(pe, pc):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6)


def test_bernoulli_checks_probabilities_every_call():
    cf = _compiled(lambda p: torch.bernoulli(p))
    cf(torch.full((3,), 0.5))
    cf(torch.full((3,), 0.5))
    with pytest.raises(RuntimeError, match="probabilities must be in"):
        cf(torch.tensor([0.5, 1.5, 0.2]))


def test_dropout2d_on_2d_input_warns_and_drops_whole_rows():
    x = torch.ones(64, 8)
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
        out = nn.Dropout2d(0.5)(x).numpy()
    rows = out.sum(1)
    assert set(np.unique(rows)) <= {0.0, 16.0} and 0 < (rows == 0).sum() < 64
    with pytest.warns(UserWarning, match="Received a 2-D input"):
        assert nn.Dropout2d(0.5).eval()(x) is x
