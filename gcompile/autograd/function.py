"""autograd.Function: user-defined forward/backward pairs on the tape."""
from __future__ import annotations

import functools

from .._creation import zeros
from .._state import state
from .._tensor_base import Tensor
from .graph import _FREED_MSG, Node, SavedTensor


class FunctionCtx:
    def __init__(self):
        self._saved = None
        self._node = None
        self.needs_input_grad = ()
        self.materialize_grads = True
        self._dirty = ()
        self._non_diff = set()

    def save_for_backward(self, *tensors) -> None:
        self._saved = [SavedTensor(t) if t is not None else None for t in tensors]

    @property
    def saved_tensors(self):
        if self._saved is None and self._node is not None and self._node._freed:
            raise RuntimeError(_FREED_MSG)
        return tuple(s.unpack(self._node) if s is not None else None for s in (self._saved or ()))

    def mark_dirty(self, *tensors) -> None:
        self._dirty = tensors

    def mark_non_differentiable(self, *tensors) -> None:
        self._non_diff = {id(t) for t in tensors}

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value


class BackwardCFunction(Node):
    """The grad_fn of a Function's outputs; may have several outputs."""

    def __init__(self, fn_cls, ctx, inputs, outputs):
        super().__init__()
        self._cls = fn_cls
        self.ctx = ctx
        ctx._node = self
        self.num_outputs = len(outputs)
        self._out_meta = [(tuple(o.shape), o.dtype) for o in outputs]
        nxt, nr = [], []
        for x in inputs:
            if hasattr(x, "_data") and x.requires_grad:
                nxt.append(x.grad_fn if x.grad_fn is not None else x._grad_accumulator())
                nr.append(getattr(x, "_out_nr", 0))
            else:
                nxt.append(None)
                nr.append(0)
        self._next = tuple(nxt)
        self._next_nr = tuple(nr)
        self._freed = False

    @property
    def next_functions(self):
        return tuple((n, k) for n, k in zip(self._next, self._next_nr))

    def name(self) -> str:
        return f"{self._cls.__name__}Backward"

    def apply(self, grads):
        if not isinstance(grads, list):
            grads = [grads]
        if self.ctx.materialize_grads:
            grads = [g if g is not None else zeros(shape, dtype=d)
                     for g, (shape, d) in zip(grads, self._out_meta)]
        res = self._cls.backward(self.ctx, *grads)
        if not isinstance(res, tuple):
            res = (res,)
        n = len(self._next)
        if len(res) < n:
            raise RuntimeError(f"function {self.name()} returned an incorrect number of gradients "
                               f"(expected {n}, got {len(res)})")
        res = res[:n] if all(r is None for r in res[n:]) else res
        if len(res) != n:
            raise RuntimeError(f"function {self.name()} returned an incorrect number of gradients "
                               f"(expected {n}, got {len(res)})")
        return list(res)

    def release(self):
        self.ctx._saved = None
        self._freed = True


class _FunctionMeta(type):
    pass


class Function(metaclass=_FunctionMeta):
    """Subclass with static ``forward(ctx, ...)`` and ``backward(ctx, *grads)``."""

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError("You must implement the forward function for custom "
                                  "autograd.Function.")

    @staticmethod
    def backward(ctx, *grad_outputs):  # pragma: no cover - abstract
        raise NotImplementedError("You must implement either the backward or vjp method for your "
                                  "custom autograd.Function to use it with backward mode AD.")

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = FunctionCtx()
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        prev = state.grad_enabled
        state.grad_enabled = False
        try:
            out = cls.forward(ctx, *args, **kwargs)
        finally:
            state.grad_enabled = prev
        single = not isinstance(out, tuple)
        outs = (out,) if single else out
        if state.grad_enabled and any(ctx.needs_input_grad):
            node = BackwardCFunction(cls, ctx, args, [o for o in outs if isinstance(o, Tensor)])
            new = []
            k = 0
            for o in outs:
                if isinstance(o, Tensor):
                    if any(o is a for a in args) and o not in ctx._dirty:
                        o = o.detach()  # an input returned as-is becomes a new output (view)
                    if id(o) not in ctx._non_diff and o.dtype.is_floating_point:
                        o.grad_fn = node
                        o._requires_grad = True
                        if node.num_outputs > 1:
                            o._out_nr = k
                    k += 1
                new.append(o)
            outs = tuple(new)
        return outs[0] if single else outs


def once_differentiable(fn):
    @functools.wraps(fn)
    def wrapper(ctx, *args):
        prev = state.grad_enabled
        state.grad_enabled = False
        try:
            return fn(ctx, *args)
        finally:
            state.grad_enabled = prev
    return wrapper
