"""Muon: momentum SGD whose 2-D updates are orthogonalised by a Newton-Schulz iteration
(Jordan et al.). The iteration runs in bfloat16, as torch's does."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .._creation import zeros_like
from .._tensor import Tensor
from ..autograd import no_grad
from .optimizer import Optimizer, _get_value

__all__ = ["Muon", "muon"]

EPS = 1e-7
DEFAULT_A, DEFAULT_B, DEFAULT_C = 3.4445, -4.7750, 2.0315
DEFAULT_NS_STEPS = 5


class Muon(Optimizer):
    """torch.optim.Muon (2-D parameters only)."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 ns_coefficients: tuple[float, float, float] = (DEFAULT_A, DEFAULT_B,
                                                                DEFAULT_C),
                 eps: float = EPS, ns_steps: int = DEFAULT_NS_STEPS,
                 adjust_lr_fn: str | None = None) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= float(lr):
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 <= momentum:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                        adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError("Muon only supports 2D parameters whereas we found a "
                                     f"parameter with size: {tuple(p.shape)}")

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = zeros_like(p)
            muon(params, grads, [self.state[p]["momentum_buffer"] for p in params],
                 lr=group["lr"], weight_decay=group["weight_decay"],
                 momentum=group["momentum"], nesterov=group["nesterov"],
                 ns_coefficients=group["ns_coefficients"], eps=group["eps"],
                 ns_steps=group["ns_steps"], adjust_lr_fn=group["adjust_lr_fn"])
        return loss


def _zeropower_via_newtonschulz(grad: Tensor, ns_coefficients, ns_steps: int,
                                eps: float) -> Tensor:
    """The quintic Newton-Schulz iteration towards U V^T of grad's SVD."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if grad.dim() != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = ns_coefficients
    x = grad.bfloat16()
    tall = grad.shape[0] > grad.shape[1]
    if tall:
        x = x.t()
    bf16 = x.dtype
    # each bfloat16 op computes in float32 and rounds once, as torch's CPU kernels do
    norm = x.float().norm().to(bf16).clamp(min=eps)
    x = (x.float() / norm.float()).to(bf16)
    for _ in range(ns_steps):
        xf = x.float()
        gram = (xf @ xf.t()).to(bf16).float()
        upd = (gram * b + (gram @ gram) * c).to(bf16).float()
        x = (xf * a + upd @ xf).to(bf16)
    return x.t() if tall else x


def _adjust_lr(lr: float, adjust_lr_fn: str | None, shape) -> float:
    a, b = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, a / b))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(a, b))
    return lr


@no_grad()
def muon(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], *, lr: Any,
         weight_decay: float, momentum: float, nesterov: bool, ns_coefficients, ns_steps: int,
         eps: float, adjust_lr_fn: str | None) -> None:
    """torch's single-tensor Muon update."""
    lr = float(_get_value(lr))
    for i, param in enumerate(params):
        grad = grads[i]
        if grad.dim() != 2:
            raise ValueError("Param gradient must be a 2D matrix")
        bufs[i].lerp_(grad, 1 - momentum)
        update = grad.lerp(bufs[i], momentum) if nesterov else bufs[i]
        update = _zeropower_via_newtonschulz(update, ns_coefficients, ns_steps, eps)
        param.mul_(1 - lr * weight_decay)
        param.add_(update.to(param.dtype), alpha=-_adjust_lr(lr, adjust_lr_fn, param.shape))
