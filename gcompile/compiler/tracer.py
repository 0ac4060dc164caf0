"""The tracer: records every op that ``apply_op`` dispatches into an ``ir.Graph``.

It is installed as ``gcompile._state.state.tracer`` while a function runs once
eagerly with the real inputs, so the first call's results are eager results.
Tensors it has not seen (closure tensors, tensors made by creation functions)
are lifted to graph inputs; after the trace, those that died with the call
become constants (their data as first seen), the others stay live inputs so
later in-place updates are seen. In-place writes are functionalised: the
tensor's value becomes the new SSA value, and writes to inputs are written back.
"""
from __future__ import annotations

import os
import sys
import weakref
from dataclasses import dataclass, field

import numpy as np

from ir.graph import Graph, Value

_PKG_DIRS = tuple(os.path.dirname(os.path.dirname(os.path.abspath(p))) + os.sep
                  for p in (__file__,))
_IR_DIR = os.path.join(os.path.dirname(_PKG_DIRS[0].rstrip(os.sep)), "ir") + os.sep


class GraphBreakError(RuntimeError):
    """Raised under ``fullgraph=True`` when the traced code needs a concrete value."""


@dataclass
class GraphBreak:
    what: str
    filename: str
    lineno: int

    def __str__(self) -> str:
        return f"{self.what} at {self.filename}:{self.lineno}"


def user_frame() -> tuple[str, int]:
    """File and line of the innermost caller outside gcompile/ and ir/."""
    f = sys._getframe(1)
    while f is not None:
        fn = os.path.abspath(f.f_code.co_filename)
        if not (fn.startswith(_PKG_DIRS[0]) or fn.startswith(_IR_DIR)):
            return f.f_code.co_filename, f.f_lineno
        f = f.f_back
    return "<unknown>", 0


@dataclass
class _Capture:
    ref: weakref.ref
    value: Value
    snapshot: np.ndarray


@dataclass
class TraceResult:
    graph: Graph
    input_kinds: list = field(default_factory=list)


class GradSlot:
    """Stands for ``leaf.grad`` wherever a captured tensor is used at run time."""

    requires_grad = False

    def __init__(self, leaf) -> None:
        self.leaf = leaf

    @property
    def _data(self):
        return self.leaf._grad._data

    @property
    def _vbox(self):
        return self.leaf._grad._vbox

    @property
    def dtype(self):
        return self.leaf._grad.dtype


class Tracer:
    """Collects a graph; ``record``/``record_mutation``/``graph_break`` are the hooks."""

    def __init__(self, name: str = "graph", fullgraph: bool = False) -> None:
        self.graph = Graph(name)
        self.fullgraph = fullgraph
        self.env: dict[int, tuple[weakref.ref, Value]] = {}
        self.breaks: list[GraphBreak] = []
        self.captures: list[_Capture] = []
        self.bound: list[tuple[object, Value]] = []  # (tensor, input value) for args/params
        self.mutated: dict[int, tuple[object, Value]] = {}  # id(tensor) -> (tensor, root)
        self.clock = 0
        self.made_at: dict[int, tuple[weakref.ref, int]] = {}  # views: when they were made
        self.mutated_at: dict[int, int] = {}  # id(base tensor) -> last in-place write
        # whole-step compile (training.py): .grad writes, scalar inputs, escapes
        # id(array) -> (weak ref, value): held weakly, so an intermediate the traced code
        # drops is freed as in eager mode (tracing does not hold every activation)
        self.arrays: dict[int, tuple[weakref.ref, Value]] = {}
        self.grad_writes: dict[int, tuple[object, object]] = {}  # id(leaf) -> (leaf, tensor|None)
        self.grad_was_none: dict[int, tuple[object, bool]] = {}  # guards on .grad presence
        self.scalars: list[tuple[object, object, Value, object]] = []  # (owner, key, value, t)
        self.created: list[weakref.ref] = []
        self.grad_reads: dict[int, tuple[object, object]] = {}  # id(grad) -> (leaf, grad)
        self.backward_ran = False

    # ---- values ------------------------------------------------------------------
    def bind_input(self, t, name: str) -> Value:
        """Make tensor ``t`` a graph input named ``name``."""
        known = self._lookup(t)
        if known is not None:
            return known
        v = self.graph.add_input(tuple(t._data.shape), t.dtype, name)
        self._set(t, v)
        self.bound.append((t, v))
        return v

    def _lookup(self, t) -> Value | None:
        # tensors over the same array (x and x.detach(), a saved output) are one value:
        # look up by array first, so an in-place write through one is seen by all
        a = self.arrays.get(id(t._data))
        if a is not None and a[0]() is t._data:
            return a[1]
        e = self.env.get(id(t))
        if e is not None and e[0]() is t:
            return e[1]
        return None

    def _set(self, t, v: Value) -> None:
        self.env[id(t)] = (weakref.ref(t), v)
        self.arrays[id(t._data)] = (weakref.ref(t._data), v)

    def value_of(self, t) -> Value:
        v = self._lookup(t)
        if v is not None:
            return v
        v = self.graph.add_input(tuple(t._data.shape), t.dtype, f"captured{len(self.captures)}")
        self.captures.append(_Capture(weakref.ref(t), v, np.array(t._data, copy=True)))
        self._set(t, v)
        return v

    # ---- hooks called by gcompile._tensor ---------------------------------------------
    def record(self, op, args, attrs, result) -> None:
        if self.breaks:
            return
        from .._tensor import Tensor
        ins = []
        for a in args:
            if isinstance(a, Tensor):
                base = a._base
                if base is not None and id(base) in self.mutated_at:
                    made = self.made_at.get(id(a))
                    if made is None or made[0]() is not a or made[1] < self.mutated_at[id(base)]:
                        self.graph_break("reading a view whose base was modified in place "
                                         "after the view was taken")
                        return
                ins.append(self.value_of(a))
            elif isinstance(a, (bool, int, float)):
                ins.append(a)
            else:
                self.graph_break(f"{op.name} with a {type(a).__name__} operand")
                return
        v = self.graph.add_node(op.name, ins, dict(attrs), shape=tuple(result._data.shape),
                                dtype=result.dtype)
        self._set(result, v)
        self.clock += 1
        if result._base is not None:
            self.made_at[id(result)] = (weakref.ref(result), self.clock)
        self.created.append(weakref.ref(result))

    def record_mutation(self, tensor, new_value) -> None:
        if self.breaks:
            return
        if tensor._base is not None and self._lookup(tensor._base) is not None:
            self.graph_break("in-place write into a view of a traced tensor")
            return
        old = self.value_of(tensor)
        if new_value is None:
            nv = self.graph.add_const(tensor._data)
        else:
            nv = self.value_of(new_value)
            shape = tuple(tensor._data.shape)
            if nv.shape != shape:
                nv = self.graph.add_node("expand", [nv], {"shape": shape})
            if nv.dtype is not tensor.dtype:
                nv = self.graph.add_node("cast", [nv], {"dtype": tensor.dtype})
            if nv.kind != "node":
                nv = self.graph.add_node("clone", [nv])
        root = old
        prev = self.mutated.get(id(tensor))
        if prev is not None:
            root = prev[1]
        self.mutated[id(tensor)] = (tensor, root)
        self._set(tensor, nv)
        self.clock += 1
        self.mutated_at[id(tensor)] = self.clock

    def record_grad(self, leaf, value) -> None:
        """``leaf.grad = value`` happened while tracing (zero_grad, backward)."""
        if id(leaf) not in self.grad_was_none and id(leaf) not in self.grad_writes:
            self.grad_was_none[id(leaf)] = (leaf, leaf._grad is None)
        self.grad_writes[id(leaf)] = (leaf, value)

    def alias(self, new, old) -> None:
        """``new`` holds the same value as ``old`` (a copy made outside the registry)."""
        self._set(new, self.value_of(old))

    def note_grad_value(self, leaf, grad) -> None:
        """``leaf.grad`` was read while tracing: bind it by *where it lives*, not by
        object, so the next call reads whatever tensor ``leaf.grad`` is then."""
        if id(grad) not in self.grad_reads and self._lookup(grad) is None:
            self.grad_reads[id(grad)] = (leaf, grad)

    def dynamic_grads(self, live, writebacks):
        """Swap captured ``.grad`` tensors for slots read through their leaf at run
        time; returns (live, writebacks, guards) with guards = [(leaf ref, False)]."""
        guards, slots = [], {}
        for gid, (leaf, _) in self.grad_reads.items():
            slots[gid] = GradSlot(leaf)
            guards.append((weakref.ref(leaf), False))
        live = [(slots.get(id(t), t), v) for t, v in live]
        writebacks = [(slots.get(id(t), t), k) for t, k in writebacks]
        return live, writebacks, guards

    def note_grad_read(self, leaf) -> None:
        """Backward read ``leaf.grad`` to decide between assign and accumulate."""
        if id(leaf) not in self.grad_was_none and id(leaf) not in self.grad_writes:
            self.grad_was_none[id(leaf)] = (leaf, leaf._grad is None)

    def scalar_input(self, owner, key):
        """A Python number read from ``owner[key]`` at every call (an optimizer's lr):
        a 0-d float64 graph input instead of a constant baked into the graph."""
        from .._tensor import Tensor
        for o, k, _, t in self.scalars:
            if o is owner and k == key:
                return t
        t = Tensor._make(np.asarray(float(owner[key]), np.float64))
        v = self.graph.add_input((), t.dtype, f"scalar_{key}")
        self._set(t, v)
        self.scalars.append((owner, key, v, t))
        return t

    def graph_break(self, what: str) -> None:
        if self.breaks:
            return
        filename, lineno = user_frame()
        brk = GraphBreak(what, filename, lineno)
        if self.fullgraph:
            raise GraphBreakError(
                f"gcompile.compile(fullgraph=True): graph break: {what} at {filename}:{lineno} "
                "needs a concrete value while tracing; remove the data-dependent Python use or "
                "use fullgraph=False to fall back to eager")
        self.breaks.append(brk)

    # ---- finishing ---------------------------------------------------------------------
    def finish(self, output_tensors) -> tuple[list, list]:
        """Set graph outputs: the returned tensors, then the final values of mutated
        inputs. Returns (live captured tensors, [(tensor, output index)] write-backs)."""
        outs = [self.value_of(t) for t in output_tensors]
        live = []
        for cap in self.captures:
            t = cap.ref()
            if t is None:
                # died with the call: it was a local; bake its first-seen data
                self._to_const(cap.value, cap.snapshot)
            else:
                live.append((t, cap.value))
        writebacks = []
        input_ids = {id(v) for v in self.graph.inputs}
        for tensor, root in self.mutated.values():
            if id(root) not in input_ids:
                continue  # a tensor made inside the function: nothing to write back
            writebacks.append((tensor, len(outs)))
            outs.append(self._lookup(tensor))
        self.graph.set_outputs(outs)
        return live, writebacks

    def _to_const(self, v: Value, data: np.ndarray) -> None:
        g = self.graph
        g.inputs = [x for x in g.inputs if x is not v]
        v.kind = "const"
        v.data = data
        g.constants.append(v)
