"""The graph IR: SSA values with shape, dtype and device, nodes in topological order.

A ``Graph`` holds ``inputs`` (values fed at run time), constants (values with
``data``), ``nodes`` (each applies one registered op and defines one value) and
``outputs``. Node operands are ``Value`` objects or Python scalars (bool, int,
float) for elementwise operands. Every value knows its producer and its users,
so passes can rewrite the graph locally. The text form reads like a jaxpr::

    graph(%x: f32[4, 8], %w: f32[8]) {
      %0: f32[4, 8] = mul %x, %w
      %1: f32[4, 8] = relu %0
      return (%1)
    }
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from .registry import REGISTRY, get_op

SCALAR_TYPES = (bool, int, float)
_SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64", "int32": "i32",
          "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "bool"}


def type_str(shape: Sequence[int], dtype: dt.DType) -> str:
    """``f32[4, 8]``: the short type of a value in the text form."""
    return f"{_SHORT.get(dtype.name, dtype.name)}[{', '.join(str(s) for s in shape)}]"


class Value:
    """One SSA value. ``kind`` is 'input', 'const' or 'node'."""

    __slots__ = ("id", "name", "shape", "dtype", "device", "kind", "producer", "users", "data",
                 "meta")

    def __init__(self, id: int, name: str, shape: Sequence[int], dtype: dt.DType,
                 device: str = "cpu", kind: str = "node") -> None:
        self.id = id
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dt.as_dtype(dtype)
        self.device = device
        self.kind = kind
        self.producer: Node | None = None
        self.users: list[Node] = []
        self.data: np.ndarray | None = None
        self.meta: dict[str, Any] = {}

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def type(self) -> str:
        return type_str(self.shape, self.dtype)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """``out = op(*inputs, **attrs)``: one registered op defining one value."""

    __slots__ = ("op", "inputs", "attrs", "out", "meta")

    def __init__(self, op: str, inputs: Sequence[Value | bool | int | float],
                 attrs: dict[str, Any], out: Value) -> None:
        self.op = op
        self.inputs = list(inputs)
        self.attrs = dict(attrs)
        self.out = out
        self.meta: dict[str, Any] = {}

    @property
    def opdef(self):
        return get_op(self.op)

    @property
    def value_inputs(self) -> list[Value]:
        return [a for a in self.inputs if isinstance(a, Value)]

    def __repr__(self) -> str:
        return f"Node({format_node(self)})"


def _fmt_operand(a) -> str:
    if isinstance(a, Value):
        return f"%{a.name}"
    return repr(a)


def _fmt_attr(v) -> str:
    if isinstance(v, dt.DType):
        return v.name
    if isinstance(v, tuple):
        inner = ", ".join(_fmt_attr(x) for x in v)
        return f"({inner}{',' if len(v) == 1 else ''})"
    return repr(v)


def format_node(n: Node) -> str:
    args = ", ".join(_fmt_operand(a) for a in n.inputs)
    attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(n.attrs.items()))
    s = f"%{n.out.name}: {n.out.type} = {n.op} {args}"
    if attrs:
        s += f" {{{attrs}}}"
    return s


def _source_of(n: Node) -> str:
    """``file.py:12`` for a node the tracer recorded (``meta["source"]``), else ''."""
    src = n.meta.get("source")
    if not src or not isinstance(src, tuple) or len(src) != 2 or not src[1]:
        return ""
    import os
    return f"{os.path.basename(str(src[0]))}:{src[1]}"


def infer(op: str, inputs: Sequence[Any], attrs: dict) -> tuple[tuple[int, ...], dt.DType]:
    """Shape and dtype of ``op`` applied to graph values / scalars (the registry's rule)."""
    opdef = get_op(op)
    specs = [(a.shape, a.dtype) if isinstance(a, Value) else a for a in inputs]
    shape, dtype = opdef.infer(specs, attrs)
    return tuple(int(s) for s in shape), dt.as_dtype(dtype)


class Graph:
    """A dataflow graph of registered ops (see the module docstring)."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.constants: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self._next = 0
        self.meta: dict[str, Any] = {}
        self._names: set[str] | None = None  # every name given out, built on first need

    # ---- construction -------------------------------------------------------------
    def _new_value(self, shape, dtype, kind, name=None, device="cpu") -> Value:
        vid = self._next
        self._next += 1
        return Value(vid, name or str(vid), shape, dtype, device, kind)

    def _taken(self) -> set[str]:
        """Every name this graph has given out (kept, not rebuilt per new input: a traced
        step adds hundreds of inputs to a graph of thousands of nodes). A name stays
        taken after its value is removed."""
        if self._names is None:
            self._names = {v.name for v in self.all_values()}
        return self._names

    def _unique_name(self, name: str) -> str:
        taken = self._taken()
        base, k = name, 1
        while name in taken or name.isdigit():
            name = f"{base}_{k}"
            k += 1
        taken.add(name)
        return name

    def name_value(self, v: Value, name: str) -> None:
        """Give ``v`` the name ``name`` (deserialisation keeps the stored names)."""
        v.name = name
        self._taken().add(name)

    def add_input(self, shape: Sequence[int], dtype, name: str | None = None,
                  device: str = "cpu") -> Value:
        """A runtime input (a user argument or a parameter)."""
        name = self._unique_name(name or f"in{len(self.inputs)}")
        v = self._new_value(shape, dt.as_dtype(dtype), "input", name, device)
        self.inputs.append(v)
        return v

    def add_const(self, data: np.ndarray, name: str | None = None) -> Value:
        """A constant tensor baked into the graph (copied)."""
        arr = np.array(data, copy=True)
        name = self._unique_name(name or f"c{len(self.constants)}")
        v = self._new_value(arr.shape, dt.from_numpy(arr.dtype), "const", name)
        v.data = arr
        self.constants.append(v)
        return v

    def add_node(self, op: str, inputs: Sequence[Any], attrs: dict | None = None, *,
                 shape: Sequence[int] | None = None, dtype=None, index: int | None = None
                 ) -> Value:
        """Append (or insert at ``index``) ``op(*inputs, **attrs)``; shape and dtype are
        inferred by the registry unless given."""
        attrs = dict(attrs or {})
        get_op(op)
        for a in inputs:
            if not isinstance(a, (Value,) + SCALAR_TYPES):
                raise TypeError(f"{op}: graph operands must be Values or Python scalars, "
                                f"got {type(a).__name__}")
        if shape is None or dtype is None:
            ishape, idtype = infer(op, inputs, attrs)
            shape = ishape if shape is None else shape
            dtype = idtype if dtype is None else dtype
        out = self._new_value(shape, dt.as_dtype(dtype), "node")
        node = Node(op, inputs, attrs, out)
        out.producer = node
        for a in node.value_inputs:
            if node not in a.users:
                a.users.append(node)
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return out

    def set_outputs(self, outputs: Iterable[Value]) -> None:
        self.outputs = list(outputs)

    # ---- queries ----------------------------------------------------------------
    def all_values(self) -> list[Value]:
        return self.inputs + self.constants + [n.out for n in self.nodes]

    def users(self, v: Value) -> list[Node]:
        return list(v.users)

    def topological_order(self) -> list[Node]:
        """Nodes sorted so every node follows its producers (stable w.r.t. current order)."""
        pos = {id(n): i for i, n in enumerate(self.nodes)}
        indeg = {}
        for n in self.nodes:
            indeg[id(n)] = len({id(a.producer) for a in n.value_inputs
                                if a.producer is not None and id(a.producer) in pos})
        import heapq
        ready = [(pos[id(n)], n) for n in self.nodes if indeg[id(n)] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, n = heapq.heappop(ready)
            order.append(n)
            seen = set()
            for u in n.out.users:
                if id(u) in seen or id(u) not in pos:
                    continue
                seen.add(id(u))
                indeg[id(u)] -= 1
                if indeg[id(u)] == 0:
                    heapq.heappush(ready, (pos[id(u)], u))
        if len(order) != len(self.nodes):
            raise ValueError("graph has a cycle")
        return order

    def toposort(self) -> None:
        self.nodes = self.topological_order()

    # ---- rewriting ----------------------------------------------------------------
    def replace_all_uses(self, old: Value, new: Any) -> None:
        """Point every user (and graph output) of ``old`` at ``new`` (a Value or scalar)."""
        for u in list(old.users):
            u.inputs = [new if (isinstance(a, Value) and a is old) else a for a in u.inputs]
            if isinstance(new, Value) and u not in new.users:
                new.users.append(u)
        old.users = []
        if old in self.outputs:  # identity: Value defines no __eq__
            if not isinstance(new, Value):
                raise ValueError("cannot replace a graph output by a Python scalar")
            self.outputs = [new if o is old else o for o in self.outputs]

    def replace_input(self, node: Node, index: int, new: Value) -> None:
        """Point ``node``'s operand ``index`` at ``new``, keeping both values' users."""
        old = node.inputs[index]
        node.inputs[index] = new
        if isinstance(old, Value) and not any(a is old for a in node.inputs) and \
                node in old.users:
            old.users.remove(node)
        if node not in new.users:
            new.users.append(node)

    def remove_node(self, node: Node) -> None:
        """Remove a node whose value has no users."""
        if node.out.users or node.out in self.outputs:
            raise ValueError(f"cannot remove {format_node(node)}: its value is still used")
        for a in node.value_inputs:
            if node in a.users:
                a.users.remove(node)
        self.nodes.remove(node)

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """``remove_node`` for each of ``nodes`` (none of whose values may still be used,
        not even by another of them), with one pass over the node list."""
        gone = set()
        for node in nodes:
            if node.out.users or node.out in self.outputs:
                raise ValueError(f"cannot remove {format_node(node)}: its value is still used")
            for a in node.value_inputs:
                if node in a.users:
                    a.users.remove(node)
            gone.add(id(node))
        if gone:
            self.nodes = [n for n in self.nodes if id(n) not in gone]

    def remove_unused_constants(self) -> None:
        self.constants = [c for c in self.constants
                          if c.users or c in self.outputs]

    def copy(self) -> Graph:
        """A structural copy (constants share their read-only data)."""
        g = Graph(self.name)
        g._next = self._next
        g.meta = dict(self.meta)
        if self._names is not None:
            g._names = set(self._names)
        vmap: dict[int, Value] = {}
        for v in self.inputs + self.constants:
            nv = Value(v.id, v.name, v.shape, v.dtype, v.device, v.kind)
            nv.data = v.data
            nv.meta = dict(v.meta)
            vmap[id(v)] = nv
            (g.inputs if v.kind == "input" else g.constants).append(nv)
        for n in self.nodes:
            ins = [vmap[id(a)] if isinstance(a, Value) else a for a in n.inputs]
            ov = n.out
            nv = Value(ov.id, ov.name, ov.shape, ov.dtype, ov.device, "node")
            nv.meta = dict(ov.meta)
            nn = Node(n.op, ins, n.attrs, nv)
            nn.meta = dict(n.meta)
            nv.producer = nn
            for a in nn.value_inputs:
                if nn not in a.users:
                    a.users.append(nn)
            vmap[id(ov)] = nv
            g.nodes.append(nn)
        g.outputs = [vmap[id(o)] for o in self.outputs]
        return g

    # ---- printing -----------------------------------------------------------------
    def format(self, *, source: bool = True) -> str:
        """The text form; with ``source``, each traced node ends with the user's line
        that made it (``# model.py:12``), aligned in one column. ``str(graph)`` leaves
        the comments out, so the text of a graph and of its JSON round trip (which keeps
        no source lines) stay equal."""
        ins = ", ".join(f"%{v.name}: {v.type}" for v in self.inputs)
        lines = [f"{self.name}({ins}) {{"]
        for c in self.constants:
            lines.append(f"  %{c.name}: {c.type} = constant")
        body = ["  " + format_node(n) for n in self.nodes]
        if source:
            where = [_source_of(n) for n in self.nodes]
            width = max((len(b) for b, w in zip(body, where) if w), default=0)
            body = [f"{b:<{width}}  # {w}" if w else b for b, w in zip(body, where)]
        lines += body
        lines.append("  return (" + ", ".join(f"%{o.name}" for o in self.outputs) + ")")
        lines.append("}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format(source=False)

    def print_readable(self) -> str:
        """Print (and return) the text form with source lines, like torch.fx's."""
        text = self.format(source=True)
        print(text)
        return text

    def __repr__(self) -> str:
        return (f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, "
                f"{len(self.outputs)} outputs>")

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def to_networkx(self):
        """A ``networkx.DiGraph`` over value names, edges producer -> user."""
        import networkx as nx
        g = nx.DiGraph()
        for v in self.inputs + self.constants:
            g.add_node(v.name, label=f"{v.name}\\n{v.type}", kind=v.kind)
        for n in self.nodes:
            g.add_node(n.out.name, label=f"{n.op}\\n{n.out.type}", kind="node", op=n.op)
            for a in n.value_inputs:
                g.add_edge(a.name, n.out.name)
        return g

    def to_dot(self) -> str:
        """Graphviz DOT text (no pydot needed)."""
        lines = [f'digraph "{self.name}" {{', "  node [shape=box, fontname=monospace];"]
        outs = {o.name for o in self.outputs}
        for v in self.inputs + self.constants:
            shape = "ellipse" if v.kind == "input" else "note"
            lines.append(f'  "{v.name}" [label="{v.name}\\n{v.type}", shape={shape}];')
        for n in self.nodes:
            extra = ", style=bold" if n.out.name in outs else ""
            lines.append(f'  "{n.out.name}" [label="%{n.out.name} = {n.op}\\n{n.out.type}"'
                         f'{extra}];')
            for a in n.value_inputs:
                lines.append(f'  "{a.name}" -> "{n.out.name}";')
        lines.append("}")
        return "\n".join(lines)


def is_registered(op: str) -> bool:
    return op in REGISTRY
