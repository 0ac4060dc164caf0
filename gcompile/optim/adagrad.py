"""Adagrad: per-coordinate step sizes from the sum of squared gradients."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._creation import full_like
from .._tensor import Tensor
from ..autograd import no_grad
from .. import _fused_optim as _fused
from .optimizer import (Optimizer, _check_fused, _check_lr, _check_unsupported, _fused_wanted,
                        _inc_step, _zero_step)

__all__ = ["Adagrad", "adagrad"]


class Adagrad(Optimizer):
    """torch.optim.Adagrad (with lr_decay and initial_accumulator_value)."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        _check_lr(lr)
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError("Invalid initial_accumulator_value value: "
                             f"{initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        _check_unsupported(defaults)
        _check_fused(defaults)
        super().__init__(params, defaults)
        # torch initialises the state eagerly, at construction
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                st["step"] = _zero_step()
                st["sum"] = full_like(p, group["initial_accumulator_value"])

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            sums = [self.state[p]["sum"] for p in params]
            steps = [self.state[p]["step"] for p in params]
            fused = _fused_wanted(group) and _fused.usable("adagrad", params, grads, sums)
            adagrad(params, grads, sums, steps, lr=group["lr"], weight_decay=group["weight_decay"],
                    lr_decay=group["lr_decay"], eps=group["eps"], maximize=group["maximize"],
                    fused=fused)
        return loss


@no_grad()
def adagrad(params: list[Tensor], grads: list[Tensor], state_sums: list[Tensor],
            state_steps: list[Tensor], *, lr: Any, weight_decay: float, lr_decay: float,
            eps: float, maximize: bool, fused: bool = False) -> None:
    """The Adagrad update on lists of tensors, as torch documents it. ``fused``: one
    native kernel per parameter (``_fused_optim``; the caller checked ``usable``), the
    same maths as the ops below."""
    if fused:
        for i, param in enumerate(params):
            step = _fused.inc_step(state_steps[i])
            clr = lr / (1 + (step - 1) * lr_decay) if lr_decay != 0 else lr
            _fused.adagrad(param, grads[i], state_sums[i], clr=clr, eps=eps,
                           weight_decay=weight_decay, maximize=maximize)
        return
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        if lr_decay != 0:
            step = _inc_step(state_steps[i])
            clr = lr / (1 + (step - 1) * lr_decay)
        else:  # the step value is not needed: keep it a tensor (no graph break)
            state_steps[i].add_(1)
            clr = lr
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        state_sums[i].addcmul_(grad, grad, value=1)
        std = state_sums[i].sqrt().add_(eps)
        param.addcdiv_(grad, std, value=-clr)
