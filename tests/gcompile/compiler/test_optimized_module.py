"""compile(module) returns an nn.Module (torch's OptimizedModule) that stays compiled
through the calls trainers make on a model."""
from __future__ import annotations

import numpy as np

import gcompile as torch
from gcompile import nn


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_is_a_module_and_chaining_methods_return_the_compiled_wrapper():
    m = _model()
    cm = torch.compile(m)
    assert isinstance(cm, nn.Module) and cm._orig_mod is m
    for call in (lambda: cm.to("cpu"), lambda: cm.train(), lambda: cm.eval(), lambda: cm.cpu(),
                 lambda: cm.float(), lambda: cm.requires_grad_(True)):
        assert call() is cm
    cm.train()
    assert cm.training and m.training and all(x.training for x in m.modules())
    cm.eval()
    assert not cm.training and not m[1].training


def test_state_dict_keys_are_clean_and_load_round_trips():
    m = _model()
    cm = torch.compile(m)
    assert list(cm.state_dict()) == list(m.state_dict())
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    cm.load_state_dict(other.state_dict())
    for a, b in zip(m.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert [n for n, _ in cm.named_parameters()] == [n for n, _ in m.named_parameters()]


def test_repr_shows_the_wrapped_module():
    cm = torch.compile(_model())
    assert repr(cm).startswith("OptimizedModule(\n  (_orig_mod): Sequential(")


def test_a_trainer_that_reassigns_the_model_keeps_compiling():
    m = _model()
    model = torch.compile(m)
    model = model.to("cpu")  # the usual trainer line
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    for _ in range(3):
        model.train()
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        model.eval()
        np.testing.assert_allclose(model(x).detach().numpy(), m(x).detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert model.entries and not model.graph_breaks
    assert m[0].weight.grad is not None


def test_compile_checks_mode_options_and_keyword_arguments():
    import pytest
    with pytest.raises(RuntimeError, match="Unrecognized mode=fast"):
        torch.compile(lambda x: x, mode="fast")
    with pytest.raises(RuntimeError, match="Unexpected optimization option"):
        torch.compile(lambda x: x, options={"triton.cudagraphs": True})
    with pytest.raises(TypeError, match="unexpected keyword argument 'fullgrph'"):
        torch.compile(lambda x: x, fullgrph=True)
    f = torch.compile(lambda x: x * 2 + 1, options={"kernels": "reference"})
    f(torch.ones(3))
    assert f(torch.ones(3)).numpy().tolist() == [3, 3, 3]
    assert all(type(s.kernel).__name__ == "ReferenceKernel"
               for s in f.entries[0].executable.plan.steps if s.kind == "kernel")
    g = torch.compile(lambda x: x * 2, options={"max_recompiles": 1})
    g(torch.ones(2))
    with pytest.warns(UserWarning, match=r"recompile limit \(1\)"):
        g(torch.ones(3))
    h = lambda x: x  # noqa: E731
    assert torch.compile(h, disable=True) is h
    assert torch.compile(mode="max-autotune")(lambda x: x + 1)(torch.ones(1)).item() == 2
