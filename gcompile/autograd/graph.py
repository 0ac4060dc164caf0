"""The tape: grad_fn nodes, saved tensors with version checks, and the engine."""
from __future__ import annotations

import heapq
import itertools
import weakref
from collections import defaultdict

import numpy as np

from ir import dtypes as _dt
from ir.registry import GradBuilder, vjp

from .._state import state

_FREED_MSG = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time or if you need to access saved tensors after calling "
    "backward.")


class Meta:
    """Shape and dtype of an input whose value the gradient rule does not need.

    Built on every recorded op, so it keeps NumPy's shape tuple and dtype and
    converts the dtype only when a rule asks for it.
    """

    __slots__ = ("shape", "_npd")

    def __init__(self, shape, np_dtype):
        self.shape = shape
        self._npd = np_dtype

    @property
    def dtype(self):
        return _dt.from_numpy(self._npd)

    def __getattr__(self, name):
        raise RuntimeError(f"gradient rule read the value of an unsaved input ({name}); "
                           "the op's `saves` is wrong")


class SavedTensor:
    """A tensor saved for backward; unpacking checks it was not modified in place."""

    __slots__ = ("tensor", "version", "data", "vbox", "is_output")

    def __init__(self, t, is_output: bool = False):
        self.is_output = is_output
        self.version = t._vbox[0]
        self.vbox = t._vbox
        if is_output:
            # keep only the data: holding the output would make a reference cycle
            self.tensor = None
            self.data = t._data
        else:
            self.tensor = t
            self.data = None

    def unpack(self, node):
        if self.vbox[0] != self.version:
            t = self.tensor
            shape = list(t.shape) if t is not None else list(self.data.shape)
            dtype = t.dtype if t is not None else None
            kind = _type_name(dtype if dtype is not None else self.data.dtype)
            which = (f"which is output 0 of {node.name()}" if self.is_output else
                     (f"which is output 0 of {t.grad_fn.name()}" if t.grad_fn is not None else
                      "which is a leaf tensor"))
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{kind} {shape}], {which}, is at version {self.vbox[0]}; "
                f"expected version {self.version} instead. Hint: enable anomaly detection to "
                "find the operation that failed to compute its gradient, with "
                "torch.autograd.set_detect_anomaly(True).")
        if self.is_output:
            from .._tensor import Tensor
            t = Tensor._make(self.data, node is not None and state.grad_enabled, node)
            t._vbox = self.vbox
            return t
        return self.tensor


def _type_name(d):
    name = getattr(d, "name", str(d))
    return "torch." + {"float32": "FloatTensor", "float64": "DoubleTensor", "int64": "LongTensor",
                       "int32": "IntTensor", "bool": "BoolTensor", "float16": "HalfTensor",
                       "bfloat16": "BFloat16Tensor", "uint8": "ByteTensor",
                       "int8": "CharTensor"}.get(name, name)


_seq_counter = itertools.count(1)


class Node:
    """Base of every grad_fn. ``next_functions`` like torch: ((node, 0), ...)."""

    num_outputs = 1
    _retain = None          # weakref to a non-leaf tensor with retain_grad()
    _pre_hooks = ()         # hooks on the gradient of this node's output (a list once set)
    _next = ()

    def __init__(self):
        self._seq_nr = next(_seq_counter)

    @property
    def next_functions(self):
        return tuple((n, 0) for n in self._next)

    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.name()} object at {hex(id(self))}>"

    def register_hook(self, fn):
        if not isinstance(self._pre_hooks, list):
            self._pre_hooks = []
        self._pre_hooks.append(fn)
        return _Handle(self._pre_hooks, fn)

    def apply(self, grad):  # pragma: no cover - interface
        raise NotImplementedError

    def release(self):
        pass


class _Handle:
    def __init__(self, lst, fn):
        self._lst, self._fn = lst, fn

    def remove(self):
        if self._fn in self._lst:
            self._lst.remove(self._fn)


class OpNode(Node):
    """grad_fn of a registered op: applies its gradient rule through the builder.

    Built for every op recorded with grad on, so the constructor is kept lean:
    inputs the rule does not read are kept as shape/dtype only (Meta), saved
    ones behind a version check (SavedTensor).
    """

    _next_nr = None

    def __init__(self, op, inputs, attrs, out, name=None):
        self._seq_nr = next(_seq_counter)
        self.op = op
        self.attrs = attrs
        self._name = name
        nxt = []
        needs = []
        meta = []
        saves = op.saves
        saved = None
        for i, x in enumerate(inputs):
            if x.__class__ in _NUMBERS or isinstance(x, _NUMBERS):
                nxt.append(None)
                needs.append(False)
                meta.append(x)
                continue
            if x._requires_grad:
                gf = x.grad_fn
                if gf is None:
                    nxt.append(x._acc if x._acc is not None else x._grad_accumulator())
                else:
                    nxt.append(gf)
                    if gf.num_outputs != 1:
                        nr = x.__dict__.get("_out_nr", 0)
                        if nr:
                            if self._next_nr is None:
                                self._next_nr = [0] * len(inputs)
                            self._next_nr[i] = nr
                needs.append(True)
            else:
                nxt.append(None)
                needs.append(False)
            if i in saves:
                if saved is None:
                    saved = {}
                saved[i] = SavedTensor(x)
                meta.append(None)
            else:
                d = x._data
                meta.append(Meta(d.shape, d.dtype))
        if -1 in saves:
            if saved is None:
                saved = {}
            saved[-1] = SavedTensor(out, is_output=True)
        self._next = tuple(nxt)
        self._needs = needs
        self._saved = saved
        self._meta = meta
        d = out._data
        self._out_meta = Meta(d.shape, d.dtype)
        self._freed = False

    @property
    def next_functions(self):
        return tuple((n, 0) for n in self._next)

    def name(self) -> str:
        return self._name or self.op._grad_fn_name

    def apply(self, grad):
        if self._freed and self.op.saves:
            raise RuntimeError(_FREED_MSG)
        saved = self._saved or {}
        inputs = [saved[i].unpack(None) if i in saved else m for i, m in enumerate(self._meta)]
        out = saved[-1].unpack(self) if -1 in saved else self._out_meta
        grads = vjp(self.op, EagerBuilder(self._needs), grad, inputs, out, self.attrs)
        return [g if need else None for g, need in zip(grads, self._needs)]

    def release(self):
        if self._saved:
            self._saved = None
        self._freed = True


_NUMBERS = (bool, int, float)


class AccumulateGrad(Node):
    """Sink for a leaf: adds the incoming gradient into ``leaf.grad``."""

    def __init__(self, leaf):
        super().__init__()
        self._leaf_ref = weakref.ref(leaf)

    @property
    def variable(self):
        return self._leaf_ref()

    def apply(self, grad):
        return []


class EagerBuilder(GradBuilder):
    """Gradient rules run as ordinary dispatched ops, so with grad mode on
    (create_graph=True) they are themselves recorded: double backward.

    ``needs`` (one bool per op input, or None: all) tells a rule which inputs want a
    gradient, so it can skip work whose result would be dropped (a graph builder has
    none; there dead-code elimination removes it)."""

    __slots__ = ("needs",)

    def __init__(self, needs=None):
        self.needs = needs

    def op(self, name, *args, **attrs):
        from .._tensor import Tensor, apply_op
        if args and isinstance(args[0], Meta) and name in _LIKE:
            # a rule asked for e.g. zeros_like(x) of an input it did not save:
            # only its shape and dtype are needed
            import numpy as np
            m = args[0]
            d = attrs.get("dtype") or m.dtype
            fill = {"zeros_like": 0, "ones_like": 1}.get(name, attrs.get("value"))
            return Tensor._make(np.full(m.shape, fill, d.np))
        return apply_op(name, args, attrs)


_LIKE = ("zeros_like", "ones_like", "full_like")


EAGER_BUILDER = EagerBuilder()


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
        while ready:
            node = heapq.heappop(ready)[2]
            g = pending.pop(node, None)
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
        return results
    finally:
        state.grad_enabled = prev


def _accumulate(leaf, g, create_graph):
    if leaf is None:
        return
    if not create_graph:
        g = g.detach()
    if state.tracer is not None:
        state.tracer.note_grad_read(leaf)
    if leaf.grad is None:
        if not create_graph:
            # a gradient may be shared by several leaves or be a view: copy it, eagerly
            # straight to C order (a Linear's weight gradient arrives transposed; the
            # optimizer's native update wants it dense like its parameter)
            if state.tracer is None:
                from .._tensor import Tensor
                g = Tensor._make(np.array(g._data, order="C"))
            else:
                g = g.clone()
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
