"""Gradient clipping (in place on ``.grad``)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..._tensor import Tensor


def _grads(parameters) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> Tensor:
    """Scale all gradients together so their joint norm is at most max_norm;
    returns the total norm before clipping."""
    from ..._creation import tensor
    grads = _grads(parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not grads:
        return tensor(0.0)
    if math.isinf(norm_type):
        norms = [np.max(np.abs(g._data)) if g.numel() else 0.0 for g in grads]
        total = float(max(norms))
    else:
        total = float(sum(float(np.sum(np.abs(g._data.astype(np.float64)) ** norm_type))
                          for g in grads) ** (1.0 / norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` "
                           "is non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g._data *= g._data.dtype.type(coef)
            g._vbox[0] += 1
    return tensor(total, dtype=grads[0].dtype)


def clip_grad_value_(parameters: Iterable[Tensor] | Tensor, clip_value: float,
                     foreach=None) -> None:
    """Clamp every gradient element into [-clip_value, clip_value]."""
    v = float(clip_value)
    for g in _grads(parameters):
        np.clip(g._data, -v, v, out=g._data)
        g._vbox[0] += 1


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)
