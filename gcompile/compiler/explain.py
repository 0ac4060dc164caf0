"""``gcompile.explain``: what the compiler does with a function, as an object and as text."""
from __future__ import annotations

from dataclasses import dataclass, field

from .._state import state
from ..autograd import enable_grad, no_grad
from .api import CompiledFunction, compile
from .tracer import Journal


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
    # training (``explain(..., train=True)``): what the forward saves for the backward
    backward_plan: object = None
    saved: list[str] = field(default_factory=list)
    saved_bytes: int = 0                 # with recomputation (min-cut)
    saved_bytes_no_recompute: int = 0    # saving everything the backward reads
    recomputed: list[str] = field(default_factory=list)

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
        if self.backward_plan is not None:
            out.append(f"== training: forward saves {self.saved_bytes} bytes for the backward "
                       f"({self.saved_bytes_no_recompute} bytes without recomputation) ==")
            out.append("  saved: " + (", ".join(f"%{n}" for n in self.saved) or "nothing"))
            out.append("  recomputed in the backward: " +
                       (", ".join(f"%{n}" for n in self.recomputed) or "nothing"))
            out.append("== backward plan ==")
            out.append(str(self.backward_plan))
        for i, src in enumerate(self.kernel_sources):
            out.append(f"== kernel {i} ==")
            out.append(src)
        return "\n".join(out)

    __repr__ = __str__


def explain(fn, *inputs, train: bool | None = None, **kwargs) -> Explanation:
    """Trace ``fn(*inputs, **kwargs)``, compile it, and describe the graph, fusion
    groups, kernels and memory plan, changing nothing: every parameter, buffer,
    ``.grad`` and optimizer state the traced calls write is put back afterwards
    (a training step is explained, not taken).

    A module is traced without grad (its inference plan) unless ``train=True``;
    a function runs in the caller's grad mode (a training step calls backward)
    unless ``train`` says otherwise. With grad, a forward whose outputs require
    grad is described with what it saves for the backward and the backward plan.
    """
    if isinstance(fn, CompiledFunction):
        fn = fn._module if fn._module is not None else fn._fn
    if train is None:
        train = state.grad_enabled and not hasattr(fn, "named_parameters")
    cf = compile(fn)
    journal = Journal()
    prev, state.journal = state.journal, journal
    try:
        with enable_grad() if train else no_grad():
            # a first call that creates state (optimizer moments) runs eagerly and is
            # traced again: call until there is a plan or a graph break
            for _ in range(3):
                cf(*inputs, **kwargs)
                if cf.entries or cf.graph_breaks:
                    break
    finally:
        state.journal = prev
        journal.restore()
    if cf.graph_breaks:
        return Explanation(graph_breaks=[str(b) for b in cf.graph_breaks])
    if not cf.entries:
        raise RuntimeError("gcompile.explain: the function ran eagerly on every call (it keeps "
                           "creating tensors that outlive the call); nothing was compiled")
    entry = cf.entries[-1]
    training = {}
    if hasattr(entry, "part"):  # a TrainingEntry: forward and backward plans
        part = entry.part
        training = dict(backward_plan=entry.backward.plan, saved=list(part.saved),
                        saved_bytes=part.saved_bytes,
                        saved_bytes_no_recompute=part.saved_bytes_no_recompute,
                        recomputed=list(part.recomputed))
        ex = entry.forward
    else:
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
        planned_bytes=plan.planned_bytes, unplanned_bytes=plan.unplanned_bytes, plan=plan,
        **training)
