"""What a whole training step keeps from its forward for its backward: a minimum cut.

In a compiled step (``backward()`` ran inside the traced function) forward and
backward are one graph, and what is "saved" is every forward value the backward
reads, alive across the boundary in the memory plan. ``recompute_for_backward``
chooses those values by a minimum cut (bytes kept) over the forward nodes, as
``ir.passes.autodiff.partition`` does for a compiled forward: cheap elementwise and
view chains are recomputed in the backward from what is kept (their clones are
marked ``recomputed``, and fusion keeps them out of forward kernels); matmuls,
reductions, random draws and library ops are never recomputed (their cost, or their
randomness: a dropout mask must be the one the forward used).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph, Node, Value
from ..registry import REGISTRY

# ops a backward may recompute: cheap, pure, one pass over their operands
RECOMPUTABLE = ("unary", "binary", "ternary", "view", "creation")


@dataclass
class StepCut:
    """The cut's result, kept in ``graph.meta['step_cut']`` for explain and tests."""

    saved: list[str] = field(default_factory=list)        # forward values kept
    saved_bytes: int = 0
    saved_bytes_no_recompute: int = 0   # keeping every forward value the backward reads
    recomputed: list[str] = field(default_factory=list)   # forward values recomputed


def recomputable(n: Node) -> bool:
    op = REGISTRY[n.op]
    return op.category in RECOMPUTABLE and not op.extra.get("impure")


def min_cut(fwd_nodes: list[Node], needed: list[Value], free: set[int]) -> list[Value]:
    """Forward values to keep so that every value in ``needed`` is kept or can be
    recomputed from kept ones, with the fewest bytes kept. Values whose id is in
    ``free`` (returned anyway) cost nothing; graph inputs and constants are always
    available. Of the cuts with the fewest bytes, the one nearest the backward
    (the least recomputation) is taken."""
    import networkx as nx  # imported here: only training steps need it

    inf = float("inf")
    fg = nx.DiGraph()
    src, sink = "__source__", "__sink__"
    in_fwd = {id(n.out) for n in fwd_nodes}
    for n in fwd_nodes:
        v = n.out
        if id(v) in free:
            cap = 0
        elif REGISTRY[n.op].category == "view":
            cap = inf  # a view holds its source's memory: keep the source instead
        else:
            cap = max(v.nbytes, 1)
        fg.add_edge(("in", id(v)), ("out", id(v)), capacity=cap)
        if not recomputable(n):
            fg.add_edge(src, ("in", id(v)), capacity=inf)
        for a in n.value_inputs:
            if id(a) in in_fwd:
                fg.add_edge(("out", id(a)), ("in", id(v)), capacity=inf)
    if not needed:
        return []
    for v in needed:
        fg.add_edge(("out", id(v)), sink, capacity=inf)
    fg.add_node(src)
    # networkx's sink side is every node that can still reach the sink in the residual
    # graph: the minimum cut nearest the sink
    _, (reach, _) = nx.minimum_cut(fg, src, sink)
    return [n.out for n in fwd_nodes
            if ("in", id(n.out)) in reach and ("out", id(n.out)) not in reach]


def backward_nodes(graph: Graph) -> set[int]:
    """Nodes of a training step's backward: marked by the whole-step compiler
    (``meta['step_backward']``) or computed from one (nodes rewrites made)."""
    bw: set[int] = set()
    for n in graph.nodes:
        if n.meta.get("step_backward") or any(
                a.producer is not None and id(a.producer) in bw for a in n.value_inputs):
            bw.add(id(n))
    return bw


def recompute_for_backward(graph: Graph) -> StepCut | None:
    """Rewrite a whole-step ``graph`` (in topological order) so that its backward reads
    only the forward values of a minimum cut, recomputing the rest from them; None
    (and no change) for a graph without a marked backward."""
    bw = backward_nodes(graph)
    if not bw:
        return None
    fwd = [n for n in graph.nodes if id(n) not in bw]
    fwd_ids = {id(n) for n in fwd}
    needed, seen = [], set()
    for n in graph.nodes:
        if id(n) not in bw:
            continue
        for a in n.value_inputs:
            if a.producer is not None and id(a.producer) in fwd_ids and id(a) not in seen:
                seen.add(id(a))
                needed.append(a)
    outs = {id(o) for o in graph.outputs}
    cut = StepCut(saved_bytes_no_recompute=sum(v.nbytes for v in needed if id(v) not in outs))
    if not needed:
        graph.meta["step_cut"] = cut
        return cut
    kept = min_cut(fwd, needed, outs)
    keep = {id(v) for v in kept} | outs
    clones: dict[int, Value] = {}
    pending: list[Node] = []

    def recompute(v: Value) -> Value:
        if v.producer is None or id(v.producer) not in fwd_ids or id(v) in keep:
            return v
        c = clones.get(id(v))
        if c is None:
            n = v.producer
            ins = [recompute(a) if isinstance(a, Value) else a for a in n.inputs]
            c = graph.add_node(n.op, ins, n.attrs, shape=v.shape, dtype=v.dtype)
            node = graph.nodes.pop()
            node.meta = dict(n.meta, step_backward=True, recomputed=v.name)
            pending.append(node)
            clones[id(v)] = c
        return c

    order: list[Node] = []
    for n in list(graph.nodes):
        if id(n) in bw:
            for a in {id(a): a for a in n.value_inputs}.values():
                if id(a) in seen and id(a) not in keep:
                    new = recompute(a)
                    n.inputs = [new if x is a else x for x in n.inputs]
                    a.users.remove(n)
                    if n not in new.users:
                        new.users.append(n)
            order += pending
            pending.clear()
        order.append(n)
    graph.nodes = order
    from .cleanup import dce
    dce(graph)
    live = {id(n.out) for n in graph.nodes}
    kept = [v for v in kept if id(v) in live and id(v) not in outs]
    cut.saved = [v.name for v in kept]
    cut.saved_bytes = sum(v.nbytes for v in kept)
    cut.recomputed = [n.meta["recomputed"] for n in graph.nodes if "recomputed" in n.meta]
    graph.meta["step_cut"] = cut
    return cut
