"""RMSprop (Hinton), with torch's centred and momentum variants."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._creation import zeros_like
from .._tensor import Tensor
from ..autograd import no_grad
from .. import _fused_optim as _fused
from .optimizer import Optimizer, _check_lr, _check_unsupported, _fused_wanted, _zero_step

__all__ = ["RMSprop", "rmsprop"]


class RMSprop(Optimizer):
    """torch.optim.RMSprop: divide the gradient by a running RMS of its history."""

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False) -> None:
        _check_lr(lr)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        _check_unsupported(defaults)
        super().__init__(params, defaults)

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            square_avgs, grad_avgs, bufs, steps = [], [], [], []
            for p in params:
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = _zero_step()
                    st["square_avg"] = zeros_like(p)
                    if group["momentum"] > 0:
                        st["momentum_buffer"] = zeros_like(p)
                    if group["centered"]:
                        st["grad_avg"] = zeros_like(p)
                square_avgs.append(st["square_avg"])
                steps.append(st["step"])
                if group["momentum"] > 0:
                    bufs.append(st["momentum_buffer"])
                if group["centered"]:
                    grad_avgs.append(st["grad_avg"])
            fused = _fused_wanted(group) and _fused.usable(
                "rmsprop", params, grads, square_avgs, *([grad_avgs] if group["centered"] else []),
                *([bufs] if group["momentum"] > 0 else []))
            rmsprop(params, grads, square_avgs, grad_avgs, bufs, steps, lr=group["lr"],
                    alpha=group["alpha"], eps=group["eps"],
                    weight_decay=group["weight_decay"], momentum=group["momentum"],
                    centered=group["centered"], maximize=group["maximize"], fused=fused)
        return loss


@no_grad()
def rmsprop(params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor],
            grad_avgs: list[Tensor], momentum_buffers: list[Tensor], state_steps: list[Tensor],
            *, lr: Any, alpha: float, eps: float, weight_decay: float, momentum: float,
            centered: bool, maximize: bool, fused: bool = False) -> None:
    """The RMSprop update on lists of tensors, as torch documents it. ``fused``: one
    native kernel per parameter (``_fused_optim``; the caller checked ``usable``), the
    same maths as the ops below."""
    if fused:
        for i, param in enumerate(params):
            _fused.inc_step(state_steps[i])
            _fused.rmsprop(param, grads[i], square_avgs[i],
                           grad_avgs[i] if centered else None,
                           momentum_buffers[i] if momentum > 0 else None, lr=lr, alpha=alpha,
                           eps=eps, weight_decay=weight_decay, momentum=momentum,
                           maximize=maximize)
        return
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        state_steps[i].add_(1)  # a counter only: no .item(), no graph break
        square_avg = square_avgs[i]
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = grad_avgs[i]
            grad_avg.mul_(alpha).add_(grad, alpha=1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            buf = momentum_buffers[i]
            buf.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buf, alpha=-lr)
        else:
            param.addcdiv_(grad, avg, value=-lr)
