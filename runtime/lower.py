"""Lowering: fusion groups -> kernel specs -> plan steps, then memory planning.

``compile_graph(graph)`` runs the whole back end: decompose, clean up, fuse,
lower each group (a group whose kernel cannot be generated is split into
single nodes, and a node without a kernel runs its NumPy implementation), pair
independent matmul steps of CPU plans (``matmul_pairs``), compute live ranges,
choose in-place reuse, place intermediates in the arena, and check the placement.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ir.graph import Graph
from ir.passes import simplify
from ir.passes.fusion import Fusion, Group, decompose, fuse, order_groups, split
from ir.passes.fusion import finish as finish_groups
from ir.passes.memory import BufferReq, check_plan, plan_memory
from ir.registry import REGISTRY

from .logs import log, stage
from .matmul_pairs import pair_matmuls
from .plan import Buffer, Plan, Step
from .specs import RowStoreConflict, lower_elementwise, lower_rows
from .steps import (RECORDING, kernel_step, mark_stable, matmul_step, node_step,
                    pool_pair_step, pool_pairs)

def _log(channel: str, msg: str) -> None:
    # one GCOMPILE_LOG parser for runtime and compiler (runtime must not import gcompile)
    log(channel, msg)


_KERNEL_FACTORY = None


def get_compile_kernel():
    """C2's ``kernels.cpu.compile_kernel``, or the NumPy reference when it is missing
    (or when ``GCOMPILE_KERNELS=reference``)."""
    global _KERNEL_FACTORY
    if _KERNEL_FACTORY is None:
        from .reference import ReferenceKernel
        if os.environ.get("GCOMPILE_KERNELS", "") == "reference":
            _KERNEL_FACTORY = ReferenceKernel
        else:
            try:
                from kernels.cpu import compile_kernel
                _KERNEL_FACTORY = compile_kernel
            except ImportError:
                _KERNEL_FACTORY = ReferenceKernel
    return _KERNEL_FACTORY




def _prefetch(factory, graph: Graph, plan: Plan) -> None:
    """Compile the plan's new kernels in parallel (``kernels.cpu.prefetch``) rather than
    one after another on the plan's first run. Which loop variant each kernel runs
    depends on its operands' layouts (broadcasts, in-place reuse, outputs computed
    straight into an input), so right before the plan's first call it is run once on
    copies of that call's inputs, laid out and aliased as they are, with its kernels
    only recording the variant they will use (``_dry_run``)."""
    kernels = [s.kernel for s in plan.steps if s.kind == "kernel"]
    if not kernels or factory is not _KERNEL_FACTORY:
        return
    try:
        from kernels.cpu import compile_kernel, compile_workers, needs_compile
    except ImportError:
        return
    if factory is not compile_kernel or compile_workers() < 1 or not needs_compile(kernels):
        return
    # a plan with impure ops other than checks (collectives) must not run an extra time:
    # other processes would have to take part; main variants are compiled instead
    impure = any(n.op != "check" and (getattr(REGISTRY.get(n.op), "extra", None) or {}
                                      ).get("impure") for n in graph.nodes)
    if impure:
        _compile_ahead(kernels, [])
        return

    def first_run(inputs: list, out_into: dict | None) -> None:
        try:
            if needs_compile(kernels):  # not already done by a plan sharing these kernels
                _compile_ahead(kernels, _dry_run(plan, inputs, out_into))
        except Exception as e:  # noqa: BLE001 - the kernels compile on first use instead
            _log("kernels", f"compiling ahead failed ({type(e).__name__}: {e}); kernels "
                 "compile on first use")

    plan.before_first_run = first_run


def _compile_ahead(kernels: list, work: list) -> None:
    from kernels.cpu import prefetch
    seen = {id(k) for k, _ in work}
    work += [k for k in kernels if id(k) not in seen]  # steps the dry run did not reach
    n = prefetch(work)
    if n:
        _log("kernels", f"compiled {n} kernels in parallel")


def _copy_like(a):
    """A copy of array ``a`` with its strides (so a kernel sees the same layout)."""
    if not isinstance(a, np.ndarray):
        return a
    if a.flags.c_contiguous or a.size <= 1:
        return np.array(a, copy=True, order="C")
    if a.flags.f_contiguous:
        return np.array(a, copy=True, order="F")
    isz = a.itemsize
    if any(s % isz for s in a.strides):
        return np.array(a, copy=True)
    lo = sum(min(0, (n - 1) * s) for n, s in zip(a.shape, a.strides)) // isz
    hi = sum(max(0, (n - 1) * s) for n, s in zip(a.shape, a.strides)) // isz
    base = np.zeros(hi - lo + 1, a.dtype)
    out = np.lib.stride_tricks.as_strided(base[-lo:], a.shape, a.strides, writeable=True)
    np.copyto(out, a)
    return out


def _dry_run(plan: Plan, inputs: list, out_into: dict | None) -> list:
    """(kernel, variant) for each kernel step of ``plan`` run on copies of ``inputs``
    (and of the arrays of ``out_into``, an input's copy where the call computes an
    output into that input); non-kernel steps run for real on the copies so that views
    and in-place reuse lay out operands as on the real call. Stops quietly where a step
    fails on the zeros the skipped kernels leave."""
    from .plan import Executor
    try:
        copies = [_copy_like(a) for a in inputs]
        into = None
        if out_into:
            into = {}
            for k, a in out_into.items():
                j = next((j for j, b in enumerate(inputs) if b is a), None)
                into[k] = copies[j] if j is not None else _copy_like(a)
    except (AttributeError, TypeError, ValueError, MemoryError):
        return []
    from kernels.cpu import dry_run
    rec: list = []
    RECORDING.variants = rec
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings(), dry_run():
            warnings.simplefilter("ignore")
            Executor(plan)(copies, into)
    except Exception:  # noqa: BLE001 - the variants seen so far are still worth compiling
        pass
    finally:
        RECORDING.variants = None
    return rec


def set_kernel_factory(factory) -> None:
    """Override how specs become kernels (tests use the NumPy reference)."""
    global _KERNEL_FACTORY
    _KERNEL_FACTORY = factory


@dataclass
class Compiled:
    graph: Graph
    fusion: Fusion
    plan: Plan
    log: list[str] = field(default_factory=list)


def _evict_rows(g: Group, err: RowStoreConflict) -> list[Group] | None:
    """Split rows group ``g`` into itself minus the nodes computing ``err.values`` (with
    their in-group users, and the row-level math only those need) and one elementwise
    group over the row shape holding what was moved (a LayerNorm forward keeps its one
    kernel and stores ``rstd``; ``rstd**3 / n`` for its backward runs after it).
    None when what would move is not all row-level math of one shape."""
    members = {id(n) for n in g.nodes}
    ev: set[int] = set()
    stack = [v.producer for v in err.values]
    while stack:
        n = stack.pop()
        if id(n) in ev:
            continue
        ev.add(id(n))
        stack += [u for u in n.out.users if id(u) in members]
    changed = True
    while changed:  # row math feeding only moved nodes moves too
        changed = False
        for n in g.nodes:
            if id(n) in ev or g.role[id(n)] != "row":
                continue
            us = n.out.users
            if us and all(id(u) in ev for u in us):
                ev.add(id(n))
                changed = True
    moved = [n for n in g.nodes if id(n) in ev]
    if not moved or len(moved) == len(g.nodes) or \
            any(g.role[id(n)] != "row" for n in moved) or \
            len({n.out.shape for n in moved}) != 1:
        return None
    rest = Group(g.id, "rows", [n for n in g.nodes if id(n) not in ev], g.shape, g.dims,
                 {id(n): g.role[id(n)] for n in g.nodes if id(n) not in ev})
    out = Group(g.id, "elementwise", moved, moved[0].out.shape, (),
                {id(n): "elem" for n in moved})
    return [rest, out]


def _merge_into_consumer(parts: list[Group], queue: list[Group]) -> Group | None:
    """Fold the moved row math (``parts[1]``) into the one later elementwise group of the
    same shape that reads all of it (an optimizer update reading a bias gradient times
    ``1 - beta``), so moving it costs no kernel. No cycle can form: nothing else reads
    the moved nodes, and they read only groups that run before that consumer."""
    moved = parts[1]
    ids = {id(n) for n in moved.nodes}
    users = {id(u) for n in moved.nodes for u in n.out.users if id(u) not in ids}
    if not users:
        return None
    for c in queue:
        cids = {id(n) for n in c.nodes}
        if users <= cids:
            if c.kind == "elementwise" and c.shape == moved.shape:
                c.nodes = moved.nodes + c.nodes  # they read nothing of c: first is in order
                for n in moved.nodes:
                    c.role[id(n)] = "elem"
                del parts[1]
                return c
            return None
    return None


def compile_graph(graph: Graph, *, check: bool = True, make_kernel=None,
                  keep_whole: bool = True) -> Compiled:
    """Optimise and lower ``graph`` (modified in place) into an executable plan;
    ``make_kernel`` (spec -> kernel) defaults to the generated-kernel factory;
    ``keep_whole`` (``ir.passes.fusion.decompose``): ops with CPU kernels of their own
    stay whole. The stages run in this order, each printed on ``GCOMPILE_LOG=stages``."""
    make_kernel = make_kernel or get_compile_kernel()
    with stage("passes (decompose, simplify)", lambda: f"{len(graph.nodes)} nodes"):
        decompose(graph, keep_whole=keep_whole)
        simplify(graph)
        graph.toposort()
    with stage("fusion", lambda: str(fusion)):
        fusion = fuse(graph)
    slot = {}
    names = []
    for v in graph.all_values():
        slot[id(v)] = len(names)
        names.append(v.name)
    with stage("lower", lambda: _describe_steps(steps)):
        steps = _lower_groups(graph, fusion, make_kernel, slot, pairs=keep_whole)
        if keep_whole:
            steps = pair_matmuls(steps)
    with stage("memory plan", lambda: plan.memory.summary()):
        plan = _plan_memory(graph, steps, slot, names)
        mark_stable(plan)
        if check:
            check_plan(plan.memory, plan._reqs)
    with stage("executable", lambda: f"{plan.num_kernels} kernels ready"):
        _prefetch(make_kernel, graph, plan)
    _log("memory", str(plan.memory.summary()) + f"\nunplanned (op-by-op) intermediates: "
         f"{plan.unplanned_bytes} bytes")
    return Compiled(graph, fusion, plan)


def _describe_steps(steps: list[Step]) -> str:
    kinds: dict[str, int] = {}
    for s in steps:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    return f"{len(steps)} steps: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))


def _lower_groups(graph: Graph, fusion: Fusion, make_kernel, slot: dict,
                  pairs: bool = True) -> list[Step]:
    """One plan step per fusion group, in order: a generated kernel (a group that cannot
    be one kernel moves values out or splits and is tried again; a lone node without a
    kernel runs its NumPy implementation), a BLAS matmul, a view or a library op.
    ``fusion.groups`` ends up as the groups that became steps. With ``pairs`` (CPU
    plans, whose ops stay whole), max pooling's indices and the gather of its values
    are one step (``pool_pair_step``)."""
    steps: list[Step] = []
    groups = list(fusion.groups)
    final_groups: list[Group] = []
    kernels_made = 0
    # max pooling's indices and the gather of its values: one step (``pool_pair_step``)
    pairs = pool_pairs(g.nodes[0] for g in groups if g.kind == "library") if pairs else {}
    paired = {id(m) for m in pairs.values()}
    while groups:
        g = groups.pop(0)
        if g.kind == "library" and id(g.nodes[0]) in paired:
            final_groups.append(g)   # computed by its indices' step
            continue
        if g.kind == "library" and id(g.nodes[0]) in pairs:
            steps.append(pool_pair_step(g.nodes[0], pairs[id(g.nodes[0])], slot))
            final_groups.append(g)
            continue
        if g.kind in ("elementwise", "rows"):
            try:
                low = lower_elementwise(g) if g.kind == "elementwise" else lower_rows(g)
                kernel = make_kernel(low.spec)
            except Exception as e:  # noqa: BLE001 - any failure: split and retry smaller
                parts = _evict_rows(g, e) if isinstance(e, RowStoreConflict) else None
                if parts is not None:
                    ops = ", ".join(n.op for n in parts[1].nodes)
                    into = _merge_into_consumer(parts, groups)
                    # only these groups' members changed: the moved nodes read nothing
                    # of later groups, and their producers' values were outputs already
                    finish_groups(graph, parts + ([into] if into is not None else []))
                    _log("kernels", f"moved {ops} out of {g.describe()} ({e}) into "
                         + (into.describe() if into is not None else "a kernel of its own"))
                    groups = parts + groups
                    continue
                if len(g.nodes) > 1:
                    parts = split(g)
                    finish_groups(graph, parts)
                    _log("kernels", f"split {g.describe()}: {e}")
                    for m in g.nodes:
                        fusion.reasons[m.out.name] = f"its group could not be lowered: {e}"
                    groups = parts + groups
                    continue
                n = g.nodes[0]
                _log("kernels", f"no kernel for %{n.out.name} = {n.op}: {e}")
                fusion.reasons[n.out.name] = f"no kernel ({e}): runs its NumPy implementation"
                g.kind = "library"
                steps.append(node_step(n, slot, "library"))
                final_groups.append(g)
                continue
            kernels_made += 1
            step = kernel_step(low, kernel, slot, g, g.describe())
            _log("kernels", f"kernel {kernels_made}: {g.describe()}\n"
                 + str(getattr(kernel, "source", "")))
            steps.append(step)
        elif g.kind == "matmul":
            steps.append(matmul_step(g.nodes[0], slot))
        else:
            # a view op fusion leaves alone (select_block) is still a view: over arena
            # buffers it is made once, when the plan takes its arena
            view = g.kind == "view" or REGISTRY[g.nodes[0].op].category == "view"
            steps.append(node_step(g.nodes[0], slot, "view" if view else "library"))
        final_groups.append(g)
    fusion.groups = order_groups(final_groups)
    return steps


def _plan_memory(graph: Graph, steps: list[Step], slot: dict, names: list[str]) -> Plan:
    by_slot = {slot[id(v)]: v for v in graph.all_values()}
    out_slots = [slot[id(o)] for o in graph.outputs]
    out_set = set(out_slots)
    buffer_slots: list[int] = []
    def_step: dict[int, int] = {}
    roots: dict[int, frozenset] = {}
    for i, s in enumerate(steps):
        for o in s.outputs:
            def_step[o] = i
            if s.kind in ("kernel", "matmul") or s.into:
                roots[o] = frozenset([o])
                buffer_slots.append(o)
            else:
                r: set = set()
                for a in s.inputs:
                    r |= roots.get(a, frozenset())
                roots[o] = frozenset(r)
    n_steps = len(steps)
    last: dict[int, int] = {b: def_step[b] for b in buffer_slots}
    for i, s in enumerate(steps):
        for a in s.inputs:
            for b in roots.get(a, ()):
                last[b] = max(last[b], i)
    copy_outputs = []
    for o in out_slots:
        rs = roots.get(o, frozenset())
        planned_root = any(b not in out_set for b in rs)
        is_const = by_slot[o].kind == "const"
        copy_outputs.append(planned_root or is_const)
        for b in rs:
            last[b] = n_steps  # read by the final output copy
    planned = [b for b in buffer_slots if b not in out_set]
    # in-place: a kernel output may overwrite a dead, same-size planned input
    inplace_src: dict[int, int] = {}
    used_src: set[int] = set()
    for i, s in enumerate(steps):
        if s.kind != "kernel":
            continue
        rows = s.spec is not None and s.spec.kind == "rows"
        for oi, o in enumerate(s.outputs):
            if o in out_set:
                continue
            if rows and s.spec.outputs[oi][1] != "full":
                # a row result is stored when its reduce loop ends, while later loops
                # of the same row may still read the input it would overwrite
                continue
            ov = by_slot[o]
            for a in s.inputs:
                av = by_slot[a]
                if a not in planned or a in used_src or last.get(a) != i:
                    continue
                if av.shape != ov.shape or av.dtype is not ov.dtype:
                    continue
                if any(a in roots.get(x, ()) for x in s.inputs if x != a):
                    continue  # also read through a view: overwriting would corrupt it
                if s.spec is not None and s.spec.kind == "rows" and ov.shape != av.shape:
                    continue
                inplace_src[o] = a
                used_src.add(a)
                s.inplace[o] = a
                break
    reqs = []
    for b in planned:
        v = by_slot[b]
        reqs.append(BufferReq(names[b], v.nbytes, def_step[b], last[b],
                              names[inplace_src[b]] if b in inplace_src else None))
    mem = plan_memory(reqs)
    buffers = []
    for b in buffer_slots:
        v = by_slot[b]
        is_planned = b not in out_set
        buffers.append(Buffer(b, v.name, v.shape, v.dtype.np, v.nbytes, is_planned,
                              mem.offsets[names[b]] if is_planned else -1))
    unplanned = sum(n.out.nbytes for n in graph.nodes
                    if REGISTRY[n.op].category != "view" and slot[id(n.out)] not in out_set)
    plan = Plan(steps, buffers, len(names), [slot[id(v)] for v in graph.inputs],
                [(slot[id(c)], c.data) for c in graph.constants], out_slots, copy_outputs,
                mem, mem.arena_bytes, unplanned, names)
    plan._reqs = reqs
    return plan
