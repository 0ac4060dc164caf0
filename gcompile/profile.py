"""``gcompile.profile``: where a compiled function's time goes, step by step.

Compiles ``fn`` for the given inputs (grad off: the inference plan), runs the plan
with the executor's per-step timer, and reports for every step (generated kernel,
BLAS matmul, library op, view) its time per call, the bytes it reads and writes,
the resulting GB/s, and GFLOP/s for matmuls (2·M·N·K per product).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StepProfile:
    """One plan step's measurements (medians over the timed runs)."""

    index: int
    kind: str
    name: str
    seconds: float
    bytes: int
    flops: int = 0

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 and self.flops else 0.0


@dataclass
class Profile:
    """Per-step profile of one compiled plan; ``str()`` is a table."""

    name: str
    runs: int
    steps: list[StepProfile] = field(default_factory=list)
    total_seconds: float = 0.0   # median wall time of a whole plan run

    def __str__(self) -> str:
        lines = [f"gcompile.profile: {self.name}: {len(self.steps)} steps, median of "
                 f"{self.runs} runs, {self.total_seconds * 1e3:.3f} ms per call",
                 f"{'#':>3} {'kind':<8} {'step':<44} {'ms':>8} {'%':>5} {'MB':>8} "
                 f"{'GB/s':>7} {'GFLOP/s':>8}"]
        total = sum(s.seconds for s in self.steps) or 1.0
        for s in self.steps:
            gf = f"{s.gflops:8.2f}" if s.flops else f"{'':>8}"
            lines.append(f"{s.index:>3} {s.kind:<8} {s.name[:44]:<44} {s.seconds * 1e3:>8.3f} "
                         f"{100 * s.seconds / total:>5.1f} {s.bytes / 1e6:>8.3f} "
                         f"{s.gbps:>7.2f} {gf}")
        return "\n".join(lines)

    __repr__ = __str__


def _matmul_flops(step) -> int:
    flops = 0
    for n in step.nodes:
        if n.op == "matmul":
            a = n.inputs[0]
            k = a.shape[-1] if a.ndim else 1
            flops += 2 * n.out.numel * k
    return flops


def profile(fn: Any, *inputs: Any, runs: int = 20, warmup: int = 2, print_table: bool = True,
            **kwargs: Any) -> Profile:
    """Compile ``fn(*inputs, **kwargs)`` (grad off), time each plan step over ``runs``
    runs after ``warmup`` runs, print the table (unless ``print_table=False``) and
    return it as a ``Profile``."""
    from .autograd import no_grad
    from .compiler.api import _flatten, _module_params, input_tensors
    from .export.program import compiled_function, unwrap
    from runtime.plan import Executor
    if runs < 1 or warmup < 0:
        raise ValueError(f"gcompile.profile: runs must be >= 1 and warmup >= 0, got {runs}, "
                         f"{warmup}")
    fn = unwrap(fn)
    cf = compiled_function(fn, "gcompile.profile")
    with no_grad():
        cf(*inputs, **kwargs)
    if not cf.entries:
        raise RuntimeError("gcompile.profile: nothing was compiled (the function ran eagerly)")
    entry = cf.entries[-1]
    leaves: list = []
    _flatten((inputs, kwargs), leaves)
    params = [p for _, p in _module_params(cf._module)]
    arrays = [t._data for t in input_tensors(entry, leaves, params)]
    plan = entry.executable.plan
    ex = Executor(plan, profile=True)
    for _ in range(warmup):
        ex(arrays)
    ex.records.clear()
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ex(arrays)
        walls.append(time.perf_counter() - t0)
    n_steps = len(plan.steps)
    per_step = np.array([r["seconds"] for r in ex.records]).reshape(runs, n_steps)
    med = np.median(per_step, axis=0)
    name = getattr(fn, "__qualname__", type(fn).__name__)
    out = Profile(name, runs, total_seconds=float(np.median(walls)))
    for i, step in enumerate(plan.steps):
        out.steps.append(StepProfile(i, step.kind, step.name, float(med[i]),
                                     int(step.bytes_moved), _matmul_flops(step)))
    if print_table:
        print(out)
    return out


__all__ = ["profile", "Profile", "StepProfile"]
