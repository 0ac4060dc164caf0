"""Tensor's autograd-facing methods: ``requires_grad``, ``.grad`` (seen by a tracer),
``detach``, ``retain_grad``, ``register_hook`` and ``backward``.

Layer: above ``gcompile.autograd`` (``backward`` runs its engine); the tape's node types
come from ``_tape``.
"""
from __future__ import annotations

import weakref

from ._dispatch import _BF16
from ._state import state
from ._tape import grad_accumulator
from ._tensor_base import Tensor, tensor_methods
from .autograd import backward as _backward


@tensor_methods
class _AutogradMethods:
    """Autograd-facing methods of Tensor."""

    def requires_grad_(self, requires_grad: bool = True):
        self.requires_grad = requires_grad
        return self

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self._data.dtype.kind != "f" and self._data.dtype is not _BF16:
            raise RuntimeError("only Tensors of floating point and complex dtype can require "
                               f"gradients (got {self.dtype})")
        if not value and self.grad_fn is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If "
                               "you want to use a computed variable in a subgraph that doesn't "
                               "require differentiation use var_no_grad = var.detach().")
        self._requires_grad = bool(value)

    @property
    def grad(self):
        if state.tracer is not None and self._grad is not None:
            state.tracer.note_grad_value(self, self._grad)
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError("assigned grad expected to be a Tensor or None but got "
                                f"{type(value).__name__}")
            if tuple(value.shape) != tuple(self._data.shape):
                raise RuntimeError("assigned grad has data of a different size: "
                                   f"{tuple(value.shape)} vs {tuple(self._data.shape)}")
        if state.tracer is not None:
            state.tracer.record_grad(self, value)
        self._grad = value

    def _grad_accumulator(self):
        return grad_accumulator(self)

    def detach(self):
        # shares memory and the version counter, but is not an autograd view (torch:
        # ``x.detach()._base is None``), so in-place ops on it are allowed
        t = Tensor._make(self._data)
        t._vbox = self._vbox
        t._base = self._base
        if state.tracer is not None:
            # traced uses of t carry no gradient back to self
            state.tracer.note_detach(t, self.requires_grad)
        return t

    def detach_(self):
        if self._base is not None and self._base.requires_grad:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self.grad_fn = None
        self.requires_grad = False
        return self

    def retain_grad(self):
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is not None:
            self.grad_fn._retain = weakref.ref(self)
            self._retains = True

    @property
    def retains_grad(self) -> bool:
        return self.grad_fn is not None and getattr(self, "_retains", False)

    def register_hook(self, hook):
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        node = self.grad_fn if self.grad_fn is not None else self._grad_accumulator()
        return node.register_hook(hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        _backward(self, gradient, retain_graph, create_graph, inputs=inputs)
