"""Rewrite ops into the primitives of their ``OpDef.decomposition``.

An op's decomposition is written once, against the builder interface gradient rules
use (``b.mul(x, y)``, ``b.op("sum", x, dims=...)``); here the builder inserts each
primitive into the graph just before the node it replaces. The back end decomposes
composites whose pieces fuse better than the whole (softmax and log_softmax into row
reductions, gelu into an elementwise chain) and drops ``detach`` once autodiff is done.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..graph import Graph, Node
from ..registry import REGISTRY, GradBuilder


class InsertBuilder(GradBuilder):
    """Adds each op it is asked for to ``graph`` at ``index`` (moving forward)."""

    def __init__(self, graph: Graph, index: int) -> None:
        self.graph = graph
        self.index = index

    def op(self, name, *args, **attrs):
        v = self.graph.add_node(name, list(args), attrs, index=self.index)
        self.index += 1
        return v


def decompose_node(graph: Graph, n: Node) -> bool:
    """Replace ``n`` by its op's decomposition; False (graph untouched) when the op has
    none or it declines for these inputs."""
    rule = REGISTRY[n.op].decomposition
    if rule is None:
        return False
    b = InsertBuilder(graph, graph.nodes.index(n))
    out = rule(b, *n.inputs, **n.attrs)
    if out is None:
        if b.index != graph.nodes.index(n):
            raise RuntimeError(f"decomposition of {n.op} added nodes, then declined: a rule "
                               "must decide before it builds")
        return False
    if tuple(out.shape) != tuple(n.out.shape):
        raise RuntimeError(f"decomposition of {n.op} gives shape {out.shape}, not "
                           f"{n.out.shape}")
    if out.dtype is not n.out.dtype:
        out = b.op("cast", out, dtype=n.out.dtype)
    graph.replace_all_uses(n.out, out)
    graph.remove_node(n)
    return True


def decompose_ops(graph: Graph, ops: Iterable[str] | None = None) -> int:
    """Decompose every node whose op is in ``ops`` (default: every op that has a
    decomposition); returns how many were rewritten."""
    wanted = None if ops is None else set(ops)
    count = 0
    for n in list(graph.nodes):
        if wanted is not None and n.op not in wanted:
            continue
        count += decompose_node(graph, n)
    return count
