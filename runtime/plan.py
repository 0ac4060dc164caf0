"""``Plan`` (ordered steps, buffers with arena offsets) and its ``Executor``.

A plan is built from a graph and its fusion groups by ``runtime.lower``. At
run time an environment (one slot per graph value) is filled with the graph
inputs, the constants, the prebuilt arena views of planned intermediates, and
fresh output arrays from the caching allocator; then each step runs.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ir.passes.memory import MemoryPlan

from . import allocator as _alloc
from .allocator import default_allocator


@dataclass(eq=False)
class Step:
    """One thing the executor does: a generated kernel, a BLAS call, a view or a
    library (NumPy) op. ``run(env)`` reads and writes value slots."""

    kind: str  # "kernel" | "matmul" | "view" | "library"
    name: str
    run: Callable[[list], None]
    inputs: list[int] = field(default_factory=list)  # slots read
    outputs: list[int] = field(default_factory=list)  # slots written
    nodes: list = field(default_factory=list)  # the graph nodes it computes
    kernel: object = None  # CompiledKernel for kind == "kernel"
    spec: object = None
    inplace: dict = field(default_factory=dict)  # output slot -> input slot it overwrites
    bytes_moved: int = 0
    # a library step that writes into its output's buffer (planned in the arena, or the
    # call's fresh output) rather than returning a new array
    into: bool = False

    def __repr__(self) -> str:
        return f"Step({self.kind} {self.name})"


@dataclass(eq=False)
class Buffer:
    """An intermediate (planned: lives in the arena) or output (fresh) array."""

    slot: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int
    planned: bool
    offset: int = -1


@dataclass(eq=False)
class Plan:
    steps: list[Step]
    buffers: list[Buffer]
    n_slots: int
    input_slots: list[int]
    const_slots: list[tuple[int, np.ndarray]]
    output_slots: list[int]
    copy_outputs: list[bool]
    memory: MemoryPlan
    arena_bytes: int
    unplanned_bytes: int
    slot_names: list[str]
    arena: np.ndarray | None = None  # the block this plan ran on last (None: none yet)
    _planned_views: list = field(default_factory=list)
    # the steps a call runs: all but the views computed with the planned buffers' (views
    # of arena buffers and constants, the same arrays on every call of this block)
    _run_steps: list | None = None
    # keep the arena's pages between calls: True always, False never, None (default)
    # when it is smaller than ``runtime.allocator.ARENA_RELEASE_BYTES`` or faulting it
    # back in would cost more than ``RELEASE_COST_SHARE`` of a call
    keep_arena: bool | None = None
    # seconds: this plan's fastest call so far, the first not counted (it loads and binds
    # the kernels, and its time would only decide to keep an arena it then measured)
    fastest_call: float | None = None
    calls: int = 0
    # seconds: the least this plan's block took to fault back in after a release (None:
    # not seen yet); weighed instead of ``refault_seconds``'s probe once known
    fault_seconds: float | None = None
    _block: object = None  # the runtime.allocator.Arena behind ``arena``
    # called once, with the first call's (inputs, out_into), before that call runs
    # (``runtime.lower``: find and compile the loop variants the kernels will use)
    before_first_run: Callable | None = None

    @property
    def planned_bytes(self) -> int:
        return self.arena_bytes

    @property
    def num_kernels(self) -> int:
        return sum(1 for s in self.steps if s.kind == "kernel")

    def kernels(self) -> list:
        return [s.kernel for s in self.steps if s.kind == "kernel"]

    def can_write_output_into_input(self, k: int, j: int) -> bool:
        """May graph output ``k`` be computed straight into graph input ``j``'s array
        (an in-place update such as ``param -= lr * grad``) instead of a fresh buffer
        that is copied back afterwards? Yes when the output is a fresh buffer written
        by one elementwise kernel, every other reader of the input (or of a view of it)
        runs before that kernel, and the kernel reads the input, if at all, exactly
        (same shape, no view), so element i is read before element i is written."""
        out_slot = self.output_slots[k]
        in_slot = self.input_slots[j]
        idx = self._index()
        if self.copy_outputs[k] or idx["out_count"].get(out_slot, 0) != 1 \
                or in_slot in idx["out_count"]:
            return False
        buf = idx["buffer"].get(out_slot)
        if buf is None or buf.planned:
            return False
        writers = idx["writers"].get(out_slot, ())
        if len(writers) != 1:
            return False
        w = writers[0]
        wstep = self.steps[w]
        if wstep.kind != "kernel" or getattr(wstep.spec, "kind", None) != "elementwise":
            return False
        aliases = {in_slot}
        todo = [in_slot]
        while todo:  # views of views are views too
            for v in idx["viewed_by"].get(todo.pop(), ()):
                if v not in aliases:
                    aliases.add(v)
                    todo.append(v)
        for a in aliases:
            for i in idx["readers"].get(a, ()):
                if i > w or (i == w and a != in_slot):
                    return False
        return True

    def _index(self) -> dict:
        """Who writes, reads and views each slot (built once: ``can_write_output_into_input``
        asks for every write-back of a plan)."""
        idx = self.__dict__.get("_slot_index")
        if idx is None:
            writers: dict[int, list[int]] = {}
            readers: dict[int, list[int]] = {}
            for i, st in enumerate(self.steps):
                for x in st.outputs:
                    writers.setdefault(x, []).append(i)
                for x in dict.fromkeys(st.inputs):
                    readers.setdefault(x, []).append(i)
            viewed_by: dict[int, list[int]] = {}  # slot -> slots of views taken of it
            for st in self.steps:
                if st.kind == "view":
                    for x in dict.fromkeys(st.inputs):
                        viewed_by.setdefault(x, []).extend(st.outputs)
            out_count: dict[int, int] = {}
            for s in self.output_slots:
                out_count[s] = out_count.get(s, 0) + 1
            idx = self.__dict__["_slot_index"] = {
                "writers": writers, "readers": readers, "out_count": out_count,
                "buffer": {b.slot: b for b in reversed(self.buffers)},
                "viewed_by": viewed_by}
        return idx

    def materialize(self, pool=None) -> None:
        """Take an arena block from the shared pool (the one this plan had last time
        when it is free), fault it in here if it is fresh or was released
        (``Arena.fault_in``), and, for a new block, build every planned buffer's view."""
        if not self.arena_bytes:  # no intermediates (or only empty ones): no block
            if self.arena is None:
                self._build_views(np.empty(1, np.uint8))
            return
        pool = pool or _alloc.default_arena_pool
        block = pool.take(self.arena_bytes, prefer=self._block)
        t0 = time.perf_counter()
        if block.fault_in() and block is self._block:
            took = time.perf_counter() - t0
            if self.fault_seconds is None or took < self.fault_seconds:
                self.fault_seconds = took
        if block is self._block and self._planned_views:
            return
        self._block = block
        self._build_views(block.array)

    def _build_views(self, arena: np.ndarray) -> None:
        self.arena = arena
        views = []
        for b in self.buffers:
            if b.planned:
                raw = self.arena[b.offset:b.offset + b.nbytes]
                views.append((b.slot, raw.view(b.dtype).reshape(b.shape)))
        # view steps over those and constants give the same arrays on every call: made
        # here once, a call skips them (GPT's step ran ~120 of them, ~2 us each)
        env: list = [None] * self.n_slots
        for s, a in views + list(self.const_slots):
            env[s] = a
        skip = set()
        for i, st in enumerate(self.steps):
            if st.kind != "view" or not getattr(st.run, "cache", False) or \
                    any(env[s] is None for s in st.inputs):
                continue
            st.run(env)
            out = env[st.outputs[0]]
            if isinstance(out, np.ndarray) and any(np.may_share_memory(out, env[s])
                                                   for s in st.inputs):
                views.append((st.outputs[0], out))
                skip.add(i)
            else:
                env[st.outputs[0]] = None   # a copy: made on each call
        self._planned_views = views
        self._run_steps = [st for i, st in enumerate(self.steps) if i not in skip]

    @property
    def releases_arena(self) -> bool:
        """Do this plan's arena pages go back to the OS after each call? (By default
        not before a call after the first has been timed.)"""
        if self.keep_arena is None:
            if self.arena_bytes < _alloc.ARENA_RELEASE_BYTES or self.fastest_call is None:
                return False
            refault = self.fault_seconds if self.fault_seconds is not None else \
                _alloc.refault_seconds(self.arena_bytes)
            return refault <= _alloc.RELEASE_COST_SHARE * self.fastest_call
        return not self.keep_arena

    def give_back(self, pool=None, seconds: float | None = None) -> None:
        """After a call (that took ``seconds``): the block returns to the pool (its
        pages to the OS when ``releases_arena``); the plan keeps its views for the
        next call."""
        if seconds is not None:
            self.calls += 1
            if self.calls > 1 and (self.fastest_call is None or seconds < self.fastest_call):
                self.fastest_call = seconds
        if self._block is not None:
            (pool or _alloc.default_arena_pool).give(self._block, self.releases_arena)

    def drop_arena(self, pool=None) -> None:
        """Let go of the arena (an entry not used lately): the block's pages go back to
        the OS and the next call takes a block again."""
        block, self._block = self._block, None
        self.arena = None
        self._planned_views = []
        self._run_steps = None
        if block is not None:
            (pool or _alloc.default_arena_pool).discard(block)

    def __str__(self) -> str:
        lines = [f"plan: {len(self.steps)} steps ({self.num_kernels} kernels), arena "
                 f"{self.arena_bytes} bytes (unplanned {self.unplanned_bytes} bytes)"]
        for i, s in enumerate(self.steps):
            outs = ", ".join("%" + self.slot_names[o] for o in s.outputs)
            ins = ", ".join("%" + self.slot_names[o] for o in s.inputs)
            extra = ""
            if s.inplace:
                extra = "  (in place: " + ", ".join(
                    f"%{self.slot_names[o]} over %{self.slot_names[i]}"
                    for o, i in s.inplace.items()) + ")"
            lines.append(f"  {i:>3} {s.kind:<8} {outs} <- {ins}: {s.name}{extra}")
        for b in self.buffers:
            where = f"arena[{b.offset}:{b.offset + b.nbytes}]" if b.planned else "fresh"
            lines.append(f"      %{b.name}: {b.dtype}{list(b.shape)} {where}")
        return "\n".join(lines)


class Executor:
    """Runs a plan; with ``profile=True`` records time, bytes moved and GB/s per step."""

    def __init__(self, plan: Plan, allocator=None, profile: bool = False) -> None:
        self.plan = plan
        self.allocator = allocator or default_allocator
        self.profile = profile
        self.records: list[dict] = []
        self._fresh = [(b.slot, b.shape, b.dtype) for b in plan.buffers if not b.planned]

    def __call__(self, inputs: list[np.ndarray], out_into: dict | None = None
                 ) -> list[np.ndarray]:
        """Run the plan. ``out_into`` maps output index -> an array to compute that
        output into (see ``Plan.can_write_output_into_input``). The plan holds an arena
        block from the shared pool for the length of the call."""
        plan = self.plan
        hook = plan.before_first_run
        if hook is not None:
            plan.before_first_run = None
            hook(inputs, out_into)
        plan.materialize()
        t0 = time.perf_counter()
        try:
            return self._run(plan, inputs, out_into)
        finally:
            plan.give_back(seconds=time.perf_counter() - t0)

    def _run(self, plan: Plan, inputs: list[np.ndarray], out_into: dict | None
             ) -> list[np.ndarray]:
        env: list = [None] * plan.n_slots
        for s, a in zip(plan.input_slots, inputs):
            env[s] = a
        for s, a in plan.const_slots:
            env[s] = a
        for s, a in plan._planned_views:
            env[s] = a
        empty = self.allocator.empty
        if out_into:
            into = {plan.output_slots[k]: a for k, a in out_into.items()}
            for s, shape, dtype in self._fresh:
                env[s] = into[s] if s in into else empty(shape, dtype)
        else:
            for s, shape, dtype in self._fresh:
                env[s] = empty(shape, dtype)
        if self.profile:
            for step in plan.steps:
                t0 = time.perf_counter()
                step.run(env)
                dt_ = time.perf_counter() - t0
                self.records.append({"step": step.name, "kind": step.kind, "seconds": dt_,
                                     "bytes": step.bytes_moved,
                                     "GB/s": step.bytes_moved / dt_ / 1e9 if dt_ > 0 else 0.0})
        else:
            for step in plan._run_steps or plan.steps:
                step.run(env)
        outs = []
        for s, copy in zip(plan.output_slots, plan.copy_outputs):
            a = env[s]
            if copy:
                fresh = self.allocator.empty(a.shape, a.dtype)
                np.copyto(fresh, a)
                a = fresh
            outs.append(a)
        return outs

    def profile_table(self) -> str:
        """Aggregate the recorded profile per step name."""
        agg: dict[str, list] = {}
        for r in self.records:
            a = agg.setdefault(r["step"], [r["kind"], 0, 0.0, r["bytes"]])
            a[1] += 1
            a[2] += r["seconds"]
        lines = [f"{'step':<48} {'kind':<8} {'calls':>5} {'ms/call':>9} {'MB':>8} {'GB/s':>7}"]
        for name, (kind, n, secs, nbytes) in agg.items():
            per = secs / n
            gbs = nbytes / per / 1e9 if per > 0 else 0.0
            lines.append(f"{name[:48]:<48} {kind:<8} {n:>5} {per * 1e3:>9.3f} "
                         f"{nbytes / 1e6:>8.2f} {gbs:>7.1f}")
        return "\n".join(lines)
