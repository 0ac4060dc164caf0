"""Decompositions of the composite ops into primitives (``OpDef.decomposition``).

Each is written once against the builder interface and attached to its op here, so
the op's definition (eager implementation, fused expression) and its primitive form sit
in one table. It is used by the compiler's decompose pass (traced graphs), by the
gradient of every op here without a hand-written rule (derived from the primitives:
silu, leaky_relu, linear, layer_norm, mse_loss, cross_entropy), and by the ONNX exporter
for ops it has no translation for. gelu, softmax, log_softmax and logsumexp keep fused
hand-written rules (see their definitions for why); detach's rule is no gradient
(``cuts_gradient``). Attention (``sdpa``, ``sdpa_backward``) stays whole in CPU plans,
which have native kernels for it (``extra["whole_on_cpu"]``); the backward op's own
gradient (double backward) is derived from its rule. A rule returns None, before
building anything, to decline; it is only ever called with graph values.
"""
from __future__ import annotations

import math

from .. import dtypes as dt
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


def _leaky_relu(b, x, negative_slope=0.01):
    """where(x > 0, x, x * slope)."""
    if not x.dtype.is_floating_point:
        return None
    return b.where(b.gt(x, 0.0), x, b.mul(x, float(negative_slope)))


def _silu(b, x):
    """x sigmoid(x)."""
    if x.dtype.name not in _FLOATS:
        return None
    return b.mul(x, b.sigmoid(x))


def _linear(b, x, w, bias=None):
    """x @ w^T (+ bias)."""
    out = b.matmul(x, b.permute(w, dims=(1, 0)))
    return out if bias is None else b.add(out, bias)


def _layer_norm(b, x, *wb, normalized_ndim, eps, has_weight=False, has_bias=False):
    """(x - mean) * rsqrt(var + eps) over the trailing dims, biased variance."""
    dims = tuple(range(x.ndim - normalized_ndim, x.ndim))
    c = b.sub(x, b.mean(x, dims=dims, keepdim=True))
    var = b.mean(b.mul(c, c), dims=dims, keepdim=True)
    out = b.mul(c, b.rsqrt(b.add(var, float(eps))))
    if has_weight:
        out = b.mul(out, wb[0])
    if has_bias:
        out = b.add(out, wb[-1])
    return out


def _reduce(b, loss, reduction):
    if reduction == "none":
        return loss
    return b.op(reduction, loss, dims=tuple(range(loss.ndim)), keepdim=False)


def _mse_loss(b, x, t, weight=None, reduction="mean"):
    """(x - t)^2 (times weight), reduced."""
    d = b.sub(x, t)
    loss = b.mul(d, d)
    if weight is not None:
        loss = b.mul(loss, weight)
    return _reduce(b, loss, reduction)


def _cross_entropy(b, x, t, weight=None, reduction="mean", ignore_index=-100,
                   label_smoothing=0.0):
    """log_softmax, then the negative log-likelihood of the target classes (or the soft
    cross entropy with class probabilities), with torch's label smoothing."""
    cdim = 0 if x.ndim == 1 else 1
    n = x.shape[cdim]
    logp = b.log_softmax(x, dim=cdim)
    wshape = tuple(n if i == cdim else 1 for i in range(x.ndim))
    wb = None if weight is None else b.reshape(weight, shape=wshape)
    if t.dtype.is_floating_point:
        if label_smoothing > 0:
            t = b.add(b.mul(t, 1.0 - label_smoothing), label_smoothing / n)
        prod = b.mul(logp, t)
        if wb is not None:
            prod = b.mul(prod, wb)
        if reduction == "none":
            return b.neg(b.sum(prod, dims=(cdim,), keepdim=False))
        total = b.neg(_reduce(b, prod, "sum"))
        return total if reduction == "sum" else b.div(total, float(x.numel / n))
    ignored = b.eq(t, ignore_index)
    safe = b.where(ignored, 0, t)
    index_shape = tuple(t.shape[:cdim]) + (1,) + tuple(t.shape[cdim:])
    picked = b.gather(logp, b.reshape(safe, shape=index_shape), dim=cdim)
    picked = b.reshape(picked, shape=tuple(t.shape))
    keep = b.cast(b.logical_not(ignored), x.dtype)
    w = keep if weight is None else b.mul(b.getitem(weight, safe, index=(("t", 0),)), keep)
    loss = b.neg(b.mul(picked, w))
    nll = b.div(_reduce(b, loss, "sum"), _reduce(b, w, "sum")) if reduction == "mean" else \
        _reduce(b, loss, reduction)
    if label_smoothing == 0.0:
        return nll
    smooth = b.neg(b.sum(logp if wb is None else b.mul(logp, wb), dims=(cdim,), keepdim=False))
    smooth = b.mul(smooth, keep)
    ret = b.div(_reduce(b, smooth, "sum"), _reduce(b, w, "sum")) if reduction == "mean" else \
        _reduce(b, smooth, reduction)
    return b.add(b.mul(nll, 1.0 - label_smoothing), b.mul(ret, label_smoothing / n))


def _sdpa_probs(b, q, k, scale, causal):
    """softmax(q kᵀ · scale) over the last dim, -inf above the diagonal when causal."""
    s = b.mul(b.matmul(q, _swap_last(b, k)), float(scale))
    if causal:
        lq, lk = q.shape[-2], k.shape[-2]
        rows = b.reshape(b.arange(start=0, end=lq, step=1, dtype=dt.int64), shape=(lq, 1))
        cols = b.reshape(b.arange(start=0, end=lk, step=1, dtype=dt.int64), shape=(1, lk))
        s = b.where(b.gt(cols, rows), float("-inf"), s)  # above the diagonal
    return b.softmax(s, dim=q.ndim - 1)


def _swap_last(b, x):
    nd = x.ndim
    return b.permute(x, dims=tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _sdpa(b, q, k, v, scale, causal, perm=None):
    """matmul, softmax, matmul (then permuted, with ``perm``)."""
    r = b.matmul(_sdpa_probs(b, q, k, scale, causal), v)
    return r if perm is None else b.permute(r, dims=tuple(perm))


def _sdpa_backward(b, g, q, k, v, scale, causal, perm=None, cat_dim=None):
    """The scores recomputed, then dv = pᵀ g, ds = p (g vᵀ - rowsum(p · g vᵀ)),
    dq = ds k · scale, dk = dsᵀ q · scale, stacked (or permuted and concatenated)."""
    p = _sdpa_probs(b, q, k, scale, causal)
    dv = b.matmul(_swap_last(b, p), g)
    dp = b.matmul(g, _swap_last(b, v))
    ds = b.mul(p, b.sub(dp, b.sum(b.mul(p, dp), dims=(q.ndim - 1,), keepdim=True)))
    dq = b.mul(b.matmul(ds, k), float(scale))
    dk = b.mul(b.matmul(_swap_last(b, ds), q), float(scale))
    if perm is not None:
        return b.cat(*(b.permute(t, dims=tuple(perm)) for t in (dq, dk, dv)), dim=cat_dim)
    one = (1,) + tuple(q.shape)
    return b.cat(*(b.reshape(t, shape=one) for t in (dq, dk, dv)), dim=0)


RULES = {
    "detach": _detach,
    "gelu": _gelu,
    "silu": _silu,
    "leaky_relu": _leaky_relu,
    "softmax": _softmax_rule(log=False),
    "log_softmax": _softmax_rule(log=True),
    "logsumexp": _logsumexp,
    "linear": _linear,
    "layer_norm": _layer_norm,
    "mse_loss": _mse_loss,
    "cross_entropy": _cross_entropy,
    "sdpa": _sdpa,
    "sdpa_backward": _sdpa_backward,
}
for _name, _rule in RULES.items():
    set_decomposition(_name, _rule)
