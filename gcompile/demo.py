"""``gcompile demo``: fit a tiny two-layer network with eager autograd."""
from __future__ import annotations

import time

import gcompile as torch


def run_demo(steps: int = 200) -> int:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    true_w = torch.randn(8, 1, generator=g)
    y = torch.tanh(x @ true_w) + 0.05 * torch.randn(256, 1, generator=g)

    w1 = (torch.randn(8, 32, generator=g) * 0.3).requires_grad_()
    b1 = torch.zeros(32, requires_grad=True)
    w2 = (torch.randn(32, 1, generator=g) * 0.3).requires_grad_()
    b2 = torch.zeros(1, requires_grad=True)
    params = [w1, b1, w2, b2]
    lr = 0.1
    t0 = time.perf_counter()
    for step in range(steps + 1):
        pred = torch.relu(x @ w1 + b1) @ w2 + b2
        loss = ((pred - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad = None
        if step % max(steps // 5, 1) == 0:
            print(f"step {step:4d}  loss {loss.item():.5f}")
    dt = time.perf_counter() - t0
    print(f"eager training: {steps} steps in {dt:.2f} s ({1e3 * dt / max(steps, 1):.2f} ms/step)")
    print(f"final loss {loss.item():.5f}; grad_fn of the loss: {loss.grad_fn.name()}")
    return 0
