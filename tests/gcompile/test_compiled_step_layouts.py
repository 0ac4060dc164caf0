"""Layouts a compiled training step keeps: a Linear weight's gradient, and optimizer state
made from it while the step is traced, are C-ordered like the weight (torch's gradient
layout contract), so the fused update streams them instead of reading a transpose."""
import numpy as np

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F


def _step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(16, 48)
    y = torch.randint(0, 5, (16,))

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return model, opt, step, x, y


def test_momentum_buffers_and_grads_are_c_ordered():
    model, opt, step, x, y = _step()
    f = torch.compile(step)
    for _ in range(3):
        f(x, y)
    for p in model.parameters():
        assert p.grad.numpy().flags["C_CONTIGUOUS"]
        assert opt.state[p]["momentum_buffer"].numpy().flags["C_CONTIGUOUS"]


def test_weight_gradient_is_computed_in_the_weights_layout():
    """The plan computes each Linear weight's gradient as g^T x of shape (out, in),
    not (x^T g)^T, so no kernel reads a transposed (out, in) operand."""
    model, opt, step, x, y = _step()
    f = torch.compile(step)
    for _ in range(2):
        f(x, y)
    plan = f.entries[-1].executable.plan
    shapes = {tuple(n.out.shape) for s in plan.steps if s.kind == "matmul" for n in s.nodes}
    assert (32, 48) in shapes and (5, 32) in shapes, plan


def test_compiled_momentum_step_matches_eager():
    m1, _, s1, x, y = _step()
    m2, _, s2, _, _ = _step()
    f = torch.compile(s2)
    for _ in range(4):
        np.testing.assert_allclose(f(x, y).item(), s1(x, y).item(), rtol=1e-5)
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
