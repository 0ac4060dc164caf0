"""Memory planning: live ranges, in-place reuse, best-fit arena placement, and a checker.

The planner works on abstract buffer requests so it can be tested on its own:
each ``BufferReq`` is born at step ``start`` and last read at step ``end``.
``inplace_of`` names a buffer that dies at this buffer's defining step and has
the same size: the two then share one storage (the kernel writes over its own
dead input, which elementwise and rows kernels allow element by element).
Storages are placed best-fit: largest first, each at the smallest gap between
already placed storages whose lifetimes overlap it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 64


@dataclass
class BufferReq:
    name: str
    nbytes: int
    start: int
    end: int
    inplace_of: str | None = None


@dataclass
class Storage:
    id: int
    nbytes: int
    start: int
    end: int
    buffers: list[str] = field(default_factory=list)
    offset: int = -1


@dataclass
class MemoryPlan:
    storages: list[Storage]
    offsets: dict[str, int]
    storage_of: dict[str, int]
    arena_bytes: int

    def summary(self) -> str:
        lines = [f"arena {self.arena_bytes} bytes, {len(self.storages)} storages for "
                 f"{len(self.offsets)} buffers"]
        for s in sorted(self.storages, key=lambda s: s.offset):
            lines.append(f"  [{s.offset:>10}, {s.offset + s.nbytes:>10}) steps {s.start}..{s.end}"
                         f": {', '.join(s.buffers)}")
        return "\n".join(lines)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(reqs: list[BufferReq]) -> MemoryPlan:
    """Group in-place chains into storages, then place storages best-fit."""
    by_name = {r.name: r for r in reqs}
    storage_of: dict[str, int] = {}
    storages: list[Storage] = []
    for r in sorted(reqs, key=lambda r: (r.start, r.name)):
        src = r.inplace_of
        if src is not None and src in storage_of:
            s = storages[storage_of[src]]
            if by_name[src].end != r.start or by_name[src].nbytes != r.nbytes or s.end > r.start:
                raise ValueError(f"memory plan: {r.name} cannot reuse {src} in place")
            s.end = max(s.end, r.end)
            s.buffers.append(r.name)
            storage_of[r.name] = s.id
            continue
        s = Storage(len(storages), _align(max(r.nbytes, 1)), r.start, r.end, [r.name])
        storages.append(s)
        storage_of[r.name] = s.id
    placed: list[Storage] = []
    top = 0
    for s in sorted(storages, key=lambda s: (-s.nbytes, s.start)):
        live = sorted((p for p in placed if p.start <= s.end and s.start <= p.end),
                      key=lambda p: p.offset)
        best, best_gap, cursor = None, None, 0
        for p in live:
            gap = p.offset - cursor
            if gap >= s.nbytes and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, p.offset + p.nbytes)
        s.offset = best if best is not None else cursor
        placed.append(s)
        top = max(top, s.offset + s.nbytes)
    offsets = {name: storages[sid].offset for name, sid in storage_of.items()}
    return MemoryPlan(storages, offsets, storage_of, top)


def check_plan(plan: MemoryPlan, reqs: list[BufferReq]) -> None:
    """Prove the plan safe: every buffer lies inside its storage and the arena, and
    no two storages that are live at the same step overlap in memory. Raises
    ``AssertionError``-free ``ValueError`` naming the two buffers otherwise."""
    by_name = {r.name: r for r in reqs}
    for r in reqs:
        s = plan.storages[plan.storage_of[r.name]]
        if not (s.start <= r.start and r.end <= s.end):
            raise ValueError(f"memory plan: {r.name} lives outside its storage's range")
        if r.nbytes > s.nbytes or s.offset < 0 or s.offset + s.nbytes > plan.arena_bytes:
            raise ValueError(f"memory plan: {r.name} does not fit its storage / the arena")
    # simulate step by step: buffers sharing a storage must not be live together
    for s in plan.storages:
        names = s.buffers
        for a, b in zip(names, names[1:]):
            ra, rb = by_name[a], by_name[b]
            if ra.end > rb.start:
                raise ValueError(f"memory plan: {a} (steps {ra.start}..{ra.end}) is still read "
                                 f"after {b} overwrites it at step {rb.start}")
    # storages live at once, checked when the later one starts (the first step both
    # are live): a sweep, not a scan of every storage at every step
    live: list = []
    for s in sorted(plan.storages, key=lambda s: s.start):
        live = [t for t in live if t.end >= s.start]
        for t in live:
            if t.offset < s.offset + s.nbytes and s.offset < t.offset + t.nbytes:
                a, b = (t, s) if (t.offset, t.start) <= (s.offset, s.start) else (s, t)
                raise ValueError(
                    f"memory plan: at step {s.start} storage of {a.buffers} "
                    f"[{a.offset}, {a.offset + a.nbytes}) overlaps storage of {b.buffers} "
                    f"[{b.offset}, {b.offset + b.nbytes})")
        live.append(s)
