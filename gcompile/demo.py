"""``gcompile demo``: train one small model eagerly and compiled, side by side."""
from __future__ import annotations

import time

import gcompile as torch
from gcompile import nn


def _make(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.Tanh(),
                          nn.Linear(128, 4))
    return model, torch.optim.Adam(model.parameters(), lr=3e-3)


def run_demo(steps: int = 200) -> int:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 32, generator=g)
    teacher = torch.randn(32, 4, generator=g)
    y = (x @ teacher).argmax(1)
    criterion = nn.CrossEntropyLoss()

    results = {}
    for mode in ("eager", "compiled"):
        model, opt = _make(0)

        def train_step(x, y, model=model, opt=opt):
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            return loss

        step = torch.compile(train_step) if mode == "compiled" else train_step
        t0 = time.perf_counter()
        # step 1 creates optimizer state, then the step is traced (once more if .grad
        # presence changed), and the first run of the plan compiles or loads its kernels
        for _ in range(4):
            step(x, y)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step(x, y)
        dt = time.perf_counter() - t0
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        results[mode] = (loss.item(), acc, dt, first, step)
        print(f"{mode:>8}: {steps} steps in {dt:.2f} s ({1e3 * dt / steps:.2f} ms/step), "
              f"first four steps {first:.2f} s, final loss {loss.item():.4f}, "
              f"accuracy {100 * acc:.1f}%")
    (le, _, te, _, _), (lc, _, tc, _, cstep) = results["eager"], results["compiled"]
    print(f"speedup of the compiled step: {te / tc:.2f}x; "
          f"|loss difference| = {abs(le - lc):.2e}")
    if cstep.entries:
        plan = cstep.entries[0].executable.plan
        distinct = len({id(k) for k in plan.kernels()})
        print(f"the whole step (forward, backward, Adam update) is one plan: {len(plan.steps)} "
              f"steps, {plan.num_kernels} fused kernel launches ({distinct} distinct generated "
              f"kernels), arena {plan.planned_bytes} bytes vs {plan.unplanned_bytes} bytes of "
              "op-by-op intermediates")
    else:
        print("the compiled step fell back to eager (see GCOMPILE_LOG=graph_breaks)")
    return 0
