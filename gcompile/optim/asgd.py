"""ASGD: SGD with Polyak-Ruppert averaging (the average ``ax`` is kept in the state);
the step size decays as lr / (1 + lambd * lr * t)^alpha."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._creation import tensor, zeros_like
from .._tensor import Tensor
from ..autograd import no_grad
from .optimizer import (Optimizer, _check_lr, _check_unsupported, _inc_step, _scalar_value,
                        _zero_step)

__all__ = ["ASGD", "asgd"]


class ASGD(Optimizer):
    """torch.optim.ASGD."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-2, lambd: float = 1e-4,
                 alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False) -> None:
        _check_lr(lr)
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        capturable=capturable)
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
                    st["eta"] = tensor(float(group["lr"]))
                    st["mu"] = tensor(1.0)
                    st["ax"] = zeros_like(p)
            sts = [self.state[p] for p in params]
            asgd(params, grads, [s["ax"] for s in sts], [s["mu"] for s in sts],
                 [s["eta"] for s in sts], [s["step"] for s in sts], lambd=group["lambd"],
                 lr=group["lr"], t0=group["t0"], alpha=group["alpha"],
                 weight_decay=group["weight_decay"], maximize=group["maximize"])
        return loss


@no_grad()
def asgd(params: list[Tensor], grads: list[Tensor], axs: list[Tensor], mus: list[Tensor],
         etas: list[Tensor], state_steps: list[Tensor], *, lambd: float, lr: Any, t0: float,
         alpha: float, weight_decay: float, maximize: bool) -> None:
    """torch's single-tensor ASGD update."""
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        step = _inc_step(state_steps[i])
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        eta = _scalar_value(etas[i])
        param.mul_(1 - lambd * eta)
        param.add_(grad * eta, alpha=-1)
        mu = _scalar_value(mus[i])
        if isinstance(mu, Tensor) or mu != 1:
            axs[i].add_(param.sub(axs[i]).mul_(mu))
        else:
            axs[i].copy_(param)
        etas[i].copy_(tensor(0.0) + lr / ((1 + lambd * lr * step) ** alpha))
        new_mu = 1 / ((step - t0).clamp(min=1) if isinstance(step, Tensor) else max(1, step - t0))
        mus[i].copy_(tensor(0.0) + new_mu)
