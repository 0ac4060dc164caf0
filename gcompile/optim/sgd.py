"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._creation import empty_like
from .._tensor import Tensor
from ..autograd import no_grad
from .. import _fused_optim as _fused
from .optimizer import Optimizer, _check_fused, _check_lr, _check_unsupported, _fused_wanted

__all__ = ["SGD", "sgd"]


class SGD(Optimizer):
    """torch.optim.SGD: ``p -= lr * g`` with optional momentum buffer
    ``b = momentum * b + (1 - dampening) * g`` (the first step sets ``b = g``)."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        _check_lr(lr)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        _check_unsupported(defaults)
        _check_fused(defaults)
        super().__init__(params, defaults)

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            fused = _fused_wanted(group) and _fused.usable("sgd", params, grads, bufs)
            sgd(params, grads, bufs, lr=group["lr"], momentum=group["momentum"],
                dampening=group["dampening"], weight_decay=group["weight_decay"],
                nesterov=group["nesterov"], maximize=group["maximize"], fused=fused)
            if group["momentum"] != 0:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b
        return loss


@no_grad()
def sgd(params: list[Tensor], grads: list[Tensor], momentum_buffers: list, *, lr: Any,
        momentum: float, dampening: float, weight_decay: float, nesterov: bool,
        maximize: bool, fused: bool = False) -> None:
    """The SGD update on lists of tensors (``momentum_buffers`` is updated in
    place; a ``None`` entry is created from the gradient). ``fused``: one native
    kernel per parameter (``_fused_optim``; the caller checked ``usable``), the same
    maths as the ops below."""
    if fused:
        for i, param in enumerate(params):
            buf = momentum_buffers[i]
            first = momentum != 0 and buf is None
            if first:
                buf = momentum_buffers[i] = empty_like(param)
            _fused.sgd(param, grads[i], buf if momentum != 0 else None, first=first, lr=lr,
                       momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                       nesterov=nesterov, maximize=maximize)
        return
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = grad.clone().detach()
                momentum_buffers[i] = buf
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=-lr)
