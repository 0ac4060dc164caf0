"""Dynamic shapes: one symbolic trace serving every size of its dynamic dimensions.

Which dimensions are dynamic (``compile(dynamic=...)``, torch's rules): ``None``
(the default) traces a signature with its sizes first, and once a dimension has
been seen with a second size, traces again with that dimension symbolic;
``True`` makes every dimension of every tensor argument symbolic from the first
call; ``False`` never does; ``mark_dynamic(t, dim)`` names dimensions explicitly.

A symbolic trace (``gcompile/_symshape.py``) gives a graph whose input shapes and size
attributes are expressions, plus guards on the branches taken. A call with new
sizes checks the guards and *instantiates* that graph at its sizes: attributes
evaluated, every node's shape re-inferred by its op's rule, then the usual back
end (kernels are generic in sizes, so they come from the kernel cache). Before a
symbolic graph is trusted for sizes it was not traced at, it is checked once
against a second symbolic trace at other sizes: both must give the same graph
and guards. A size baked in where gcompile's own code read a concrete shape
would differ between the two traces, so such a dimension falls back to one
trace per size instead of ever running a stale graph.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from ir.graph import Graph, Value, infer

from .entry import Entry
from .._symshape import CURRENT_SIZES, canonical, evaluate

MAX_SIZES = 16  # instantiated plans kept per dynamic entry (least recently used go)


def mark_dynamic(t, dim, **_unused) -> None:
    """Mark dimension(s) ``dim`` of tensor ``t`` dynamic for the next compile
    (``torch._dynamo.mark_dynamic``): a compiled function traces them symbolically
    from the first call."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    have = set(getattr(t, "_dynamo_dynamic_indices", ()))
    for d in dims:
        if not -t.dim() <= d < t.dim():
            raise IndexError(f"mark_dynamic: dim {d} out of range for a {t.dim()}-d tensor")
        have.add(d % t.dim())
    t._dynamo_dynamic_indices = have


maybe_mark_dynamic = mark_dynamic


def instantiate(graph: Graph, sym_inputs: dict[int, tuple], sizes: dict[str, int]) -> Graph:
    """``graph`` (a symbolic trace) at ``sizes``: input shapes and size attributes
    evaluated, node shapes re-inferred."""
    g = graph.copy()
    for i, v in enumerate(g.inputs):
        if i in sym_inputs:
            v.shape = tuple(evaluate(sym_inputs[i], sizes))
    for n in g.nodes:
        sym = n.meta.get("sym_attrs")
        if sym is not None:
            n.attrs = {**n.attrs, **evaluate(sym, sizes)}
        n.out.shape = infer(n.op, n.inputs, n.attrs)[0]
    return g


def fingerprint(graph: Graph, sym_inputs: dict[int, tuple], guards: list[str]) -> tuple:
    """What two symbolic traces must share to be the same program at every size."""
    ins = tuple((v.name, v.dtype.name, canonical(sym_inputs.get(i, v.shape)))
                for i, v in enumerate(graph.inputs))
    consts = tuple((c.name, c.dtype.name, tuple(c.shape),
                    hashlib.sha1(c.data.tobytes()).hexdigest()) for c in graph.constants)
    nodes = []
    for n in graph.nodes:
        attrs = dict(n.attrs)
        attrs.update(n.meta.get("sym_attrs") or {})
        nodes.append((n.op, n.out.name, n.out.dtype.name,
                      tuple(a.name if isinstance(a, Value) else canonical(a) for a in n.inputs),
                      canonical(attrs)))
    return ins, consts, tuple(nodes), tuple(o.name for o in graph.outputs), tuple(guards)


def first_difference(a: tuple, b: tuple) -> str:
    """Where two fingerprints differ, for the recompiles log."""
    names = ("graph inputs", "constants", "nodes", "outputs", "size guards")
    for what, x, y in zip(names, a, b):
        if x != y:
            if what == "nodes" and len(x) == len(y):
                for i, (p, q) in enumerate(zip(x, y)):
                    if p != q:
                        return f"node {i} ({p[0]}) differs: {p[4]} vs {q[4]}"[:300]
            return f"{what} differ"
    return "no difference"


class Ghost:
    """What entry builders need of a traced tensor, without holding its data."""

    def __init__(self, t) -> None:
        self.requires_grad = bool(t.requires_grad)
        self.dtype = t.dtype
        self._base = True if t._base is not None else None


class DynamicEntry(Entry):
    """A symbolic trace and the plans built from it, one per size seen."""

    kind = "dynamic"

    def __init__(self, graph: Graph, env, sym_inputs: dict[int, tuple], make_entry,
                 traced_entry: Entry, out_spec, n_out: int, live, writebacks,
                 input_map) -> None:
        super().__init__(graph, out_spec, n_out, live, writebacks, input_map)
        self.env = env
        self.sym_inputs = sym_inputs
        self.make_entry = make_entry
        self.sources = dict(env.sources)  # symbol -> (argument leaf, dim)
        self.traced_sizes = dict(env.hints)
        self.validated = False
        self.entries: OrderedDict[tuple, Entry] = OrderedDict()
        self.entries[self._key(self.traced_sizes)] = traced_entry
        self.fingerprint = fingerprint(graph, sym_inputs, env.describe_guards())

    def _key(self, sizes: dict[str, int]) -> tuple:
        return tuple(sizes[s] for s in sorted(sizes))

    def sizes_of(self, leaves: list) -> dict[str, int]:
        return {s: leaves[i]._data.shape[d] for s, (i, d) in self.sources.items()}

    def shape_failure(self, leaves: list) -> str | None:
        """Why this call's sizes do not fit (None: they do)."""
        return self.env.failed_guard(self.sizes_of(leaves))

    def needs_validation(self, leaves: list) -> bool:
        return not self.validated and self._key(self.sizes_of(leaves)) not in self.entries

    def entry_for(self, leaves: list) -> Entry:
        sizes = self.sizes_of(leaves)
        key = self._key(sizes)
        e = self.entries.get(key)
        if e is None:
            e = self.make_entry(instantiate(self.graph, self.sym_inputs, sizes))
            self.entries[key] = e
            if len(self.entries) > MAX_SIZES:
                _, old = self.entries.popitem(last=False)
                old.release()
        else:
            self.entries.move_to_end(key)
        return e

    def add_sizes(self, leaves: list, entry: Entry) -> None:
        self.entries[self._key(self.sizes_of(leaves))] = entry

    def run(self, arg_tensors: list, params: list) -> Any:
        entry = self.entry_for(arg_tensors)
        token = CURRENT_SIZES.set(self.sizes_of(arg_tensors))  # sizes read as numbers
        try:
            return entry.run(arg_tensors, params)
        finally:
            CURRENT_SIZES.reset(token)

    def executables(self) -> list:
        return [ex for e in self.entries.values() for ex in e.executables()]

    def release(self) -> None:
        for e in self.entries.values():
            e.release()

    def __getattr__(self, name: str):
        # what tools read of an entry (``executable``, ``forward``, ``part``, ...): that
        # of the plan built for the most recent sizes
        if name.startswith("__") or name == "entries":
            raise AttributeError(name)
        return getattr(next(reversed(self.entries.values())), name)

    def describe(self) -> str:
        dims = ", ".join(f"{s} = argument {i} dim {d}" for s, (i, d) in self.sources.items())
        guards = "; ".join(self.env.describe_guards()) or "none"
        return f"dynamic sizes {dims}; size guards: {guards}"


def pinned_symbols(env) -> set[str]:
    """The symbols guards hold to their traced values: those in an equation of their
    own (``s0 - 7 == 0``, ``512*s0 - 1024 == 0``, ``not s0 - 9 != 0``), then any
    equation's last free symbol once the others are held (``s1 == s0``)."""
    eqs = [g[0].symbols() for g in env.guards
           if (g[1] == "==" and g[2]) or (g[1] == "!=" and not g[2])]
    held: set[str] = set()
    grew = True
    while grew:
        grew = False
        for syms in eqs:
            free = syms - held
            if len(free) == 1:
                held |= free
                grew = True
    return held
