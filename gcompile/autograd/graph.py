"""The autograd engine: walks grad_fn nodes from the roots in torch's order, runs each
node's gradient and accumulates into leaves' ``.grad``.

The nodes themselves live lower in the eager core (``gcompile._tape``: Node, SavedTensor,
AccumulateGrad; ``gcompile._dispatch``: OpNode and the eager GradBuilder, which run
gradient rules through ``apply_op``); they are re-exported here under their old names.
"""
from __future__ import annotations

import heapq
import itertools
import sys
from collections import defaultdict

import numpy as np

from ir.ops.movement import np_index

from .._dispatch import _LIKE, _NUMBERS, EAGER_BUILDER, EagerBuilder, OpNode  # noqa: F401
from .._state import state
from .._tape import (_FREED_MSG, AccumulateGrad, Meta, Node, SavedTensor,  # noqa: F401
                     _Handle, _seq_counter, _type_name, grad_accumulator)
from .._tensor_base import Tensor


def _collect(roots):
    """Dependency counts of every node reachable from the roots."""
    deps = defaultdict(int)
    seen = set()
    stack = [r for r in roots if r is not None]
    for r in stack:
        seen.add(r)
    while stack:
        n = stack.pop()
        for m in n._next:
            if m is None:
                continue
            deps[m] += 1
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return deps


def _add_grad(pending, node, nr, g):
    k = getattr(node, "num_outputs", 1)
    if k == 1:
        cur = pending.get(node)
        pending[node] = g if cur is None else cur + g
    else:
        lst = pending.get(node) or [None] * k
        lst[nr] = g if lst[nr] is None else lst[nr] + g
        pending[node] = lst


def run_backward(roots, grads, retain_graph: bool, create_graph: bool, capture=None,
                 root_nrs=None):
    """Propagate ``grads`` from ``roots`` (grad_fn nodes or AccumulateGrad).

    With ``capture`` (a dict of nodes), gradients arriving at those nodes are
    returned instead of accumulated into leaves (autograd.grad).
    """
    if state.tracer is not None:
        # whole-step compile: the ops below are traced; .grad writes are recorded
        state.tracer.backward_ran = True
    prev = state.grad_enabled
    state.grad_enabled = create_graph
    try:
        deps = _collect(roots)
        if state.tracer is not None and capture is None:
            state.tracer.stop_if_first_step(deps)
        pending = {}
        root_nrs = root_nrs or [0] * len(roots)
        for r, g, nr in zip(roots, grads, root_nrs):
            _add_grad(pending, r, nr, g)
        # newest node first, like torch's sequence-number order: a heap keyed by the
        # negated sequence number (sorting the ready list before every pop was
        # quadratic in the graph's width); among equal numbers the node made ready last
        # goes first, as the stable sort and pop did, without comparing nodes
        tie = itertools.count(0, -1)
        ready = [(-r._seq_nr, next(tie), r) for r in dict.fromkeys(roots) if deps[r] == 0]
        heapq.heapify(ready)
        results = {}
        owned: set[int] = set()  # pending gradients made here, so written in place
        while ready:
            node = heapq.heappop(ready)[2]
            g = pending.pop(node, None)
            owned.discard(id(g))
            if getattr(node, "num_outputs", 1) > 1 and g is not None and all(
                    x is None for x in g):
                g = None
            for hook in node._pre_hooks:
                new = hook(g)
                if new is not None:
                    g = new
            if node._retain is not None:
                t = node._retain()
                if t is not None and g is not None:
                    gd = g if create_graph else g.detach()
                    t._grad = gd if t._grad is None else t._grad + gd
            if capture is not None and node in capture:
                results[node] = g
                if isinstance(node, AccumulateGrad):
                    continue
            if isinstance(node, AccumulateGrad):
                if capture is None and g is not None:
                    _accumulate(node.variable, g, create_graph)
                continue
            if g is not None and not create_graph and node.__class__ is OpNode and \
                    node.op.name == "getitem" and state.tracer is None and \
                    _slice_grad(node, g, pending, owned):
                in_grads = [None] * len(node._next)  # added to its input's pending gradient
            else:
                in_grads = [None] * len(node._next) if g is None else node.apply(g)
            if not retain_graph:
                node.release()
            nrs = getattr(node, "_next_nr", None)
            for j, (m, gi) in enumerate(zip(node._next, in_grads)):
                if m is None:
                    continue
                if gi is not None:
                    _add_grad(pending, m, nrs[j] if nrs else 0, gi)
                deps[m] -= 1
                if deps[m] == 0:
                    heapq.heappush(ready, (-m._seq_nr, next(tie), m))
            # only ``pending`` holds the gradients now (_unshared counts references)
            in_grads = gi = g = None
        return results
    finally:
        state.grad_enabled = prev


def _slice_grad(node, g, pending, owned: set[int]) -> bool:
    """The gradient of a basic-slicing ``getitem`` (a ``split``/``chunk`` part, ``x[:, i]``)
    added straight into its input's pending gradient: the rule's ``index_put`` of ``g``
    into zeros, then the engine's sum with what arrived before, made one buffer the
    engine owns and adds each slice into (a split into k parts wrote k full zero-filled
    buffers and summed them). The same sums of the same numbers. False (the rule runs)
    for index tensors, another dtype, CUDA or traced-size inputs, or an input node with
    several outputs."""
    m = node._next[0]
    meta = node._meta[0]
    index = node.attrs["index"]
    if m is None or getattr(m, "num_outputs", 1) != 1 or meta.__class__ is not Meta or \
            any(item[0] == "t" for item in index):
        return False
    gd = g._data
    if gd.__class__ is not np.ndarray or gd.dtype != meta._npd:
        return False
    key = np_index(index, ())
    if not any(item[0] == "e" for item in index):
        key += (Ellipsis,)  # a view even where every item is an integer
    cur = pending.get(m)
    if cur is not None and id(cur) in owned:
        buf = cur._data
    elif cur is None:
        buf = np.zeros(meta.shape, meta._npd)
    else:
        c = cur._data
        if c.__class__ is not np.ndarray or c.dtype != meta._npd or c.shape != meta.shape:
            return False
        buf = c.copy()
    view = buf[key]
    if view.shape != gd.shape:
        return False
    np.add(view, gd, out=view)
    if cur is None or id(cur) not in owned:
        t = Tensor._make(buf)
        pending[m] = t
        owned.add(id(t))
    return True


# (references to the gradient tensor, to its array) in _accumulate when nothing else
# holds either, counted once on a gradient known to be unshared (_calibrate)
_REFS: list = []
_CALIBRATING: list = []
_COUNTS_EXACT = sys.version_info < (3, 14)


def _calibrate() -> None:
    _CALIBRATING.append(True)
    prev, state.grad_enabled = state.grad_enabled, True  # called inside a backward
    tracer, state.tracer = state.tracer, None  # (or a traced one: nothing to record)
    try:
        w = Tensor._make(np.ones(4, np.float32), True)
        (w * 2.0).sum().backward()   # mul's gradient: a new array only the engine holds
    finally:
        state.grad_enabled = prev
        state.tracer = tracer
        _CALIBRATING.pop()


def _unshared(g, tensor_refs: int) -> bool:
    """Whether ``leaf.grad`` may be the gradient's own array, as torch's AccumulateGrad
    steals a gradient nobody else holds (a copy per parameter per step otherwise): a
    C-contiguous, writeable NumPy array owning its memory (or viewing all of a new one),
    which no other tensor, view, hook, list or retained ``.grad`` references (reference
    counts no higher than those of a gradient known to be unshared). Never from Python
    3.14 on, whose borrowed references make the counts lower than the holders."""
    if not _COUNTS_EXACT:
        return False
    d = g._data
    if d.__class__ is not np.ndarray or not (d.flags.c_contiguous and d.flags.writeable):
        return False
    base = d.base  # a GEMM's transposed result: a view of a new array, all of it
    if base is not None and not (base.__class__ is np.ndarray and base.base is None
                                 and base.nbytes == d.nbytes):
        return False
    if _CALIBRATING:
        if not _REFS:
            _REFS.extend((tensor_refs, sys.getrefcount(d)))
        return False
    if not _REFS:
        _calibrate()
    return tensor_refs <= _REFS[0] and sys.getrefcount(d) <= _REFS[1] and (
        base is None or sys.getrefcount(base) <= 3)  # d's reference, ``base``, the call


def _accumulate(leaf, g, create_graph):
    if leaf is None:
        return
    tensor_refs = sys.getrefcount(g)
    if not create_graph:
        g = g.detach()
    if state.tracer is not None:
        state.tracer.note_grad_read(leaf)
    if leaf.grad is None:
        if not create_graph:
            # a gradient may be shared by several leaves or be a view: copy it unless
            # nothing else holds it (_unshared), eagerly straight to C order (the
            # optimizer's native update wants it dense like its parameter; a Linear's
            # weight gradient already is, see decompose._layout_rewrites)
            if state.tracer is None:
                if not _unshared(g, tensor_refs):
                    g = Tensor._make(g._data.copy())  # C order; a CUDA one stays there
            elif _unshared(g, tensor_refs):
                # the graph gets its copy (a plan writes .grad itself), the trace's value
                # is the gradient's own array, as in eager: no second parameter-sized
                # buffer while the step is traced (issue 20)
                tracer = state.tracer
                with tracer.recording_only():
                    c = g.clone()
                g = Tensor._make(g._data)
                tracer.alias(g, c)
            else:  # a recorded copy, in C order too: state made from .grad while a
                # step is traced (SGD's momentum buffer) keeps the layout it gets here
                g = g.clone() if g.is_contiguous() else g.contiguous()
        if tuple(g.shape) != tuple(leaf.shape):
            raise RuntimeError(f"gradient shape {tuple(g.shape)} does not match leaf shape "
                               f"{tuple(leaf.shape)}")
        leaf.grad = g
    elif create_graph:
        leaf.grad = leaf.grad + g
    elif state.tracer is not None:
        leaf.grad.add_(g)  # recorded, so a compiled step accumulates too
    else:
        leaf.grad._data += g._data
