"""SparseAdam: Adam that moves only the entries a gradient touches (an embedding's
looked-up rows). gcompile has no sparse tensors: a gradient's zero entries stand for
the entries a sparse gradient would leave out, and only the others are updated."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .. import _functions as T
from .._creation import zeros_like
from .._tensor import Tensor
from ..autograd import no_grad
from .optimizer import Optimizer, _check_lr, _inc_step, _zero_step

__all__ = ["SparseAdam"]


class SparseAdam(Optimizer):
    """torch.optim.SparseAdam."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 maximize: bool = False) -> None:
        _check_lr(lr)
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameters: {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))

    @no_grad()
    def step(self, closure: Callable | None = None) -> Any:
        """One update of the touched entries of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            beta1, beta2 = group["betas"]
            for p, grad in zip(params, grads):
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = _zero_step()
                    st["exp_avg"] = zeros_like(p)
                    st["exp_avg_sq"] = zeros_like(p)
                g = -grad if group["maximize"] else grad
                touched = grad != 0
                step = _inc_step(st["step"])
                ea, es = st["exp_avg"], st["exp_avg_sq"]
                ea.copy_(T.where(touched, ea + (g - ea) * (1 - beta1), ea))
                es.copy_(T.where(touched, es + (g * g - es) * (1 - beta2), es))
                bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
                step_size = group["lr"] * (bc2 ** 0.5 if not isinstance(bc2, float)
                                           else math.sqrt(bc2)) / bc1
                upd = ea / (es.sqrt() + group["eps"])
                p.add_(T.where(touched, upd * (-step_size), 0.0))
        return loss
