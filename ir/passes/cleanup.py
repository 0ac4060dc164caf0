"""Dead-code elimination, common-subexpression elimination, constant folding."""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Value
from ..interpreter import run_node
from ..registry import REGISTRY

# ops whose result must not be merged or folded (none are random today, but any op
# marked ``extra["impure"]`` is kept)


def _pure(op: str) -> bool:
    return not REGISTRY[op].extra.get("impure", False)


def dce(graph: Graph) -> int:
    """Remove nodes whose values reach no output; returns how many were removed."""
    live: set[int] = {id(o) for o in graph.outputs}
    keep = []
    for n in reversed(graph.nodes):
        if id(n.out) in live or not _pure(n.op):
            keep.append(n)
            for a in n.value_inputs:
                live.add(id(a))
    removed = len(graph.nodes) - len(keep)
    if removed:
        keep_ids = {id(n) for n in keep}
        for n in graph.nodes:
            if id(n) not in keep_ids:
                for a in n.value_inputs:
                    if n in a.users:
                        a.users.remove(n)
        graph.nodes = list(reversed(keep))
    graph.remove_unused_constants()
    return removed


def attr_key(v):
    """A hashable key of node attributes (NaN equal to NaN): what CSE and fusion compare."""
    if isinstance(v, (list, tuple)):
        return tuple(attr_key(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, attr_key(x)) for k, x in v.items()))
    if isinstance(v, float) and v != v:
        return ("nan",)
    return (type(v).__name__, v) if not hasattr(v, "name") else ("dtype", v.name)


def cse(graph: Graph) -> int:
    """Merge nodes computing the same op on the same operands; returns merges."""
    seen: dict[tuple, Value] = {}
    gone = []
    for n in list(graph.nodes):
        if not _pure(n.op):
            continue
        key = (n.op, tuple(("v", id(a)) if isinstance(a, Value) else
                           ("s", type(a).__name__, a) for a in n.inputs),
               attr_key(n.attrs), n.out.shape, n.out.dtype.name)
        prev = seen.get(key)
        if prev is None:
            seen[key] = n.out
            continue
        graph.replace_all_uses(n.out, prev)
        gone.append(n)
    graph.remove_nodes(gone)
    return len(gone)


def fold_constants(graph: Graph, max_bytes: int = 1 << 20) -> int:
    """Evaluate nodes whose operands are all constants (results up to ``max_bytes``)."""
    folded = 0
    for n in list(graph.nodes):
        if not _pure(n.op) or not n.value_inputs:
            continue
        if not all(a.kind == "const" for a in n.value_inputs):
            continue
        if n.out.nbytes > max_bytes:
            continue
        env = {id(a): a.data for a in n.value_inputs}
        # np.array, not np.ascontiguousarray: that returns at least 1-d arrays, turning a
        # 0-d result into shape (1,)
        out = np.array(run_node(n, env), order="C")
        if out.shape != n.out.shape or out.dtype != n.out.dtype.np:
            continue  # the impl disagrees with the declared type: folding would retype
        c = graph.add_const(out)
        graph.replace_all_uses(n.out, c)
        graph.remove_node(n)
        folded += 1
    graph.remove_unused_constants()
    return folded


def simplify(graph: Graph) -> dict[str, int]:
    """fold -> cse -> dce until nothing changes."""
    stats = {"folded": 0, "cse": 0, "dce": 0}
    while True:
        f = fold_constants(graph)
        c = cse(graph)
        d = dce(graph)
        stats["folded"] += f
        stats["cse"] += c
        stats["dce"] += d
        if not (f or c or d):
            return stats
