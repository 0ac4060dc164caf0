"""``gcompile.explain``: what the compiler does with a function, as an object and as text."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..autograd import no_grad
from .api import CompiledFunction, compile


@dataclass
class Explanation:
    graph: object = None            # the optimised ir.Graph
    traced_graph: str = ""          # the graph as traced, before passes
    groups: list[str] = field(default_factory=list)
    unfused: dict[str, str] = field(default_factory=dict)  # value name -> why
    num_kernels: int = 0
    num_steps: int = 0
    kernel_sources: list[str] = field(default_factory=list)
    kernel_specs: list = field(default_factory=list)
    planned_bytes: int = 0
    unplanned_bytes: int = 0
    plan: object = None
    graph_breaks: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.graph_breaks:
            return "graph breaks (runs eagerly):\n" + "\n".join(
                f"  {b}" for b in self.graph_breaks)
        out = ["== traced graph ==", self.traced_graph, "== optimised graph ==",
               str(self.graph), f"== fusion: {len(self.groups)} groups, "
               f"{self.num_kernels} generated kernels, {self.num_steps} steps =="]
        out += [f"  {g}" for g in self.groups]
        if self.unfused:
            out.append("== not fused ==")
            out += [f"  %{k}: {v}" for k, v in self.unfused.items()]
        out.append(f"== memory: planned arena {self.planned_bytes} bytes, unplanned "
                   f"(op-by-op intermediates) {self.unplanned_bytes} bytes ==")
        out.append(str(self.plan))
        for i, src in enumerate(self.kernel_sources):
            out.append(f"== kernel {i} ==")
            out.append(src)
        return "\n".join(out)

    __repr__ = __str__


def explain(fn, *inputs, **kwargs) -> Explanation:
    """Trace ``fn(*inputs, **kwargs)`` (without grad), compile it, and describe the
    graph, fusion groups, kernels and memory plan."""
    if isinstance(fn, CompiledFunction):
        fn = fn._module if fn._module is not None else fn._fn
    cf = compile(fn)
    with no_grad():
        cf(*inputs, **kwargs)
    if cf.graph_breaks:
        return Explanation(graph_breaks=[str(b) for b in cf.graph_breaks])
    entry = cf.entries[-1]
    ex = entry.executable
    comp = ex.compiled
    plan = comp.plan
    kernels = [s for s in plan.steps if s.kind == "kernel"]
    return Explanation(
        graph=comp.graph, traced_graph=entry.traced_text,
        groups=[g.describe() for g in comp.fusion.groups],
        unfused=dict(comp.fusion.reasons), num_kernels=len(kernels),
        num_steps=len(plan.steps),
        kernel_sources=[str(getattr(s.kernel, "source", "")) for s in kernels],
        kernel_specs=[s.spec for s in kernels],
        planned_bytes=plan.planned_bytes, unplanned_bytes=plan.unplanned_bytes, plan=plan)
