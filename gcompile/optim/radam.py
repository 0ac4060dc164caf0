"""RAdam: Adam with a rectified adaptive learning rate (Liu et al.)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .._functions import where
from .._tensor import Tensor
from ..autograd import no_grad
from .adam import _check_adam_args, update_moments
from .optimizer import Optimizer, _check_unsupported, _inc_step

__all__ = ["RAdam", "radam"]


class RAdam(Optimizer):
    """torch.optim.RAdam: plain momentum SGD while the variance estimate is
    unreliable (rho_t <= 5), rectified Adam afterwards."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False) -> None:
        _check_adam_args(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable)
        _check_unsupported(defaults)
        super().__init__(params, defaults)

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            steps, exp_avgs, exp_avg_sqs = self._state_lists(params, "exp_avg", "exp_avg_sq")
            beta1, beta2 = group["betas"]
            radam(params, grads, exp_avgs, exp_avg_sqs, steps, lr=group["lr"], beta1=beta1,
                  beta2=beta2,
                  eps=group["eps"], weight_decay=group["weight_decay"],
                  decoupled_weight_decay=group["decoupled_weight_decay"],
                  maximize=group["maximize"])
        return loss


@no_grad()
def radam(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
          exp_avg_sqs: list[Tensor], state_steps: list[Tensor], *, lr: Any, beta1: float,
          beta2: float, eps: float, weight_decay: float, decoupled_weight_decay: bool,
          maximize: bool) -> None:
    """The RAdam update on lists of tensors, as torch documents it."""
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        step = _inc_step(state_steps[i])
        update_moments(param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
                       weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        bias_corrected_exp_avg = exp_avg / bias_correction1
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
        plain = bias_corrected_exp_avg * lr
        if isinstance(rho_t, Tensor):
            # traced: the step count is a tensor, so both branches are computed and
            # rho_t > 5 selects one at run time (the other may be NaN: never chosen)
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            adaptive_lr = (bias_correction2 ** 0.5) / exp_avg_sq.sqrt().add_(eps)
            param.add_(where(rho_t > 5.0, plain * adaptive_lr * rect, plain), alpha=-1.0)
        elif rho_t > 5.0:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                             / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            adaptive_lr = math.sqrt(bias_correction2) / exp_avg_sq.sqrt().add_(eps)
            param.add_(plain * adaptive_lr * rect, alpha=-1.0)
        else:
            param.add_(plain, alpha=-1.0)
