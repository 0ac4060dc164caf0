"""Graph verifier: run after every pass in tests; raises ``GraphError`` naming the node."""
from __future__ import annotations

from .graph import SCALAR_TYPES, Graph, Value, format_node, infer
from .registry import REGISTRY


class GraphError(ValueError):
    """The graph breaks an IR invariant."""


def verify(graph: Graph, *, check_types: bool = True) -> None:
    """Check SSA form, topological order, use lists, registered ops and (optionally)
    that each node's declared shape/dtype matches the registry's shape rule."""
    defined: set[int] = set()
    names: set[str] = set()
    all_vals = {}
    for v in graph.inputs + graph.constants:
        if v.kind not in ("input", "const"):
            raise GraphError(f"%{v.name}: graph input/constant has kind {v.kind!r}")
        if v.kind == "const" and v.data is None:
            raise GraphError(f"constant %{v.name} has no data")
        if v.kind == "const" and (tuple(v.data.shape) != v.shape or v.data.dtype != v.dtype.np):
            raise GraphError(f"constant %{v.name}: data {v.data.dtype}{list(v.data.shape)} does "
                             f"not match its type {v.type}")
        if v.producer is not None:
            raise GraphError(f"%{v.name}: an input/constant must not have a producer")
        _define(v, defined, names)
        all_vals[id(v)] = v
    for n in graph.nodes:
        if n.op not in REGISTRY:
            raise GraphError(f"{format_node(n)}: unknown op {n.op!r}")
        for a in n.inputs:
            if isinstance(a, Value):
                if id(a) not in defined:
                    raise GraphError(f"{format_node(n)}: operand %{a.name} is used before it is "
                                     "defined (not in topological order, or from another graph)")
                if n not in a.users:
                    raise GraphError(f"{format_node(n)}: missing from the users of %{a.name}")
            elif not isinstance(a, SCALAR_TYPES):
                raise GraphError(f"{format_node(n)}: operand {a!r} is neither a Value nor a "
                                 "Python scalar")
        if n.out.producer is not n or n.out.kind != "node":
            raise GraphError(f"{format_node(n)}: its value does not point back at it")
        if check_types:
            try:
                shape, dtype = infer(n.op, n.inputs, n.attrs)
            except Exception as e:  # noqa: BLE001 - re-raised with the node named
                raise GraphError(f"{format_node(n)}: shape rule failed: {e}") from e
            if shape != n.out.shape or dtype is not n.out.dtype:
                raise GraphError(f"{format_node(n)}: the shape rule gives "
                                 f"{dtype.name}{list(shape)}")
        _define(n.out, defined, names)
        all_vals[id(n.out)] = n.out
    for v in all_vals.values():
        for u in v.users:
            if not any(a is v for a in u.inputs):
                raise GraphError(f"%{v.name}: lists {format_node(u)} as a user, which does not "
                                 "use it")
            if id(u.out) not in all_vals:
                raise GraphError(f"%{v.name}: a user is not in the graph")
    for o in graph.outputs:
        if id(o) not in defined:
            raise GraphError(f"output %{o.name} is not defined in the graph")


def _define(v: Value, defined: set[int], names: set[str]) -> None:
    if id(v) in defined:
        raise GraphError(f"%{v.name} is defined twice")
    if v.name in names:
        raise GraphError(f"the name %{v.name} is used by two values")
    defined.add(id(v))
    names.add(v.name)
