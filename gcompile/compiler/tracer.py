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

import contextlib
import functools
import os
import sys
import weakref
from dataclasses import dataclass, field

import numpy as np

from ir.graph import Graph, Value
from ir.registry import GradBuilder

import kernels.cpu as _kernels

from .guards import check_guards, module_guard, requires_grad_guard

# calls of compiled functions being traced now (the first step's eager rest included: its
# results are the trace's, the plan runs its own kernels); eager kernels not yet compiled
# are not compiled for them alone (kernels.cpu.defer_compile)
TRACING_CALLS = [0]
_kernels.tracing = lambda: TRACING_CALLS[0] > 0

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
        if not _is_internal(f.f_code.co_filename):
            return f.f_code.co_filename, f.f_lineno
        f = f.f_back
    return "<unknown>", 0


@functools.lru_cache(maxsize=4096)
def _is_internal(filename: str) -> bool:
    """Is this code file part of gcompile or ir? (Asked for every recorded op, with a
    handful of distinct files: cached, as ``abspath`` costs a few microseconds.)"""
    fn = os.path.abspath(filename)
    return fn.startswith(_PKG_DIRS[0]) or fn.startswith(_IR_DIR)


class Journal:
    """Everything traced calls change in place, so it can be put back (``explain``
    traces a training step without training): tensor values, ``.grad`` slots and
    optimizer state, each saved as it was before its first change."""

    def __init__(self) -> None:
        self.tensors: dict[int, tuple[object, np.ndarray, int]] = {}
        self.grads: dict[int, tuple[object, object]] = {}
        self.optimizers: dict[int, tuple[object, dict, bool]] = {}

    def tensor(self, t) -> None:
        if id(t) not in self.tensors:
            self.tensors[id(t)] = (t, np.array(t._data, copy=True), t._vbox[0])

    def grad(self, leaf) -> None:
        if id(leaf) not in self.grads:
            self.grads[id(leaf)] = (leaf, leaf._grad)

    def optimizer(self, opt) -> None:
        if id(opt) not in self.optimizers:
            saved = {p: dict(st) for p, st in opt.state.items()}
            self.optimizers[id(opt)] = (opt, saved, opt._opt_called)

    def restore(self) -> None:
        for t, data, version in self.tensors.values():
            if t._data.shape == data.shape:
                np.copyto(t._data, data)
            t._vbox[0] = version
        for leaf, g in self.grads.values():
            leaf._grad = g
        for opt, saved, called in self.optimizers.values():
            opt.state.clear()
            for p, st in saved.items():
                opt.state[p].update(st)
            opt._opt_called = called


@dataclass
class _Capture:
    """A tensor from outside the trace, lifted to a graph input. Other tensors over the
    same array (``x.detach()``, ``p.data``) stand for it too: it stays a live input
    while any of them lives, not only the first one seen."""
    ref: weakref.ref
    value: Value
    # the array as first seen, by reference: a copy of every captured parameter and
    # optimizer state made the tracing call's peak memory grow by their whole size.
    # The version box tells whether it was written since (``_changed_since_capture``)
    data: np.ndarray
    vbox: list
    version: int
    others: list = field(default_factory=list)

    def tensor(self):
        t = self.ref()
        if t is None:
            for r in self.others:
                t = r()
                if t is not None:
                    self.ref = r
                    break
        return t


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
        # id(array) -> (weak ref to the array, its capture)
        self.captured_arrays: dict[int, tuple[weakref.ref, _Capture]] = {}
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
        # id(tensor) -> (ref, {id(value): its detach node}, the source required grad)
        self.detached: dict[int, tuple] = {}
        self.detached_writes: list = []  # where in-place writes went through them
        # values computed in Python at every call, in order: symbolic numbers (optimizer
        # hyper-parameters) and random seeds: (evaluate, graph input, 0-d tensor)
        self.scalars: list[tuple[object, Value, object]] = []
        self.scalar_inputs: dict[tuple, object] = {}
        # (check, expected, description): what a later call must find for the plan to
        # describe it (branches on symbolic numbers, modules' training flags, hooks)
        self.guards: list[tuple[object, object, str]] = []
        self.modules_seen: set[int] = set()
        self.created: list[weakref.ref] = []
        # id(grad) -> (leaf, grad or a weak reference to it)
        self.grad_reads: dict[int, tuple[object, object]] = {}
        self._backward_ran = False
        self.backward_start: int | None = None  # graph nodes recorded before backward()
        # a function's first traced step, while .grad is still None, runs eagerly once
        # (training._first_step): with ``stop_first_step`` set, backward() finding that
        # case ends the trace there (``stopped``) and the call goes on untraced
        self.stop_first_step = False
        self.stopped = False
        self.steps_open = 0  # optimizer steps running under this trace (_traced_step)
        # ops record stand-ins and compute nothing (``recording_only``): the caller
        # computes the values another way (the traced Adam update, in chunks)
        self.record_only = False
        # dynamic shapes (_symshape.py): the symbols of this trace, each graph value's
        # shape as ints and Exprs, the op attributes that hold Exprs, and why a
        # symbol had to be specialised (for the recompiles log)
        self.shape_env = None
        self.dynamic_dims: dict[int, tuple[int, tuple[int, ...]]] = {}  # id -> (leaf, dims)
        self.sym_shapes: dict[int, tuple] = {}
        self._sym_attrs: dict[int, tuple[dict, dict]] = {}
        self.specialized: list[str] = []
        from .._state import state
        self.journal: Journal | None = state.journal

    # ---- values ------------------------------------------------------------------
    def bind_input(self, t, name: str) -> Value:
        """Make tensor ``t`` a graph input named ``name``."""
        known = self._lookup(t)
        if known is not None:
            return known
        v = self.graph.add_input(tuple(t._data.shape), t.dtype, name)
        self._set(t, v)
        self.bound.append((t, v))
        dyn = self.dynamic_dims.get(id(t))
        if dyn is not None and self.shape_env is not None:
            leaf, dims = dyn
            shape = list(t._data.shape)
            for d in dims:
                if shape[d] >= 2:
                    shape[d] = self.shape_env.new_symbol(shape[d], (leaf, d)).expr
            if any(not isinstance(d, int) for d in shape):
                self.sym_shapes[id(v)] = tuple(shape)
        return v

    # ---- dynamic shapes ------------------------------------------------------------
    def sym_size(self, t) -> tuple:
        """``t``'s shape as traced code sees it: SymInts in its dynamic dimensions."""
        v = self._lookup(t, cut=False)
        s = self.sym_shapes.get(id(v)) if v is not None else None
        if s is None:
            return tuple(t._data.shape)
        from .._symshape import as_syms
        return as_syms(s, self.shape_env)

    def _record_sym(self, op, args, attrs, v) -> None:
        """The symbolic shape of node value ``v`` (and the Exprs in its attributes),
        inferred by the op's own shape rule over SymInts; where the rule cannot take
        them, the sizes involved are specialised under guards (sound, not dynamic)."""
        from .._tensor import Tensor
        from .._symshape import Expr, SymInt, as_syms, exprs
        env = self.shape_env
        pending = self._sym_attrs.pop(id(attrs), None)
        sym_attrs = pending[1] if pending is not None and pending[0] is attrs else None
        specs, symbolic = [], sym_attrs is not None
        for a in args:
            if isinstance(a, Tensor):
                s = self.sym_shapes.get(id(self._lookup(a, cut=False)))
                symbolic = symbolic or s is not None
                specs.append((as_syms(s, env) if s is not None else tuple(a._data.shape),
                              a.dtype))
            else:
                specs.append(a)
        if not symbolic:
            return
        node = v.producer
        if sym_attrs is not None:
            node.meta["sym_attrs"] = exprs(sym_attrs)
        shape = None
        if op.infer is not None:
            try:
                got = op.infer(specs, sym_attrs if sym_attrs is not None else attrs)
                shape = tuple(d.expr if isinstance(d, SymInt) else int(d) for d in got[0])
            except Exception as e:  # noqa: BLE001 - a rule that cannot take SymInts
                self.specialized.append(f"{op.name}: {type(e).__name__}: {e}")
                shape = None
        if shape is not None and tuple(env.hint_of(Expr.of(d)) for d in shape) != v.shape:
            self.specialized.append(f"{op.name}: symbolic shape {shape} disagrees with "
                                    f"{v.shape}")
            shape = None
        if shape is None:  # bake every size this op saw, under guards
            for sp in specs:
                if isinstance(sp, tuple):
                    for d in sp[0]:
                        if isinstance(d, SymInt):
                            env.specialize(d.expr)
            if sym_attrs is not None:
                _specialize_all(sym_attrs, env)
            return
        if any(isinstance(d, Expr) for d in shape):
            self.sym_shapes[id(v)] = shape

    def note_detach(self, t, source_requires_grad: bool) -> None:
        """``t`` came from ``x.detach()``: it reads x's current value through a
        ``detach`` node, so gradients stop there (see ``_lookup``)."""
        self.detached[id(t)] = (weakref.ref(t), {}, source_requires_grad)

    def _lookup(self, t, cut: bool = True) -> Value | None:
        # tensors over the same array (x and x.detach(), a saved output) are one value:
        # look up by array first, so an in-place write through one is seen by all
        a = self.arrays.get(id(t._data))
        if a is not None and a[0]() is t._data:
            c = self.captured_arrays.get(id(t._data))
            if c is not None and c[0]() is t._data and c[1].ref() is not t:
                c[1].others.append(weakref.ref(t))
            d = self.detached.get(id(t)) if cut else None
            if d is not None and d[0]() is t:
                # a detached tensor: the array's current value, cut from gradients
                # (one detach node per value it has had)
                cut = d[1].get(id(a[1]))
                if cut is None:
                    cut = d[1][id(a[1])] = self.graph.add_node("detach", [a[1]])
                    if id(a[1]) in self.sym_shapes:
                        self.sym_shapes[id(cut)] = self.sym_shapes[id(a[1])]
                return cut
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
        cap = _Capture(weakref.ref(t), v, t._data, t._vbox, t._vbox[0])
        r = self.grad_reads.get(id(t))
        if r is not None and _deref(r[1]) is t:
            self.grad_reads[id(t)] = (r[0], t)  # a .grad the graph reads: kept, as a slot
        self.captures.append(cap)
        self.captured_arrays[id(t._data)] = (weakref.ref(t._data), cap)
        self._set(t, v)
        return v

    @property
    def backward_ran(self) -> bool:
        """Did ``backward()`` run in the trace (a whole training step)?"""
        return self._backward_ran

    @backward_ran.setter
    def backward_ran(self, ran: bool) -> None:
        if ran and self.backward_start is None:
            # where the forward ends: what the step keeps for its backward is measured
            # across this point (StepEntry.saved_bytes)
            self.backward_start = len(self.graph.nodes)
        self._backward_ran = ran

    # ---- hooks called by gcompile._tensor ---------------------------------------------
    def record(self, op, args, attrs, result) -> None:
        if self.breaks:
            return
        from .._tensor import Tensor
        ins = []
        for a in args:
            if isinstance(a, Tensor):
                if self._stale_view(a):
                    return
                ins.append(self.value_of(a))
            elif isinstance(a, (bool, int, float)):
                ins.append(a)
            else:
                self.graph_break(f"{op.name} with a {type(a).__name__} operand")
                return
        v = self.graph.add_node(op.name, ins, dict(attrs), shape=tuple(result._data.shape),
                                dtype=result.dtype)
        v.producer.meta["source"] = user_frame()  # the user's line that made it
        if self.shape_env is not None:
            self._record_sym(op, args, attrs, v)
        self._set(result, v)
        self.clock += 1
        if result._base is not None:
            self.made_at[id(result)] = (weakref.ref(result), self.clock)
        self.created.append(weakref.ref(result))

    def _stale_view(self, t) -> bool:
        """Whether ``t`` is a view whose base was written in place after the view was
        taken (eager reads the new values through it; the graph has the old value):
        a graph break, never a stale result."""
        base = t._base
        if base is None or id(base) not in self.mutated_at:
            return False
        made = self.made_at.get(id(t))
        if made is None or made[0]() is not t or made[1] < self.mutated_at[id(base)]:
            self.graph_break("reading a view whose base was modified in place after the "
                             "view was taken")
            return True
        return False

    def record_mutation(self, tensor, new_value) -> None:
        if self.breaks:
            return
        if tensor._base is not None and self._lookup(tensor._base) is not None:
            self.graph_break("in-place write into a view of a traced tensor")
            return
        old = self._lookup(tensor, cut=False) or self.value_of(tensor)
        d = self.detached.get(id(tensor))
        if d is not None and d[0]() is tensor and d[2]:
            # the write reaches x through x.detach() (or x.data): x's later values are
            # computed from the cut, which graph autodiff would differentiate wrongly
            self.detached_writes.append(user_frame())
        if new_value is None:
            nv = self.graph.add_const(tensor._data)
        else:
            if self._stale_view(new_value):  # x.copy_(v), v a view of x taken before
                return
            nv = self.value_of(new_value)
            shape = tuple(tensor._data.shape)
            if nv.shape != shape:
                nv = self.graph.add_node("expand", [nv], {"shape": shape})
                sym = self.sym_shapes.get(id(old))
                if sym is not None:
                    nv.producer.meta["sym_attrs"] = {"shape": sym}
            if nv.dtype is not tensor.dtype:
                nv = self.graph.add_node("cast", [nv], {"dtype": tensor.dtype})
            if nv.kind != "node":
                nv = self.graph.add_node("clone", [nv])
        if id(old) in self.sym_shapes:
            self.sym_shapes[id(nv)] = self.sym_shapes[id(old)]
        root = old
        prev = self.mutated.get(id(tensor))
        if prev is not None and _deref(prev[0]) is tensor:
            root = prev[1]
        # a tensor made inside the function needs no write-back: held weakly, so the
        # temporaries eager code writes in place (an optimizer's scratch) die when it
        # drops them instead of living, all at once, until the trace ends
        self.mutated[id(tensor)] = (tensor if root.kind == "input" else weakref.ref(tensor),
                                    root)
        self._set(tensor, nv)
        self.clock += 1
        self.mutated_at[id(tensor)] = self.clock

    def before_write(self, tensor) -> None:
        """``tensor``'s storage is about to be written in place."""
        if self.journal is not None:
            self.journal.tensor(tensor)

    @contextlib.contextmanager
    def recording_only(self):
        """Within: ops and elementwise in-place writes are recorded as usual but compute
        nothing; results are zero-strided stand-ins (no memory). For code whose values
        the caller computes itself, without the temporaries the ops would allocate."""
        prev, self.record_only = self.record_only, True
        try:
            yield
        finally:
            self.record_only = prev

    def stand_in(self, op, args, attrs, shape=None, dtype=None):
        """``op(*args)`` recorded with a zero-strided stand-in (no memory) for its value,
        of ``shape`` and ``dtype`` (a DType), by default those ``op.infer`` gives."""
        from .._tensor import Tensor
        if shape is None:
            specs = [(a._data.shape, a.dtype) if isinstance(a, Tensor) else a for a in args]
            shape, dtype = op.infer(specs, attrs)
        out = Tensor._make(np.broadcast_to(np.empty((), dtype.np), tuple(shape)))
        self.record(op, args, attrs, out)
        return out

    def stop_if_first_step(self, deps) -> bool:
        """At the start of a traced backward (``deps``: the autograd nodes it will run):
        when this is the function's first step and a gradient it reaches is still None,
        the trace would be thrown away (``training._first_step``); stop tracing now, so
        the backward and the optimizer step run as plain eager code. True if stopped."""
        from .._state import state
        from .._tape import AccumulateGrad
        if not self.stop_first_step or self.steps_open or state.tracer is not self:
            return False
        self.stop_first_step = False
        if not (any(was_none for _, was_none in self.grad_was_none.values()) or any(
                isinstance(m, AccumulateGrad) and m.variable._grad is None for m in deps)):
            return False
        self.stopped = True
        state.tracer = None
        return True

    def record_grad(self, leaf, value) -> None:
        """``leaf.grad = value`` is happening while tracing (zero_grad, backward)."""
        if self.journal is not None:
            self.journal.grad(leaf)
        if id(leaf) not in self.grad_was_none and id(leaf) not in self.grad_writes:
            self.grad_was_none[id(leaf)] = (leaf, leaf._grad is None)
        self.grad_writes[id(leaf)] = (leaf, value)

    def alias(self, new, old) -> None:
        """``new`` holds the same value as ``old`` (a copy made outside the registry)."""
        self._set(new, self.value_of(old))

    def note_grad_value(self, leaf, grad) -> None:
        """``leaf.grad`` was read while tracing: bind it by *where it lives*, not by
        object, so the next call reads whatever tensor ``leaf.grad`` is then."""
        r = self.grad_reads.get(id(grad))
        if (r is None or _deref(r[1]) is not grad) and self._lookup(grad) is None:
            # weakly: a gradient only looked at (zero_grad's None test) and then dropped
            # must not live on, beside the new one, until the trace ends; value_of holds
            # it strongly once the graph reads it
            self.grad_reads[id(grad)] = (leaf, weakref.ref(grad))

    def dynamic_grads(self, live):
        """Swap captured ``.grad`` tensors for slots read through their leaf at run
        time; returns (live, guards) with guards = [(leaf ref, False)]."""
        guards, slots = [], {}
        for gid, (leaf, held) in self.grad_reads.items():
            if _deref(held) is None:
                continue  # dropped during the call: nothing captured it
            slots[gid] = GradSlot(leaf)
            guards.append((weakref.ref(leaf), False))
        live = [(slots.get(id(t), t), v) for t, v in live]
        return live, guards

    def note_grad_read(self, leaf) -> None:
        """Backward read ``leaf.grad`` to decide between assign and accumulate."""
        if id(leaf) not in self.grad_was_none and id(leaf) not in self.grad_writes:
            self.grad_was_none[id(leaf)] = (leaf, leaf._grad is None)

    def scalar_tensor(self, sym):
        """The 0-d float64 graph input standing for symbolic number ``sym``; its value
        is ``sym.evaluate()`` at every call (one input per distinct expression)."""
        from .._tensor import Tensor
        t = self.scalar_inputs.get(sym.key)
        if t is not None:
            return t
        t = Tensor._make(np.asarray(float(sym.value), np.float64))
        v = self.graph.add_input((), t.dtype, f"scalar{len(self.scalars)}")
        self._set(t, v)
        self.scalars.append((sym.evaluate, v, t))
        self.scalar_inputs[sym.key] = t
        return t

    def size_tensor(self, s):
        """The 0-d int64 graph input standing for dynamic size ``s`` used as a number
        (``loss / x.shape[0]``): the size of the call being run, at every call."""
        from .._symshape import size_now
        from .._tensor import Tensor
        key = ("size", s.expr)
        t = self.scalar_inputs.get(key)
        if t is not None:
            return t
        t = Tensor._make(np.asarray(s.hint, np.int64))
        v = self.graph.add_input((), t.dtype, f"size{len(self.scalars)}")
        self._set(t, v)
        expr, traced = s.expr, dict(self.shape_env.hints)
        self.scalars.append((lambda: size_now(expr, traced), v, t))
        self.scalar_inputs[key] = t
        return t

    def random_seed(self, draw):
        """A 0-d int64 plan input drawn by ``draw()`` at every call (a random op's
        seed); drawn now too, for the traced call's own eager values."""
        from .._tensor import Tensor
        t = Tensor._make(np.asarray(draw(), np.int64))
        v = self.graph.add_input((), t.dtype, f"seed{len(self.scalars)}")
        self._set(t, v)
        self.scalars.append((draw, v, t))
        return t

    def lift(self, op, args, attrs):
        """Symbolic numbers in an op's operands become scalar graph inputs (cast to the
        dtype a Python number would have computed in); in attributes, which the graph
        bakes in, they are specialised to their value under a guard."""
        from .._symbolic import SymScalar
        if self.shape_env is not None:
            args, attrs = self._lift_sizes(op, args, attrs)
        if any(isinstance(v, SymScalar) for v in attrs.values()):
            attrs = {k: v.specialize() if isinstance(v, SymScalar) else v
                     for k, v in attrs.items()}
        if not any(isinstance(a, SymScalar) for a in args):
            return args, attrs
        if not op.is_elementwise:
            return tuple(a.specialize() if isinstance(a, SymScalar) else a for a in args), attrs
        from .._tensor import _make_ew_plan, apply_op
        plain = tuple(float(a.value) if isinstance(a, SymScalar) else a for a in args)
        cdt = _make_ew_plan(op, plain)[0]
        out = []
        for a in args:
            if isinstance(a, SymScalar):
                t = self.scalar_tensor(a)
                if cdt is not None and cdt is not t.dtype:
                    t = apply_op("cast", (t,), {"dtype": cdt})
                a = t
            out.append(a)
        return tuple(out), attrs

    def decomposed(self, op, args, attrs):
        """``op`` run as its decomposition's primitives (each recorded, each with its own
        gradient rule, all of them symbolic in the dynamic sizes), when a gradient may
        be taken through it; None to run the op itself."""
        from .._state import state
        from .._tensor_base import Tensor
        if not state.grad_enabled or not any(
                isinstance(a, Tensor) and a.requires_grad for a in args):
            return None
        from .._symshape import hints, is_symbolic
        pending = self._sym_attrs.pop(id(attrs), None)
        if pending is not None and pending[0] is attrs:
            attrs = pending[1]  # the decomposition computes with the symbolic sizes
        out = op.decomposition(_TensorBuilder(), *[_Proxy(a) if isinstance(a, Tensor) else a
                                                   for a in args], **attrs)
        if out is None:
            if is_symbolic(attrs):  # the op runs itself after all: traced values again
                plain = hints(attrs)
                self._sym_attrs[id(plain)] = (plain, attrs)
            return None
        return out.t

    def _lift_sizes(self, op, args, attrs):
        """SymInts in attributes stay in the graph as Exprs (the eager run uses their
        traced values); a SymInt operand (``x * t``) is baked in under a guard."""
        from .._symshape import SymInt, hints, is_symbolic
        if any(isinstance(a, SymInt) for a in args):
            # an elementwise operand reads the call's size at run time; elsewhere the
            # size is baked in under a guard
            args = tuple((self.size_tensor(a) if op.is_elementwise else int(a))
                         if isinstance(a, SymInt) else a for a in args)
        if attrs and is_symbolic(attrs):
            plain = hints(attrs)
            self._sym_attrs[id(plain)] = (plain, attrs)
            attrs = plain
        return args, attrs

    def note_module(self, module) -> None:
        """A module ran inside the trace: what its forward may branch on (training
        flag, attributes, hooks, which parameters it holds) is part of the guard."""
        if id(module) not in self.modules_seen:
            self.modules_seen.add(id(module))
            self.guards.append(module_guard(module))

    def guard_failure(self) -> str | None:
        """Why the guards recorded while tracing no longer hold (None: they hold)."""
        return check_guards(self.guards)

    def graph_break(self, what: str) -> None:
        if self.breaks:
            return
        filename, lineno = user_frame()
        brk = GraphBreak(what, filename, lineno)
        if self.fullgraph:
            raise GraphBreakError(
                f"gcompile.compile(fullgraph=True): graph break: {what} at {filename}:{lineno} "
                "cannot be traced into the graph; remove it (e.g. a data-dependent Python "
                "use) or use fullgraph=False to fall back to eager")
        self.breaks.append(brk)

    # ---- finishing ---------------------------------------------------------------------
    def check_outputs(self, output_tensors) -> None:
        """A returned view whose base was written in place after the view was taken
        holds the written values in eager mode; the graph has only the value it had
        when taken, so that is a graph break (rare, and never silently stale)."""
        for t in output_tensors:
            base = t._base
            if base is None or id(base) not in self.mutated_at:
                continue
            made = self.made_at.get(id(t))
            if made is None or made[0]() is not t or made[1] < self.mutated_at[id(base)]:
                self.graph_break("returning a view whose base was modified in place after "
                                 "the view was taken")
                return
        for cap in self.captures:
            if cap.tensor() is None and self._changed_since_capture(cap):
                self.graph_break("a tensor from outside the call was modified in place and "
                                 "then released during it (its first value, which the graph "
                                 "would bake in, is gone)")
                return

    def _changed_since_capture(self, cap: _Capture) -> bool:
        """Was a (now dead) captured tensor's array written during the trace? Its
        version box moved, or it shares memory with a tensor written in place."""
        if cap.vbox[0] != cap.version:
            return True
        return any(np.may_share_memory(cap.data, t._data) for t, _ in self.mutated_tensors())

    def mutated_tensors(self) -> list[tuple[object, Value]]:
        """(tensor, value before its first in-place write) of every tensor written in
        place during the trace that is still alive."""
        out = []
        for held, root in self.mutated.values():
            t = _deref(held)
            if t is not None:
                out.append((t, root))
        return out

    def finish(self, output_tensors) -> tuple[list, list]:
        """Set graph outputs: the returned tensors, then the final values of mutated
        inputs. Returns (live captured tensors, write-backs), a write-back being
        (position of the mutated tensor's graph input, output index of its new value)."""
        outs = [self.value_of(t) for t in output_tensors]
        live, grad_flags = [], []
        for cap in self.captures:
            t = cap.tensor()
            if t is None:
                # died with the call: it was a local; bake its first-seen data (unchanged:
                # check_outputs made a graph break otherwise)
                self._to_const(cap.value, np.array(cap.data, copy=True))
            else:
                live.append((t, cap.value))
                if t.requires_grad or (t.grad_fn is None and t.dtype.is_floating_point):
                    # autograd recorded (or skipped) its history: freezing or unfreezing
                    # it changes what backward and the optimizer do
                    grad_flags.append((cap.ref, bool(t.requires_grad), cap.value.name))
        if grad_flags:
            self.guards.append(requires_grad_guard(grad_flags))
        writebacks = []
        input_ids = {id(v) for v in self.graph.inputs}
        for tensor, root in self.mutated_tensors():
            if id(root) not in input_ids:
                continue  # a tensor made inside the function: nothing to write back
            writebacks.append((self.graph.inputs.index(root), len(outs)))
            outs.append(self._lookup(tensor))
        self.graph.set_outputs(outs)
        return live, writebacks

    def _to_const(self, v: Value, data: np.ndarray) -> None:
        g = self.graph
        g.inputs = [x for x in g.inputs if x is not v]
        v.kind = "const"
        v.data = data
        g.constants.append(v)


def _deref(held):
    """A tensor held directly or through a weak reference (None once dead)."""
    return held() if isinstance(held, weakref.ref) else held


def _specialize_all(v, env) -> None:
    from .._symshape import SymInt
    if isinstance(v, SymInt):
        env.specialize(v.expr)
    elif isinstance(v, (tuple, list)):
        for x in v:
            _specialize_all(x, env)
    elif isinstance(v, dict):
        for x in v.values():
            _specialize_all(x, env)


class _Proxy:
    """A tensor as a decomposition rule sees a graph value (``numel``, ``ndim`` as
    properties), so the rule runs eagerly on traced tensors."""

    __slots__ = ("t",)

    def __init__(self, t) -> None:
        self.t = t

    @property
    def shape(self):
        return tuple(self.t.shape)

    @property
    def dtype(self):
        return self.t.dtype

    @property
    def ndim(self) -> int:
        return self.t.dim()

    @property
    def numel(self):
        return self.t.numel()


class _TensorBuilder(GradBuilder):
    """The builder a decomposition rule calls: each primitive is dispatched (and so
    recorded by the tracer and on the autograd tape)."""

    def op(self, name, *args, **attrs):
        from .._dispatch import apply_op
        return _Proxy(apply_op(name, tuple(a.t if isinstance(a, _Proxy) else a
                                           for a in args), attrs))
