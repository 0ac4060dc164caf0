"""The autograd tape's data: grad_fn nodes (``Node``), saved tensors with their version
checks, and the leaf sink ``AccumulateGrad``.

It sits just above the Tensor's storage (``_tensor_base``) and below the dispatcher
(``_dispatch``), which records an ``OpNode`` (defined there, since it runs gradient rules
through ``apply_op``) for every differentiable op. The engine that walks these nodes is
``gcompile.autograd.graph``.
"""
from __future__ import annotations

import itertools
import weakref

from ir import dtypes as _dt

from ._state import state
from ._tensor_base import Tensor

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


class SymMeta(Meta):
    """A Meta recorded while a dynamic-shape trace runs: its shape has the trace's
    SymInts while that trace is active (so gradients built in it stay symbolic), and
    the concrete shape once it is over (an eager backward after the trace)."""

    __slots__ = ("_concrete", "_sym", "_env")

    def __init__(self, concrete, sym, np_dtype, env):
        self._concrete = concrete
        self._sym = sym
        self._npd = np_dtype
        self._env = env

    @property
    def shape(self):
        tracer = state.tracer
        if tracer is not None and tracer.shape_env is self._env:
            return self._sym
        return self._concrete


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


def grad_accumulator(t) -> AccumulateGrad:
    """The AccumulateGrad node of leaf ``t`` (made once, then kept on the tensor)."""
    acc = t._acc
    if acc is None:
        acc = t._acc = AccumulateGrad(t)
    return acc
