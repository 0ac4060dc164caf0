"""Gradient clipping (in place on ``.grad``), written in ops so a compiled
training step clips on every call with that call's gradients."""
from __future__ import annotations

import math
from collections.abc import Iterable

from ..._functions import amax, check_values, clamp, norm, stack
from ..._tensor import Tensor
from ...autograd.grad_mode import no_grad


def _grads(parameters) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


@no_grad()
def clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> Tensor:
    """Scale all gradients together so their joint norm is at most max_norm;
    returns the total norm before clipping (torch's algorithm: per-gradient
    norms, the norm of those, and a clip coefficient clamped at 1)."""
    from ..._creation import tensor
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        return tensor(0.0)
    if math.isinf(norm_type):
        norms = [amax(g.abs()) if g.numel() else tensor(0.0, dtype=g.dtype) for g in grads]
        total = amax(stack(norms))
    else:
        norms = [norm(g, norm_type) for g in grads]
        total = norm(stack(norms), norm_type)
    if error_if_nonfinite:
        total = check_values(
            total, "finite", message=f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable this error and "
            "scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")
    clip_coef = clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(clip_coef.to(g.dtype))
    return total


@no_grad()
def clip_grad_value_(parameters: Iterable[Tensor] | Tensor, clip_value: float,
                     foreach=None) -> None:
    """Clamp every gradient element into [-clip_value, clip_value]."""
    v = float(clip_value)
    for g in _grads(parameters):
        g.clamp_(min=-v, max=v)


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)
