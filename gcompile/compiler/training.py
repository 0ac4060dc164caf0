"""Compiled training: a traced forward whose backward is a compiled plan too.

The traced graph goes through the autodiff pass (``ir.passes.autodiff``): the
joint graph is partitioned into a forward plan that also returns what the
backward needs and a backward plan. Calling the compiled object runs the
forward plan and hands eager autograd one tape node, ``CompiledFunctionBackward``,
which runs the backward plan; ``.grad`` accumulation stays the tape's job, so
parameter sharing, frozen parameters and gradients to inputs behave as eager.
"""
from __future__ import annotations

import gc
from collections.abc import Callable

import numpy as np

from ir.passes.autodiff import joint_graph, partition

from .._state import state
from .._tensor import Tensor
from ..autograd.graph import _FREED_MSG, Node
from .entry import Entry
from .logs import stage


class CompiledFunctionBackward(Node):
    """One tape node for a whole compiled forward; may have several outputs."""

    def __init__(self, entry: TrainingEntry, saved: list[np.ndarray], wrt_tensors: list[Tensor]):
        super().__init__()
        self.entry = entry
        self._saved = saved
        self.num_outputs = len(entry.diff_outputs)
        nxt, nrs = [], []
        for t in wrt_tensors:
            if t.requires_grad:
                nxt.append(t.grad_fn if t.grad_fn is not None else t._grad_accumulator())
                nrs.append(t.__dict__.get("_out_nr", 0))
            else:
                nxt.append(None)
                nrs.append(0)
        self._next = tuple(nxt)
        self._next_nr = tuple(nrs)

    @property
    def next_functions(self):
        return tuple((n, k) for n, k in zip(self._next, self._next_nr))

    def name(self) -> str:
        return "CompiledFunctionBackward"

    def apply(self, grads):
        if self._saved is None:
            raise RuntimeError(_FREED_MSG)
        if state.grad_enabled:
            raise RuntimeError("double backward (create_graph=True) through a gcompile.compile'd "
                               "function is not supported; call the function uncompiled")
        if not isinstance(grads, list):
            grads = [grads]
        e = self.entry
        arrays = list(self._saved)
        for g, (shape, dtype) in zip(grads, e.tangent_types):
            if g is None:
                arrays.append(np.zeros(shape, dtype))
            else:
                arrays.append(np.asarray(g._data, dtype=dtype, order="C"))  # keeps 0-d
        outs = e.backward(arrays)
        res = [None] * len(e.wrt_inputs)
        it = iter(outs)
        for k, has in enumerate(e.has_grad):
            if has:
                res[k] = Tensor._make(next(it))
        return res

    def release(self):
        self._saved = None


class TrainingEntry(Entry):
    """A traced signature with grad-requiring inputs: forward + backward plans."""

    kind = "training"

    def __init__(self, graph, build: Callable, out_spec, n_out: int, live, writebacks,
                 input_map, input_tensors: list[Tensor], out_tensors: list[Tensor]):
        super().__init__(graph, out_spec, n_out, live, writebacks, input_map)
        wrt = [i for i, t in enumerate(input_tensors)
               if t.requires_grad and t.dtype.is_floating_point]
        diff = [k for k, t in enumerate(out_tensors) if t.requires_grad]
        with stage("autodiff", lambda: f"joint graph {len(joint.graph.nodes)} nodes; forward "
                   f"{len(self.part.forward.nodes)}, backward {len(self.part.backward.nodes)} "
                   f"nodes; saved {self.part.saved_bytes} bytes (without recomputation "
                   f"{self.part.saved_bytes_no_recompute}); recomputed "
                   f"{len(self.part.recomputed)} values"):
            joint = joint_graph(graph, wrt=wrt, diff_outputs=diff)
            self.part = partition(joint)
        self.joint = joint
        # the joint graph numbers inputs like the traced graph; map wrt back to positions
        self.wrt_inputs = [joint.graph.inputs.index(v) for v in joint.wrt]
        self.has_grad = [gv is not None for gv in joint.grads]
        self.diff_outputs = joint.differentiable_outputs
        self.tangent_types = [(v.shape, v.dtype.np) for v in joint.grad_inputs]
        self.num_forward_outputs = joint.num_forward_outputs
        self.forward = build(self.part.forward)
        self.backward = build(self.part.backward)

    def executables(self) -> list:
        return [self.forward, self.backward]

    def run(self, arg_tensors: list[Tensor], params: list[Tensor]):
        from .api import _unflatten
        tensors = self.input_tensors(arg_tensors, params)
        outs = self.run_plan(self.forward, tensors, None)
        results = [Tensor._make(outs[k]) for k in range(self.n_out)]
        if state.grad_enabled and any(tensors[i].requires_grad for i in self.wrt_inputs):
            saved = list(outs[self.num_forward_outputs:])
            node = CompiledFunctionBackward(self, saved, [tensors[i] for i in self.wrt_inputs])
            for nr, k in enumerate(self.diff_outputs):
                if k >= self.n_out:
                    continue
                r = results[k]
                r.grad_fn = node
                r._requires_grad = True
                if node.num_outputs > 1:
                    r._out_nr = nr
        return _unflatten(self.out_spec, results)

    @property
    def saved_bytes(self) -> int:
        return self.part.saved_bytes

    @property
    def saved_bytes_no_recompute(self) -> int:
        return self.part.saved_bytes_no_recompute


# ---------------------------------------------------------------------------
# whole-step compile: forward, loss.backward(), optimizer updates in one plan
# ---------------------------------------------------------------------------
class StepEntry(Entry):
    """A traced training step. The plan's outputs are the user's results, the
    new values of every tensor mutated in place (parameters, optimizer state,
    accumulated ``.grad``), and the new ``.grad`` tensors backward assigned."""

    kind = "step"

    def __init__(self, graph, executable, out_spec, n_out, live, writebacks, input_map,
                 scalars, grad_writes, guards):
        super().__init__(graph, out_spec, n_out, live, writebacks, input_map)
        self.executable = executable
        self.scalars = scalars          # [(evaluate, dtype)]: hyper-parameters, seeds
        self.grad_writes = grad_writes  # [(leaf, output index | None)]
        self.guards = guards            # (check, expected, description)
        self.direct = self.direct_writebacks(executable)

    def executables(self) -> list:
        return [self.executable]

    @property
    def saved_bytes(self) -> int:
        """Bytes the step's plan keeps from its forward for its backward: its arena
        storages (and fresh buffers) written before the first step that computes only
        nodes ``backward()`` recorded, and read at or after it. Eager autograd's saved
        tensors are the counterpart; fused elementwise chains save nothing."""
        return saved_across_backward(self.executable.plan)

    @property
    def planned_bytes(self) -> int:
        """The plan's arena: its peak of intermediates by liveness."""
        return self.executable.plan.arena_bytes

    def run(self, arg_tensors: list[Tensor], params: list[Tensor]):
        from .api import _unflatten
        tensors = self.input_tensors(arg_tensors, params)
        # the step replaces these .grad tensors: let go of the old ones first (as
        # eager's zero_grad does), so their memory can hold the new gradients
        # instead of both generations being alive at once
        inputs = {id(t) for t in tensors}
        for leaf, _ in self.grad_writes:
            if leaf._grad is not None and id(leaf._grad) not in inputs:
                leaf._grad = None
        outs = self.run_plan(self.executable, tensors, self.direct)
        for leaf, k in self.grad_writes:
            leaf._grad = None if k is None else Tensor._make(outs[k])
        return _unflatten(self.out_spec, [Tensor._make(outs[k]) for k in range(self.n_out)])


def saved_across_backward(plan) -> int:
    """See ``StepEntry.saved_bytes``; 0 when the plan has no backward steps."""
    return sum(nbytes for _, nbytes, _ in saved_for_backward(plan))


def saved_for_backward(plan) -> list[tuple[str, int, str]]:
    """What a whole-step plan keeps from its forward for its backward, and why: per
    arena storage (or fresh buffer) written before the backward's first step and read
    at or after it, (the buffers' names, bytes, 'written by step i (...), last read by
    step j (...)')."""
    # the first step of the backward proper (a forward kernel may compute a backward
    # value early, e.g. ReLU's mask: that value lives across the point, so it counts)
    start = next((i for i, st in enumerate(plan.steps)
                  if st.nodes and all(n.meta.get("step_backward") for n in st.nodes)), None)
    if start is None:
        return []

    def why(a: int, b: int) -> str:
        b = min(b, len(plan.steps) - 1)
        return (f"written by step {a} ({plan.steps[a].name[:50]}), last read by step {b} "
                f"({plan.steps[b].name[:50]})")

    out = [(", ".join("%" + n for n in s.buffers), s.nbytes, why(s.start, s.end))
           for s in plan.memory.storages if s.start < start <= s.end]
    # fresh buffers (outputs) are not in the memory plan: one made in the forward and
    # read in the backward is saved too
    by_slot = {b.slot: b for b in plan.buffers if not b.planned}
    made = {o: i for i, st in enumerate(plan.steps[:start]) if st.kind != "view"
            for o in st.outputs if o in by_slot}
    last = {}
    for i, st in enumerate(plan.steps[start:], start):
        for x in st.inputs:
            if x in made:
                last[x] = i
    out += [("%" + by_slot[o].name, by_slot[o].nbytes, why(made[o], last[o])) for o in last]
    return out


class _Transient:
    """The traced call left new tensors behind (e.g. optimizer state made on the
    first step): its graph would not describe later calls, so retrace next time."""

    def __init__(self, what: str) -> None:
        self.what = what


def _escaped(tracer, keep_ids: set[int]) -> list:
    """Arrays computed inside the trace that something outside still holds."""
    import sys
    entries = [(arr, v) for ref, v in tracer.arrays.values() if (arr := ref()) is not None]
    # live views made in the trace keep their base arrays alive: expected references
    held: dict[int, int] = {}
    for arr, _ in entries:
        b = getattr(arr, "base", None)  # a CudaArray has none
        if b is not None and not isinstance(b, np.ndarray):
            b = getattr(b, "base", None)  # as_strided wraps its base in a DummyArray
        if isinstance(b, np.ndarray):
            held[id(b)] = held.get(id(b), 0) + 1
    # a view tensor made in the trace keeps its base *tensor* alive (``_base``), and that
    # tensor holds its array: expected too, unless something else holds the base tensor
    views_of: dict[int, list] = {}
    for ref in tracer.created:
        base = getattr(ref(), "_base", None)
        if base is not None:
            views_of.setdefault(id(base), [base, 0])[1] += 1
    base = None
    for b, n in views_of.values():
        # references: the views' _base, the views_of entry, the loop variable, the argument
        if sys.getrefcount(b) <= n + 3:
            held[id(b._data)] = held.get(id(b._data), 0) + 1
    del views_of
    out = []
    for arr, v in entries:
        if v.kind != "node" or id(arr) in keep_ids:
            continue
        # references: the `entries` list's tuple, getrefcount's argument, this loop
        # variable, and live views made in the trace
        if sys.getrefcount(arr) > 3 + held.get(id(arr), 0):
            out.append(v)
    return out


def check_escapes(tracer, out_leaves) -> _Transient | None:
    """A ``_Transient`` if tensors computed during the trace are still held by
    someone other than the caller (returned values) or the plan's own write-backs."""
    from . import logs
    keep = {id(t._data) for t in out_leaves}
    for _leaf, value in tracer.grad_writes.values():
        if value is not None:
            keep.add(id(value._data))
    for t, _ in tracer.bound:
        keep.add(id(t._data))
    for cap in tracer.captures:
        t = cap.tensor()
        if t is not None:
            keep.add(id(t._data))
    for tensor, _ in tracer.mutated_tensors():
        keep.add(id(tensor._data))
    escaped = _escaped(tracer, keep)
    if escaped:
        # garbage in a reference cycle (an exception's traceback holding the frame of an
        # op that computed the array) holds arrays too; the collector is paused while a
        # compile runs (gc_pause), so collect before taking them for escapes
        gc.collect()
        escaped = _escaped(tracer, keep)
    if not escaped:
        return None
    what = ("the call created tensors that outlive it (" +
            ", ".join(f"%{v.name}" for v in escaped[:3]) + "), e.g. optimizer state on the "
            "first step")
    logs.log("recompiles", f"{tracer.graph.name}: ran eagerly, will retrace: {what}")
    return _Transient(what)


def first_step_pending(cf) -> bool:
    """Whether ``cf``'s next traced step would be its very first (``_first_step``)."""
    return not (getattr(cf, "_first_step_seen", False) or cf._traced)


def first_step_transient(cf, tracer) -> _Transient:
    """Mark ``cf``'s first step seen and say, on ``recompiles``, that it ran eagerly."""
    from . import logs
    cf._first_step_seen = True
    what = "the first step ran while .grad was None (its plan would serve only that call)"
    logs.log("recompiles", f"{tracer.graph.name}: ran eagerly, will retrace: {what}")
    return _Transient(what)


def _first_step(cf, tracer) -> _Transient | None:
    """The very first traced step of a function, run while ``.grad`` was still None:
    its plan would be guarded on those missing gradients and serve only this call
    (the next call finds the gradients it made), costing a whole compile and an
    arena that stays allocated. Run it eagerly once instead (the trace already
    computed its results) and trace the steady-state step on the next call. Only
    once per function: a loop that clears ``.grad`` before every call gets its
    grads-None plan on the second call. (Usually the trace has stopped at its
    ``backward()`` already: ``Tracer.stop_if_first_step``.)"""
    if not first_step_pending(cf):
        return None
    if not any(was_none for _, was_none in tracer.grad_was_none.values()):
        cf._first_step_seen = True
        return None
    return first_step_transient(cf, tracer)


def build_step_entry(cf, tracer, result, out_leaves, out_spec, leaves, params, input_map):
    """Turn a trace in which ``backward()`` ran into a ``StepEntry`` (or a
    ``_Transient`` when the step created state that later calls will find)."""
    from .api import _symbolic_inputs, graph_input_map, scalar_sources
    from .guards import grad_presence_guards, unique_guards
    transient = check_escapes(tracer, out_leaves) or _first_step(cf, tracer)
    if transient is not None:
        return result, transient, None
    live, writebacks = tracer.finish(out_leaves)
    live, slot_guards = tracer.dynamic_grads(live)
    graph = tracer.graph
    if tracer.backward_start is not None:
        # the nodes backward() recorded: the plan's steps that compute them are the
        # step's backward, and what lives across that point is saved for it
        for n in graph.nodes[tracer.backward_start:]:
            n.meta["step_backward"] = True
    outs = list(graph.outputs)
    grad_writes = []
    for leaf, value in tracer.grad_writes.values():
        if value is None:
            grad_writes.append((leaf, None))
            continue
        v = tracer.value_of(value)
        if v.kind != "node":
            v = graph.add_node("clone", [v])
        grad_writes.append((leaf, len(outs)))
        outs.append(v)
    # .grad tensors accumulated in place were written back through `writebacks`
    graph.set_outputs(outs)
    input_map = graph_input_map(tracer, leaves, params, live)
    import weakref
    guards = [(weakref.ref(leaf), was_none) for leaf, was_none in tracer.grad_was_none.values()]
    guards += [g for g in slot_guards if all(g[0]() is not h[0]() for h in guards)]
    traced_text = str(graph)
    scalars = scalar_sources(tracer)
    guards = unique_guards(tracer.guards + grad_presence_guards(guards))

    def make_entry(g):
        e = StepEntry(g, cf._build(g), out_spec, len(out_leaves), live, writebacks, input_map,
                      scalars, grad_writes, guards)
        e.traced_text = traced_text
        return e

    symbolic = _symbolic_inputs(tracer)
    if not symbolic:
        return result, make_entry(graph), None
    # dynamic sizes (a last smaller batch): plans built from instantiations of the graph
    from .dynamic import DynamicEntry, instantiate
    env = tracer.shape_env
    first = make_entry(instantiate(graph, symbolic, env.hints))
    entry = DynamicEntry(graph, env, symbolic, make_entry, first, out_spec, len(out_leaves),
                         live, writebacks, input_map)
    entry.scalars, entry.guards, entry.traced_text = scalars, guards, traced_text
    return result, entry, None
