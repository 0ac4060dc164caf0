"""``gcompile.compile``: trace once, guard, and run a compiled plan.

A ``CompiledFunction`` keeps one entry per guard signature (argument shapes,
dtypes, devices and requires_grad, non-tensor arguments, grad mode, the
``training`` flags and the identity/shape of every parameter). A miss retraces
(logged on the ``recompiles`` channel with the guard that failed); past
``RECOMPILE_LIMIT`` entries it warns once and runs eagerly. A graph break
(``.item()``, ``bool(t)``, ...) makes that signature eager with one warning
naming the file and line, or raises under ``fullgraph=True``.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _autocast
from .._state import state
from .._tensor import Tensor
from .._tensor import apply_op as _apply_op
from . import logs
from .entry import Entry
from .gc_pause import gc_paused
from .guards import check_guards, function_guards, grad_presence_guards, unique_guards
from .tracer import TRACING_CALLS, GraphBreak, GraphBreakError, Tracer
from .training import first_step_pending, first_step_transient

RECOMPILE_LIMIT = 8
IDLE_CALLS = 3  # calls to other entries of a signature before an idle entry's arena goes


class GraphBreakWarning(UserWarning):
    """A compiled function fell back to eager because of a graph break."""


class RecompileLimitWarning(UserWarning):
    """A compiled function hit the recompile limit and now runs eagerly."""


# ---- pytrees (tensors inside tuples/lists/dicts) ------------------------------------------
def _flatten(obj, leaves: list) -> Any:
    if isinstance(obj, Tensor):
        leaves.append(obj)
        return ("T", len(leaves) - 1)
    if isinstance(obj, (tuple, list)):
        kids = tuple(_flatten(o, leaves) for o in obj)
        if isinstance(obj, tuple) and type(obj) is not tuple and hasattr(obj, "_fields"):
            return ("N", type(obj), kids)
        return ("L" if isinstance(obj, list) else "U", kids)
    if isinstance(obj, dict):
        return ("D", tuple((k, _flatten(v, leaves)) for k, v in obj.items()))
    return ("C", obj)


def _unflatten(spec, leaves: list) -> Any:
    tag = spec[0]
    if tag == "T":
        return leaves[spec[1]]
    if tag == "U":
        return tuple(_unflatten(s, leaves) for s in spec[1])
    if tag == "L":
        return [_unflatten(s, leaves) for s in spec[1]]
    if tag == "N":
        return spec[1](*[_unflatten(s, leaves) for s in spec[2]])
    if tag == "D":
        return {k: _unflatten(s, leaves) for k, s in spec[1]}
    return spec[1]


def _static_key(spec) -> Any:
    """A hashable guard key for the non-tensor parts of the arguments."""
    tag = spec[0]
    if tag == "T":
        return ("T",)
    if tag in ("U", "L"):
        return (tag, tuple(_static_key(s) for s in spec[1]))
    if tag == "N":
        return ("N", spec[1], tuple(_static_key(s) for s in spec[2]))
    if tag == "D":
        return ("D", tuple((k, _static_key(s)) for k, s in spec[1]))
    v = spec[1]
    if isinstance(v, float):
        return ("C", float, v.hex())  # 0.0 and -0.0 differ (1/x), NaN equals NaN
    try:
        hash(v)
        return ("C", type(v), v)
    except TypeError:
        return ("C", type(v), id(v))


def _module_params(obj) -> list[tuple[str, Tensor]]:
    out: list[tuple[str, Tensor]] = []
    seen: set[int] = set()
    if obj is None:
        return out
    if hasattr(obj, "named_parameters"):
        items = list(obj.named_parameters())
    elif hasattr(obj, "parameters"):
        items = [(f"p{i}", p) for i, p in enumerate(obj.parameters())]
    else:
        items = []
    if hasattr(obj, "named_buffers"):
        items += [(n, b) for n, b in obj.named_buffers() if b is not None]
    for name, t in items:
        if isinstance(t, Tensor) and id(t) not in seen:
            seen.add(id(t))
            out.append((name, t))
    return out


def _training_flags(obj) -> tuple:
    if obj is None:
        return ()
    if hasattr(obj, "modules"):
        try:
            return tuple(bool(getattr(m, "training", False)) for m in obj.modules())
        except TypeError:
            pass
    return (bool(getattr(obj, "training", False)),)


def _tensor_key(t: Tensor) -> tuple:
    return (tuple(t._data.shape), t.dtype.name, "cpu", bool(t.requires_grad))


def _output_views(graph, out_leaves: list[Tensor]) -> dict:
    """Outputs that eager mode returns as views of an input (``return x[0]``): each
    with the input's position and the chain of view ops from it, replayed on this
    call's input so the result shares its memory (a later in-place write to the
    input shows through it, as in eager mode)."""
    from ir.graph import Value
    from ir.registry import REGISTRY
    positions = {id(v): j for j, v in enumerate(graph.inputs)}
    views = {}
    for k, t in enumerate(out_leaves):
        if t._base is None:
            continue
        v, chain = graph.outputs[k], []
        while v.kind == "node" and v.producer is not None:
            n = v.producer
            rest = n.inputs[1:]
            if REGISTRY[n.op].category != "view" or any(isinstance(a, Value) for a in rest):
                break
            chain.append((n.op, tuple(rest), dict(n.attrs)))
            v = n.inputs[0]
        if chain and id(v) in positions:
            views[k] = (positions[id(v)], chain[::-1])
    return views


def _alias_key(leaves: list[Tensor]) -> tuple:
    """Which tensor arguments share memory: for each, the first argument over the
    same root array (a graph traced for ``f(x, x)`` must not serve ``f(x, y)``)."""
    if len(leaves) < 2:
        return ()
    first: dict[int, int] = {}
    out = []
    for i, t in enumerate(leaves):
        out.append(first.setdefault(_root_key(t._data), i))
    return tuple(out)


def _root_key(a) -> object:
    """What identifies the memory an argument's array lives in: its root array, or for
    a CUDA tensor's storage the start of its device allocation."""
    if type(a).__name__ == "CudaArray":
        from kernels.cuda import memory
        m = memory._memory_of(a.dev)
        if m is None:
            return ("cuda", id(a))
        if memory.is_simulator():
            return ("cuda", m.__array_interface__["data"][0])
        return ("cuda", int(m.device_pointer_value or 0))
    while isinstance(a.base, np.ndarray):
        a = a.base
    return id(a)


def _describe_miss(old: tuple, new: tuple) -> str:
    names = ("argument tensors", "argument structure", "grad mode", "training flags",
             "parameters", "aliasing between tensor arguments", "autocast state")
    for i, (a, b) in enumerate(zip(old, new)):
        if a == b:
            continue
        if i == 0:
            if len(a) != len(b):
                return f"number of tensor arguments changed: {len(a)} -> {len(b)}"
            for j, (x, y) in enumerate(zip(a, b)):
                for what, xv, yv in zip(("shape", "dtype", "device", "requires_grad"), x, y):
                    if xv != yv:
                        return f"tensor argument {j}: {what} {xv} -> {yv}"
        if i == 4:
            for x, y in zip(a, b):
                if x != y:
                    what = ("replaced by another tensor" if x[1] != y[1]
                            else f"{x[2:]} -> {y[2:]}")
                    return f"parameter {x[0]!r} changed: {what}"
            return "the set of parameters changed"
        return f"{names[i]} changed: {a} -> {b}"
    return "new signature"


class InferenceEntry(Entry):
    """One plan for a traced signature; outputs that are views of an input stay
    views of this call's input."""

    kind = "inference"

    def __init__(self, graph, executable, out_spec, n_out, live, writebacks, input_map):
        super().__init__(graph, out_spec, n_out, live, writebacks, input_map)
        self.executable = executable
        self.views: dict = {}    # output index -> (input position, view ops to replay)
        self.direct = self.direct_writebacks(executable)

    def executables(self) -> list:
        return [self.executable]

    def run(self, arg_tensors: list[Tensor], params: list[Tensor]):
        tensors = self.input_tensors(arg_tensors, params)
        outs = self.run_plan(self.executable, tensors, self.direct)
        leaves = []
        mutated = self._mutated_outputs
        views = self.views
        for k in range(self.n_out):
            j = mutated.get(k)
            if j is not None:
                leaves.append(tensors[j])  # `x.add_(1); return x` returns this call's x
                continue
            if k in views:  # a view of an input stays a view of this call's input
                j, chain = views[k]
                t = tensors[j]
                for op, rest, attrs in chain:
                    t = _apply_op(op, (t, *rest), attrs)
                leaves.append(t)
                continue
            idx = self._input_index.get(id(self.graph.outputs[k]))
            if idx is not None and not self.writebacks:
                leaves.append(tensors[idx])
            else:
                leaves.append(Tensor._make(outs[k]))
        return _unflatten(self.out_spec, leaves)

    @functools.cached_property
    def _mutated_outputs(self) -> dict:
        """Output index -> input position, for outputs that are a mutated input."""
        outs = self.graph.outputs
        return {k: j for j, kk in self.writebacks for k in range(self.n_out)
                if outs[k] is outs[kk]}

    @functools.cached_property
    def _input_index(self) -> dict[int, int]:
        return {id(v): i for i, v in enumerate(self.graph.inputs)}


def input_tensors(entry, arg_tensors: list[Tensor], params: list[Tensor]) -> list:
    """The tensor behind each graph input of ``entry`` for this call."""
    return entry.input_tensors(arg_tensors, params)


def scalar_sources(tracer) -> list[tuple]:
    """(evaluate, dtype) of each value the plan reads from Python at every call."""
    return [(ev, t._data.dtype) for ev, _, t in tracer.scalars]


def graph_input_map(tracer, leaves, params, live) -> list[tuple[str, int]]:
    """Where each graph input's array comes from at run time, in graph-input order:
    ("arg", i) | ("param", i) | ("live", j) | ("scalar", j)."""
    kind_of: dict[int, tuple[str, int]] = {}
    bound = {id(t): v for t, v in tracer.bound}
    for i, t in enumerate(leaves):
        if id(t) in bound:
            kind_of.setdefault(id(bound[id(t)]), ("arg", i))
    for i, (_, p) in enumerate(params):
        if id(p) in bound:
            kind_of.setdefault(id(bound[id(p)]), ("param", i))
    for j, (_, v) in enumerate(live):
        kind_of[id(v)] = ("live", j)
    for j, (_, v, _) in enumerate(tracer.scalars):
        kind_of[id(v)] = ("scalar", j)
    return [kind_of[id(v)] for v in tracer.graph.inputs]


def _interpreter_backend(graph):
    from ir.interpreter import interpret

    def run(arrays):
        return interpret(graph, arrays)
    run.plan = None
    return run


class CompiledFunction:
    """The callable ``gcompile.compile`` returns (also wraps module-like objects)."""

    def __init__(self, fn: Callable, module=None, *, fullgraph: bool = False,
                 dynamic: bool | None = None, backend: str = "plan",
                 options: dict | None = None) -> None:
        self._fn = fn
        self._module = module
        options = options or {}
        self.recompile_limit = options.get("max_recompiles", RECOMPILE_LIMIT)
        self.keep_arena = options.get("keep_arena")  # None: by size (runtime.allocator)
        if options.get("kernels") == "reference":
            backend = "reference"
        self.fullgraph = fullgraph
        self.dynamic = dynamic  # None: after a second size; True: from the first call
        # dynamic shapes (dynamic.py), per signature without its sizes: the shapes
        # traced so far, the dimensions made symbolic, and those that cannot be
        self._shapes_seen: dict[tuple, list] = {}
        self._dyn_dims: dict[tuple, dict[int, tuple[int, ...]]] = {}
        self._static_only: set[tuple] = set()
        self._dyn_hits: dict[tuple, Any] = {}  # signature -> the dynamic entry serving it
        self.backend = backend
        self._entries: dict[tuple, list] = {}  # per signature: entries with their guards
        self._eager: set[tuple] = set()         # signatures that run eagerly
        self._last_entry = None                 # the most recently traced entry
        self._traced: list = []                 # every entry, in trace order
        self._transients: dict[tuple, int] = {}
        self._last_key: tuple | None = None
        self._limit_warned = False
        self.graph_breaks: list[GraphBreak] = []
        self.num_traces = 0
        functools.update_wrapper(self, fn if module is None else type(module).forward,
                                 updated=())

    # module-like pass-through (parameters(), train(), eval(), ...)
    def __getattr__(self, name: str):
        mod = self.__dict__.get("_module")
        if mod is not None:
            return getattr(mod, name)
        raise AttributeError(name)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return functools.partial(self.__call__, obj)

    @property
    def graph(self):
        """The graph of the most recently traced signature (None before any trace)."""
        entry = self._last_entry
        return entry.graph if entry is not None else None

    @property
    def entries(self) -> list:
        """Every traced entry, oldest first."""
        return list(self._traced)

    def _signature(self, args, kwargs):
        leaves: list[Tensor] = []
        spec = _flatten((args, kwargs), leaves)
        params = _module_params(self._module)
        key = (tuple(_tensor_key(t) for t in leaves), _static_key(spec),
               bool(state.grad_enabled), _training_flags(self._module),
               tuple((n, id(p)) + _tensor_key(p) for n, p in params), _alias_key(leaves),
               _autocast_key())
        return key, leaves, params

    def __call__(self, *args, **kwargs):
        if state.tracer is not None:  # nested inside another trace: inline
            return self._fn(*args, **kwargs)
        key, leaves, params = self._signature(args, kwargs)
        if key in self._eager:
            return self._fn(*args, **kwargs)
        failed = None
        entries = self._entries.get(key, ())
        for i, entry in enumerate(entries):
            failed = check_guards(entry.guards) if entry.guards else None
            if failed is None:
                if i:  # the entry that matched last is tried first next time
                    entries.insert(0, entries.pop(i))
                if len(entries) > 1:
                    self._release_idle(entries)
                return entry.run(leaves, [p for _, p in params])
        if self._dyn_dims:
            entry = self._dyn_hits.get(key)
            if entry is not None and (not entry.guards or check_guards(entry.guards) is None):
                # these exact sizes passed this entry's size guards before (they depend
                # on the sizes alone): straight to its plan for them
                return entry.run(leaves, [p for _, p in params])
            dims = self._dyn_dims.get(_shapeless(key))
            if dims is not None:
                dkey = _dynamic_key(key, dims)
                for entry in self._entries.get(dkey, ()):
                    failed = entry.shape_failure(leaves) or (
                        check_guards(entry.guards) if entry.guards else None)
                    if failed is None:
                        if entry.needs_validation(leaves):
                            return self._validate(entry, dkey, key, leaves, params, args,
                                                  kwargs)
                        if len(self._dyn_hits) >= 256:
                            self._dyn_hits.clear()
                        self._dyn_hits[key] = entry
                        return entry.run(leaves, [p for _, p in params])
        return self._miss(key, leaves, params, args, kwargs, failed)

    def _dims_for(self, key, leaves) -> dict[int, tuple[int, ...]]:
        """Which dimensions of which tensor arguments to trace symbolically."""
        if self.dynamic is False or not leaves:
            return {}
        sk = _shapeless(key)
        seen = self._shapes_seen.setdefault(sk, [])
        shapes = tuple(k[0] for k in key[0])
        dims: dict[int, set] = {}
        for i, t in enumerate(leaves):
            marked = getattr(t, "_dynamo_dynamic_indices", None)
            if self.dynamic is True:
                dims[i] = set(range(t.dim()))
            elif marked:
                dims[i] = set(marked)
        if self.dynamic is None and sk not in self._static_only:
            for old in seen:
                for i, (a, b) in enumerate(zip(old, shapes)):
                    for d, (x, y) in enumerate(zip(a, b)):
                        if x != y:
                            dims.setdefault(i, set()).add(d)
            for i, ds in self._dyn_dims.get(sk, {}).items():
                dims.setdefault(i, set()).update(ds)
        if shapes not in seen:
            seen.append(shapes)
        return {i: tuple(sorted(d for d in ds if leaves[i]._data.shape[d] >= 2))
                for i, ds in dims.items() if any(leaves[i]._data.shape[d] >= 2 for d in ds)}

    def _graph_break(self, name: str, key, brk) -> None:
        """Signature ``key`` runs eagerly from now on, with one warning."""
        self.graph_breaks.append(brk)
        logs.log("graph_breaks", f"{name}: graph break: {brk}")
        warnings.warn_explicit(
            f"gcompile.compile: graph break in {name}: {brk.what} cannot be traced into "
            "the graph; this signature runs eagerly", GraphBreakWarning,
            brk.filename, brk.lineno)
        self._eager.add(key)

    def _store(self, key, entry) -> None:
        entries = self._entries.setdefault(key, [])
        entries.insert(0, entry)
        self._last_entry = entry
        self._traced.append(entry)
        self._release_idle(entries)

    def _validate(self, dyn, dkey, key, leaves, params, args, kwargs):
        """First call of a symbolic trace at sizes it was not traced at: trace again
        (symbolically, at these sizes) and trust the symbolic graph only if both
        traces agree (see dynamic.py); otherwise this signature goes back to one
        trace per size."""
        from .dynamic import DynamicEntry, first_difference
        name = getattr(self._fn, "__qualname__", type(self._fn).__name__)
        dims = {i: d for i, d in _dims_of(dyn).items()}
        result, entry, brk = self._trace(name, leaves, params, args, kwargs, dims)
        if brk is not None:  # these sizes take another path: they run eagerly
            self._graph_break(name, key, brk)
            return result
        if entry is None or type(entry).__name__ == "_Transient":
            return result  # state made on this call: checked again on the next
        sk = _shapeless(key)
        if isinstance(entry, DynamicEntry) and entry.fingerprint == dyn.fingerprint:
            dyn.validated = True
            dyn.add_sizes(leaves, next(iter(entry.entries.values())))
            logs.log("recompiles", f"{name}: dynamic sizes checked: {dyn.describe()}")
            return result
        why = (first_difference(dyn.fingerprint, entry.fingerprint)
               if isinstance(entry, DynamicEntry) else "its sizes were specialised")
        logs.log("recompiles", f"{name}: sizes are not dynamic here, one trace per size from "
                 f"now on: two symbolic traces differ: {why}")
        self._static_only.add(sk)
        self._dyn_dims.pop(sk, None)
        self._entries.pop(dkey, None)
        self._dyn_hits.clear()
        concrete = next(iter(entry.entries.values())) if isinstance(entry, DynamicEntry) \
            else entry
        self._store(key, concrete)
        return result

    def call_until_planned(self, *args, **kwargs):
        """Call until there is a plan or a graph break and return the last result (a
        first call that only creates state, such as optimizer moments or a lazily built
        buffer, runs eagerly and is traced again on the next). For tools that need the
        traced entry: explain, export, ONNX."""
        result = None
        for _ in range(3):
            result = self(*args, **kwargs)
            if self._traced or self.graph_breaks:
                break
        return result

    def _release_idle(self, entries: list) -> None:
        """Entries this signature no longer uses (a plan traced while ``.grad`` was
        None on the first step) keep their plans but give back their arenas once
        ``IDLE_CALLS`` calls in a row went to other entries (a train/eval switch
        every other call keeps both)."""
        for e in entries[1:]:
            e.idle += 1
            if e.idle == IDLE_CALLS:
                e.release()
        entries[0].idle = 0

    def _miss(self, key, leaves, params, args, kwargs, failed=None):
        with gc_paused():
            return self._miss_traced(key, leaves, params, args, kwargs, failed)

    def _miss_traced(self, key, leaves, params, args, kwargs, failed=None):
        name = getattr(self._fn, "__qualname__", type(self._fn).__name__)
        traced = len(self.entries)
        if traced >= self.recompile_limit:
            if not self._limit_warned:
                self._limit_warned = True
                warnings.warn(f"gcompile.compile: {name} hit the recompile limit "
                              f"({self.recompile_limit}); running eagerly from now on for new "
                              "signatures", RecompileLimitWarning, stacklevel=3)
            self._eager.add(key)
            return self._fn(*args, **kwargs)
        if failed is not None:
            logs.log("recompiles", f"{name}: recompiling ({traced + 1}): guard failed: {failed}")
        elif self._last_key is not None:
            logs.log("recompiles", f"{name}: recompiling ({traced + 1}): "
                     f"{_describe_miss(self._last_key, key)}")
        self._last_key = key
        dims = self._dims_for(key, leaves)
        result, entry, brk = self._trace(name, leaves, params, args, kwargs, dims)
        if brk is not None:
            self._graph_break(name, key, brk)
        elif type(entry).__name__ == "_Transient":
            # eager this once (the trace was an eager run); retrace on the next call
            self._transients[key] = self._transients.get(key, 0) + 1
            if self._transients[key] > 2:
                self._eager.add(key)
        elif entry.kind == "dynamic":
            sk = _shapeless(key)
            dims = _dims_of(entry)
            self._dyn_dims[sk] = dims
            logs.log("recompiles", f"{name}: traced with symbolic sizes: {entry.describe()}")
            self._store(_dynamic_key(key, dims), entry)
        else:
            if dims:  # asked for symbolic sizes, but every one was specialised
                self._static_only.add(_shapeless(key))
            self._store(key, entry)
        return result

    def _trace(self, name, leaves, params, args, kwargs, dims=None):
        tracer = Tracer(name=_safe_name(name), fullgraph=self.fullgraph)
        if dims:
            from .._symshape import ShapeEnv
            tracer.shape_env = ShapeEnv()
            tracer.dynamic_dims = {id(leaves[i]): (i, d) for i, d in dims.items()}
        input_map = []
        for i, t in enumerate(leaves):
            if tracer._lookup(t) is None:
                tracer.bind_input(t, f"arg{i}")
                input_map.append(("arg", i))
        for i, (pname, p) in enumerate(params):
            if tracer._lookup(p) is None:
                tracer.bind_input(p, pname.replace(".", "_"))
                input_map.append(("param", i))
        # the globals and closure variables the function reads, as the trace finds them
        fguards = function_guards(self._fn if self._module is None else
                                  type(self._module).forward)
        prev = state.tracer
        # the function's first step, if it turns out to be one run while .grad is None,
        # runs eagerly from its backward() on (Tracer.stop_if_first_step)
        tracer.stop_first_step = prev is None and not dims and tracer.journal is None \
            and first_step_pending(self)
        state.tracer = tracer
        TRACING_CALLS[0] += 1
        try:
            with logs.stage("trace", lambda: "graph break: " + str(tracer.breaks[0])
                            if tracer.breaks else str(tracer.graph)):
                result = self._fn(*args, **kwargs)
        finally:
            TRACING_CALLS[0] -= 1
            state.tracer = prev
            if tracer.shape_env is not None:
                tracer.shape_env.freeze()  # SymInts that outlive the trace add no guards
        self.num_traces += 1
        if tracer.stopped and not tracer.breaks:
            return result, first_step_transient(self, tracer), None
        # (random ops draw their seeds through the tracer; any other draw from a
        # Generator is a graph break where it happens: _random._gen)
        out_leaves: list[Tensor] = []
        out_spec = _flatten(result, out_leaves)
        if not tracer.breaks:
            tracer.check_outputs(out_leaves)
        if tracer.breaks:
            return result, None, tracer.breaks[0]
        on_cuda = any(getattr(t, "is_cuda", False) for t in
                      list(leaves) + [p for _, p in params] + [t for t, _ in tracer.bound]) \
            or any(type(c.data).__name__ == "CudaArray" for c in tracer.captures)
        if on_cuda:
            tracer.graph.meta["device"] = "cuda"  # _build lowers it to CUDA kernels
        # the globals and closure variables the function reads are guarded too; one it
        # changed itself (a counter, a dict entry replaced, a list appended to) is a Python
        # side effect a plan would not repeat
        changed = check_guards(fguards)
        if changed is not None:
            from .tracer import GraphBreak, user_frame
            brk = GraphBreak(f"the function changes a Python value it reads ({changed} "
                             "during the call): a compiled plan would not repeat that",
                             *user_frame())
            if self.fullgraph:
                raise GraphBreakError(f"gcompile.compile(fullgraph=True): graph break: {brk}")
            return result, None, brk
        tracer.guards.extend(fguards)
        if tracer.backward_ran:
            # a whole training step (backward and updates inside): training.py
            from .training import build_step_entry
            return build_step_entry(self, tracer, result, out_leaves, out_spec, leaves, params,
                                    input_map)
        training = state.grad_enabled and any(t.requires_grad for t in out_leaves)
        if training and tracer.detached_writes:
            from .tracer import GraphBreak
            file, line = tracer.detached_writes[0]
            brk = GraphBreak("an in-place write through x.detach() (or x.data) of a tensor "
                             "that requires grad, in a function whose gradient is compiled",
                             file, line)
            if self.fullgraph:
                raise GraphBreakError(f"gcompile.compile(fullgraph=True): graph break: {brk}")
            return result, None, brk
        if not training:
            # values that escape (stored in a list, new optimizer state) would go stale
            from .training import check_escapes
            transient = check_escapes(tracer, out_leaves)
            if transient is not None:
                return result, transient, None
        live, writebacks = tracer.finish(out_leaves)
        live, grad_guards = tracer.dynamic_grads(live)
        graph = tracer.graph
        input_map = graph_input_map(tracer, leaves, params, live)
        traced_text = str(graph)
        inputs = [leaves[i] if kind == "arg" else params[i][1] if kind == "param" else
                  live[i][0] if kind == "live" else tracer.scalars[i][2]
                  for kind, i in input_map]
        scalars = scalar_sources(tracer)
        guards = unique_guards(tracer.guards + grad_presence_guards(grad_guards))
        symbolic = _symbolic_inputs(tracer)
        if symbolic:  # the plans are built from instantiations of the symbolic graph
            from .dynamic import Ghost
            inputs = [Ghost(t) for t in inputs]
            out_leaves = [Ghost(t) for t in out_leaves]

        def make_entry(g):
            if on_cuda:
                g.meta["device"] = "cuda"  # _build lowers it to CUDA kernels
            if training:
                # forward and backward plans from the autodiff pass (training.py)
                from .training import TrainingEntry
                e = TrainingEntry(g, self._build_on(g), out_spec, len(out_leaves), live,
                                  writebacks, input_map, inputs, out_leaves)
            else:
                views = _output_views(g, out_leaves)
                e = InferenceEntry(g, self._build(g), out_spec, len(out_leaves), live,
                                   writebacks, input_map)
                e.views = views
            e.scalars = scalars
            e.guards = guards
            e.traced_text = traced_text
            return e

        if not symbolic:
            return result, make_entry(graph), None
        from .dynamic import DynamicEntry, instantiate
        env = tracer.shape_env
        first = make_entry(instantiate(graph, symbolic, env.hints))
        entry = DynamicEntry(graph, env, symbolic, make_entry, first, out_spec,
                             len(out_leaves), live, writebacks, input_map)
        entry.scalars = scalars
        entry.guards = guards
        entry.traced_text = traced_text
        return result, entry, None

    def _build_on(self, graph):
        """``_build`` for the graphs derived from ``graph`` (a training entry's forward
        and backward plans): on ``graph``'s device."""
        dev = graph.meta.get("device")
        if dev is None:
            return self._build

        def build(g):
            g.meta.setdefault("device", dev)
            return self._build(g)
        return build

    def _build(self, graph):
        if self.backend == "interpreter":
            return _interpreter_backend(graph)
        if graph.meta.get("device") == "cuda":
            from .backend import build_cuda_executable
            return build_cuda_executable(graph)
        from .backend import build_executable
        ex = build_executable(graph, reference=self.backend == "reference")
        ex.plan.keep_arena = self.keep_arena
        return ex


def _autocast_key() -> tuple:
    """The autocast state a trace bakes in (matrix products' dtypes), per device type: a
    plan traced under autocast must not serve calls outside it, nor the reverse."""
    d = getattr(_autocast._local, "dtypes", None)
    return tuple(sorted((k, v.name) for k, v in d.items())) if d else ()


def _shapeless(key: tuple) -> tuple:
    """A signature key without the tensor arguments' sizes (their ranks stay)."""
    return (tuple((len(k[0]),) + k[1:] for k in key[0]),) + key[1:]


def _dynamic_key(key: tuple, dims: dict[int, tuple[int, ...]]) -> tuple:
    """A signature key with the dynamic dimensions' sizes left out."""
    leaves = []
    for i, k in enumerate(key[0]):
        ds = dims.get(i, ())
        leaves.append((tuple(None if d in ds else s for d, s in enumerate(k[0])),) + k[1:])
    return (tuple(leaves),) + key[1:]


def _dims_of(entry) -> dict[int, tuple[int, ...]]:
    """The argument dimensions a dynamic entry's symbols stand for."""
    out: dict[int, set] = {}
    for i, d in entry.sources.values():
        out.setdefault(i, set()).add(d)
    return {i: tuple(sorted(ds)) for i, ds in out.items()}


def _symbolic_inputs(tracer) -> dict[int, tuple]:
    """Graph input position -> symbolic shape, when the trace has a symbol that was
    not specialised."""
    env = tracer.shape_env
    if env is None or not env.hints:
        return {}
    from .dynamic import pinned_symbols
    if set(env.hints) <= pinned_symbols(env):
        if tracer.specialized:
            logs.log("recompiles", "symbolic sizes specialised: "
                     + "; ".join(tracer.specialized[:3]))
        return {}
    pos = {id(v): i for i, v in enumerate(tracer.graph.inputs)}
    return {pos[vid]: s for vid, s in tracer.sym_shapes.items() if vid in pos}


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "graph"


def compile(fn_or_module=None, *, fullgraph: bool = False, dynamic: bool | None = None,
            backend: str = "plan", mode: str | None = None, options: dict | None = None,
            **kwargs):
    """Compile a function or a module (``forward`` + parameters).

    Works as ``compile(fn)``, ``@compile`` and ``@compile(fullgraph=True)``. ``mode``
    (torch's names; all compile the same CPU plan), ``options`` (``kernels``,
    ``max_recompiles``, ``keep_arena``) and ``disable=True`` are checked: anything
    unknown is an error listing the valid names. ``dynamic`` follows torch: ``None`` (default)
    traces again with a dimension symbolic once it was seen with a second size, so
    later sizes reuse that trace (kernels are generic in sizes); ``True`` does so from
    the first call; ``False`` traces each size (see ``compiler/dynamic.py``). A module
    comes back as an ``OptimizedModule``, itself an ``nn.Module``.
    """
    from .options import validate_compile_options
    opts = validate_compile_options(mode, options, kwargs)
    if fn_or_module is None:
        return lambda f: compile(f, fullgraph=fullgraph, dynamic=dynamic, backend=backend,
                                 mode=mode, options=options, **kwargs)
    if backend not in ("plan", "interpreter", "inductor", "eager"):
        raise ValueError(f"gcompile.compile: unknown backend {backend!r}")
    if backend == "inductor":
        backend = "plan"
    if backend == "eager" or kwargs.get("disable"):
        return fn_or_module
    is_module = hasattr(fn_or_module, "forward") and (
        hasattr(fn_or_module, "named_parameters") or hasattr(fn_or_module, "parameters"))
    if not is_module and not callable(fn_or_module):
        raise TypeError(f"gcompile.compile: expected a callable or a module, got "
                        f"{type(fn_or_module).__name__}")
    fn = fn_or_module if callable(fn_or_module) or not is_module else fn_or_module.forward
    cf = CompiledFunction(fn, fn_or_module if is_module else None, fullgraph=fullgraph,
                          dynamic=dynamic, backend=backend, options=opts)
    from ..nn.modules.module import Module
    if isinstance(fn_or_module, Module):
        from .optimized_module import OptimizedModule
        return OptimizedModule(fn_or_module, cf)
    return cf


__all__ = ["compile", "CompiledFunction", "GraphBreakError", "GraphBreakWarning",
           "RecompileLimitWarning", "RECOMPILE_LIMIT"]
