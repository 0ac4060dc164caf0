"""Scaled dot-product attention as one op (``sdpa``) with a packed backward op.

``softmax(q kᵀ · scale [causal mask]) v`` over the trailing two dims, every leading dim a
batch dim. Written as matmul / softmax / matmul, an attention layer's backward is five
batched products of small matrices plus the softmax passes over the (L, S) scores, each
a separate pass over memory; as one op, a native kernel takes one (batch, head) at a time
with its scores in cache (``kernels.cpu.attention``), and the backward recomputes the
scores instead of keeping them (as flash attention does).

The ops cover self-attention shapes (q, k and v of one shape and float dtype, no mask
other than the causal one, no dropout); ``gcompile.nn.functional`` uses them there and
the composite elsewhere. Both ops have decompositions (``decompositions.py``): back ends
without a kernel for them (the CUDA plan) and the ONNX exporter use those, and the
backward op's own gradient (double backward) is derived from its decomposition.
"""
from __future__ import annotations

import numpy as np

from ..registry import OpDef, register


def _scores(q, k, scale, causal):
    """q kᵀ · scale, with -inf above the diagonal when causal."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if causal:
        lq, lk = s.shape[-2:]
        s = np.where(np.triu(np.ones((lq, lk), bool), 1), -np.inf, s).astype(q.dtype)
    return s


def _probs(q, k, scale, causal):
    s = _scores(q, k, scale, causal)
    if s.size == 0:
        return s
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - m)
    return (e / np.sum(e, axis=-1, keepdims=True)).astype(q.dtype, copy=False)


def _sdpa_impl(q, k, v, scale, causal, perm=None):
    """The attention (..., L, D), or with ``perm`` that permuted into a fresh array:
    the layout its reader wants (the heads side by side again, for the output
    projection), which a rewrite hands the op to write directly."""
    r = np.matmul(_probs(q, k, scale, causal), v).astype(q.dtype, copy=False)
    return r if perm is None else np.ascontiguousarray(np.transpose(r, perm))


def laid_out(r: np.ndarray, perm, cat_dim) -> np.ndarray:
    """``sdpa_backward``'s result for its layout attributes from the stacked [dq, dk, dv]:
    as it is, or each permuted by ``perm`` and concatenated along ``cat_dim`` (the gradient
    of a fused q/k/v projection, which a rewrite hands the op to write directly)."""
    if perm is None:
        return r
    return np.concatenate([np.transpose(x, perm) for x in r], axis=cat_dim)


def _sdpa_backward_impl(g, q, k, v, scale, causal, perm=None, cat_dim=None):
    """[dq, dk, dv] stacked on a new leading axis (or laid out by ``perm``/``cat_dim``)."""
    p = _probs(q, k, scale, causal)
    dv = np.matmul(np.swapaxes(p, -1, -2), g)
    dp = np.matmul(g, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * q.dtype.type(scale)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * q.dtype.type(scale)
    return laid_out(np.stack([dq, dk, dv]).astype(q.dtype, copy=False), perm, cat_dim)


def _check(name, specs):
    if len(specs) < 3:
        raise RuntimeError(f"{name}: expected query, key and value")
    (qs, qd), (ks, kd), (vs, vd) = specs[-3:]
    if len(qs) < 2:
        raise RuntimeError(f"{name}: query, key and value need at least 2 dimensions, got "
                           f"{len(qs)}")
    if not (qd is kd is vd) or not qd.is_floating_point:
        raise RuntimeError(f"{name}: query, key and value must have one floating-point dtype, "
                           f"got {qd}, {kd} and {vd}")
    if not (tuple(qs) == tuple(ks) == tuple(vs)):
        raise RuntimeError(f"{name}: query, key and value must have one shape, got "
                           f"{tuple(qs)}, {tuple(ks)} and {tuple(vs)}")
    return tuple(qs), qd


def _sdpa_infer(specs, attrs):
    shape, d = _check("sdpa", specs)
    perm = attrs.get("perm")
    if perm is None:
        return shape, d
    if sorted(perm) != list(range(len(shape))):
        raise RuntimeError(f"sdpa: perm {perm} does not permute a {len(shape)}-D result")
    return tuple(shape[i] for i in perm), d


def _sdpa_backward_infer(specs, attrs):
    shape, d = _check("sdpa_backward", specs)
    if tuple(specs[0][0]) != shape or specs[0][1] is not d:
        raise RuntimeError(f"sdpa_backward: the output gradient must match the query, got "
                           f"{tuple(specs[0][0])} {specs[0][1]}")
    return gradient_shape(shape, attrs.get("perm"), attrs.get("cat_dim")), d


def gradient_shape(shape: tuple, perm, cat_dim) -> tuple:
    """``sdpa_backward``'s result shape for q's ``shape`` and its layout attributes."""
    if perm is None:
        return (3,) + tuple(shape)
    if sorted(perm) != list(range(len(shape))) or not 0 <= cat_dim < len(shape):
        raise RuntimeError(f"sdpa_backward: perm {perm} and cat_dim {cat_dim} do not lay out "
                           f"a {len(shape)}-D gradient")
    out = [shape[i] for i in perm]
    out[cat_dim] *= 3
    return tuple(out)


def _sdpa_grad(b, g, xs, out, scale, causal, perm=None):
    q, k, v = xs
    if perm is not None:   # the output gradient back in (..., L, D) order (a view)
        g = b.permute(g, dims=tuple(int(i) for i in np.argsort(perm)))
    r = b.sdpa_backward(g, q, k, v, scale=scale, causal=causal)
    return tuple(b.select_block(r, index=i) for i in range(3))


register(OpDef("sdpa", "other", _sdpa_impl, infer=_sdpa_infer, grad=_sdpa_grad,
               saves=(0, 1, 2), attrs=("scale", "causal", "perm"),
               backward_name="ScaledDotProductFlashAttentionForCpuBackward0",
               extra={"whole_on_cpu": True},
               doc="scaled dot-product attention softmax(q k^T * scale [causal]) v of q, k, v "
                   "of one shape (..., L, D) (with perm, permuted into a fresh array)"))
register(OpDef("sdpa_backward", "other", _sdpa_backward_impl, infer=_sdpa_backward_infer,
               attrs=("scale", "causal", "perm", "cat_dim"), extra={"whole_on_cpu": True},
               doc="[dq, dk, dv] of sdpa, stacked on a leading axis of 3 (or, with perm and "
                   "cat_dim, each permuted and concatenated along cat_dim), from the output "
                   "gradient and q, k, v (the scores are recomputed)"))
