"""Neural-network primitives that need their own kernel.

Fused activations (elementwise, with a scalar ``expr``), softmax and
log_softmax, im2col/col2im, convolution as one op (im2col and its GEMM a few images at a
time) with its two gradients, pooling with argmax indices, embedding
lookup (the recurrent scans live in recurrent.py). Every forward op's gradient is written
in terms of other registered ops, so eager autograd and the graph autodiff
pass share it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register

SQRT1_2 = 1.0 / math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _same(specs, attrs):
    return tuple(specs[0][0]), specs[0][1]


# ---- erf: exact in float64, a 1.5e-7 approximation in lower precision ----------
_erf_exact = np.frompyfunc(math.erf, 1, 1)


def np_erf(x: np.ndarray) -> np.ndarray:
    """erf for arrays: math.erf element by element for float64 (exact, for
    gradcheck), Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7) otherwise."""
    if x.dtype == np.float64:
        # np.asarray: a ufunc on a 0-d array returns a Python float, not an array
        return np.asarray(_erf_exact(x), np.float64) if x.size else x.copy()
    # in place, the operations in the order 1 - (((((p1 t - p2) t + p3) t - p4) t + p5) t
    # exp(-a a)) gives them: the same bits as that expression, in three buffers instead
    # of twelve (fresh memory's first touches were a third of the time)
    a = np.abs(x)
    t = a * 0.3275911
    t += 1.0
    np.divide(1.0, t, out=t)
    y = t * 1.061405429
    y -= 1.453152027
    y *= t
    y += 1.421413741
    y *= t
    y -= 0.284496736
    y *= t
    y += 0.254829592
    y *= t
    np.negative(a, out=t)
    t *= a
    np.exp(t, out=t)
    y *= t
    np.subtract(1.0, y, out=y)
    np.copysign(y, x, out=y)
    return y.astype(x.dtype, copy=False)


# ---- fused activations -----------------------------------------------------------
def _gelu_impl(x, approximate="none"):
    if approximate == "tanh" and x.dtype.kind == "f":
        # one temporary, updated in place: a third of the fresh memory of the plain
        # expression (first touches of fresh memory dominate a first call). The results
        # are the same: (1 + t) * 0.5 is exact, and * x then rounds once, as 0.5 * x * (1 + t)
        # does; halving before multiplying by x keeps x near the float max finite
        y = x * 0.044715
        y *= x
        y *= x
        y += x
        y *= SQRT_2_OVER_PI
        np.tanh(y, out=y)
        y += 1.0
        y *= 0.5
        y *= x
        return y
    if approximate == "tanh":
        inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(x.dtype, copy=False)
    return (0.5 * x * (1.0 + np_erf(x * x.dtype.type(SQRT1_2)))).astype(x.dtype, copy=False)


def _gelu_backward_impl(g, x, approximate="none"):
    if approximate == "tanh":
        x2 = x * x
        inner = SQRT_2_OVER_PI * (x + 0.044715 * x2 * x)
        t = np.tanh(inner)
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x2)
    else:
        cdf = 0.5 * (1.0 + np_erf(x * x.dtype.type(SQRT1_2)))
        d = cdf + x * np.exp(-0.5 * x * x) * INV_SQRT_2PI
    return (g * d).astype(g.dtype, copy=False)


_C, _S, _P = SQRT_2_OVER_PI, SQRT1_2, INV_SQRT_2PI
_GELU_EXPR = (f"(0.5 * {{0}} * (1.0 + tanh({_C!r} * ({{0}} + 0.044715 * {{0}} * {{0}} * {{0}}))) "
              f"if {{approximate}} == 'tanh' else 0.5 * {{0}} * (1.0 + erf({{0}} * {_S!r})))")
# GELU's derivative Phi(x) + x phi(x), the scalar function ``gelu_grad`` that
# gelu_backward's expression calls: a back end maps it to a helper of its own (the CPU's
# float32 one shares erf's exp with the density) or expands this definition.
GELU_GRAD_EXPR = f"(0.5 * (1.0 + erf({{0}} * {_S!r})) + {{0}} * exp(-0.5 * {{0}} * {{0}}) * {_P!r})"
_GELU_BWD_EXPR = (
    f"({{0}} * (0.5 * (1.0 + tanh({_C!r} * ({{1}} + 0.044715 * {{1}} * {{1}} * {{1}}))) + 0.5 * "
    f"{{1}} * (1.0 - tanh({_C!r} * ({{1}} + 0.044715 * {{1}} * {{1}} * {{1}})) ** 2) * {_C!r} * "
    "(1.0 + 0.134145 * {1} * {1})) if {approximate} == 'tanh' else "
    "{0} * gelu_grad({1}))")

# A hand-written rule kept beside the decomposition (decompositions.py): gelu_backward is
# one fused elementwise pass over (g, x) with its own second derivative, where the
# gradient derived from the primitives recomputes erf/tanh and chains ~10 eager ops.
register(OpDef("gelu", "unary", _gelu_impl, expr=_GELU_EXPR, dtype_rule="same",
               attrs=("approximate",), saves=(0,), float_only=True,
               grad=lambda b, g, xs, out, approximate="none": (
                   b.gelu_backward(g, xs[0], approximate=approximate),)))


def _gelu_backward_grad(b, gg, xs, out, approximate="none"):
    """Second derivatives of gelu: out = g * gelu'(x), so d/dg is gelu'(x) again and d/dx
    is g * gelu''(x)."""
    g, x = xs
    x2 = b.mul(x, x)
    if approximate == "tanh":
        # u = c (x + a x^3), t = tanh(u): gelu'' = (1 - t^2) (u' - x t u'^2 + 3 c a x^2)
        a, c = 0.044715, SQRT_2_OVER_PI
        t = b.tanh(b.mul(b.add(x, b.mul(b.mul(x2, x), a)), c))
        du = b.mul(b.add(b.mul(x2, 3 * a), 1.0), c)
        inner = b.add(b.sub(du, b.mul(b.mul(x, t), b.mul(du, du))), b.mul(x2, 3 * a * c))
        d2 = b.mul(b.rsub(b.mul(t, t), 1.0), inner)
    else:
        # gelu'(x) = Phi(x) + x phi(x), so gelu'' = phi(x) (2 - x^2)
        d2 = b.mul(b.mul(b.exp(b.mul(x2, -0.5)), INV_SQRT_2PI), b.rsub(x2, 2.0))
    return b.gelu_backward(gg, x, approximate=approximate), b.mul(b.mul(gg, g), d2)


register(OpDef("gelu_backward", "binary", _gelu_backward_impl, expr=_GELU_BWD_EXPR,
               dtype_rule="same", attrs=("approximate",), float_only=True, saves=(0, 1),
               grad=_gelu_backward_grad))


def _leaky_impl(x, negative_slope=0.01):
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


# the gradient is derived from the decomposition where(x > 0, x, x * slope)
# (decompositions.py): g or g * slope, exactly, from the saved x as before
register(OpDef("leaky_relu", "unary", _leaky_impl,
               expr="({0} if {0} > 0 else {0} * {negative_slope})", dtype_rule="same",
               attrs=("negative_slope",)))


def _elu_impl(x, alpha=1.0):
    return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0)))


register(OpDef("elu", "unary", _elu_impl, expr="({0} if {0} > 0 else {alpha} * expm1({0}))",
               dtype_rule="same", attrs=("alpha",), saves=(0, -1),
               grad=lambda b, g, xs, out, alpha=1.0: (
                   b.where(b.gt(xs[0], 0.0), g, b.mul(g, b.add(out, float(alpha)))),)))


def _softplus_impl(x, beta=1.0, threshold=20.0):
    bx = x * x.dtype.type(beta)
    soft = (np.log1p(np.exp(-np.abs(bx))) + np.maximum(bx, 0)) / x.dtype.type(beta)
    return np.where(bx > threshold, x, soft).astype(x.dtype, copy=False)


register(OpDef("softplus", "unary", _softplus_impl,
               expr="({0} if {0} * {beta} > {threshold} else "
                    "(log1p(exp(-abs({0} * {beta}))) + maximum({0} * {beta}, 0.0)) / {beta})",
               dtype_rule="same", attrs=("beta", "threshold"), saves=(0,),
               grad=lambda b, g, xs, out, beta=1.0, threshold=20.0: (
                   b.where(b.gt(b.mul(xs[0], float(beta)), float(threshold)), g,
                           b.mul(g, b.sigmoid(b.mul(xs[0], float(beta))))),)))


def _silu_impl(x):
    with np.errstate(over="ignore"):
        return (x / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)


# the gradient is derived from the decomposition x * sigmoid(x) (decompositions.py): the
# same numbers as the hand-written g s (1 + x (1 - s)), and the tape keeps x either way
register(OpDef("silu", "unary", _silu_impl, expr="({0} * sigmoid({0}))", dtype_rule="same"))


# ---- softmax / log_softmax ------------------------------------------------------
def _softmax_impl(x, dim):
    m = np.max(x, axis=dim, keepdims=True) if x.size else x
    e = x - np.where(np.isfinite(m), m, 0)
    if e.dtype != x.dtype or not e.flags.writeable:
        e = np.exp(e)
        return (e / np.sum(e, axis=dim, keepdims=True)).astype(x.dtype, copy=False)
    # the same operations in one buffer: eager softmax allocated three of x's size
    np.exp(e, out=e)
    np.divide(e, np.sum(e, axis=dim, keepdims=True), out=e)
    return e


def _log_softmax_impl(x, dim):
    if x.size == 0:
        return x.copy()
    m = np.max(x, axis=dim, keepdims=True)
    s = x - np.where(np.isfinite(m), m, 0)
    return (s - np.log(np.sum(np.exp(s), axis=dim, keepdims=True))).astype(x.dtype, copy=False)


# Hand-written rules kept beside the decompositions (decompositions.py): the fused softmax
# backward reads only the saved output (y (g - sum(g y)), g - exp(y) sum(g)); the gradient
# derived from the primitives would save x and recompute the max, exp and row sums.
def _softmax_grad(b, g, xs, out, dim):
    return (b.mul(out, b.sub(g, b.sum(b.mul(g, out), dims=(dim,), keepdim=True))),)


def _log_softmax_grad(b, g, xs, out, dim):
    return (b.sub(g, b.mul(b.exp(out), b.sum(g, dims=(dim,), keepdim=True))),)


def _float_same(specs, attrs):
    shape, d = specs[0]
    if not d.is_floating_point:
        raise RuntimeError(f"softmax: expected a floating-point input, got {d}")
    return tuple(shape), d


register(OpDef("softmax", "other", _softmax_impl, infer=_float_same, grad=_softmax_grad,
               saves=(-1,), attrs=("dim",)))
register(OpDef("log_softmax", "other", _log_softmax_impl, infer=_float_same,
               grad=_log_softmax_grad, saves=(-1,), attrs=("dim",)))


# ---- im2col / col2im ---------------------------------------------------------------
def conv_out_size(n, k, s, p, d, ceil_mode=False):
    eff = d * (k - 1) + 1
    span = n + 2 * p - eff
    if ceil_mode:
        o = -(-span // s) + 1
        if (o - 1) * s >= n + p:  # the last window must start inside the input or left pad
            o -= 1
        return o
    return span // s + 1


def _spatial_out(spatial, kernel, stride, padding, dilation, ceil_mode=False):
    return tuple(conv_out_size(n, k, s, p, d, ceil_mode)
                 for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation))


def _window_slices(offsets, out, stride, dilation):
    return tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                 for o, n, s, d in zip(offsets, out, stride, dilation))


def _im2col_impl(x, kernel, stride, padding, dilation, ones_row=False, batch_last=False):
    if batch_last:  # (C*K [+1], N*L): row r holds image 0's L positions, then image 1's, ...
        flat = _im2col_impl(x, kernel, stride, padding, dilation, ones_row)
        return np.ascontiguousarray(flat.transpose(1, 0, 2)).reshape(
            flat.shape[1], flat.shape[0] * flat.shape[2])
    n, c = x.shape[:2]
    out = _spatial_out(x.shape[2:], kernel, stride, padding, dilation)
    if any(p for p in padding):
        x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    ck = c * int(np.prod(kernel))
    length = int(np.prod(out))
    flat = np.empty((n, ck + (1 if ones_row else 0), length), x.dtype)
    if ones_row:
        flat[:, ck] = 1
    cols = flat[:, :ck].reshape((n, c) + tuple(kernel) + out)
    for offs in itertools.product(*(range(k) for k in kernel)):
        cols[(slice(None), slice(None)) + offs] = x[
            (slice(None), slice(None)) + _window_slices(offs, out, stride, dilation)]
    return flat


def _col2im_impl(cols, spatial, kernel, stride, padding, dilation, ones_row=False,
                 batch_last=False):
    if batch_last:  # (C*K [+1], N*L) -> the (N, C*K [+1], L) view of the same columns
        cols = cols.reshape(cols.shape[0], -1, _batch_last_length(spatial, kernel, stride,
                                                                  padding, dilation)
                            ).transpose(1, 0, 2)
    n = cols.shape[0]
    k = int(np.prod(kernel))
    if ones_row:
        cols = cols[:, :-1]
    c = cols.shape[1] // k
    out = _spatial_out(spatial, kernel, stride, padding, dilation)
    cols = cols.reshape((n, c) + tuple(kernel) + out)
    padded = tuple(s + 2 * p for s, p in zip(spatial, padding))
    res = np.zeros((n, c) + padded, cols.dtype)
    for offs in itertools.product(*(range(kk) for kk in kernel)):
        res[(slice(None), slice(None)) + _window_slices(offs, out, stride, dilation)] += \
            cols[(slice(None), slice(None)) + offs]
    if any(p for p in padding):
        res = res[(slice(None), slice(None)) + tuple(slice(p, p + s)
                                                     for p, s in zip(padding, spatial))]
    return res


def _im2col_infer(specs, attrs):
    shape, d = specs[0]
    nsp = len(attrs["kernel"])
    if len(shape) != nsp + 2:
        raise RuntimeError(f"im2col: expected a {nsp + 2}-D input (N, C, spatial...), got shape "
                           f"{tuple(shape)}")
    out = _spatial_out(shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"],
                       attrs["dilation"])
    if any(o <= 0 for o in out):
        raise RuntimeError(
            f"im2col: input spatial size {tuple(shape[2:])} (padding {tuple(attrs['padding'])}) "
            f"is smaller than the kernel {tuple(attrs['kernel'])} with dilation "
            f"{tuple(attrs['dilation'])}: output size would be {out}")
    extra = 1 if attrs.get("ones_row") else 0
    rows = shape[1] * int(np.prod(attrs["kernel"])) + extra
    if attrs.get("batch_last"):
        return (rows, shape[0] * int(np.prod(out))), d
    return (shape[0], rows, int(np.prod(out))), d


def _batch_last_length(spatial, kernel, stride, padding, dilation) -> int:
    """L, the output positions per image, of batch-last columns (at least 1, so that an
    impossible geometry does not divide by zero)."""
    return max(1, int(np.prod(_spatial_out(spatial, kernel, stride, padding, dilation))))


def _col2im_infer(specs, attrs):
    shape, d = specs[0]
    k = int(np.prod(attrs["kernel"]))
    extra = 1 if attrs.get("ones_row") else 0
    if attrs.get("batch_last"):
        length = _batch_last_length(attrs["spatial"], attrs["kernel"], attrs["stride"],
                                    attrs["padding"], attrs["dilation"])
        return (shape[1] // length, (shape[0] - extra) // k) + tuple(attrs["spatial"]), d
    return (shape[0], (shape[1] - extra) // k) + tuple(attrs["spatial"]), d


_CONV_ATTRS = ("kernel", "stride", "padding", "dilation")


def _col2im_grad(b, g, kernel, stride, padding, dilation, ones_row, batch_last):
    # col2im drops the ones row, so that row's gradient is zero (not ones); the rows are
    # dim -2 in both layouts
    cols = b.im2col(g, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                    ones_row=False, batch_last=batch_last)
    return b.pad(cols, pad=(0, 0, 0, 1), mode="constant", value=0.0) if ones_row else cols


# ``ones_row`` appends a row of ones to the columns, so a convolution's bias
# rides in the matmul (weight gets a bias column): no separate bias pass
# forward, and the bias gradient falls out of the weight-gradient matmul.
# ``batch_last`` lays the columns out (C*K [+1], N*L) instead of (N, C*K [+1], L): a
# convolution is then one GEMM W (Cout, C*K) @ cols over the whole batch (and so are both
# of its gradients), not N small GEMMs plus a sum over the batch for the weight gradient.
register(OpDef("im2col", "other", _im2col_impl, infer=_im2col_infer,
               attrs=_CONV_ATTRS + ("ones_row", "batch_last"),
               grad=lambda b, g, xs, out, kernel, stride, padding, dilation, ones_row=False,
               batch_last=False: (
                   b.col2im(g, spatial=tuple(xs[0].shape[2:]), kernel=kernel, stride=stride,
                            padding=padding, dilation=dilation, ones_row=ones_row,
                            batch_last=batch_last),),
               doc="sliding windows (N, C, *S) -> (N, C*prod(kernel) [+1], L), or with "
                   "batch_last (C*prod(kernel) [+1], N*L); torch's unfold"))
register(OpDef("col2im", "other", _col2im_impl, infer=_col2im_infer,
               attrs=("spatial",) + _CONV_ATTRS + ("ones_row", "batch_last"),
               grad=lambda b, g, xs, out, spatial, kernel, stride, padding, dilation,
               ones_row=False, batch_last=False: (
                   _col2im_grad(b, g, kernel, stride, padding, dilation, ones_row,
                                batch_last),),
               doc="adjoint of im2col: sum windows back into (N, C, *spatial); torch's fold"))



# ---- convolution as one op ----------------------------------------------------------------
# ``conv`` is im2col + GEMM as one op: its kernel takes a few images at a time, so their
# columns stay in cache between the two, and writes (N, Cout, *out) directly (no
# transposing copy). ``w2`` is the weight as (Cout, C*prod(kernel)), with the bias as one
# more column when ``ones_row``. Its two gradients are ops of their own, and each of the
# three differentiates into the others (double backward).
def _conv_impl(x, w2, kernel, stride, padding, dilation, ones_row=False):
    cols = _im2col_impl(x, kernel, stride, padding, dilation, ones_row)    # (N, R, L)
    out = _spatial_out(x.shape[2:], kernel, stride, padding, dilation)
    return np.matmul(w2, cols).reshape((x.shape[0], w2.shape[0]) + out)


def _conv_input_grad_impl(g, w2, spatial, kernel, stride, padding, dilation, ones_row=False):
    g3 = g.reshape(g.shape[0], g.shape[1], int(np.prod(g.shape[2:])))
    return _col2im_impl(np.matmul(w2.T, g3), tuple(spatial), kernel, stride, padding,
                        dilation, ones_row)


def _conv_weight_grad_impl(x, g, kernel, stride, padding, dilation, ones_row=False):
    cols = _im2col_impl(x, kernel, stride, padding, dilation, ones_row)    # (N, R, L)
    g3 = g.reshape(g.shape[0], g.shape[1], int(np.prod(g.shape[2:])))
    return np.tensordot(g3, cols, axes=([0, 2], [0, 2])).astype(x.dtype, copy=False)


def _conv_rows(c: int, kernel, ones_row) -> int:
    return c * int(np.prod(kernel)) + (1 if ones_row else 0)


def _conv_infer(specs, attrs):
    (xs, xd), (ws, wd) = specs
    (cols, rows_d) = _im2col_infer([(xs, xd)], dict(attrs, batch_last=False))
    if len(ws) != 2 or ws[1] != cols[1]:
        raise RuntimeError(f"conv: weight matrix of shape {tuple(ws)} does not match the "
                           f"{cols[1]} im2col rows of input {tuple(xs)}")
    if xd is not wd:
        raise RuntimeError(f"conv: input type ({xd}) and weight type ({wd}) should be the "
                           "same")
    out = _spatial_out(xs[2:], attrs["kernel"], attrs["stride"], attrs["padding"],
                       attrs["dilation"])
    return (xs[0], ws[0]) + out, xd


def _conv_input_grad_infer(specs, attrs):
    (gs, gd), (ws, _) = specs
    k = int(np.prod(attrs["kernel"]))
    c = (ws[1] - (1 if attrs.get("ones_row") else 0)) // k
    return (gs[0], c) + tuple(attrs["spatial"]), gd


def _conv_weight_grad_infer(specs, attrs):
    (xs, xd), (gs, _) = specs
    return (gs[1], _conv_rows(xs[1], attrs["kernel"], attrs.get("ones_row"))), xd


def _conv_grad(b, g, xs, out, kernel, stride, padding, dilation, ones_row=False):
    x, w2 = xs
    geo = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
               ones_row=ones_row)
    return (b.conv_input_grad(g, w2, spatial=tuple(x.shape[2:]), **geo),
            b.conv_weight_grad(x, g, **geo))


def _conv_input_grad_grad(b, h, xs, out, spatial, kernel, stride, padding, dilation,
                          ones_row=False):
    # dx = col2im(w2^T g) drops the ones row, so w2's bias column gets no gradient and
    # does not reach g: both terms use the columns of h without a row of ones
    g, w2 = xs
    cols = _col2im_grad(b, h, kernel, stride, padding, dilation, ones_row, False)
    dg = b.reshape(b.matmul(w2, cols), shape=tuple(g.shape))
    dw = b.conv_weight_grad(h, g, kernel=kernel, stride=stride, padding=padding,
                            dilation=dilation, ones_row=False)
    if ones_row:
        dw = b.pad(dw, pad=(0, 1), mode="constant", value=0.0)
    return dg, dw


def _conv_weight_grad_grad(b, h, xs, out, kernel, stride, padding, dilation, ones_row=False):
    x, g = xs
    geo = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
               ones_row=ones_row)
    return (b.conv_input_grad(g, h, spatial=tuple(x.shape[2:]), **geo), b.conv(x, h, **geo))


register(OpDef("conv", "other", _conv_impl, infer=_conv_infer, grad=_conv_grad,
               attrs=_CONV_ATTRS + ("ones_row",), saves=(0, 1), float_only=True,
               backward_name="ConvolutionBackward0",
               doc="convolution (N, C, *S) x (Cout, C*prod(kernel) [+1 bias column]) -> "
                   "(N, Cout, *out): im2col and the GEMM in one op"))
register(OpDef("conv_input_grad", "other", _conv_input_grad_impl,
               infer=_conv_input_grad_infer, grad=_conv_input_grad_grad,
               attrs=("spatial",) + _CONV_ATTRS + ("ones_row",), saves=(0, 1),
               float_only=True, doc="conv's input gradient: col2im(w2^T g)"))
register(OpDef("conv_weight_grad", "other", _conv_weight_grad_impl,
               infer=_conv_weight_grad_infer, grad=_conv_weight_grad_grad,
               attrs=_CONV_ATTRS + ("ones_row",), saves=(0, 1), float_only=True,
               doc="conv's weight-matrix gradient: the sum over images of g im2col(x)^T"))


# ---- pooling -------------------------------------------------------------------------
def _max_pool_indices_impl(x, kernel, stride, padding, dilation, ceil_mode):
    """Flat index (into each spatial plane) of every window's first maximum.

    The windows are copied into contiguous (kernel offset, N, C, *out) planes
    and reduced by a running comparison (NumPy's argmax over a short last axis
    is slow); a later offset wins only if strictly greater or NaN, so ties keep
    the first maximum and NaN propagates, like torch."""
    nsp = len(kernel)
    spatial = x.shape[2:]
    out = _spatial_out(spatial, kernel, stride, padding, dilation, ceil_mode)
    # extra right padding so ceil_mode windows stay in bounds
    need = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, stride, dilation, kernel)]
    right = [max(nd - (n + p), 0) for nd, n, p in zip(need, spatial, padding)]
    is_float = x.dtype.kind == "f"
    if any(padding) or any(right):
        fill = -np.inf if is_float else np.iinfo(x.dtype).min
        x = np.pad(x, [(0, 0), (0, 0)] + [(p, r) for p, r in zip(padding, right)],
                   constant_values=fill)
    plane = [int(np.prod(spatial[i + 1:])) for i in range(nsp)]
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    win = np.empty((len(offsets),) + x.shape[:2] + out, x.dtype)
    for j, offs in enumerate(offsets):
        win[j] = x[(slice(None), slice(None)) + _window_slices(offs, out, stride, dilation)]
    best = win[0]
    small = len(offsets) < 128
    local = np.zeros(best.shape, np.int8 if small else np.int32)
    for j in range(1, len(offsets)):
        m = win[j] > best
        if is_float:
            m |= np.isnan(win[j])
        best = np.where(m, win[j], best)
        local = np.where(m, np.int8(j) if small else j, local)
    # window offset -> flat position, plus each window's start in the unpadded plane
    offv = np.array([sum(o * d * st for o, d, st in zip(offs, dilation, plane))
                     for offs in offsets], np.int64)
    arg = offv[local]
    for i in range(nsp):
        shape = [1] * (2 + nsp)
        shape[2 + i] = out[i]
        start = (np.arange(out[i], dtype=np.int64) * stride[i] - padding[i]) * plane[i]
        arg += start.reshape(shape)
    return arg


def _pool_infer(specs, attrs):
    shape, d = specs[0]
    nsp = len(attrs["kernel"])
    if len(shape) != nsp + 2:
        raise RuntimeError(f"pool: expected a {nsp + 2}-D input, got shape {tuple(shape)}")
    for k, p in zip(attrs["kernel"], attrs["padding"]):
        if p > k // 2:
            raise RuntimeError(f"pad should be at most half of effective kernel size, but got "
                               f"pad={p}, kernel_size={k}")
    out = _spatial_out(shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"],
                       attrs.get("dilation", (1,) * nsp), attrs.get("ceil_mode", False))
    if any(o <= 0 for o in out):
        raise RuntimeError(f"pool: output size is too small: input {tuple(shape)}, kernel "
                           f"{tuple(attrs['kernel'])} gives {out}")
    return tuple(shape[:2]) + out, d


register(OpDef("max_pool_indices", "other", _max_pool_indices_impl,
               infer=lambda specs, attrs: (_pool_infer(specs, attrs)[0], dt.int64),
               attrs=_CONV_ATTRS + ("ceil_mode",),
               doc="flat index (into each H*W.. plane) of every window's first maximum"))


def _pool_gather_impl(x, idx):
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    return np.take_along_axis(flat, idx.reshape(n, c, -1), axis=2).reshape(idx.shape)


def _pool_scatter_impl(g, idx, shape):
    n, c = shape[:2]
    plane = int(np.prod(shape[2:]))
    base = (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, *([1] * (idx.ndim - 2)))
    res = np.bincount((idx + base).reshape(-1), weights=g.reshape(-1).astype(np.float64),
                      minlength=n * c * plane)
    return res.astype(g.dtype).reshape(shape)


register(OpDef("pool_gather", "indexing", _pool_gather_impl,
               infer=lambda specs, attrs: (tuple(specs[1][0]), specs[0][1]), saves=(1,),
               nondiff_inputs=(1,), backward_name="MaxPool2DWithIndicesBackward0",
               grad=lambda b, g, xs, out: (
                   b.pool_scatter(g, xs[1], shape=tuple(xs[0].shape)), None)))
register(OpDef("pool_scatter", "indexing", _pool_scatter_impl,
               infer=lambda specs, attrs: (tuple(attrs["shape"]), specs[0][1]), saves=(1,),
               attrs=("shape",), nondiff_inputs=(1,),
               grad=lambda b, g, xs, out, shape: (b.pool_gather(g, xs[1]), None)))


def _avg_divisor(spatial, out, kernel, stride, padding, ceil_mode, count_include_pad,
                 divisor_override, dtype):
    if divisor_override:
        return dtype.type(divisor_override)
    # per-output-position window size, clipped like torch
    sizes = []
    for n, o, k, s, p in zip(spatial, out, kernel, stride, padding):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        size_pad = end - start
        start_c = np.maximum(start, 0)
        end_c = np.minimum(end, n)
        sizes.append(size_pad if count_include_pad else end_c - start_c)
    div = sizes[0].astype(dtype)
    for sz in sizes[1:]:
        div = np.multiply.outer(div, sz.astype(dtype))
    return div


def _avg_pool_impl(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    out = _spatial_out(x.shape[2:], kernel, stride, padding, (1,) * len(kernel), ceil_mode)
    need = [(o - 1) * s + k for o, s, k in zip(out, stride, kernel)]
    right = [max(nd - (n + p), 0) for nd, n, p in zip(need, x.shape[2:], padding)]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p + r) for p, r in zip(padding, right)]) \
        if any(padding) or any(right) else x
    acc = np.zeros(x.shape[:2] + out, x.dtype)
    ones = (1,) * len(kernel)
    for offs in itertools.product(*(range(k) for k in kernel)):
        acc += xp[(slice(None), slice(None)) + _window_slices(offs, out, stride, ones)]
    div = _avg_divisor(x.shape[2:], out, kernel, stride, padding, ceil_mode, count_include_pad,
                       divisor_override, x.dtype)
    return (acc / div).astype(x.dtype, copy=False)


def _avg_pool_backward_impl(g, shape, kernel, stride, padding, ceil_mode, count_include_pad,
                            divisor_override):
    spatial = tuple(shape[2:])
    out = g.shape[2:]
    div = _avg_divisor(spatial, out, kernel, stride, padding, ceil_mode, count_include_pad,
                       divisor_override, g.dtype)
    gd = g / div
    need = [(o - 1) * s + k for o, s, k in zip(out, stride, kernel)]
    right = [max(nd - (n + p), 0) for nd, n, p in zip(need, spatial, padding)]
    padded = tuple(n + 2 * p + r for n, p, r in zip(spatial, padding, right))
    res = np.zeros(tuple(shape[:2]) + padded, g.dtype)
    ones = (1,) * len(kernel)
    for offs in itertools.product(*(range(k) for k in kernel)):
        res[(slice(None), slice(None)) + _window_slices(offs, out, stride, ones)] += gd
    crop = tuple(slice(p, p + n) for p, n in zip(padding, spatial))
    return np.ascontiguousarray(res[(slice(None), slice(None)) + crop])


_AVG_ATTRS = ("kernel", "stride", "padding", "ceil_mode", "count_include_pad",
              "divisor_override")


def _avg_grad(b, g, xs, out, **attrs):
    return (b.avg_pool_backward(g, shape=tuple(xs[0].shape), **attrs),)


register(OpDef("avg_pool", "other", _avg_pool_impl, infer=_pool_infer, attrs=_AVG_ATTRS,
               grad=_avg_grad, backward_name="AvgPool2DBackward0"))
register(OpDef("avg_pool_backward", "other", _avg_pool_backward_impl,
               infer=lambda specs, attrs: (tuple(attrs["shape"]), specs[0][1]),
               attrs=("shape",) + _AVG_ATTRS,
               grad=lambda b, g, xs, out, shape, **attrs: (b.avg_pool(g, **attrs),)))


# ---- embedding ------------------------------------------------------------------------
def _embedding_impl(weight, idx, padding_idx=None):
    return np.take(weight, idx, axis=0)


def _embedding_infer(specs, attrs):
    (ws, wd), (ishape, idt) = specs
    if idt.kind not in "iu":
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the "
                           f"following scalar types: Long, Int; but got {idt} instead "
                           "(while checking arguments for embedding)")
    if len(ws) != 2:
        raise RuntimeError(f"embedding: 'weight' must be 2-D, got shape {tuple(ws)}")
    return tuple(ishape) + (ws[1],), wd


def _embedding_backward_impl(g, idx, num_weights, padding_idx=None):
    dim = g.shape[-1]
    flat = idx.reshape(-1)
    g2 = g.reshape(-1, dim)
    if padding_idx is not None:
        keep = flat != padding_idx
        flat, g2 = flat[keep], g2[keep]
    out = np.zeros((num_weights, dim), g.dtype)
    np.add.at(out, flat, g2)
    return out


register(OpDef("embedding", "indexing", _embedding_impl, infer=_embedding_infer,
               attrs=("padding_idx",), saves=(1,), nondiff_inputs=(1,),
               grad=lambda b, g, xs, out, padding_idx=None: (
                   b.embedding_backward(g, xs[1], num_weights=xs[0].shape[0],
                                        padding_idx=padding_idx), None)))
def _embedding_backward_grad(b, g, xs, out, num_weights, padding_idx=None):
    # positions holding padding_idx contributed nothing, so their gradient is zero
    gg = b.embedding(g, xs[1], padding_idx=padding_idx)
    if padding_idx is None:
        return gg, None
    pad = b.reshape(b.eq(xs[1], padding_idx), shape=tuple(xs[1].shape) + (1,))
    return b.where(pad, 0.0, gg), None


register(OpDef("embedding_backward", "indexing", _embedding_backward_impl,
               infer=lambda specs, attrs: ((attrs["num_weights"], specs[0][0][-1]), specs[0][1]),
               attrs=("num_weights", "padding_idx"), saves=(1,), nondiff_inputs=(1,),
               grad=_embedding_backward_grad))
