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
    min_cut_bytes: int = 0               # a whole step: what its min-cut keeps (its model)
    # why each saved value is kept: (names, bytes, reason); for a whole training step,
    # what its one plan keeps alive from the forward for the backward
    saved_detail: list = field(default_factory=list)
    releases_arena: bool = False     # the arena's pages go back to the OS after a call
    fusion: object = None           # the ir.passes.fusion.Fusion (groups of graph nodes)

    def to_networkx(self):
        """The optimised graph as a ``networkx.DiGraph`` whose nodes carry ``group`` (the
        fusion group id, -1 for inputs and constants) and ``kind`` (the group's kind)."""
        g = self.graph.to_networkx()
        for v in self.graph.inputs + self.graph.constants:
            g.nodes[v.name].update(group=-1, group_kind=v.kind)
        if self.fusion is not None:
            for grp in self.fusion.groups:
                for n in grp.nodes:
                    if n.out.name in g:
                        g.nodes[n.out.name].update(group=grp.id, group_kind=grp.kind)
        return g

    def to_dot(self) -> str:
        """Graphviz DOT text of the optimised graph, each fusion group a cluster
        (``subgraph cluster_<id>``) labelled with its kind and shape."""
        if self.graph is None:
            raise RuntimeError("gcompile.explain: nothing was compiled (graph breaks: "
                               f"{self.graph_breaks})")
        g = self.graph

        def q(s: str) -> str:
            return '"' + s.replace('"', '\\"').replace("\n", "\\n") + '"'

        def label(n) -> str:
            return q(f"%{n.out.name} = {n.op}\n{n.out.type}")

        lines = [f"digraph {q(g.name)} {{", "  compound=true;",
                 "  node [shape=box, fontname=monospace, fontsize=10];"]
        for v in g.inputs + g.constants:
            shape = "ellipse" if v.kind == "input" else "note"
            text = q(f"{v.name}\n{v.type}")
            lines.append(f"  {q(v.name)} [label={text}, shape={shape}];")
        grouped: set[int] = set()
        for grp in (self.fusion.groups if self.fusion is not None else []):
            if grp.kind not in ("elementwise", "rows") and len(grp.nodes) == 1:
                continue
            shape = f" {list(grp.shape)}" if grp.shape else ""
            lines.append(f"  subgraph cluster_{grp.id} {{")
            lines.append(f"    label={q(f'group {grp.id}: {grp.kind}{shape}')}; style=rounded; "
                         "color=blue;")
            for n in grp.nodes:
                grouped.add(id(n))
                lines.append(f"    {q(n.out.name)} [label={label(n)}];")
            lines.append("  }")
        outs = {o.name for o in g.outputs}
        for n in g.nodes:
            if id(n) not in grouped:
                lines.append(f"  {q(n.out.name)} [label={label(n)}];")
        for n in g.nodes:
            for a in n.value_inputs:
                lines.append(f"  {q(a.name)} -> {q(n.out.name)};")
        for name in outs:
            lines.append(f"  {q(name)} [style=bold];")
        lines.append("}")
        return "\n".join(lines)

    def save_png(self, path, *, dpi: int = 120) -> None:
        """Render the graph with its fusion groups to a PNG: through Graphviz (pydot and
        the ``dot`` program) when installed, else with networkx and matplotlib (the
        ``plot`` extra), one colour per fusion group."""
        import os
        import shutil
        try:
            import pydot
        except ImportError:
            pydot = None
        if pydot is not None and shutil.which("dot"):
            (graph,) = pydot.graph_from_dot_data(self.to_dot())
            graph.write_png(os.fspath(path))
            return
        _draw_matplotlib(self, os.fspath(path), dpi)

    def __str__(self) -> str:
        if self.graph_breaks:
            return "graph breaks (runs eagerly):\n" + "\n".join(
                f"  {b}" for b in self.graph_breaks)
        out = ["== traced graph ==", self.traced_graph, "== optimised graph ==",
               self.graph.format(), f"== fusion: {len(self.groups)} groups, "
               f"{self.num_kernels} generated kernels, {self.num_steps} steps =="]
        out += [f"  {g}" for g in self.groups]
        if self.unfused:
            out.append("== not fused ==")
            out += [f"  %{k}: {v}" for k, v in self.unfused.items()]
        out.append(f"== memory: planned arena (peak of intermediates) {self.planned_bytes} "
                   f"bytes, {'released' if self.releases_arena else 'kept'} between calls; "
                   f"unplanned (op-by-op intermediates) {self.unplanned_bytes} bytes ==")
        out.append(str(self.plan))
        if self.backward_plan is None and self.saved_detail:
            out.append(f"== training step: {self.saved_bytes} bytes kept from the forward "
                       "for the backward ==")
            out += [f"  {names}: {n} bytes, {why}" for names, n, why in self.saved_detail]
            if self.saved or self.recomputed:
                names = ", ".join(f"%{n}" for n in self.saved) or "nothing"
                out.append(f"  min-cut: the backward reads {names} from the forward "
                           f"({self.min_cut_bytes} bytes; without recomputation "
                           f"{self.saved_bytes_no_recompute} bytes)")
                out.append("  recomputed in the backward: " +
                           (", ".join(f"%{n}" for n in self.recomputed) or "nothing"))
        if self.backward_plan is not None:
            out.append(f"== training: forward saves {self.saved_bytes} bytes for the backward "
                       f"({self.saved_bytes_no_recompute} bytes without recomputation) ==")
            out.append("  saved: " + (", ".join(f"%{n}" for n in self.saved) or "nothing"))
            out += [f"  {names}: {n} bytes, {why}" for names, n, why in self.saved_detail]
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
    elif "_orig_mod" in getattr(fn, "__dict__", {}):  # compile(module)'s wrapper
        fn = fn.__dict__["_orig_mod"]
    if train is None:
        train = state.grad_enabled and not hasattr(fn, "named_parameters")
    cf = compile(fn)
    journal = Journal()
    prev, state.journal = state.journal, journal
    try:
        with enable_grad() if train else no_grad():
            cf.call_until_planned(*inputs, **kwargs)
            if cf.entries and not cf.graph_breaks:
                cf(*inputs, **kwargs)  # the plan runs: its kernels load their real variants
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
                        recomputed=list(part.recomputed),
                        saved_detail=_mincut_detail(entry))
        ex = entry.forward
    else:
        ex = entry.executable
        if entry.kind == "step":
            from .training import saved_for_backward
            detail = saved_for_backward(ex.plan)
            training = dict(saved_detail=detail, saved_bytes=sum(d[1] for d in detail))
            cut = ex.compiled.graph.meta.get("step_cut")
            if cut is not None:  # the step's min-cut (ir.passes.partition)
                training.update(saved=list(cut.saved), recomputed=list(cut.recomputed),
                                min_cut_bytes=cut.saved_bytes,
                                saved_bytes_no_recompute=cut.saved_bytes_no_recompute)
    comp = ex.compiled
    plan = comp.plan
    kernels = [s for s in plan.steps if s.kind == "kernel"]
    return Explanation(
        graph=comp.graph, traced_graph=entry.traced_text,
        groups=[g.describe() for g in comp.fusion.groups],
        unfused=dict(comp.fusion.reasons), num_kernels=len(kernels),
        num_steps=len(plan.steps),
        kernel_sources=[_source_run(s.kernel) for s in kernels],
        kernel_specs=[s.spec for s in kernels],
        planned_bytes=plan.planned_bytes, unplanned_bytes=plan.unplanned_bytes, plan=plan,
        releases_arena=plan.releases_arena,
        fusion=comp.fusion, **training)


def _mincut_detail(entry) -> list[tuple[str, int, str]]:
    """Each value a compiled forward saves for its backward plan, with its bytes and
    why (an input is held by the caller anyway; a computed value is on the min-cut:
    cheaper to keep than to recompute from what is kept)."""
    g = entry.joint.graph
    vals = {v.name: v for v in g.inputs} | {n.out.name: n.out for n in g.nodes}
    out = []
    for name in entry.part.saved:
        v = vals.get(name)
        if v is None:
            continue
        why = ("an input of the call (no copy: the caller's tensor)" if v.kind == "input"
               else "on the min-cut: cheaper to save than to recompute")
        out.append(("%" + name, v.nbytes, why))
    return out


def _source_run(kernel) -> str:
    """The source of the loop variant(s) the kernel has really run in this process
    (flat, strided with its operand classes, blocked rows, in place ...), each headed by
    its variant; else its primary variant's."""
    run = getattr(kernel, "sources_run", lambda: [])()
    if not run:
        return str(getattr(kernel, "source", ""))
    return "\n".join(f"# variant {v} (ran)\n{src}" for v, src in run)


def _draw_matplotlib(ex: Explanation, path: str, dpi: int) -> None:
    """Layered drawing (one layer per topological generation) of the graph; nodes
    coloured by fusion group, with a legend naming each group."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as e:
        raise ModuleNotFoundError("Explanation.save_png needs matplotlib (pip install "
                                  "'gcompile[plot]') or pydot with Graphviz") from e
    import networkx as nx
    g = ex.to_networkx()
    for depth, layer in enumerate(nx.topological_generations(g)):
        for name in layer:
            g.nodes[name]["layer"] = depth
    pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal", scale=1.0)
    pos = {k: (x, -y) for k, (x, y) in pos.items()}  # inputs at the top
    # colour the generated kernels' groups; single library/view/matmul steps stay grey
    groups = sorted({d["group"] for _, d in g.nodes(data=True)
                     if d.get("group", -1) >= 0 and d.get("group_kind") in ("elementwise", "rows")})
    depth = 1 + max((d["layer"] for _, d in g.nodes(data=True)), default=0)
    width = max((sum(1 for _, d in g.nodes(data=True) if d["layer"] == k)
                 for k in range(depth)), default=1)
    fig = Figure(figsize=(min(4 + 2.2 * width, 40), min(2 + 0.9 * depth, 60)))
    ax = fig.subplots()
    palette = [c for c in
               ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                "#ff9da7", "#9c755f", "#bab0ac")]
    color = {gid: palette[i % len(palette)] for i, gid in enumerate(groups)}
    node_colors = [color.get(d.get("group", -1), "#dddddd") for _, d in g.nodes(data=True)]
    labels = {k: d["label"].replace("\\n", "\n") for k, d in g.nodes(data=True)}
    nx.draw_networkx(g, pos, ax=ax, labels=labels, node_color=node_colors, node_shape="s",
                     node_size=900, font_size=7, arrowsize=10, edge_color="#888888")
    if ex.fusion is not None:
        desc = {grp.id: grp.describe() for grp in ex.fusion.groups}
        ax.legend(handles=[Patch(color=color[gid], label=desc[gid][:70]) for gid in groups],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.set_title(f"{ex.graph.name}: {len(ex.groups)} steps, {ex.num_kernels} generated kernels "
                 "(coloured)")
    ax.axis("off")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
