"""Adamax: Adam with the infinity norm of past gradients."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._functions import maximum
from .._tensor import Tensor
from ..autograd import no_grad
from .adam import _check_adam_args
from .optimizer import Optimizer, _check_unsupported, _inc_step

__all__ = ["Adamax", "adamax"]


class Adamax(Optimizer):
    """torch.optim.Adamax (default lr 2e-3)."""

    def __init__(self, params: Iterable, lr: float | Tensor = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False) -> None:
        _check_adam_args(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        capturable=capturable)
        _check_unsupported(defaults)
        super().__init__(params, defaults)

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            steps, exp_avgs, exp_infs = self._state_lists(params, "exp_avg", "exp_inf")
            beta1, beta2 = group["betas"]
            adamax(params, grads, exp_avgs, exp_infs, steps, lr=group["lr"], beta1=beta1,
                   beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                   maximize=group["maximize"])
        return loss


@no_grad()
def adamax(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
           exp_infs: list[Tensor], state_steps: list[Tensor], *, lr: Any, beta1: float,
           beta2: float, eps: float, weight_decay: float, maximize: bool) -> None:
    """The Adamax update on lists of tensors, as torch documents it."""
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        step = _inc_step(state_steps[i])
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg, exp_inf = exp_avgs[i], exp_infs[i]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_inf.copy_(maximum(exp_inf.mul_(beta2), grad.abs().add_(eps)))
        clr = lr / (1 - beta1 ** step)
        param.addcdiv_(exp_avg, exp_inf, value=-clr)
