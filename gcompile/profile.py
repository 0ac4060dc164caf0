"""``gcompile.profile``: where a compiled function's time goes, step by step.

Compiles ``fn`` for the given inputs (grad off: the inference plan; a training step,
one that calls ``backward()``, is compiled whole and profiled through its real
calls), runs the plan with the executor's per-step timer, and reports for every step
(generated kernel, BLAS matmul, library op, view) its time per call, the bytes it
reads and writes, the resulting GB/s, GFLOP/s for matmuls (2·M·N·K per product), the
time share of each kind of step, and the Python time per call outside the steps
(argument binding, write-backs, guards).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.ops.linalg import matmul_flops


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
    total_seconds: float = 0.0   # median wall time of a whole call
    training: bool = False       # a whole training step (real calls, updates applied)
    python_seconds: float = 0.0  # mean wall time per call outside every plan step

    def by_kind(self) -> dict[str, float]:
        """Seconds per call spent in each kind of step (matmul, kernel, library, view)."""
        out: dict[str, float] = {}
        for s in self.steps:
            out[s.kind] = out.get(s.kind, 0.0) + s.seconds
        return out

    def __str__(self) -> str:
        what = "training step" if self.training else "plan"
        lines = [f"gcompile.profile: {self.name} ({what}): {len(self.steps)} steps, median "
                 f"of {self.runs} runs, {self.total_seconds * 1e3:.3f} ms per call",
                 f"{'#':>3} {'kind':<8} {'step':<44} {'ms':>8} {'%':>5} {'MB':>8} "
                 f"{'GB/s':>7} {'GFLOP/s':>8}"]
        total = sum(s.seconds for s in self.steps) or 1.0
        for s in self.steps:
            gf = f"{s.gflops:8.2f}" if s.flops else f"{'':>8}"
            lines.append(f"{s.index:>3} {s.kind:<8} {s.name[:44]:<44} {s.seconds * 1e3:>8.3f} "
                         f"{100 * s.seconds / total:>5.1f} {s.bytes / 1e6:>8.3f} "
                         f"{s.gbps:>7.2f} {gf}")
        wall = self.total_seconds or 1.0
        shares = [f"{kind} {sec * 1e3:.3f} ms ({100 * sec / wall:.0f}%)"
                  for kind, sec in sorted(self.by_kind().items(), key=lambda kv: -kv[1])]
        shares.append(f"python {self.python_seconds * 1e3:.3f} ms "
                      f"({100 * self.python_seconds / wall:.0f}%)")
        lines.append("per call: " + ", ".join(shares))
        return "\n".join(lines)

    __repr__ = __str__


def _matmul_flops(step) -> int:
    return sum(matmul_flops(n) for n in step.nodes if n.op == "matmul")


def profile(fn: Any, *inputs: Any, runs: int = 20, warmup: int = 2, print_table: bool = True,
            **kwargs: Any) -> Profile:
    """Compile ``fn(*inputs, **kwargs)`` (grad off; a training step whole), time each
    plan step over ``runs`` runs after ``warmup`` runs, print the table (unless
    ``print_table=False``) and return it as a ``Profile``."""
    from .export.program import compiled_function, unwrap
    if runs < 1 or warmup < 0:
        raise ValueError(f"gcompile.profile: runs must be >= 1 and warmup >= 0, got {runs}, "
                         f"{warmup}")
    fn = unwrap(fn)
    cf = compiled_function(fn, "gcompile.profile")
    name = getattr(fn, "__qualname__", type(fn).__name__)
    if _is_training_step(cf, inputs, kwargs):
        out = _profile_step(cf, name, inputs, kwargs, runs, warmup)
    else:
        out = _profile_plan(cf, name, inputs, kwargs, runs, warmup)
    if print_table:
        print(out)
    return out


def _is_training_step(cf, inputs, kwargs) -> bool:
    """Does ``fn`` call ``backward()`` (a training step, compiled whole)? Asked by
    calling it once under ``no_grad``: a step fails there at ``backward`` (before
    any update) with autograd's "does not require grad" error."""
    from .autograd import no_grad
    try:
        with no_grad():
            cf(*inputs, **kwargs)
    except RuntimeError as e:
        if "does not require grad" in str(e):
            return True
        raise
    return False


def _profile_plan(cf, name, inputs, kwargs, runs, warmup) -> Profile:
    """The inference plan, run on its own with the step timer (no side effects)."""
    from .compiler.api import _flatten, _module_params, input_tensors
    from runtime.plan import Executor
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
    return _collect(name, plan, ex.records, runs, walls, training=False)


def _profile_step(cf, name, inputs, kwargs, runs, warmup) -> Profile:
    """A whole training step through its real calls (guards, write-backs, updates
    applied: profiling trains for ``warmup + runs`` steps, as torch's profiler does)."""
    cf.call_until_planned(*inputs, **kwargs)
    if not cf.entries:
        raise RuntimeError("gcompile.profile: nothing was compiled (the step ran eagerly: "
                           "see GCOMPILE_LOG=graph_breaks)")
    for _ in range(warmup):
        cf(*inputs, **kwargs)
    entry = cf.entries[0]
    ex = entry.executable
    ex.records.clear()
    ex.profile = True
    walls = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            cf(*inputs, **kwargs)
            walls.append(time.perf_counter() - t0)
    finally:
        ex.profile = False
    if len(ex.records) != runs * len(ex.plan.steps):
        raise RuntimeError("gcompile.profile: the step did not run its plan on every call "
                           "(a guard failed: see GCOMPILE_LOG=recompiles)")
    records = list(ex.records)
    ex.records.clear()
    return _collect(name, ex.plan, records, runs, walls, training=True)


def _collect(name, plan, records, runs, walls, training) -> Profile:
    n_steps = len(plan.steps)
    per_step = np.array([r["seconds"] for r in records]).reshape(runs, n_steps)
    med = np.median(per_step, axis=0)
    # means, not medians, for what is outside the steps: medians do not add up
    python = max(float(np.mean(walls)) - float(per_step.sum(axis=1).mean()), 0.0)
    out = Profile(name, runs, total_seconds=float(np.median(walls)), training=training,
                  python_seconds=python)
    for i, step in enumerate(plan.steps):
        out.steps.append(StepProfile(i, step.kind, step.name, float(med[i]),
                                     int(step.bytes_moved), _matmul_flops(step)))
    return out


__all__ = ["profile", "Profile", "StepProfile"]
