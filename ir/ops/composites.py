"""Composite layers as single ops: ``linear``, ``layer_norm``, ``mse_loss``, ``cross_entropy``.

Each is written once in primitives, as its decomposition (``decompositions.py``): traced
graphs hold the one node, the compiler's decompose pass splits it into the primitives
(which fuse with their neighbours), the ONNX exporter emits the primitives, and the
gradient is derived from them (``ir.passes.decompose.derived_vjp``: the tape keeps only
the op's inputs). The ``impl`` here is the eager kernel: one NumPy function per call
instead of a dispatch per primitive, computing the same numbers in the same order.

Optional tensors are trailing inputs: ``linear(x, w[, bias])``, ``mse_loss(input,
target[, weight])``, ``cross_entropy(input, target[, weight])``; ``layer_norm(x[, weight]
[, bias])`` says which it has in ``has_weight`` / ``has_bias``.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..registry import REGISTRY, OpDef, register
from ..shapes import broadcast_shapes

_REDUCTIONS = ("mean", "sum", "none")


def _promoted(arrays) -> np.dtype:
    return dt.result_type(*[(dt.from_numpy(a.dtype), a.ndim) for a in arrays]).np


def _spec_dtype(specs) -> dt.DType:
    return dt.result_type(*[(d, len(s)) for s, d in specs])


def _need_float(name: str, d: dt.DType) -> None:
    if not d.is_floating_point:
        raise RuntimeError(f"{name}: expected a floating-point input, got {d}")


def _reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return np.asarray(np.mean(loss))
    if reduction == "sum":
        return np.asarray(np.sum(loss))
    return loss


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")


# ---- linear ------------------------------------------------------------------------------
def _linear_impl(x, w, bias=None):
    out = REGISTRY["matmul"].impl(x, w.T)
    if bias is not None:
        d = _promoted([out, bias])
        if out.dtype == d and out.flags.writeable and \
                np.broadcast_shapes(out.shape, bias.shape) == out.shape:
            np.add(out, bias, out=out)  # the GEMM's result is ours: no second buffer
        else:
            out = np.add(out, bias, dtype=d)
    return np.asarray(out)


def _linear_infer(specs, attrs):
    (xs, xd), (ws, wd) = specs[:2]
    if len(ws) != 2:
        raise RuntimeError(f"linear: weight must be 2-D, got shape {tuple(ws)}")
    shape, d = REGISTRY["matmul"].infer([(xs, xd), ((ws[1], ws[0]), wd)], {})
    if len(specs) == 3:
        shape = broadcast_shapes(shape, specs[2][0], op="linear")
        d = _spec_dtype([(shape, d), specs[2]])
    return tuple(shape), d


# the derived gradient reads x and the weight, never the bias: the tape keeps those two (as
# torch's addmm), so an in-place write to the bias before backward is no error
register(OpDef("linear", "matmul", _linear_impl, infer=_linear_infer, saves=(0, 1),
               doc="x @ weight^T (+ bias)"))


# ---- layer_norm --------------------------------------------------------------------------
def _norm_dims(ndim: int, normalized_ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim - normalized_ndim, ndim))


def _layer_norm_impl(x, *wb, normalized_ndim, eps, has_weight=False, has_bias=False):
    dims = _norm_dims(x.ndim, normalized_ndim)
    mean = np.mean(x, axis=dims, keepdims=True)
    c = x - mean
    var = np.mean(c * c, axis=dims, keepdims=True)
    r = np.reciprocal(np.sqrt(var + x.dtype.type(eps)))
    if c.dtype == x.dtype and c.flags.writeable and all(w.dtype == x.dtype for w in wb):
        # the same operations, in place in c: eager allocated a buffer for each
        np.multiply(c, r, out=c)
        if has_weight:
            np.multiply(c, wb[0], out=c)
        if has_bias:
            np.add(c, wb[-1], out=c)
        return c
    out = c * r
    if has_weight:
        out = out * wb[0]
    if has_bias:
        out = out + wb[-1]
    return np.asarray(out).astype(_promoted((x,) + wb), copy=False)


def _layer_norm_infer(specs, attrs):
    shape, d = specs[0]
    _need_float("layer_norm", d)
    k = attrs["normalized_ndim"]
    if k > len(shape):
        raise RuntimeError(f"layer_norm: normalizes {k} dims of a {len(shape)}-d input")
    want = 1 + bool(attrs.get("has_weight")) + bool(attrs.get("has_bias"))
    if len(specs) != want:
        raise RuntimeError(f"layer_norm: expected {want} inputs, got {len(specs)}")
    for s, _ in specs[1:]:
        if tuple(s) != tuple(shape[len(shape) - k:]):
            raise RuntimeError(f"layer_norm: weight/bias of shape {tuple(s)} for normalized "
                               f"shape {tuple(shape[len(shape) - k:])}")
    return tuple(shape), _spec_dtype(specs)


register(OpDef("layer_norm", "other", _layer_norm_impl, infer=_layer_norm_infer,
               attrs=("normalized_ndim", "eps", "has_weight", "has_bias"),
               backward_name="NativeLayerNormBackward0",
               doc="(x - mean) / sqrt(var + eps) over the trailing normalized_ndim dims "
                   "(biased variance), times weight, plus bias"))


# ---- mse_loss ----------------------------------------------------------------------------
def _mse_impl(x, t, weight=None, reduction="mean"):
    d = x - t
    loss = d * d
    if weight is not None:
        loss = loss * weight
    arrays = (x, t) if weight is None else (x, t, weight)
    return _reduce(loss, reduction).astype(_promoted(arrays), copy=False)


def _loss_infer(name):
    def infer(specs, attrs):
        _check_reduction(attrs.get("reduction", "mean"))
        shape = broadcast_shapes(*[s for s, _ in specs], op=name)
        d = _spec_dtype(specs)
        _need_float(name, d)
        return (tuple(shape) if attrs.get("reduction", "mean") == "none" else ()), d
    return infer


register(OpDef("mse_loss", "other", _mse_impl, infer=_loss_infer("mse_loss"),
               attrs=("reduction",), backward_name="MseLossBackward0",
               doc="(input - target)^2 (times weight), reduced"))


# ---- cross_entropy -----------------------------------------------------------------------
def _log_softmax(x, dim):
    return REGISTRY["log_softmax"].impl(x, dim=dim)


def _ce_impl(x, t, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    cdim = 0 if x.ndim == 1 else 1
    n = x.shape[cdim]
    logp = _log_softmax(x, cdim)
    wshape = [1] * x.ndim
    wshape[cdim] = n
    ls = x.dtype.type(label_smoothing)
    if t.dtype.kind == "f":
        if label_smoothing > 0:
            t = t * (1 - ls) + ls / x.dtype.type(n)
        prod = logp * t
        if weight is not None:
            prod = prod * weight.reshape(wshape)
        if reduction == "none":
            return -prod.sum(cdim)
        total = -prod.sum()
        return np.asarray(total if reduction == "sum" else total / x.dtype.type(x.size / n))
    ignored = t == ignore_index
    safe = np.where(ignored, 0, t)
    picked = np.squeeze(np.take_along_axis(logp, np.expand_dims(safe, cdim), cdim), cdim)
    keep = (~ignored).astype(x.dtype)
    w = keep if weight is None else weight[safe] * keep
    loss = -(picked * w)
    if reduction == "none":
        nll = loss
    elif reduction == "sum":
        nll = np.asarray(loss.sum())
    else:
        nll = np.asarray(loss.sum() / w.sum())
    if label_smoothing == 0.0:
        return nll
    smooth = -(logp * weight.reshape(wshape)).sum(cdim) if weight is not None else \
        -logp.sum(cdim)
    smooth = smooth * keep
    if reduction == "mean":
        ret = smooth.sum() / w.sum()
    elif reduction == "sum":
        ret = smooth.sum()
    else:
        ret = smooth
    return np.asarray(nll * (1 - ls) + ret * (ls / x.dtype.type(n)))


def _ce_infer(specs, attrs):
    (xs, xd), (ts, td) = specs[:2]
    _need_float("cross_entropy", xd)
    reduction = attrs.get("reduction", "mean")
    _check_reduction(reduction)
    if len(xs) < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {len(xs)})")
    cdim = 0 if len(xs) == 1 else 1
    batch = tuple(xs[:cdim]) + tuple(xs[cdim + 1:])
    if td.is_floating_point:
        if tuple(ts) != tuple(xs):
            raise RuntimeError(f"cross_entropy: class-probability targets must have the "
                               f"input's shape, got input {tuple(xs)} and target {tuple(ts)}")
    elif tuple(ts) != batch:
        raise ValueError(f"cross_entropy: target shape {tuple(ts)} does not match the input's "
                         f"batch shape {batch}")
    if len(specs) == 3 and tuple(specs[2][0]) != (xs[cdim],):
        raise RuntimeError(f"weight tensor should be defined either for all {xs[cdim]} classes "
                           f"or no classes but got weight tensor of shape: "
                           f"{list(specs[2][0])}")
    return (batch if reduction == "none" else ()), xd


register(OpDef("cross_entropy", "other", _ce_impl, infer=_ce_infer,
               attrs=("reduction", "ignore_index", "label_smoothing"),
               backward_name="NllLossBackward0",
               doc="log_softmax + nll_loss over class indices, or soft cross entropy over "
                   "class probabilities; label smoothing as torch"))
