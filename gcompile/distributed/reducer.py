"""DistributedDataParallel's gradient reducer: buckets, hooks, overlap.

Parameters are grouped into buckets of about ``bucket_cap_mb`` in reverse
registration order (roughly the order backward produces their gradients). A
hook on each parameter's gradient accumulator copies the parameter's local
gradient into its bucket; when a bucket is full its non-blocking allreduce
starts at once (buckets start in index order, the same on every rank, as MPI
requires), so communication overlaps the rest of backward. When the last
expected gradient arrives, every bucket is waited for and the averaged values
are written into ``.grad``.

Everything goes through registered ops (``allreduce_start`` / ``allreduce_wait``,
cat, narrow, copy_): eagerly they run at once; inside a traced training step the
tracer records them, so the compiled plan issues each allreduce where its
gradients exist and waits where they are used.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

from .._functions import cat
from .._tensor import Tensor, apply_op
from ..autograd.grad_mode import no_grad


class _Bucket:
    def __init__(self, index: int, dtype) -> None:
        self.index = index
        self.dtype = dtype
        self.params: list[int] = []
        self.offsets: list[int] = []
        self.numel = 0
        self.slots: list[Tensor | None] = []
        self.pending = 0
        self.started: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class Reducer:
    """Averages gradients across the process group (see the module docstring)."""

    def __init__(self, params: list[Tensor], bucket_cap_mb: float, find_unused: bool,
                 sync_enabled: Callable[[], bool], pg) -> None:
        self.params = params
        self.pg = pg
        self.find_unused = find_unused
        self.sync_enabled = sync_enabled
        self.bucket_cap_bytes = int(bucket_cap_mb * 1024 * 1024)
        self.buckets = self._build_buckets()
        self.where: dict[int, tuple[_Bucket, int]] = {}
        for b in self.buckets:
            for pos, i in enumerate(b.params):
                self.where[i] = (b, pos)
        self.handles = [p.register_hook(self._hook(i)) for i, p in enumerate(params)]
        for p in params:
            # as in torch, a gradient accumulator runs as soon as its gradient is ready
            # (the engine runs the newest ready node first; accumulators made before the
            # forward would otherwise all wait for the end of backward: no overlap)
            p._grad_accumulator()._seq_nr = sys.maxsize
        self.bytes_per_step = sum(b.nbytes for b in self.buckets)
        self.steps_reduced = 0
        self._reset()

    # ---- buckets ---------------------------------------------------------------------
    def _build_buckets(self) -> list[_Bucket]:
        buckets: list[_Bucket] = []
        open_by_dtype: dict[object, _Bucket] = {}
        for i in reversed(range(len(self.params))):
            p = self.params[i]
            n = p.numel()
            b = open_by_dtype.get(p.dtype)
            if b is None or (b.params and b.nbytes + n * p.dtype.itemsize > self.bucket_cap_bytes):
                b = _Bucket(len(buckets), p.dtype)
                buckets.append(b)
                open_by_dtype[p.dtype] = b
            b.params.append(i)
            b.offsets.append(b.numel)
            b.numel += n
        return buckets

    def bucket_sizes(self) -> list[int]:
        """Bytes per bucket, in launch order."""
        return [b.nbytes for b in self.buckets]

    # ---- per-iteration state -------------------------------------------------------------
    def _reset(self) -> None:
        self.ready = [False] * len(self.params)
        self.remaining = len(self.params)
        self.hooks_fired = 0
        self.next_launch = 0
        self.local_used = [True] * len(self.params)
        for b in self.buckets:
            b.slots = [None] * len(b.params)
            b.pending = len(b.params)
            b.started = None

    def in_progress(self) -> bool:
        """Some gradients of this iteration arrived but not all of them."""
        return self.hooks_fired > 0

    def unready(self) -> list[int]:
        return [i for i, r in enumerate(self.ready) if not r]

    def prepare_for_backward(self, outputs) -> None:
        """find_unused_parameters: parameters the outputs do not reach are ready now
        (they contribute zeros locally; ranks that used them still average theirs)."""
        self._reset()
        if not self.find_unused:
            return
        reached = _reachable_leaves(outputs)
        for i, p in enumerate(self.params):
            if id(p) not in reached:
                self.local_used[i] = False
                self._mark(i, p.grad)

    # ---- hooks ------------------------------------------------------------------------
    def _hook(self, i: int):
        def hook(grad):
            if not self.sync_enabled():
                return None
            return self._on_grad(i, grad)
        return hook

    def _on_grad(self, i: int, grad):
        if self.ready[i]:
            raise RuntimeError(
                "Expected to mark a variable ready only once. This error is caused by one of "
                "the following reasons: 1) Use of a module parameter outside the `forward` "
                "function, or backward run twice through the same iteration; 2) Reused "
                f"parameters in multiple reentrant backward passes. Parameter index {i} was "
                "marked ready twice.")
        self.hooks_fired += 1
        p = self.params[i]
        with no_grad():  # (no .detach(): see sync.broadcast_coalesced)
            if grad is None:
                local = p.grad
            else:
                local = grad if p.grad is None else p.grad + grad
        self._mark(i, local)
        self._progress()
        if self.remaining == 0:
            return self._finalize(i, grad)
        return None

    def _mark(self, i: int, local: Tensor | None) -> None:
        b, pos = self.where[i]
        p = self.params[i]
        with no_grad():
            if local is None:
                local = apply_op("zeros_like", (p,), {"dtype": None})
            b.slots[pos] = local.reshape(-1)
        self.ready[i] = True
        self.remaining -= 1
        b.pending -= 1
        if b.pending == 0:
            self._launch()

    def _launch(self) -> None:
        """Start every full bucket from ``next_launch`` on, in index order."""
        while self.next_launch < len(self.buckets) and self.buckets[self.next_launch].pending == 0:
            b = self.buckets[self.next_launch]
            with no_grad():
                flat = b.slots[0] if len(b.slots) == 1 else cat(b.slots)
                b.started = apply_op("allreduce_start", (flat,), {"op": "avg"})
            b.slots = [None] * len(b.params)
            self.next_launch += 1

    def _progress(self) -> None:
        """Let MPI move started buckets along (MPICH progresses on MPI calls)."""
        if self.pg is None or self.pg.size == 1:
            return
        from ir.ops.collectives import _PENDING
        for b in self.buckets[:self.next_launch]:
            if b.started is not None:
                entry = _PENDING.get(id(b.started._data))
                if entry is not None:
                    self.pg.test_allreduce(entry[1])

    def _finalize(self, last: int, last_grad):
        """Wait for every bucket and write the averaged gradients into ``.grad``;
        returns what the last parameter's accumulator should add."""
        unused_everywhere: set[int] = set()
        if self.find_unused:
            with no_grad():
                mask = Tensor._make(_mask(self.local_used))
                mask = apply_op("allreduce_wait", (apply_op("allreduce_start", (mask,),
                                                             {"op": "max"}),), {"op": "max"})
            unused_everywhere = {i for i, v in enumerate(mask.tolist()) if v == 0}
        replacement = None
        with no_grad():
            for b in self.buckets:
                res = apply_op("allreduce_wait", (b.started,), {"op": "avg"})
                b.started = None
                for pos, i in enumerate(b.params):
                    if i in unused_everywhere:
                        continue
                    p = self.params[i]
                    n = p.numel()
                    avg = res.narrow(0, b.offsets[pos], n).view(tuple(p.shape))
                    if i == last and last_grad is not None:
                        # the accumulator adds what we return right after this hook
                        if p.grad is not None:
                            p.grad.zero_()
                        replacement = avg
                    elif p.grad is None:
                        p.grad = avg.clone()
                    else:
                        p.grad.copy_(avg)
        self.steps_reduced += 1
        self._reset()
        return replacement

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _mask(flags: list[bool]):
    import numpy as np
    return np.asarray([1.0 if f else 0.0 for f in flags], np.float32)


def _reachable_leaves(outputs) -> set[int]:
    """ids of the leaf tensors whose gradient accumulators the outputs' graph reaches."""
    roots = []
    stack = [outputs]
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            if o.grad_fn is not None:
                roots.append(o.grad_fn)
            elif o.requires_grad:
                roots.append(o._grad_accumulator())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    seen: set[int] = set()
    leaves: set[int] = set()
    while roots:
        n = roots.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        var = getattr(n, "variable", None)
        if var is not None:
            leaves.add(id(var))
        roots.extend(m for m in getattr(n, "_next", ()) if m is not None)
    return leaves
