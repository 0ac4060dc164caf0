"""Rprop: per-element step sizes grown or shrunk by the sign agreement of successive
gradients (Riedmiller & Braun); the gradient's magnitude is never used."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import _functions as T
from .._creation import full_like, zeros_like
from .._tensor import Tensor
from ..autograd import no_grad
from .optimizer import Optimizer, _check_lr, _check_unsupported, _zero_step

__all__ = ["Rprop", "rprop"]


class Rprop(Optimizer):
    """torch.optim.Rprop (lr is the initial step size)."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-2,
                 etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False) -> None:
        _check_lr(lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
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
                    st["prev"] = zeros_like(p)
                    with no_grad():
                        st["step_size"] = full_like(p, 0.0).add_(group["lr"])
            etaminus, etaplus = group["etas"]
            lo, hi = group["step_sizes"]
            rprop(params, grads, [self.state[p]["prev"] for p in params],
                  [self.state[p]["step_size"] for p in params],
                  [self.state[p]["step"] for p in params], etaminus=etaminus, etaplus=etaplus,
                  step_size_min=lo, step_size_max=hi, maximize=group["maximize"])
        return loss


@no_grad()
def rprop(params: list[Tensor], grads: list[Tensor], prevs: list[Tensor],
          step_sizes: list[Tensor], state_steps: list[Tensor], *, etaminus: float,
          etaplus: float, step_size_min: float, step_size_max: float, maximize: bool) -> None:
    """The Rprop update (torch's single-tensor form): where the gradient changed sign its
    step shrinks and that element is not moved this step."""
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        state_steps[i].add_(1)
        s = (grad * prevs[i]).sign()
        # factors in the parameter's dtype (a Python-scalar where would round 1.2 to float32)
        factor = T.where(s > 0, full_like(s, etaplus),
                         T.where(s < 0, full_like(s, etaminus), full_like(s, 1.0)))
        step_sizes[i].mul_(factor).clamp_(step_size_min, step_size_max)
        grad = T.where(s < 0, 0.0, grad)
        param.addcmul_(grad.sign(), step_sizes[i], value=-1)
        prevs[i].copy_(grad)
