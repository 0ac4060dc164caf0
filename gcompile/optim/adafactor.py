"""Adafactor (Shazeer & Stern): second moments kept as row and column factors for
matrices, relative step sizes, and update clipping by RMS."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._creation import zeros, zeros_like
from .._tensor import Tensor
from ..autograd import no_grad
from .optimizer import Optimizer, _check_lr, _get_value, _zero_step

__all__ = ["Adafactor", "adafactor"]


class Adafactor(Optimizer):
    """torch.optim.Adafactor."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False) -> None:
        _check_lr(lr)
        if not beta2_decay <= 0.0:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d,
                        weight_decay=weight_decay, foreach=foreach, maximize=maximize)
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
                    if p.dim() > 1:
                        shape = tuple(p.shape)
                        st["row_var"] = zeros(shape[:-1] + (1,), dtype=p.dtype)
                        st["col_var"] = zeros(shape[:-2] + (1, shape[-1]), dtype=p.dtype)
                    else:
                        st["variance"] = zeros_like(p)
            eps1, eps2 = group["eps"]
            adafactor(params, grads, [self.state[p] for p in params], d=group["d"],
                      lr=group["lr"], beta2_decay=group["beta2_decay"],
                      weight_decay=group["weight_decay"], eps1=eps1, eps2=eps2,
                      maximize=group["maximize"])
        return loss


@no_grad()
def adafactor(params: list[Tensor], grads: list[Tensor], states: list[dict], *, d: float,
              lr: Any, beta2_decay: float, weight_decay: float, eps1: float | None,
              eps2: float, maximize: bool) -> None:
    """torch's single-tensor Adafactor update (its norms read back as Python floats)."""
    lr = float(_get_value(lr))
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        st = states[i]
        e1 = eps1 if eps1 is not None else float(np.finfo(param.dtype.np).eps)
        st["step"].add_(1)
        step = float(_get_value(st["step"]))
        one_minus_beta2_t = step ** beta2_decay
        rho_t = min(lr, 1 / math.sqrt(step))
        alpha = max(eps2, float(param.norm(2)) / math.sqrt(param.numel())) * rho_t
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        if grad.dim() > 1:
            row_var, col_var = st["row_var"], st["col_var"]
            row_mean = (grad * grad).sum(dim=-1, keepdim=True) / grad.shape[-1]
            row_var.lerp_(row_mean, one_minus_beta2_t)
            col_mean = (grad * grad).sum(dim=-2, keepdim=True) / grad.shape[-2]
            col_var.lerp_(col_mean, one_minus_beta2_t)
            var_estimate = (row_var @ col_var) / row_var.mean(dim=-2, keepdim=True).clamp(
                min=e1)
        else:
            st["variance"].lerp_(grad * grad, one_minus_beta2_t)
            var_estimate = st["variance"].clone()
        update = var_estimate.clamp(min=e1 * e1).rsqrt() * grad
        denom = max(1.0, float(update.norm(2)) / (math.sqrt(update.numel()) * d))
        param.add_(update, alpha=-alpha / denom)
