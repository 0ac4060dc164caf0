"""Guard checks: the module guard's identity fast path says "unchanged" only where the
full state comparison would, and the combined requires_grad guard names the tensor that
changed."""
from __future__ import annotations

import weakref

import pytest

import gcompile as torch
from gcompile import nn
from gcompile.compiler.guards import check_guards, module_guard, requires_grad_guard


def _holds(guard) -> bool:
    return check_guards([guard]) is None


def test_untouched_module_passes_without_building_its_state():
    m = nn.Linear(3, 2)
    check, expected, _ = module_guard(m)
    assert check() is expected   # the fast path returns the traced state itself


def test_attribute_rebound_to_an_equal_value_still_passes():
    m = nn.Linear(3, 2)
    m.scale = 0.5
    guard = module_guard(m)
    m.scale = float("0.5")   # another object, the same value
    assert guard[0]() is not guard[1] and _holds(guard)


@pytest.mark.parametrize("change", [
    lambda m: setattr(m, "scale", -0.0),                  # 0.0 -> -0.0: equal, not the same
    lambda m: m.train(False),
    lambda m: setattr(m, "extra", 3),                     # a new plain attribute
    lambda m: m.__dict__.pop("scale"),
    lambda m: m._parameters.__setitem__("weight", nn.Parameter(torch.zeros(2, 3))),
    lambda m: setattr(m, "bias", nn.Parameter(torch.zeros(2))),
    lambda m: m.register_forward_hook(lambda mod, i, o: o),
    lambda m: m.register_forward_pre_hook(lambda mod, i: None),
    lambda m: m.add_module("child", nn.ReLU()),
    lambda m: m.register_buffer("running", torch.zeros(2)),
])
def test_each_change_fails_the_guard(change):
    m = nn.Linear(3, 2)
    m.scale = 0.0
    guard = module_guard(m)
    assert _holds(guard)
    change(m)
    assert not _holds(guard)


def test_removed_hook_fails_then_the_original_state_passes_again():
    m = nn.Linear(3, 2)
    guard = module_guard(m)
    h = m.register_forward_hook(lambda mod, i, o: o)
    assert not _holds(guard)
    h.remove()
    assert _holds(guard)


def test_tuple_holding_a_mutable_value_is_compared_by_content():
    m = nn.Linear(3, 2)
    m.sizes = (1, [2, 3])
    guard = module_guard(m)
    assert _holds(guard)
    m.sizes[1].append(4)   # the same tuple object, other contents
    assert not _holds(guard)


def test_a_module_that_is_gone_fails_its_guard():
    m = nn.Linear(3, 2)
    guard = module_guard(m)
    del m
    assert not _holds(guard)


def test_requires_grad_guard_names_the_tensor_that_changed():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    guard = requires_grad_guard([(weakref.ref(a), True, "captured0"),
                                 (weakref.ref(b), True, "captured1")])
    assert _holds(guard)
    b.requires_grad_(False)
    assert check_guards([guard]) == "requires_grad of captured tensor %captured1"
    b.requires_grad_(True)
    assert _holds(guard)


def test_freezing_a_parameter_retraces_the_compiled_step(linear_step):
    model, _, step = linear_step(torch.optim.SGD)
    x = torch.ones(4, 3)
    step(x)
    step(x)
    model.weight.requires_grad_(False)
    before = model.weight.detach().numpy().copy()
    step(x)
    assert (model.weight.detach().numpy() == before).all()
    assert len(step.entries) == 2


def test_a_failed_guard_lets_go_of_the_replaced_parameter():
    m = nn.Linear(3, 2)
    guard = module_guard(m)
    old = weakref.ref(m.weight)
    m.weight = nn.Parameter(torch.zeros(2, 3))
    assert old() is not None   # held by the guard until a check sees the change
    assert not _holds(guard)
    assert old() is None
    assert not _holds(guard)   # and it still fails, by the state comparison
