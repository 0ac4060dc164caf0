"""What a whole training step keeps from its forward for its backward: a minimum cut.

In a compiled step (``backward()`` ran inside the traced function) forward and
backward are one graph, and what is "saved" is every forward value the backward
reads, alive across the boundary in the memory plan. ``recompute_for_backward``
chooses those values by a minimum cut (bytes kept) over the forward nodes, as
``ir.passes.autodiff.partition`` does for a compiled forward: cheap elementwise and
view chains are recomputed in the backward from what is kept (their clones are
marked ``recomputed``, and fusion keeps them out of forward kernels); matmuls,
reductions, erf-class elementwise ops, random draws and library ops are never recomputed
(their cost, or their randomness: a dropout mask must be the one the forward used).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph, Node, Value
from ..registry import REGISTRY

# ops a backward may recompute: cheap, pure, one pass over their operands
RECOMPUTABLE = ("unary", "binary", "ternary", "view", "creation")
# ... but not these elementwise ops, each tens of flops per element (erf's polynomials and
# exp): recomputing GELU's erf chain cost the GPT step of ``gcompile.bench_models`` about
# 1 ms (3%) to save 2.3 MB of its 16.5 MB arena
EXPENSIVE = ("erf", "erfc", "gelu", "gelu_backward")


@dataclass
class StepCut:
    """The cut's result, kept in ``graph.meta['step_cut']`` for explain and tests."""

    saved: list[str] = field(default_factory=list)        # forward values kept
    saved_bytes: int = 0
    saved_bytes_no_recompute: int = 0   # keeping every forward value the backward reads
    recomputed: list[str] = field(default_factory=list)   # forward values recomputed


def recomputable(n: Node) -> bool:
    """May a backward recompute ``n`` instead of reading its saved value?"""
    op = REGISTRY[n.op]
    return op.category in RECOMPUTABLE and n.op not in EXPENSIVE and \
        not op.extra.get("impure")


SOURCE, SINK = "source", "sink"


def cut_network(fwd_nodes: list[Node], needed: list[Value], free: set[int]
                ) -> list[tuple[object, object, int | None]]:
    """The flow network of the cut, as edges ``(u, v, capacity)`` (None: unbounded):
    each forward value is an edge ``("in", id) -> ("out", id)`` costing its bytes
    (nothing for values in ``free``, returned anyway; unbounded for a view, which holds
    its source's memory); ops that may not be recomputed hang from the source, and
    the values in ``needed`` feed the sink."""
    in_fwd = {id(n.out) for n in fwd_nodes}
    edges: list[tuple[object, object, int | None]] = []
    for n in fwd_nodes:
        v = n.out
        cap = (0 if id(v) in free else None if REGISTRY[n.op].category == "view"
               else max(v.nbytes, 1))
        edges.append((("in", id(v)), ("out", id(v)), cap))
        if not recomputable(n):
            edges.append((SOURCE, ("in", id(v)), None))
        for a in n.value_inputs:
            if id(a) in in_fwd:
                edges.append((("out", id(a)), ("in", id(v)), None))
    edges += [(("out", id(v)), SINK, None) for v in needed]
    return edges


def sink_side(edges: list[tuple[object, object, int | None]]) -> set:
    """The nodes that can still reach the sink once a maximum flow runs from the source
    (Dinic's algorithm): the sink side of the minimum cut nearest the sink, the same
    set as networkx's ``minimum_cut`` partition (the tests compare them). Written here
    because importing networkx costs every compiled training step ~10 MB and ~0.1 s."""
    index: dict[object, int] = {SOURCE: 0, SINK: 1}
    for u, v, _ in edges:
        index.setdefault(u, len(index))
        index.setdefault(v, len(index))
    big = sum(c for _, _, c in edges if c) + 1  # more than any cut of finite edges
    to: list[int] = []
    cap: list[int] = []
    adj: list[list[int]] = [[] for _ in index]
    for u, v, c in edges:
        adj[index[u]].append(len(to))
        to.append(index[v])
        cap.append(big if c is None else c)
        adj[index[v]].append(len(to))
        to.append(index[u])
        cap.append(0)
    s, t, n = 0, 1, len(index)
    while True:
        level = [-1] * n
        level[s] = 0
        queue = [s]
        for u in queue:
            for e in adj[u]:
                if cap[e] > 0 and level[to[e]] < 0:
                    level[to[e]] = level[u] + 1
                    queue.append(to[e])
        if level[t] < 0:
            break
        it = [0] * n
        path: list[int] = []
        u = s
        while True:  # augmenting paths in the level graph, one edge pointer per node
            if u == t:
                f = min(cap[e] for e in path)
                for e in path:
                    cap[e] -= f
                    cap[e ^ 1] += f
                path.clear()
                u = s
                continue
            while it[u] < len(adj[u]):
                e = adj[u][it[u]]
                if cap[e] > 0 and level[to[e]] == level[u] + 1:
                    break
                it[u] += 1
            if it[u] < len(adj[u]):
                e = adj[u][it[u]]
                path.append(e)
                u = to[e]
                continue
            if u == s:
                break
            level[u] = -1  # a dead end: retreat
            e = path.pop()
            u = to[e ^ 1]
            it[u] += 1
    # residual reachability to the sink: u reaches t through an edge u -> v with room
    reach = [False] * n
    reach[t] = True
    queue = [t]
    for v in queue:
        for e in adj[v]:  # e: v -> u; its pair e ^ 1 is u -> v
            u = to[e]
            if not reach[u] and cap[e ^ 1] > 0:
                reach[u] = True
                queue.append(u)
    return {key for key, i in index.items() if reach[i]}


def min_cut(fwd_nodes: list[Node], needed: list[Value], free: set[int]) -> list[Value]:
    """Forward values to keep so that every value in ``needed`` is kept or can be
    recomputed from kept ones, with the fewest bytes kept. Values whose id is in
    ``free`` (returned anyway) cost nothing; graph inputs and constants are always
    available. Of the cuts with the fewest bytes, the one nearest the backward
    (the least recomputation) is taken."""
    if not needed:
        return []
    near = sink_side(cut_network(fwd_nodes, needed, free))
    return [n.out for n in fwd_nodes
            if ("in", id(n.out)) not in near and ("out", id(n.out)) in near]


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
