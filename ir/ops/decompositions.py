"""Decompositions of the composite ops into primitives (``OpDef.decomposition``).

Each is written once against the builder interface and attached to its op here, so
the op's definition (eager implementation, fused expression, gradient) and its
primitive form sit in one table the compiler's decompose pass reads. A rule returns
None, before building anything, to decline.
"""
from __future__ import annotations

import math

from ..registry import set_decomposition

_FLOATS = ("float32", "float64")


def _gelu(b, x, approximate="none"):
    """0.5 x (1 + erf(x / sqrt 2)), or the tanh form."""
    if x.dtype.name not in _FLOATS:
        return None
    if approximate == "tanh":
        x3 = b.mul(b.mul(x, x), x)
        t = b.tanh(b.mul(b.add(x, b.mul(x3, 0.044715)), math.sqrt(2.0 / math.pi)))
    else:
        t = b.erf(b.mul(x, 1.0 / math.sqrt(2.0)))
    return b.mul(b.mul(x, 0.5), b.add(t, 1.0))


def _row_max(b, x, dims):
    """The max over ``dims`` (kept), 0 where it is not finite (an all -inf row)."""
    m = b.op("amax", x, dims=dims, keepdim=True)
    return b.where(b.isfinite(m), m, 0.0)


def _softmax_rule(log: bool):
    def rule(b, x, dim):
        if x.dtype.name not in _FLOATS or x.numel == 0 or x.ndim == 0:
            return None
        d = (dim % x.ndim,)
        s = b.sub(x, _row_max(b, x, d))
        e = b.exp(s)
        tot = b.op("sum", e, dims=d, keepdim=True)
        return b.sub(s, b.log(tot)) if log else b.div(e, tot)
    return rule


def _logsumexp(b, x, dims, keepdim=False):
    """log(sum(exp(x - m))) + m with m the (finite-guarded) max."""
    if x.dtype.name not in _FLOATS or x.numel == 0 or x.ndim == 0 or not dims:
        return None
    dims = tuple(dims)
    m0 = _row_max(b, x, dims)
    tot = b.op("sum", b.exp(b.sub(x, m0)), dims=dims, keepdim=True)
    out = b.add(b.log(tot), m0)
    if keepdim:
        return out
    shape = tuple(s for i, s in enumerate(x.shape) if i not in {d % x.ndim for d in dims})
    return b.op("reshape", out, shape=shape)


def _detach(b, x):
    """Only the autodiff pass needs the cut; after it, detach is its input (the op is
    marked ``cuts_gradient``: this is not its gradient)."""
    return x


def _silu(b, x):
    """x sigmoid(x)."""
    if x.dtype.name not in _FLOATS:
        return None
    return b.mul(x, b.sigmoid(x))


RULES = {
    "detach": _detach,
    "gelu": _gelu,
    "silu": _silu,
    "softmax": _softmax_rule(log=False),
    "log_softmax": _softmax_rule(log=True),
    "logsumexp": _logsumexp,
}
for _name, _rule in RULES.items():
    set_decomposition(_name, _rule)
