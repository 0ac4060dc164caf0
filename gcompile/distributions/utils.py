"""Helpers shared by the distributions: broadcasting, probs <-> logits."""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .._tensor import Tensor, _graph_break

__all__ = ["broadcast_all", "probs_to_logits", "logits_to_probs", "clamp_probs",
           "lazy_property", "lgamma_const", "softplus"]


def broadcast_all(*values: Any) -> tuple[Tensor, ...]:
    """Tensors and Python numbers -> tensors broadcast to one shape (numbers
    take the dtype of the first tensor, or the default float dtype)."""
    from .._creation import tensor
    from .._functions import broadcast_tensors
    from ir.dtypes import get_default_dtype
    ref = next((v for v in values if isinstance(v, Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.dtype.is_floating_point else get_default_dtype()
    out = []
    for v in values:
        if isinstance(v, Tensor):
            out.append(v)
        elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            out.append(tensor(float(v), dtype=dtype))
        else:
            raise ValueError("Input arguments must all be instances of numbers.Number or "
                             f"Tensor, got {type(v).__name__}")
    return tuple(broadcast_tensors(*out))


def finfo_eps(t: Tensor) -> float:
    return float(np.finfo(t.dtype.np).eps)


def finfo_min(t: Tensor) -> float:
    return float(np.finfo(t.dtype.np).min)


def clamp_probs(probs: Tensor) -> Tensor:
    """Keep probabilities inside [eps, 1 - eps] so their logs stay finite."""
    eps = finfo_eps(probs)
    return probs.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs: Tensor, is_binary: bool = False) -> Tensor:
    ps = clamp_probs(probs)
    if is_binary:
        return ps.log() - (-ps).log1p()
    return ps.log()


def logits_to_probs(logits: Tensor, is_binary: bool = False) -> Tensor:
    if is_binary:
        return logits.sigmoid()
    return (logits - logits.logsumexp(-1, keepdim=True)).exp()


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)), stable for large |x|."""
    return x.clamp(min=0) + (-x.abs()).exp().log1p()


def lgamma_const(x: Tensor) -> Tensor:
    """log Gamma(x) elementwise, as a constant (no gradient): used on counts. There
    is no lgamma op yet, so under compile this is a graph break, never a baked value."""
    _graph_break("lgamma of a tensor (no lgamma op)")
    arr = np.asarray(x.detach()._data, dtype=np.float64)
    out = np.vectorize(math.lgamma, otypes=[np.float64])(arr) if arr.size else arr.copy()
    return Tensor._make(np.asarray(out, dtype=x.dtype.np if x.dtype.is_floating_point
                                   else np.float64))


class lazy_property:
    """Computed on first access and cached in the instance __dict__ (so
    ``'probs' in d.__dict__`` tells which parameterisation was given)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        value = self.fn(instance)
        instance.__dict__[self.fn.__name__] = value
        return value
