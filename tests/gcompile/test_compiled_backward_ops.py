"""Every differentiable op: the compiled backward (autodiff pass + partition)
equals the eager tape's gradients in float64. Runs the plans through the
reference interpreter so the op table costs no Numba compiles; the generated
kernels themselves are covered by the compiler and training tests."""
from __future__ import annotations

import importlib.util
import pathlib
import warnings

import numpy as np
import pytest

import gcompile as torch

_spec = importlib.util.spec_from_file_location(
    "_gradcheck_cases", pathlib.Path(__file__).with_name("test_autograd_gradcheck.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
CASES = _mod.CASES


def _grads(fn, inputs, cot):
    for x in inputs:
        x.grad = None
    out = fn(*inputs)
    out.backward(cot)
    return out.detach().numpy().copy(), [None if x.grad is None else x.grad.numpy().copy()
                                         for x in inputs]


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_backward_equals_tape(name):
    fn, make = CASES[name]
    inputs = [x for x in make()]
    eager_out = fn(*inputs)
    if not isinstance(eager_out, torch.Tensor) or not eager_out.requires_grad:
        pytest.skip("no differentiable tensor output")
    cot = torch.tensor(np.random.default_rng(7).standard_normal(tuple(eager_out.shape)),
                       dtype=eager_out.dtype)
    ref_out, ref_grads = _grads(fn, inputs, cot)
    compiled = torch.compile(fn, backend="interpreter")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a graph break is allowed: then it runs eagerly
        _grads(compiled, inputs, cot)    # first call: trace
        out, grads = _grads(compiled, inputs, cot)
    if compiled.entries:
        assert type(compiled.entries[0]).__name__ == "TrainingEntry"
        assert out is not None
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        if r is None:
            assert g is None or not np.any(g)
        else:
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)
