"""Adadelta (Zeiler): step sizes from running averages of squared gradients and updates."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._tensor import Tensor
from ..autograd import no_grad
from .optimizer import Optimizer, _check_lr, _check_unsupported

__all__ = ["Adadelta", "adadelta"]


class Adadelta(Optimizer):
    """torch.optim.Adadelta (default lr 1.0, rho 0.9, eps 1e-6)."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0, foreach: bool | None = None, *,
                 capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False) -> None:
        _check_lr(lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, foreach=foreach,
                        capturable=capturable, maximize=maximize, differentiable=differentiable)
        _check_unsupported(defaults)
        super().__init__(params, defaults)

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            steps, square_avgs, acc_deltas = self._state_lists(params, "square_avg", "acc_delta")
            adadelta(params, grads, square_avgs, acc_deltas, steps, lr=group["lr"],
                     rho=group["rho"],
                     eps=group["eps"], weight_decay=group["weight_decay"],
                     maximize=group["maximize"])
        return loss


@no_grad()
def adadelta(params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor],
             acc_deltas: list[Tensor], state_steps: list[Tensor], *, lr: Any, rho: float,
             eps: float, weight_decay: float, maximize: bool) -> None:
    """The Adadelta update on lists of tensors, as torch documents it."""
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        state_steps[i].add_(1)  # a counter only: no .item(), no graph break
        square_avg, acc_delta = square_avgs[i], acc_deltas[i]
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_()
        delta.div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        param.add_(delta, alpha=-lr)
