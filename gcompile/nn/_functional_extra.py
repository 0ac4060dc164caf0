"""More of ``nn.functional``, composed from registered ops: shrink activations, adaptive
max pooling of any sizes, fractional and power-average pooling, local response norm,
and the margin / likelihood losses. Re-exported by ``functional``.

Window pooling that the ``max_pool_indices`` op cannot express (windows of unequal
size, windows that depend on random samples) gathers every window's elements into a
trailing axis and takes the max there: the gather and ``max(dim)`` ops give eager,
compiled and gradient behaviour for free."""
from __future__ import annotations

import math

import numpy as np

from .. import _creation
from .. import _functions as T
from .._tensor import Tensor


def hardshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """x where |x| > lambd, else 0."""
    return T.where(input.abs() > lambd, input, 0.0)


def softshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """x - lambd above lambd, x + lambd below -lambd, else 0."""
    if lambd < 0:
        raise RuntimeError(f"lambda must be greater or equal to 0, but found to be {lambd}.")
    return T.where(input > lambd, input - lambd, T.where(input < -lambd, input + lambd, 0.0))


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------
def _prep(input: Tensor, nsp: int, name: str) -> tuple[Tensor, bool]:
    if input.dim() not in (nsp + 1, nsp + 2):
        raise RuntimeError(f"{name}: Expected {nsp + 1}D or {nsp + 2}D input, but got input of "
                           f"size: {list(input.shape)}")
    unbatched = input.dim() == nsp + 1
    return (input.unsqueeze(0) if unbatched else input), unbatched


def _out_size(output_size, sizes: tuple, nsp: int, name: str) -> tuple[int, ...]:
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size,) * nsp
    output_size = tuple(output_size)
    if len(output_size) != nsp:
        raise ValueError(f"{name}: output_size must have {nsp} elements, got {output_size}")
    return tuple(s if o is None else int(o) for o, s in zip(output_size, sizes))


def _window_max(x: Tensor, flat_index: Tensor, out_size: tuple, return_indices: bool):
    """Max of ``x`` (N, C, *spatial) over windows: ``flat_index`` (N, C, P, K) holds each
    output position's K flat spatial indices (a window may repeat an element)."""
    n, c = x.shape[:2]
    p, k = flat_index.shape[2:]
    flat = x.reshape(n, c, -1)
    vals = T.gather(flat, 2, flat_index.reshape(n, c, p * k)).reshape(n, c, p, k)
    out, arg = vals.max(dim=3)
    out = out.reshape((n, c) + tuple(out_size))
    if not return_indices:
        return out
    idx = T.gather(flat_index, 3, arg.unsqueeze(3)).squeeze(3).reshape((n, c) + tuple(out_size))
    return out, idx


def _adaptive_table(sizes: tuple, out_size: tuple) -> np.ndarray:
    """(P, K) flat indices of torch's adaptive windows [floor(i*n/o), ceil((i+1)*n/o)),
    short windows padded by repeating their first element."""
    per_dim = []
    for n, o in zip(sizes, out_size):
        wins = [list(range((i * n) // o, -(-((i + 1) * n) // o))) for i in range(o)]
        kmax = max(len(w) for w in wins)
        per_dim.append(np.array([w + [w[0]] * (kmax - len(w)) for w in wins]))
    strides = [int(np.prod(sizes[d + 1:])) for d in range(len(sizes))]
    table = np.zeros((1, 1), np.int64)
    for d, w in enumerate(per_dim):  # outer sum over dims: (P*o, K*k)
        part = w * strides[d]
        table = (table[:, None, :, None] + part[None, :, None, :]).reshape(
            table.shape[0] * part.shape[0], table.shape[1] * part.shape[1])
    return table


def _adaptive_max(input, output_size, return_indices, nsp, name):
    x, unbatched = _prep(input, nsp, name)
    sizes = tuple(x.shape[2:])
    out_size = _out_size(output_size, sizes, nsp, name)
    if any(o <= 0 for o in out_size):
        raise RuntimeError(f"{name}: output_size must be positive, got {out_size}")
    if all(s % o == 0 for s, o in zip(sizes, out_size)):
        from .functional import _max_poolnd
        k = tuple(s // o for s, o in zip(sizes, out_size))
        res = _max_poolnd(x, k, k, 0, 1, False, return_indices, nsp, name)
    else:
        table = Tensor._make(_adaptive_table(sizes, out_size))
        n, c = x.shape[:2]
        res = _window_max(x, table.expand((n, c) + tuple(table.shape)), out_size,
                          return_indices)
    if unbatched:
        return tuple(r.squeeze(0) for r in res) if return_indices else res.squeeze(0)
    return res


def adaptive_max_pool1d(input: Tensor, output_size, return_indices: bool = False):
    """Max over torch's adaptive windows (any input/output sizes)."""
    return _adaptive_max(input, output_size, return_indices, 1, "adaptive_max_pool1d")


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """Max over torch's adaptive windows (any input/output sizes, None keeps a size)."""
    return _adaptive_max(input, output_size, return_indices, 2, "adaptive_max_pool2d")


def adaptive_max_pool3d(input: Tensor, output_size, return_indices: bool = False):
    return _adaptive_max(input, output_size, return_indices, 3, "adaptive_max_pool3d")


def adaptive_avg_pool3d(input: Tensor, output_size) -> Tensor:
    from .functional import _adaptive_avg
    return _adaptive_avg(input, output_size, 3, "adaptive_avg_pool3d")


def _fractional_max(input, kernel_size, output_size, output_ratio, return_indices,
                    _random_samples, nsp, name):
    from .functional import _tuple
    x, unbatched = _prep(input, nsp, name)
    n, c = x.shape[:2]
    sizes = tuple(x.shape[2:])
    kernel = _tuple(kernel_size, nsp, "kernel_size")
    if output_size is None:
        if output_ratio is None:
            raise ValueError(f"{name} requires specifying either an output_size or an "
                             "output_ratio")
        ratio = _tuple(output_ratio, nsp, "output_ratio") if not isinstance(
            output_ratio, float) else (output_ratio,) * nsp
        output_size = tuple(int(s * r) for s, r in zip(sizes, ratio))
    out_size = _tuple(output_size, nsp, "output_size")
    for s, k, o in zip(sizes, kernel, out_size):
        if o + k - 1 > s:
            raise RuntimeError(f"{name}(): pool size {k} too large relative to input size {s} "
                               f"for output size {o}")
    if _random_samples is None:
        _random_samples = _creation.rand(n, c, nsp, dtype=x.dtype)
    u = _random_samples.detach().to(x.dtype).narrow(0, 0, n)
    # torch's sample order: 2d (W, H), 3d (T, H, W)
    which = (1, 0) if nsp == 2 else tuple(range(nsp))
    idx = None
    strides = [int(np.prod(sizes[d + 1:])) for d in range(nsp)]
    for d, (s, k, o) in enumerate(zip(sizes, kernel, out_size)):
        ud = u[:, :, which[d]].unsqueeze(2)                       # (N, C, 1)
        if o > 1:
            alpha = (s - k) / (o - 1)
            i = _creation.arange(o - 1, dtype=x.dtype)
            starts = ((i + ud) * alpha).floor() - (ud * alpha).floor()
            last = _creation.full_like(starts.narrow(2, 0, 1), float(s - k))
            starts = T.cat([starts, last], dim=2)
        else:
            starts = _creation.full_like(ud, float(s - k))
        starts = starts.long()                                    # (N, C, o)
        win = (starts.unsqueeze(3) + _creation.arange(k)) * strides[d]  # (N, C, o, k)
        if idx is None:
            idx = win
        else:  # outer sum with the dims so far: (N, C, P*o, K*k)
            p0, k0 = idx.shape[2:]
            idx = (idx.unsqueeze(3).unsqueeze(5) + win.unsqueeze(2).unsqueeze(4)).reshape(
                n, c, p0 * o, k0 * k)
    res = _window_max(x, idx, out_size, return_indices)
    if unbatched:
        return tuple(r.squeeze(0) for r in res) if return_indices else res.squeeze(0)
    return res


def fractional_max_pool2d(input: Tensor, kernel_size, output_size=None, output_ratio=None,
                          return_indices: bool = False, _random_samples=None):
    """Max over pseudo-random windows (Graham, 2014), torch's interval sequence."""
    return _fractional_max(input, kernel_size, output_size, output_ratio, return_indices,
                           _random_samples, 2, "fractional_max_pool2d")


def fractional_max_pool3d(input: Tensor, kernel_size, output_size=None, output_ratio=None,
                          return_indices: bool = False, _random_samples=None):
    return _fractional_max(input, kernel_size, output_size, output_ratio, return_indices,
                           _random_samples, 3, "fractional_max_pool3d")


def _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, nsp):
    from . import functional as F
    kernel = F._tuple(kernel_size, nsp, "kernel_size")
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nsp - 1]
    x = input.pow(norm_type)
    out = pool(x, kernel, stride, 0, ceil_mode) if stride is not None else pool(
        x, kernel, padding=0, ceil_mode=ceil_mode)
    return (out.sign() * F.relu(out.abs())).mul(math.prod(kernel)).pow(1.0 / norm_type)


def lp_pool1d(input: Tensor, norm_type: float, kernel_size, stride=None,
              ceil_mode: bool = False) -> Tensor:
    """(sum over the window of x^p)^(1/p), as torch: an average pool of x^p rescaled."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 1)


def lp_pool2d(input: Tensor, norm_type: float, kernel_size, stride=None,
              ceil_mode: bool = False) -> Tensor:
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 2)


def lp_pool3d(input: Tensor, norm_type: float, kernel_size, stride=None,
              ceil_mode: bool = False) -> Tensor:
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 3)


def local_response_norm(input: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> Tensor:
    """x / (k + alpha * mean of x^2 over ``size`` neighbouring channels)^beta."""
    from . import functional as F
    dim = input.dim()
    if dim < 3:
        raise ValueError(f"Expected 3D or higher dimensionality input (got {dim} dimensions)")
    if input.numel() == 0:
        return input
    div = input.mul(input)
    if dim == 3:
        div = div.unsqueeze(1)
        div = F.pad(div, (0, 0, size // 2, (size - 1) // 2))
        div = F.avg_pool2d(div, (size, 1), stride=1).squeeze(1)
    else:
        sizes = tuple(input.shape)
        div = div.reshape(sizes[0], 1, sizes[1], sizes[2], -1)
        div = F.pad(div, (0, 0, 0, 0, size // 2, (size - 1) // 2))
        div = F.avg_pool3d(div, (size, 1, 1), stride=1).squeeze(1)
        div = div.reshape(sizes)
    div = div.mul(alpha).add(k).pow(beta)
    return input / div


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------
def _reduce(loss: Tensor, reduction: str, name: str) -> Tensor:
    from .functional import _reduce as r
    return r(loss, reduction, name)


def _legacy(size_average, reduce, reduction: str) -> str:
    from .functional import _legacy_reduction
    return _legacy_reduction(size_average, reduce, reduction)


def multi_margin_loss(input: Tensor, target: Tensor, p: int = 1, margin: float = 1.0,
                      weight: Tensor | None = None, size_average=None, reduce=None,
                      reduction: str = "mean") -> Tensor:
    """sum_{i != y} max(0, margin - x[y] + x[i])^p / C (weighted by weight[y])."""
    reduction = _legacy(size_average, reduce, reduction)
    if p not in (1, 2):
        raise ValueError("only p == 1 and p == 2 supported")
    x = input if input.dim() == 2 else input.reshape(1, -1)
    t = target.reshape(-1)
    c = x.shape[1]
    from .functional import _check_targets, one_hot
    t = _check_targets(t, c, -100, "multi_margin_loss")
    xy = T.gather(x, 1, t.unsqueeze(1))
    z = (x - xy + margin).clamp(min=0)
    if p == 2:
        z = z * z
    if weight is not None:
        z = z * weight[t].unsqueeze(1)
    z = z * (1 - one_hot(t, c).to(x.dtype))
    loss = z.sum(dim=1) / c
    if input.dim() < 2:
        loss = loss.reshape(())
    return _reduce(loss, reduction, "multi_margin_loss")


def multilabel_margin_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,
                           reduction: str = "mean") -> Tensor:
    """sum over target classes j (those before the first -1) and non-target classes i of
    max(0, 1 - (x[j] - x[i])) / C."""
    reduction = _legacy(size_average, reduce, reduction)
    x = input if input.dim() == 2 else input.reshape(1, -1)
    t = target.reshape(x.shape)
    c = x.shape[1]
    valid = (T.cumsum((t < 0).long(), 1) == 0)                    # before the first -1
    tc = T.where(valid, t, 0)
    from .functional import one_hot
    hot = one_hot(tc, c).to(x.dtype) * valid.to(x.dtype).unsqueeze(2)   # (N, J, C)
    is_target = (hot.sum(dim=1) > 0).to(x.dtype)                   # (N, C)
    xj = T.gather(x, 1, tc)                                        # (N, J)
    m = (1 - xj.unsqueeze(2) + x.unsqueeze(1)).clamp(min=0)
    m = m * valid.to(x.dtype).unsqueeze(2) * (1 - is_target).unsqueeze(1)
    loss = m.sum(dim=(1, 2)) / c
    if input.dim() < 2:
        loss = loss.reshape(())
    return _reduce(loss, reduction, "multilabel_margin_loss")


def multilabel_soft_margin_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                size_average=None, reduce=None,
                                reduction: str = "mean") -> Tensor:
    from .functional import logsigmoid
    reduction = _legacy(size_average, reduce, reduction)
    loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    class_dim = input.dim() - 1
    loss = loss.sum(dim=class_dim) / input.shape[class_dim]
    return _reduce(loss, reduction, "multilabel_soft_margin_loss")


def gaussian_nll_loss(input: Tensor, target: Tensor, var, full: bool = False,
                      eps: float = 1e-6, reduction: str = "mean") -> Tensor:
    """0.5 * (log(max(var, eps)) + (input - target)^2 / max(var, eps)); the clamp
    passes gradients straight through, as torch's in-place clamp under no_grad."""
    from .functional import check_values
    if not isinstance(var, Tensor):
        var = _creation.full_like(input, float(var))
    if tuple(var.shape) != tuple(input.shape):
        if tuple(input.shape[:-1]) == tuple(var.shape):
            var = var.unsqueeze(-1)
        elif input.dim() == var.dim() and sum(
                y for x, y in zip(input.shape, var.shape) if x != y) == 1:
            pass  # one broadcast dim of size 1 (torch's rule)
        else:
            raise ValueError("var is of incorrect size")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not valid")
    var = check_values(var, "range", low=0.0, error="ValueError",
                       message="var has negative entry/entries")
    var = var + (var.clamp(min=eps) - var).detach()
    loss = 0.5 * (var.log() + (input - target) ** 2 / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction, "gaussian_nll_loss")


def poisson_nll_loss(input: Tensor, target: Tensor, log_input: bool = True, full: bool = False,
                     size_average=None, eps: float = 1e-8, reduce=None,
                     reduction: str = "mean") -> Tensor:
    reduction = _legacy(size_average, reduce, reduction)
    if log_input:
        loss = input.exp() - target * input
    else:
        loss = input - target * (input + eps).log()
    if full:
        safe = T.where(target > 1, target, 1.0)
        stirling = safe * safe.log() - safe + 0.5 * (2 * math.pi * safe).log()
        loss = loss + T.where(target > 1, stirling, 0.0)
    return _reduce(loss, reduction, "poisson_nll_loss")


def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor,
                         linear_bias: Tensor | None = None, weight: Tensor | None = None,
                         reduction: str = "mean", ignore_index: int | None = None,
                         label_smoothing: float = 0.0, options=None) -> Tensor:
    """cross_entropy(input @ W^T (+ b), target) with W (C, *out_features, in); the
    chunking ``options`` only change how torch schedules the same arithmetic."""
    from .functional import cross_entropy, linear
    c, fin = linear_weight.shape[0], linear_weight.shape[-1]
    out_shape = tuple(linear_weight.shape[:-1])
    logits = linear(input, linear_weight.reshape(-1, fin),
                    None if linear_bias is None else linear_bias.reshape(-1))
    logits = logits.reshape(tuple(input.shape[:-1]) + out_shape)
    del c
    return cross_entropy(logits, target, weight,
                         ignore_index=-100 if ignore_index is None else ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing)


__all__ = ["hardshrink", "softshrink", "adaptive_max_pool1d", "adaptive_max_pool2d",
           "adaptive_max_pool3d", "adaptive_avg_pool3d", "fractional_max_pool2d",
           "fractional_max_pool3d", "lp_pool1d", "lp_pool2d", "lp_pool3d",
           "local_response_norm", "multi_margin_loss", "multilabel_margin_loss",
           "multilabel_soft_margin_loss", "gaussian_nll_loss", "poisson_nll_loss",
           "linear_cross_entropy"]


def triplet_margin_with_distance_loss(anchor: Tensor, positive: Tensor, negative: Tensor, *,
                                      distance_function=None, margin: float = 1.0,
                                      swap: bool = False, reduction: str = "mean") -> Tensor:
    """max(d(a, p) - d(a, n) + margin, 0) with any distance (pairwise L2 by default);
    ``swap`` uses min(d(a, n), d(p, n)) as the negative distance."""
    from .functional import pairwise_distance
    if margin <= 0:
        raise ValueError(f"triplet_margin_with_distance_loss: expected margin to be greater "
                         f"than 0, got {margin} instead")
    dims = (anchor.dim(), positive.dim(), negative.dim())
    if len(set(dims)) != 1:
        raise RuntimeError(f"The anchor, positive, and negative tensors are expected to have "
                           f"the same number of dimensions, but got: anchor {dims[0]}D, "
                           f"positive {dims[1]}D, and negative {dims[2]}D inputs")
    dist = distance_function if distance_function is not None else pairwise_distance
    d_pos = dist(anchor, positive)
    d_neg = dist(anchor, negative)
    if swap:
        d_neg = T.minimum(d_neg, dist(positive, negative))
    loss = (d_pos - d_neg + margin).clamp_min(0.0)
    return _reduce(loss, reduction, "triplet_margin_with_distance_loss")


def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor,
                        margin: float = 1.0, p: float = 2, eps: float = 1e-6,
                        swap: bool = False, size_average=None, reduce=None,
                        reduction: str = "mean") -> Tensor:
    """The triplet loss with the p-norm pairwise distance (torch's defaults)."""
    from .functional import pairwise_distance
    reduction = _legacy(size_average, reduce, reduction)
    dims = (anchor.dim(), positive.dim(), negative.dim())
    if len(set(dims)) != 1 or dims[0] not in (1, 2):
        raise RuntimeError(f"The anchor, positive, and negative tensors are expected to have "
                           f"the same number of dimensions, but got: anchor {dims[0]}D, "
                           f"positive {dims[1]}D, and negative {dims[2]}D inputs")
    return triplet_margin_with_distance_loss(
        anchor, positive, negative, margin=margin, swap=swap, reduction=reduction,
        distance_function=lambda a, b: pairwise_distance(a, b, p, eps))


def rrelu(input: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3,
          training: bool = False, inplace: bool = False, generator=None) -> Tensor:
    """x for x >= 0, else a * x: a ~ U(lower, upper) per element while training
    (drawn from the generator, so compiled calls draw fresh slopes), (lower + upper) / 2
    in eval."""
    from .._random import random_tensor
    from .functional import _inplace
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"\"rrelu_with_noise\" not implemented for "
                           f"'{str(input.dtype).replace('torch.', '').capitalize()}'")
    if training:
        u = random_tensor("uniform", tuple(input.shape), input.dtype, generator)
        slope = u * (upper - lower) + lower
    else:
        slope = (lower + upper) / 2.0
    out = T.where(input >= 0, input, input * slope)
    return _inplace(input, out) if inplace else out


def rrelu_(input: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3,
           training: bool = False) -> Tensor:
    return rrelu(input, lower, upper, training, True)


def feature_alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False,
                          inplace: bool = False, generator=None) -> Tensor:
    """Alpha dropout of whole channels (dim 1), one draw per (sample, channel), as torch's."""
    from .functional import _alpha_dropout
    return _alpha_dropout(input, p, training, inplace, generator, feature=True)


def channel_shuffle(input: Tensor, groups: int) -> Tensor:
    """Interleave the channels (dim 1) of ``groups`` groups: (N, g, C/g, *) -> (N, C/g, g,
    *)."""
    if input.dim() < 3:
        raise RuntimeError(f"channel_shuffle expects input to have at least 3 dimensions, but "
                           f"got input with sizes {list(input.shape)}")
    if groups <= 0:
        raise RuntimeError(f"Number of groups to divide channels in must be positive. Value of "
                           f"groups:{groups}")
    n, c = input.shape[0], input.shape[1]
    if c % groups:
        raise RuntimeError(f"Number of channels must be divisible by groups. Got {c} channels "
                           f"and {groups} groups.")
    rest = tuple(input.shape[2:])
    return (input.reshape((n, groups, c // groups) + rest).transpose(1, 2)
            .reshape((n, c) + rest))


def _max_unpool(nd: int, input: Tensor, indices: Tensor, kernel_size, stride, padding,
                output_size, name: str) -> Tensor:
    """Zeros of the pooled-from size with each value put back where ``indices`` (from
    max_pool's ``return_indices``, flat over the spatial dims) says: a scatter."""
    def tup(v):
        return (v,) * nd if isinstance(v, int) else tuple(v)
    k = tup(kernel_size)
    st = k if stride is None else tup(stride)
    pad = tup(padding)
    if input.dim() not in (nd + 1, nd + 2):
        raise RuntimeError(f"{name}: expected a {nd + 1}-D or {nd + 2}-D input, got "
                           f"{input.dim()}-D")
    if tuple(indices.shape) != tuple(input.shape):
        raise RuntimeError(f"{name}: Expected shape of indices to be same as that of the input "
                           f"tensor ({list(input.shape)}) but got indices tensor with shape: "
                           f"{list(indices.shape)}")
    spatial = tuple(input.shape[-nd:])
    default = tuple((spatial[i] - 1) * st[i] - 2 * pad[i] + k[i] for i in range(nd))
    if output_size is None:
        out = default
    else:
        out = tuple(output_size)[-nd:]
        for i in range(nd):
            lo, hi = default[i] - st[i], default[i] + st[i]
            if not lo < out[i] < hi:
                raise ValueError(f'invalid output_size "{tuple(output_size)}" (dim {i} must be '
                                 f"between {lo + 1} and {hi - 1})")
    lead = tuple(input.shape[:-nd])
    n_out = math.prod(out)
    flat_in = input.reshape(lead + (-1,))
    flat_idx = indices.reshape(lead + (-1,))
    zeros = _creation.zeros(lead + (n_out,), dtype=input.dtype)
    return zeros.scatter(-1, flat_idx, flat_in).reshape(lead + out)


def max_unpool1d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0,
                 output_size=None) -> Tensor:
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size,
                       "max_unpool1d")


def max_unpool2d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0,
                 output_size=None) -> Tensor:
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size,
                       "max_unpool2d")


def max_unpool3d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0,
                 output_size=None) -> Tensor:
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size,
                       "max_unpool3d")


__all__ += ["triplet_margin_loss", "triplet_margin_with_distance_loss", "rrelu", "rrelu_",
            "feature_alpha_dropout", "channel_shuffle", "max_unpool1d", "max_unpool2d",
            "max_unpool3d"]


_NEG = -1e30  # "log 0" for unreachable CTC states: finite, so no inf - inf or 0/0 in grads


def _lse(*terms: Tensor) -> Tensor:
    m = terms[0]
    for t in terms[1:]:
        m = T.maximum(m, t)
    m = m.detach()
    s = None
    for t in terms:
        e = (t - m).exp()
        s = e if s is None else s + e
    return m + s.log()


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths, target_lengths,
             blank: int = 0, reduction: str = "mean", zero_infinity: bool = False) -> Tensor:
    """Connectionist temporal classification loss: the forward (alpha) recursion over
    blank-interleaved targets, all samples at once with masks, so tensor lengths stay
    tensors (no graph break). The gradient is torch's: with respect to the
    log-probabilities it includes torch's exp(log_probs) term (exact for the logits of
    a log_softmax)."""
    unbatched = log_probs.dim() == 2
    lp = log_probs.unsqueeze(1) if unbatched else log_probs
    tmax, n, c = lp.shape
    if not 0 <= blank < c:
        raise RuntimeError("blank must be in label range")

    def lengths(v) -> Tensor:
        t = v if isinstance(v, Tensor) else _creation.tensor(
            [v] if isinstance(v, int) else list(v))
        return t.reshape(-1).long()

    in_len, tgt_len = lengths(input_lengths), lengths(target_lengths)
    tg = targets.long()
    if tg.dim() == 1 and not unbatched:      # concatenated targets
        s_max = max(int(tg.shape[0]), 1)
        offsets = T.cumsum(tgt_len, 0) - tgt_len
        pos = offsets.unsqueeze(1) + _creation.arange(s_max)
        tg = T.gather(tg, 0, pos.clamp(max=max(int(targets.shape[0]) - 1, 0)).reshape(-1)
                      ).reshape(n, s_max) if targets.shape[0] else _creation.zeros(
                          n, s_max, dtype=tg.dtype)
    elif tg.dim() == 1:
        tg = tg.unsqueeze(0)
    s_max = tg.shape[1]
    valid_lab = _creation.arange(s_max).unsqueeze(0) < tgt_len.unsqueeze(1)
    tg = T.where(valid_lab, tg, blank)
    # extended labels (N, 2S+1): blank, l1, blank, l2, ..., blank
    ext = T.stack([_creation.full_like(tg, blank), tg], dim=2).reshape(n, 2 * s_max)
    ext = T.cat([ext, _creation.full_like(tg.narrow(1, 0, 1), blank)], dim=1)
    ns = 2 * s_max + 1
    prev2 = T.cat([_creation.full_like(ext.narrow(1, 0, 2), blank), ext.narrow(1, 0, ns - 2)],
                  dim=1)
    skip = (ext != blank) & (ext != prev2)
    skip = skip & (_creation.arange(ns) >= 2).unsqueeze(0)
    emit = T.gather(lp, 2, ext.unsqueeze(0).expand(tmax, n, ns))          # (T, N, 2S+1)
    neg = _creation.full_like(emit[0], _NEG)
    first = _creation.arange(ns).unsqueeze(0)
    start_ok = (first == 0) | ((first == 1) & (tgt_len.unsqueeze(1) > 0))
    alpha = T.where(start_ok, emit[0], neg)
    for t in range(1, tmax):
        a1 = T.cat([neg.narrow(1, 0, 1), alpha.narrow(1, 0, ns - 1)], dim=1)
        a2 = T.where(skip, T.cat([neg.narrow(1, 0, 2), alpha.narrow(1, 0, ns - 2)], dim=1), neg)
        new = _lse(alpha, a1, a2) + emit[t]
        alpha = T.where((in_len > t).unsqueeze(1), new, alpha)
    end = (2 * tgt_len).unsqueeze(1)
    last = T.gather(alpha, 1, end).squeeze(1)
    before = T.where(tgt_len > 0, T.gather(alpha, 1, (end - 1).clamp(min=0)).squeeze(1),
                     neg[:, 0])
    nll = -_lse(last, before)
    nll = T.where(nll > -_NEG / 2, float("inf"), nll)
    # torch's gradient adds exp(log_probs) at each sample's valid time steps
    live = (_creation.arange(tmax).unsqueeze(1) < in_len.unsqueeze(0)).to(lp.dtype)
    extra = (lp.exp() * live.unsqueeze(2)).sum(dim=(0, 2))
    loss = nll + (extra - extra.detach())
    if zero_infinity:
        loss = T.where(T.isinf(nll), 0.0, loss)
    if reduction == "mean":
        out = (loss / tgt_len.clamp(min=1).to(loss.dtype)).mean()
    elif reduction == "sum":
        out = loss.sum()
    elif reduction == "none":
        out = loss
    else:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return out.reshape(()) if unbatched and reduction == "none" else out


__all__ += ["ctc_loss"]
