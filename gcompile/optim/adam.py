"""Adam (with AMSGrad and L2 weight decay added to the gradient)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._creation import zeros_like
from .._functions import div as torch_div
from .._functions import maximum
from .._methods import traced_in_chunks
from .._tensor import Tensor
from ir.dtypes import float64
from ..autograd import no_grad
from .._state import state
from .. import _fused_optim as _fused
from .optimizer import (Optimizer, _check_fused, _check_lr, _check_unsupported, _fused_wanted,
                        _inc_step, _zero_step)

__all__ = ["Adam", "adam"]


def _check_adam_args(lr, betas, eps, weight_decay) -> None:
    _check_lr(lr)
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


class Adam(Optimizer):
    """torch.optim.Adam: bias-corrected first and second moment estimates.

    ``capturable=True`` keeps the step count a tensor and computes the bias
    corrections with tensor ops (no ``.item()``), so a traced training step
    has no graph break; the default computes them in Python floats like torch.
    """

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False) -> None:
        _check_adam_args(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay or self._decoupled)
        _check_unsupported({"differentiable": differentiable})
        _check_fused(defaults)
        super().__init__(params, defaults)

    _decoupled = False

    def step(self, closure: Callable | None = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], []
            for p in params:
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = _zero_step()
                    st["exp_avg"] = zeros_like(p)
                    st["exp_avg_sq"] = zeros_like(p)
                    if group["amsgrad"]:
                        st["max_exp_avg_sq"] = zeros_like(p)
                exp_avgs.append(st["exp_avg"])
                exp_avg_sqs.append(st["exp_avg_sq"])
                if group["amsgrad"]:
                    max_sqs.append(st["max_exp_avg_sq"])
                steps.append(st["step"])
            beta1, beta2 = group["betas"]
            amsgrad = group["amsgrad"]
            fused = _fused_wanted(group) and _fused.usable(
                "adam", params, grads, exp_avgs, exp_avg_sqs, *([max_sqs] if amsgrad else []))
            adam(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps,
                 amsgrad=amsgrad, beta1=beta1, beta2=beta2,
                 lr=group["lr"],
                 weight_decay=group["weight_decay"], eps=group["eps"],
                 maximize=group["maximize"],
                 decoupled_weight_decay=group.get("decoupled_weight_decay", self._decoupled),
                 capturable=group["capturable"] or state.tracer is not None, fused=fused)
        return loss


def update_moments(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *,
                   lr: Any, beta1: float, beta2: float, weight_decay: float,
                   decoupled_weight_decay: bool) -> None:
    """Weight decay (L2 into the gradient, or decoupled AdamW-style) and the two
    moving averages every Adam variant starts its step with, in place."""
    if weight_decay != 0:
        if decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)


@no_grad()
def adam(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
         exp_avg_sqs: list[Tensor], max_exp_avg_sqs: list[Tensor], state_steps: list[Tensor],
         *, amsgrad: bool, beta1: float, beta2: float, lr: Any, weight_decay: float,
         eps: float, maximize: bool, decoupled_weight_decay: bool = False,
         capturable: bool = False, fused: bool = False) -> None:
    """The Adam/AdamW update on lists of tensors, as torch documents it. ``fused``: one
    native kernel per parameter (``_fused_optim``; the caller checked ``usable``), the
    same maths as the ops below."""
    if fused:
        for i, param in enumerate(params):
            step = _fused.inc_step(state_steps[i])
            _fused.adam(param, grads[i], exp_avgs[i], exp_avg_sqs[i],
                        max_exp_avg_sqs[i] if amsgrad else None, step=step, lr=lr,
                        beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        return
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        if capturable:
            state_steps[i].add_(1)
            # bias corrections as float64 0-d tensors: as exact as the Python-float path
            # (float32 1 - 0.999**t is off by ~5e-5), and 0-d, so float32 params stay float32
            step = state_steps[i].to(float64)
        else:
            step = _inc_step(state_steps[i])
        update_moments(param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
                       weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        if capturable:  # tensor maths throughout: nothing leaves the graph
            step_size_neg = -(lr / bias_correction1)
            bc2_sqrt = bias_correction2.sqrt()
            src = max_exp_avg_sqs[i] if amsgrad else exp_avg_sq
            if amsgrad:
                src.copy_(maximum(src, exp_avg_sq))
            scale, shift = bc2_sqrt * step_size_neg, eps / step_size_neg

            def update(p, v, m, scale=scale, shift=shift):
                # param.addcdiv_(exp_avg, sqrt(v) / bc2_sqrt + eps, value=-step_size),
                # with the denominator's storage as the temporary
                denom = v.sqrt()
                denom.div_(scale).add_(shift)
                p.add_(torch_div(m, denom, out=denom))
            # traced: recorded on the whole tensors, computed in chunks (no temporary)
            if not traced_in_chunks(update, param, src, exp_avg):
                update(param, src, exp_avg)
            continue
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if amsgrad:
            max_sq = max_exp_avg_sqs[i]
            max_sq.copy_(maximum(max_sq, exp_avg_sq))
            denom = (max_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = exp_avg_sq.sqrt()
            denom.div_(bias_correction2_sqrt).add_(eps)
        # param.addcdiv_(exp_avg, denom, value=-step_size) with denom's storage as the
        # temporary: one parameter-sized temporary in all, when traced too (issue 20)
        param.add_(torch_div(exp_avg, denom, out=denom).mul_(-step_size))
