"""docs/adding-an-op.md holds: one registry definition gives an op that works eagerly,
compiled (fused into a generated kernel), and with gradients (eager and compiled)."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
from gcompile._tensor import apply_op
from ir.ops.elementwise import _unary
from ir.registry import REGISTRY

NAME = "squareplus_doc_example"


@pytest.fixture
def squareplus():
    _unary(NAME,
           lambda x: (x + np.sqrt(x * x + 4)) / 2,
           "(({0} + sqrt({0} * {0} + 4.0)) * 0.5)",
           lambda b, g, xs, out: (b.mul(g, b.div(out, b.sub(b.mul(out, 2.0), xs[0]))),),
           saves=(0, -1), dtype_rule="float")
    try:
        yield lambda x: apply_op(NAME, (x,))
    finally:
        REGISTRY.pop(NAME, None)  # the coverage tests see only the built-in ops


def _ref(x):
    return (x + np.sqrt(x * x + 4)) / 2


def test_an_op_added_in_one_definition_works_everywhere(squareplus):
    x = torch.randn(5, 7, dtype=torch.float64)
    np.testing.assert_allclose(squareplus(x).numpy(), _ref(x.numpy()), rtol=1e-12)

    f = torch.compile(lambda x: squareplus(x * 2.0) + 1.0)
    f(x)
    got = f(x)
    np.testing.assert_allclose(got.numpy(), _ref(x.numpy() * 2) + 1, rtol=1e-12)
    ex = torch.explain(lambda x: squareplus(x * 2.0) + 1.0, x)
    assert ex.num_kernels == 1 and not ex.unfused  # fused with its neighbours

    xg = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: squareplus(t), (xg,))
    squareplus(xg).sum().backward()
    eager_grad = xg.grad.numpy().copy()

    def loss(t):
        return squareplus(t).sum()
    xc = x.clone().requires_grad_()
    cl = torch.compile(loss)
    cl(xc).backward()
    xc.grad = None
    cl(xc).backward()
    np.testing.assert_allclose(xc.grad.numpy(), eager_grad, rtol=1e-10)
    assert type(cl.entries[0]).__name__ == "TrainingEntry"
