"""NAdam: Adam with Nesterov momentum (Dozat), with torch's momentum decay schedule."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._creation import tensor, zeros_like
from .._tensor import Tensor
from ..autograd import no_grad
from .adam import _check_adam_args
from .optimizer import Optimizer, _check_unsupported, _inc_step, _scalar_value, _zero_step

__all__ = ["NAdam", "nadam"]


class NAdam(Optimizer):
    """torch.optim.NAdam (default lr 2e-3, momentum_decay 4e-3)."""

    def __init__(self, params: Iterable, lr: float | Tensor = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        _check_adam_args(lr, betas, eps, weight_decay)
        if not 0.0 <= momentum_decay:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable)
        _check_unsupported(defaults)
        super().__init__(params, defaults)

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            for p in params:
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = _zero_step()
                    st["mu_product"] = tensor(1.0)
                    st["exp_avg"] = zeros_like(p)
                    st["exp_avg_sq"] = zeros_like(p)
            beta1, beta2 = group["betas"]
            sts = [self.state[p] for p in params]
            nadam(params, grads, [s["exp_avg"] for s in sts], [s["exp_avg_sq"] for s in sts],
                  [s["mu_product"] for s in sts], [s["step"] for s in sts], lr=group["lr"],
                  beta1=beta1, beta2=beta2, eps=group["eps"],
                  weight_decay=group["weight_decay"], momentum_decay=group["momentum_decay"],
                  decoupled_weight_decay=group["decoupled_weight_decay"],
                  maximize=group["maximize"])
        return loss


@no_grad()
def nadam(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
          exp_avg_sqs: list[Tensor], mu_products: list[Tensor], state_steps: list[Tensor], *,
          lr: Any, beta1: float, beta2: float, eps: float, weight_decay: float,
          momentum_decay: float, decoupled_weight_decay: bool, maximize: bool) -> None:
    """The NAdam update on lists of tensors, as torch documents it."""
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg, exp_avg_sq, mu_product = exp_avgs[i], exp_avg_sqs[i], mu_products[i]
        step = _inc_step(state_steps[i])
        bias_correction2 = 1 - beta2 ** step
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        mu_product.mul_(mu)
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps)
        mu_prod = _scalar_value(mu_product)
        mu_product_next = mu_prod * mu_next
        param.addcdiv_(grad, denom, value=(-lr * (1.0 - mu) / (1.0 - mu_prod)))
        param.addcdiv_(exp_avg, denom, value=(-lr * mu_next) / (1.0 - mu_product_next))
