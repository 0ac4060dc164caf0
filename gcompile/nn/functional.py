"""``nn.functional``: every layer as a function, losses, padding, one_hot.

Everything here is built from registered ops (``apply_op``), so a traced
program sees only registry ops; kernels that need their own loop (im2col,
pooling, embedding, recurrent scans, softmax) are ops in ``ir/ops/nn.py``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ir import dtypes as dt
from ir.shapes import normalize_dim

from .._random import random_tensor
from .._state import state
from .._functions import check_values
from .._tensor import Tensor, apply_op

__all__ = [
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "selu", "celu", "gelu", "silu",
    "mish", "sigmoid", "tanh", "softplus", "softsign", "hardtanh", "hardsigmoid", "hardswish",
    "logsigmoid", "tanhshrink", "softmax", "log_softmax", "softmin", "glu", "threshold",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "linear", "bilinear",
    "conv1d", "conv2d", "conv3d", "unfold", "fold", "max_pool1d", "max_pool2d", "max_pool3d",
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "batch_norm", "layer_norm", "group_norm", "instance_norm",
    "embedding", "one_hot", "pad", "normalize", "cosine_similarity", "pairwise_distance",
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "soft_margin_loss",
    "cosine_embedding_loss", "margin_ranking_loss", "hinge_embedding_loss",
    "scaled_dot_product_attention", "multi_head_attention_forward", "interpolate",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "rms_norm", "prelu",
    "pixel_shuffle", "pixel_unshuffle", "embedding_bag", "grid_sample", "affine_grid",
    "upsample",
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _tuple(v, n: int, name: str = "argument") -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(x) for x in v)
    if len(v) == 1 and n > 1:
        return v * n
    if len(v) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {v}")
    return v


def _check_float(x: Tensor, fn: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}(): argument 'input' must be Tensor, not {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"{fn}: expected a floating-point input, got {x.dtype}")


def _reduce(loss: Tensor, reduction: str, fn: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _inplace(input: Tensor, result: Tensor) -> Tensor:
    return input._assign(result)


# ---------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0)."""
    out = apply_op("relu", (input,))
    return _inplace(input, out) if inplace else out


def relu_(input: Tensor) -> Tensor:
    return relu(input, inplace=True)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    return hardtanh(input, 0.0, 6.0, inplace)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0,
             inplace: bool = False) -> Tensor:
    out = apply_op("clamp", (input,), {"min": min_val, "max": max_val})
    return _inplace(input, out) if inplace else out


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    out = apply_op("where", (apply_op("gt", (input, threshold)), input, value))
    return _inplace(input, out) if inplace else out


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    out = apply_op("leaky_relu", (input,), {"negative_slope": float(negative_slope)},
                   "LeakyReluBackward0")
    return _inplace(input, out) if inplace else out


def leaky_relu_(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    return leaky_relu(input, negative_slope, True)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    _check_float(input, "elu")
    out = apply_op("elu", (input,), {"alpha": float(alpha)}, "EluBackward0")
    return _inplace(input, out) if inplace else out


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    out = elu(input, alpha) * scale
    return _inplace(input, out) if inplace else out


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    out = elu(input / alpha, 1.0) * alpha
    return _inplace(input, out) if inplace else out


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x); ``approximate='tanh'`` uses the tanh formula."""
    _check_float(input, "gelu")
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got "
                           f"{approximate!r}")
    if input.dim() == 0:  # the op's exact-erf kernel takes arrays: evaluate as (1,)
        return apply_op("gelu", (input.reshape(1),), {"approximate": approximate},
                        "GeluBackward0").reshape(())
    return apply_op("gelu", (input,), {"approximate": approximate}, "GeluBackward0")


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    _check_float(input, "silu")
    out = apply_op("silu", (input,), grad_name="SiluBackward0")
    return _inplace(input, out) if inplace else out


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    out = input * softplus(input).tanh()
    return _inplace(input, out) if inplace else out


def sigmoid(input: Tensor) -> Tensor:
    return apply_op("sigmoid", (input,))


def tanh(input: Tensor) -> Tensor:
    return apply_op("tanh", (input,))


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    _check_float(input, "softplus")
    return apply_op("softplus", (input,), {"beta": float(beta), "threshold": float(threshold)},
                    "SoftplusBackward0")


def softsign(input: Tensor) -> Tensor:
    return input / (input.abs() + 1.0)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    out = apply_op("clamp", (input / 6.0 + 0.5,), {"min": 0.0, "max": 1.0})
    return _inplace(input, out) if inplace else out


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    out = input * hardsigmoid(input)
    return _inplace(input, out) if inplace else out


def logsigmoid(input: Tensor) -> Tensor:
    return -softplus(-input)


def tanhshrink(input: Tensor) -> Tensor:
    return input - input.tanh()


def glu(input: Tensor, dim: int = -1) -> Tensor:
    a, b = input.chunk(2, dim)
    return a * b.sigmoid()


def _softmax_dim(ndim: int) -> int:
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
            dtype=None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim``, computed stably."""
    if dtype is not None:
        input = input.to(dtype)
    _check_float(input, "softmax")
    if dim is None:
        dim = _softmax_dim(input.dim())
    if input.dim() == 0:
        return apply_op("reshape", (apply_op("softmax", (input.reshape(1),), {"dim": 0}),),
                        {"shape": ()})
    d = normalize_dim(dim, input.dim(), "softmax")
    return apply_op("softmax", (input,), {"dim": d}, "SoftmaxBackward0")


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype=None) -> Tensor:
    """x - logsumexp(x) along ``dim``, computed stably."""
    if dtype is not None:
        input = input.to(dtype)
    _check_float(input, "log_softmax")
    if dim is None:
        dim = _softmax_dim(input.dim())
    if input.dim() == 0:
        return apply_op("reshape", (apply_op("log_softmax", (input.reshape(1),), {"dim": 0}),),
                        {"shape": ()})
    d = normalize_dim(dim, input.dim(), "log_softmax")
    return apply_op("log_softmax", (input,), {"dim": d}, "LogSoftmaxBackward0")


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    return softmax(-input, dim, dtype=dtype)


# ---------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------
def _keep_mask(shape, p: float, dtype, generator, like: Tensor | None = None) -> Tensor:
    """1/(1-p) where an element is kept (probability 1-p), else 0. The draw is a
    registry op, so a compiled step draws a fresh mask on every call; it is drawn on the
    host and moved to ``like``'s device when that is a CUDA device."""
    u = random_tensor("uniform", shape, dtype, generator)
    if like is not None and like.is_cuda:
        u = u.to(like.device)
    keep = apply_op("cast", (apply_op("ge", (u, p)),), {"dtype": dtype})
    return keep * (1.0 / (1.0 - p))


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            generator=None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p);
    identity when not training. ``generator`` (or the global one) draws the mask."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        out = input * 0.0
    else:
        out = input * _keep_mask(tuple(input.shape), p, input.dtype, generator, input)
    return _inplace(input, out) if inplace else out


def _feature_dropout(input, p, training, inplace, generator, batched_ndim, name):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if name == "dropout2d" and input.dim() not in (3, 4):
        # torch 2.x warns and treats the input as unbatched (channels along dim 0)
        import warnings
        warnings.warn(f"dropout2d: Received a {input.dim()}-D input to dropout2d, which is "
                      "deprecated and will result in an error in a future release. To retain "
                      "the behavior and silence this warning, please use dropout instead. Note "
                      "that dropout2d exists to provide channel-wise dropout on inputs with 2 "
                      "spatial dimensions, a channel dimension, and an optional batch dimension "
                      "(i.e. 3D or 4D inputs).", stacklevel=3)
        if not training or p == 0.0:
            return input
        nfeat = 1
    elif not training or p == 0.0:
        return input
    elif input.dim() not in (batched_ndim, batched_ndim - 1):
        raise RuntimeError(f"{name}: Expected {batched_ndim - 1}D or {batched_ndim}D input, but "
                           f"received a {input.dim()}D input of shape {tuple(input.shape)}")
    else:
        nfeat = 2 if input.dim() == batched_ndim else 1
    shape = tuple(input.shape[:nfeat]) + (1,) * (input.dim() - nfeat)
    if p == 1.0:
        out = input * 0.0
    else:
        out = input * _keep_mask(shape, p, input.dtype, generator, input)
    return _inplace(input, out) if inplace else out


def dropout1d(input, p=0.5, training=True, inplace=False, generator=None):
    return _feature_dropout(input, p, training, inplace, generator, 3, "dropout1d")


def dropout2d(input, p=0.5, training=True, inplace=False, generator=None):
    return _feature_dropout(input, p, training, inplace, generator, 4, "dropout2d")


def dropout3d(input, p=0.5, training=True, inplace=False, generator=None):
    return _feature_dropout(input, p, training, inplace, generator, 5, "dropout3d")


def alpha_dropout(input, p=0.5, training=False, inplace=False, generator=None):
    return _alpha_dropout(input, p, training, inplace, generator, feature=False)


def _alpha_dropout(input, p, training, inplace, generator, feature: bool):
    """SELU's self-normalising dropout, one draw per element or (``feature``) per
    (sample, channel): dropped values go to SELU's negative saturation, then an affine
    map keeps mean and variance."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        out = input * 0.0
        return _inplace(input, out) if inplace else out
    shape = tuple(input.shape)
    if feature:
        if input.dim() < 2:
            raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
        shape = shape[:2] + (1,) * (input.dim() - 2)
    alpha_p = -1.7580993408473766
    keep = _keep_mask(shape, p, input.dtype, generator, input) * (1.0 - p)
    a = ((1 - p) * (1 + p * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * p
    out = (input * keep + (1.0 - keep) * alpha_p) * a + b
    return _inplace(input, out) if inplace else out


# ---------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ W^T + b."""
    if input.shape[-1:] != weight.shape[-1:] and input.dim() > 0:
        s = tuple(input.shape)
        lead = int(np.prod(s[:-1])) if len(s) > 1 else 1
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({lead}x{s[-1]} and "
                           f"{weight.shape[-1]}x{weight.shape[0]}) [linear: input {s}, weight "
                           f"{tuple(weight.shape)}]")
    from ..amp import cast_inputs
    input, weight, bias = cast_inputs(input, weight, bias)
    # one op (ir/ops/composites.py): traced as one node, written once in primitives
    # (grad_fn named as torch's for a batch of rows: addmm / mm)
    names = ("MmBackward0", "AddmmBackward0") if input.dim() == 2 else (None, None)
    if bias is not None and dt.bfloat16 in (input.dtype, weight.dtype, bias.dtype):
        # bfloat16 stores the product, rounded, before the bias is added (as torch)
        return apply_op("linear", (input, weight), grad_name=names[0]) + bias
    return apply_op("linear", (input, weight) if bias is None else (input, weight, bias),
                    grad_name=names[bias is not None])


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None):
    from .._functions import einsum
    out = einsum("bi,oij,bj->bo",
                 input1.reshape(-1, input1.shape[-1]), weight,
                 input2.reshape(-1, input2.shape[-1]))
    out = out.reshape(tuple(input1.shape[:-1]) + (weight.shape[0],))
    return out + bias if bias is not None else out


# ---------------------------------------------------------------------------
# convolution (im2col + matmul)
# ---------------------------------------------------------------------------
def _conv_padding(padding, nsp, kernel, dilation, stride, name):
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nsp
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided "
                                 "convolutions")
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            if any(t % 2 for t in total):
                raise NotImplementedError(f"{name}: padding='same' with an even effective kernel "
                                          "size needs asymmetric padding; pad explicitly")
            return tuple(t // 2 for t in total)
        raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                         "{'valid', 'same'}")
    return _tuple(padding, nsp, "padding")


def _conv_prelude(input: Tensor, weight: Tensor, bias, stride, dilation, nsp: int,
                  name: str) -> tuple:
    """What conv and transposed conv both do first: check ranks, apply autocast, add the
    batch dim of an unbatched input, and spell stride/dilation per spatial dim."""
    if input.dim() not in (nsp + 1, nsp + 2):
        raise RuntimeError(f"{name}: Expected {nsp + 1}D (unbatched) or {nsp + 2}D (batched) "
                           f"input, but got input of size: {list(input.shape)}")
    if weight.dim() != nsp + 2:
        raise RuntimeError(f"{name}: weight must be {nsp + 2}-D, got shape "
                           f"{tuple(weight.shape)}")
    unbatched = input.dim() == nsp + 1
    from ..amp import cast_inputs
    input, weight, bias = cast_inputs(input, weight, bias)
    if unbatched:
        input = input.unsqueeze(0)
    return (input, weight, bias, unbatched, tuple(weight.shape[2:]),
            _tuple(stride, nsp, "stride"), _tuple(dilation, nsp, "dilation"))


def _convnd(input: Tensor, weight: Tensor, bias, stride, padding, dilation, groups: int,
            nsp: int, name: str) -> Tensor:
    input, weight, bias, unbatched, kernel, stride, dilation = _conv_prelude(
        input, weight, bias, stride, dilation, nsp, name)
    padding = _conv_padding(padding, nsp, kernel, dilation, stride, name)
    n, c = input.shape[:2]
    cout = weight.shape[0]
    if c != weight.shape[1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input"
            f"{list(input.shape)} to have {weight.shape[1] * groups} channels, but got {c} "
            "channels instead")
    if cout % groups:
        raise RuntimeError(f"{name}: out_channels ({cout}) must be divisible by groups "
                           f"({groups})")
    if input.dtype is not weight.dtype:
        raise RuntimeError(f"{name}: Input type ({input.dtype}) and weight type "
                           f"({weight.dtype}) should be the same")
    fuse_bias = bias is not None and groups == 1
    attrs = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
             "ones_row": fuse_bias}
    if groups == 1 and not input.is_cuda and input.dtype in (dt.float32, dt.float64):
        # one op: im2col and the GEMM an image at a time (kernels.cpu.conv_native),
        # the bias as an extra weight column against im2col's row of ones
        w2 = weight.reshape(cout, -1)
        if fuse_bias:
            w2 = apply_op("cat", (w2, bias.reshape(cout, 1)), {"dim": 1})
        out = apply_op("conv", (input, w2), attrs, "ConvolutionBackward0")
        return out.squeeze(0) if unbatched else out
    # batch-last columns (C*K [+1], N*L): the convolution is one GEMM over the whole batch
    # (per group), and so are its weight and input gradients; the (Cout, N, L) product
    # then goes to (N, Cout, L) by one transposing copy
    attrs["batch_last"] = True
    cols = apply_op("im2col", (input,), attrs, "Im2ColBackward0")     # (C*K [+1], N*L)
    from ir.ops.nn import _spatial_out
    out_sp = _spatial_out(tuple(input.shape[2:]), kernel, stride, padding, dilation)
    if groups == 1:
        w2 = weight.reshape(cout, -1)
        if fuse_bias:
            # bias as an extra weight column against im2col's row of ones
            w2 = apply_op("cat", (w2, bias.reshape(cout, 1)), {"dim": 1})
            bias = None
        out = apply_op("matmul", (w2, cols))                            # (Cout, N*L)
    else:
        ck = cols.shape[0] // groups
        w3 = weight.reshape(groups, cout // groups, ck)
        c3 = cols.reshape(groups, ck, cols.shape[1])
        out = apply_op("matmul", (w3, c3))                              # (G, Cout/G, N*L)
    out = out.reshape((cout, n) + out_sp).transpose(0, 1).contiguous()
    if bias is not None:
        out = apply_op("add", (out, bias.reshape((cout,) + (1,) * nsp)))
    return out.squeeze(0) if unbatched else out


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    return _convnd(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """2-D convolution (cross-correlation, as torch) via im2col + BLAS matmul."""
    return _convnd(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    return _convnd(input, weight, bias, stride, padding, dilation, groups, 3, "conv3d")


def _blocks(size, k, d, p, s) -> tuple[int, int]:
    """The number of sliding blocks per spatial dim."""
    return tuple((size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2))


def unfold(input: Tensor, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """Sliding local blocks (N, C, H, W) -> (N, C*kh*kw, L) (or unbatched (C, H, W))."""
    if input.dim() not in (3, 4):
        raise RuntimeError(f"Input Error: Only 3D or 4D input Tensors are supported (got "
                           f"{input.dim()}D)")
    k, s, p, d = (_tuple(kernel_size, 2), _tuple(stride, 2), _tuple(padding, 2),
                  _tuple(dilation, 2))
    blocks = _blocks(tuple(input.shape[-2:]), k, d, p, s)
    if min(blocks) < 1:
        raise RuntimeError(f"Given input with spatial size {tuple(input.shape[-2:])}, "
                           f"kernel_size={k}, dilation={d}, padding={p}, calculated shape of "
                           f"the array of sliding blocks as {blocks}, but its components must "
                           "be at least one.")
    x = input if input.dim() == 4 else input.unsqueeze(0)
    attrs = {"kernel": k, "stride": s, "padding": p, "dilation": d, "ones_row": False}
    out = apply_op("im2col", (x,), attrs, "Im2ColBackward0")
    return out if input.dim() == 4 else out.squeeze(0)


def fold(input: Tensor, output_size, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """Adjoint of unfold: sum blocks (N, C*kh*kw, L) back into (N, C, H, W) (or unbatched
    (C*kh*kw, L))."""
    if input.dim() not in (2, 3):
        raise RuntimeError(f"Input Error: Only unbatched (2D) or batched (3D) input Tensors are "
                           f"supported (got {input.dim()}D)")
    size, k, s, p, d = (_tuple(output_size, 2), _tuple(kernel_size, 2), _tuple(stride, 2),
                        _tuple(padding, 2), _tuple(dilation, 2))
    ck, n_blocks = input.shape[-2], input.shape[-1]
    if ck % (k[0] * k[1]):
        raise RuntimeError(f"Expected size of input's dimension 1 to be divisible by the product "
                           f"of kernel_size, but got input.size(1)={ck} and kernel_size={k}.")
    blocks = _blocks(size, k, d, p, s)
    if n_blocks != blocks[0] * blocks[1]:
        raise RuntimeError(f"Given output_size={size}, kernel_size={k}, dilation={d}, "
                           f"padding={p}, stride={s}, expected size of input's dimension 2 to "
                           f"match the calculated number of sliding blocks {blocks[0]} * "
                           f"{blocks[1]} = {blocks[0] * blocks[1]}, but got "
                           f"input.size(2)={n_blocks}.")
    x = input if input.dim() == 3 else input.unsqueeze(0)
    attrs = {"spatial": size, "kernel": k, "stride": s, "padding": p, "dilation": d,
             "ones_row": False}
    out = apply_op("col2im", (x,), attrs, "Col2ImBackward0")
    return out if input.dim() == 3 else out.squeeze(0)


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------
def _pool_prep(input, nsp, name):
    if input.dim() not in (nsp + 1, nsp + 2):
        raise RuntimeError(f"{name}: Expected {nsp + 1}D or {nsp + 2}D input, but got input of "
                           f"size: {list(input.shape)}")
    unbatched = input.dim() == nsp + 1
    return (input.unsqueeze(0) if unbatched else input), unbatched


def _max_poolnd(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                nsp, name):
    x, unbatched = _pool_prep(input, nsp, name)
    kernel = _tuple(kernel_size, nsp, "kernel_size")
    stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) \
        else _tuple(stride, nsp, "stride")
    attrs = {"kernel": kernel, "stride": stride, "padding": _tuple(padding, nsp, "padding"),
             "dilation": _tuple(dilation, nsp, "dilation"), "ceil_mode": bool(ceil_mode)}
    idx = apply_op("max_pool_indices", (x,), attrs)
    out = apply_op("pool_gather", (x, idx), grad_name=f"MaxPool{nsp}DWithIndicesBackward0")
    if unbatched:
        out, idx = out.squeeze(0), idx.squeeze(0)
    return (out, idx) if return_indices else out


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_poolnd(input, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices, 1, "max_pool1d")


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows; the gradient goes to each window's first maximum."""
    return _max_poolnd(input, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices, 2, "max_pool2d")


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_poolnd(input, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices, 3, "max_pool3d")


def _avg_poolnd(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override, nsp, name):
    x, unbatched = _pool_prep(input, nsp, name)
    _check_float(x, name)
    kernel = _tuple(kernel_size, nsp, "kernel_size")
    stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) \
        else _tuple(stride, nsp, "stride")
    attrs = {"kernel": kernel, "stride": stride, "padding": _tuple(padding, nsp, "padding"),
             "ceil_mode": bool(ceil_mode), "count_include_pad": bool(count_include_pad),
             "divisor_override": divisor_override}
    out = apply_op("avg_pool", (x,), attrs, f"AvgPool{nsp}DBackward0")
    return out.squeeze(0) if unbatched else out


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    return _avg_poolnd(input, kernel_size, stride, padding, ceil_mode, count_include_pad, None,
                       1, "avg_pool1d")


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_poolnd(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override, 2, "avg_pool2d")


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_poolnd(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override, 3, "avg_pool3d")


def _adaptive_matrix(n: int, o: int, dtype) -> np.ndarray:
    """(o, n) averaging matrix with torch's window bounds floor(i*n/o)..ceil((i+1)*n/o)."""
    m = np.zeros((o, n), dtype.np)
    for i in range(o):
        s = (i * n) // o
        e = -(-((i + 1) * n) // o)
        m[i, s:e] = 1.0 / (e - s)
    return m


def _adaptive_avg(input, output_size, nsp, name):
    x, unbatched = _pool_prep(input, nsp, name)
    _check_float(x, name)
    sizes = tuple(x.shape[2:])
    if isinstance(output_size, (int, np.integer)) or output_size is None:
        output_size = (output_size,) * nsp
    out_size = tuple(s if o is None else int(o) for o, s in zip(output_size, sizes))
    if len(out_size) != nsp:
        raise ValueError(f"{name}: output_size must have {nsp} elements, got {output_size}")
    if all(s % o == 0 for s, o in zip(sizes, out_size)):
        # equal windows: reshape to (N, C, o1, k1, o2, k2, ...) and average
        shape = tuple(x.shape[:2])
        for s, o in zip(sizes, out_size):
            shape += (o, s // o)
        r = x.reshape(shape)
        out = r.mean(dim=tuple(3 + 2 * i for i in range(nsp)))
    else:
        out = x
        for i, (s, o) in enumerate(zip(sizes, out_size)):
            m = Tensor._make(_adaptive_matrix(s, o, x.dtype))
            out = out.transpose(2 + i, -1)
            out = apply_op("matmul", (out, m.t()))
            out = out.transpose(2 + i, -1)
    return out.squeeze(0) if unbatched else out


def adaptive_avg_pool1d(input, output_size) -> Tensor:
    return _adaptive_avg(input, output_size, 1, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    """Average over torch's adaptive windows (exact for any input/output sizes)."""
    return _adaptive_avg(input, output_size, 2, "adaptive_avg_pool2d")


# ---------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------
def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float | None = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise over (N, spatial) per channel; in training, batch statistics
    (biased variance) normalise and running stats get the unbiased one."""
    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected at least 2D input (got {input.dim()}D input)")
    c = input.shape[1]
    dims = (0,) + tuple(range(2, input.dim()))
    bshape = (1, c) + (1,) * (input.dim() - 2)
    if training and input.numel() == 0:
        out = input * 1.0  # an empty batch: empty output, running stats untouched (torch)
    elif training:
        count = input.numel() // c
        if count == 1:
            raise ValueError("Expected more than 1 value per channel when training, got input "
                             f"size {list(input.shape)}")
        mean = input.mean(dim=dims, keepdim=True)
        centred = input - mean
        var = (centred * centred).mean(dim=dims, keepdim=True)
        if running_mean is not None and running_var is not None:
            # momentum may be a 0-d tensor (the cumulative average 1/num_batches_tracked)
            m = 0.1 if momentum is None else momentum
            with _no_grad():
                bm = mean.detach().reshape(c)
                bv = var.detach().reshape(c) * (count / (count - 1))
                running_mean.mul_(1 - m).add_(bm * m)
                running_var.mul_(1 - m).add_(bv * m)
        out = centred * (var + eps).rsqrt()
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("batch_norm: running_mean and running_var must be given when "
                               "training=False")
        out = (input - running_mean.reshape(bshape)) * (running_var.reshape(bshape) + eps).rsqrt()
    if weight is not None:
        out = out * weight.reshape(bshape)
    if bias is not None:
        out = out + bias.reshape(bshape)
    return out


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5) -> Tensor:
    """Normalise each (sample, channel) over its spatial dims; with running stats, training
    updates them with the batch mean of the per-instance statistics (torch)."""
    dims = tuple(range(2, input.dim()))
    bshape = (1, input.shape[1]) + (1,) * (input.dim() - 2)
    if use_input_stats:
        mean = input.mean(dim=dims, keepdim=True)
        centred = input - mean
        var = (centred * centred).mean(dim=dims, keepdim=True)
        out = centred * (var + eps).rsqrt()
        if running_mean is not None and running_var is not None:
            count = int(np.prod(input.shape[2:]))
            with _no_grad():
                bm = mean.detach().mean(dim=0).reshape(-1)
                bv = var.detach().mean(dim=0).reshape(-1) * (count / max(count - 1, 1))
                running_mean.mul_(1 - momentum).add_(bm * momentum)
                running_var.mul_(1 - momentum).add_(bv * momentum)
    else:
        out = (input - running_mean.reshape(bshape)) * (running_var.reshape(bshape) + eps).rsqrt()
    if weight is not None:
        out = out * weight.reshape(bshape)
    if bias is not None:
        out = out + bias.reshape(bshape)
    return out


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` dims (biased variance)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if tuple(input.shape[input.dim() - k:]) != shape or input.dim() < k:
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape [*, "
            f"{', '.join(map(str, shape))}], but got input of size{list(input.shape)}")
    _check_float(input, "layer_norm")
    # one op (ir/ops/composites.py): traced as one node, written once in primitives
    extra = tuple(t for t in (weight, bias) if t is not None)
    return apply_op("layer_norm", (input,) + extra,
                    {"normalized_ndim": k, "eps": float(eps), "has_weight": weight is not None,
                     "has_bias": bias is not None})


def group_norm(input: Tensor, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    n, c = input.shape[:2]
    if c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, "
                           f"but got input of shape {list(input.shape)} and num_groups="
                           f"{num_groups}")
    x = input.reshape(n, num_groups, -1)
    mean = x.mean(dim=2, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=2, keepdim=True)
    out = (centred * (var + eps).rsqrt()).reshape(tuple(input.shape))
    bshape = (1, c) + (1,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight.reshape(bshape)
    if bias is not None:
        out = out + bias.reshape(bshape)
    return out


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    from .._functions import norm
    n = norm(input, p, dim=dim, keepdim=True).clamp_min(eps)
    return input / n


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    w12 = (x1 * x2).sum(dim)
    n1 = (x1 * x1).sum(dim)
    n2 = (x2 * x2).sum(dim)
    return w12 / ((n1 * n2).clamp_min(eps * eps)).sqrt()


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    from .._functions import norm
    return norm(x1 - x2 + eps, p, dim=-1, keepdim=keepdim)


class _no_grad:
    def __enter__(self):
        self.prev = state.grad_enabled
        state.grad_enabled = False

    def __exit__(self, *exc):
        state.grad_enabled = self.prev


# ---------------------------------------------------------------------------
# embedding, one_hot, pad
# ---------------------------------------------------------------------------
def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` picked by integer ``input``; no gradient reaches
    ``padding_idx``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"embedding(): argument 'indices' must be Tensor, not "
                        f"{type(input).__name__}")
    if input.dtype.kind not in "iu":
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the "
                           f"following scalar types: Long, Int; but got {input.dtype} instead "
                           "(while checking arguments for embedding)")
    n = weight.shape[0]
    input = check_values(input, "range", low=0, high=n - 1, error="IndexError",
                         message="index out of range in self (embedding index {bad} with "
                         f"num_embeddings={n})")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += n
    if scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: scale_grad_by_freq and sparse gradients are not "
                                  "supported")
    if max_norm is not None:
        # torch's embedding_renorm_: rows looked up now are scaled in place to norm
        # max_norm at most (a repeated index writes the same scaled row again)
        with _no_grad():
            idx = input.reshape(-1)
            rows = weight.index_select(0, idx)
            norms = rows.norm(norm_type, dim=1, keepdim=True)
            scale = apply_op("where", (norms > max_norm, max_norm / (norms + 1e-7), 1.0))
            weight[idx] = rows * scale.to(weight.dtype)
    return apply_op("embedding", (weight, input), {"padding_idx": padding_idx},
                    "EmbeddingBackward0")


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding along a new last dimension."""
    if tensor.dtype is not dt.int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    if num_classes == -1:
        if tensor.numel() == 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        # the output's shape depends on the data: a graph break under compile
        num_classes = int(tensor.max().item()) + 1
    tensor = check_values(tensor, "range", low=0, message="Class values must be non-negative "
                          "(got class {bad}).")
    tensor = check_values(tensor, "range", high=num_classes - 1,
                          message="Class values must be smaller than num_classes (got class "
                          f"{{bad}} with num_classes={num_classes})")
    from .._creation import arange
    classes = arange(num_classes)
    return apply_op("cast", (apply_op("eq", (tensor.unsqueeze(-1), classes)),),
                    {"dtype": dt.int64})


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant",
        value: float | None = None) -> Tensor:
    """Pad the last len(pad)//2 dims: (left, right, top, bottom, ...); modes
    constant, reflect, replicate, circular."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if len(pad) // 2 > input.dim():
        raise RuntimeError(f"Padding length should be less than or equal to two times the input "
                           f"dimension but got padding length {len(pad)} and input of dimension "
                           f"{input.dim()}")
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unsupported padding mode: {mode}")
    if mode != "constant":
        if value not in (None, 0, 0.0):
            raise ValueError(f"Padding mode \"{mode}\" doesn't take in value argument.")
        for i in range(len(pad) // 2):
            d = input.dim() - 1 - i
            n = input.shape[d]
            if mode == "reflect" and (pad[2 * i] >= n or pad[2 * i + 1] >= n):
                raise RuntimeError(
                    f"Argument #4: Padding size should be less than the corresponding input "
                    f"dimension, but got: padding ({pad[2 * i]}, {pad[2 * i + 1]}) at dimension "
                    f"{d} of input {list(input.shape)}")
            if mode == "circular" and (pad[2 * i] > n or pad[2 * i + 1] > n):
                raise RuntimeError("Padding value causes wrapping around more than once.")
    return apply_op("pad", (input,), {"pad": pad, "mode": mode,
                                      "value": 0.0 if value is None else float(value)})


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------
def _check_same_size(input, target, name):
    if tuple(input.shape) != tuple(target.shape):
        import warnings
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input size "
                      f"({input.shape}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", stacklevel=3)


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,
             reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    _check_same_size(input, target, "mse_loss")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    # one op (ir/ops/composites.py): traced as one node, written once in primitives
    return apply_op("mse_loss", (input, target) if weight is None else (input, target, weight),
                    {"reduction": reduction})


def l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,
            reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    _check_same_size(input, target, "l1_loss")
    loss = (input - target).abs()
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction), "l1_loss")


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean",
                   beta: float = 1.0) -> Tensor:
    d = (input - target).abs()
    if beta == 0.0:
        loss = d
    else:
        loss = apply_op("where", (apply_op("lt", (d, beta)), d * d * (0.5 / beta), d - 0.5 * beta))
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction), "smooth_l1_loss")


def huber_loss(input, target, reduction="mean", delta: float = 1.0, weight=None) -> Tensor:
    d = (input - target).abs()
    loss = apply_op("where", (apply_op("lt", (d, delta)), d * d * 0.5, (d - 0.5 * delta) * delta))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "huber_loss")


def _class_dim(input: Tensor) -> int:
    return 0 if input.dim() == 1 else 1


def _check_targets(target: Tensor, n_classes: int, ignore_index: int, name: str) -> Tensor:
    """``target``, checked (on every call, compiled too) to hold class indices."""
    return check_values(target, "range", low=0, high=n_classes - 1, ignore=ignore_index,
                        error="IndexError", message="Target {bad} is out of bounds. "
                        f"({name}: class indices must be in [0, {n_classes - 1}] for input "
                        f"with {n_classes} classes)")


def _class_targets(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int
                   ) -> Tensor:
    """nll_loss's checks of class-index targets (shapes, dtype, and on every call their
    range); the targets as int64."""
    if input.dim() < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {input.dim()})")
    if target.dtype.kind not in "iu":
        raise RuntimeError(f"expected scalar type Long but found {target.dtype} (nll_loss "
                           "target must hold class indices)")
    cdim = _class_dim(input)
    n_classes = input.shape[cdim]
    batch_shape = tuple(input.shape[:cdim]) + tuple(input.shape[cdim + 1:])
    if tuple(target.shape) != batch_shape:
        raise ValueError(f"Expected input batch_size ({input.shape[0] if input.dim() > 1 else 1})"
                         f" to match target batch_size ({target.shape[0] if target.dim() else 1})"
                         f" [nll_loss: input {tuple(input.shape)}, target {tuple(target.shape)}]")
    if weight is not None and tuple(weight.shape) != (n_classes,):
        raise RuntimeError(f"weight tensor should be defined either for all {n_classes} classes "
                           f"or no classes but got weight tensor of shape: {list(weight.shape)}")
    target = _check_targets(target, n_classes, ignore_index, "nll_loss")
    return target.long() if target.dtype is not dt.int64 else target


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
             ignore_index: int = -100, reduce=None, reduction: str = "mean") -> Tensor:
    """-input[n, target[n]] (times weight[target[n]]); mean divides by the
    summed weights of non-ignored targets."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    target = _class_targets(input, target, weight, ignore_index)
    cdim = _class_dim(input)
    ignored = apply_op("eq", (target, ignore_index))
    safe = apply_op("where", (ignored, 0, target))
    picked = apply_op("gather", (input, safe.unsqueeze(cdim)), {"dim": cdim}).squeeze(cdim)
    keep = apply_op("cast", (apply_op("logical_not", (ignored,)),), {"dtype": input.dtype})
    w = keep if weight is None else apply_op("getitem", (weight, safe), {"index": (("t", 0),)}) \
        * keep
    loss = -(picked * w)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w.sum()


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """log_softmax + nll_loss for class indices, or soft cross entropy for
    class probabilities; label smoothing as torch."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    _check_float(input, "cross_entropy")
    if not target.dtype.is_floating_point:
        target = _class_targets(input, target, weight, ignore_index)
    # one op (ir/ops/composites.py): traced as one node, written once in primitives
    return apply_op("cross_entropy", (input, target) if weight is None else
                    (input, target, weight),
                    {"reduction": reduction, "ignore_index": int(ignore_index),
                     "label_smoothing": float(label_smoothing)})


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """-(t log x + (1-t) log(1-x)) with each log clamped at -100, like torch."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Using a target size ({target.shape}) that is different to the input "
                         f"size ({input.shape}) is deprecated. Please ensure they have the same "
                         "size.")
    input = check_values(input, "range", low=0.0, high=1.0,
                         message="all elements of input should be between 0 and 1")
    log_x = apply_op("clamp", (input.log(),), {"min": -100.0, "max": None})
    log_1mx = apply_op("clamp", ((1.0 - input).log(),), {"min": -100.0, "max": None})
    loss = -(target * log_x + (1.0 - target) * log_1mx)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Tensor | None = None, size_average=None,
                                     reduce=None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Stable BCE on logits: (1-t) x + (1 + (pw-1) t) softplus(-x)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Target size ({target.shape}) must be the same as input size "
                         f"({input.shape})")
    sp = apply_op("softplus", (-input,), {"beta": 1.0, "threshold": 1e30})
    if pos_weight is not None:
        lw = (pos_weight - 1.0) * target + 1.0
        loss = (1.0 - target) * input + lw * sp
    else:
        loss = (1.0 - target) * input + sp
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def kl_div(input: Tensor, target: Tensor, size_average=None, reduce=None,
           reduction: str = "mean", log_target: bool = False) -> Tensor:
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if log_target:
        loss = target.exp() * (target - input)
    else:
        # torch's xlogy(t, t) - t * x: NaN for negative or NaN targets, 0 where t == 0
        from .._functions import xlogy
        loss = xlogy(target, target) - target * input
    if reduction == "batchmean":
        return loss.sum() / input.shape[0] if input.dim() else loss.sum()
    return _reduce(loss, reduction, "kl_div")


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    loss = softplus(-input * target)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction), "soft_margin_loss")


def margin_ranking_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                        reduction="mean"):
    loss = (-target * (input1 - input2) + margin).clamp_min(0.0)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction),
                   "margin_ranking_loss")


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None,
                         reduction="mean"):
    pos = apply_op("where", (apply_op("eq", (target, 1)), input, 0.0))
    neg = apply_op("where", (apply_op("eq", (target, -1)), (margin - input).clamp_min(0.0), 0.0))
    return _reduce(pos + neg, _legacy_reduction(size_average, reduce, reduction),
                   "hinge_embedding_loss")


def cosine_embedding_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                          reduction="mean"):
    cos = cosine_similarity(input1, input2, dim=-1)
    pos = 1.0 - cos
    neg = (cos - margin).clamp_min(0.0)
    loss = apply_op("where", (apply_op("eq", (target, 1)), pos, neg))
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction),
                   "cosine_embedding_loss")


# ---------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------
def _mask_to_additive(mask: Tensor | None, dtype) -> Tensor | None:
    """Bool masks (True = not allowed) become -inf additive masks."""
    if mask is None:
        return None
    if mask.dtype is dt.bool_:
        zeros = Tensor._make(np.zeros(tuple(mask.shape), dtype.np))
        return apply_op("where", (mask, float("-inf"), zeros))
    return mask.to(dtype) if mask.dtype is not dtype else mask


def _one_attention_op(query: Tensor, key: Tensor, value: Tensor, attn_mask, dropout_p) -> bool:
    """Whether the ``sdpa`` op serves a call: q, k and v of one shape and of float32 or
    float64 on the CPU, no mask, no dropout."""
    d = query.dtype
    return (attn_mask is None and dropout_p == 0.0 and d in (dt.float32, dt.float64)
            and key.dtype is d and value.dtype is d and query.dim() >= 2
            and not (query.is_cuda or key.is_cuda or value.is_cuda)
            and tuple(query.shape) == tuple(key.shape) == tuple(value.shape))


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False, generator=None) -> Tensor:
    """softmax(Q K^T * scale + mask) V. A bool mask marks allowed positions
    with True (torch's SDPA convention). Self-attention shapes without a mask other than
    the causal one, nor dropout, run as one ``sdpa`` op (``ir.ops.attention``); the rest
    as matmul, softmax and matmul. Under autocast q, k and v take its dtype, as torch's
    autocast lists attention."""
    from ..amp import cast_inputs
    query, key, value = cast_inputs(query, key, value)
    lq, lk = query.shape[-2], key.shape[-2]
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if _one_attention_op(query, key, value, attn_mask, dropout_p):
        return apply_op("sdpa", (query, key, value),
                        {"scale": float(s), "causal": bool(is_causal)})
    scores = apply_op("matmul", (query, key.transpose(-2, -1))) * s
    if is_causal:
        if isinstance(lq, int) and isinstance(lk, int):
            causal = Tensor._make(np.triu(np.ones((lq, lk), bool), 1))
        else:  # traced dynamic sizes: the mask is made in the graph at the call's size
            from .._creation import ones
            causal = ones((lq, lk), dtype=dt.bool_).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype is dt.bool_:
            scores = scores.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            scores = scores + attn_mask
    attn = softmax(scores, -1)
    if dropout_p > 0.0:
        attn = dropout(attn, dropout_p, True, generator=generator)
    return apply_op("matmul", (attn, value))


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads,
                                 in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn,
                                 dropout_p, out_proj_weight, out_proj_bias, training=True,
                                 key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None,
                                 k_proj_weight=None, v_proj_weight=None, static_k=None,
                                 static_v=None, average_attn_weights=True, is_causal=False,
                                 generator=None):
    """torch's MultiheadAttention math on (L, N, E) inputs (sequence first). Without
    weights to return, masks, extra keys or dropout, the attention goes through
    ``scaled_dot_product_attention`` (one op where the shapes allow)."""
    if static_k is not None or static_v is not None:
        raise NotImplementedError("multi_head_attention_forward: static_k/static_v are not "
                                  "supported")
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but "
                             f"got {embed_dim}")
    head_dim = embed_dim // num_heads
    if use_separate_proj_weight:
        b = [None] * 3 if in_proj_bias is None else in_proj_bias.chunk(3)
        q = linear(query, q_proj_weight, b[0])
        k = linear(key, k_proj_weight, b[1])
        v = linear(value, v_proj_weight, b[2])
    else:
        w = in_proj_weight.chunk(3)
        b = [None] * 3 if in_proj_bias is None else in_proj_bias.chunk(3)
        q = linear(query, w[0], b[0])
        k = linear(key, w[1], b[1])
        v = linear(value, w[2], b[2])
    # nothing but the attention itself (a Transformer layer in eval mode): it goes through
    # scaled_dot_product_attention, one op where the shapes allow
    plain = not need_weights and attn_mask is None and key_padding_mask is None and \
        bias_k is None and not add_zero_attn and not (dropout_p > 0.0 and training) and \
        (not is_causal or tgt_len == src_len)
    add_mask = _mask_to_additive(attn_mask, q.dtype)
    if is_causal and add_mask is None and not plain:
        add_mask = Tensor._make(np.where(np.triu(np.ones((tgt_len, src_len), bool), 1),
                                         -np.inf, 0.0).astype(q.dtype.np))
    if bias_k is not None and bias_v is not None:
        from .._functions import cat
        k = cat([k, bias_k.expand(1, bsz, embed_dim)])
        v = cat([v, bias_v.expand(1, bsz, embed_dim)])
        if add_mask is not None:
            add_mask = pad(add_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = pad(key_padding_mask, (0, 1))
        src_len += 1
    # (L, N, E) -> (N, H, L, D)
    q = q.reshape(tgt_len, bsz, num_heads, head_dim).permute(1, 2, 0, 3)
    k = k.reshape(k.shape[0], bsz, num_heads, head_dim).permute(1, 2, 0, 3)
    v = v.reshape(v.shape[0], bsz, num_heads, head_dim).permute(1, 2, 0, 3)
    if add_zero_attn:
        from .._functions import cat
        zeros = Tensor._make(np.zeros((bsz, num_heads, 1, head_dim), q.dtype.np))
        k = cat([k, zeros], dim=2)
        v = cat([v, zeros], dim=2)
        if add_mask is not None:
            add_mask = pad(add_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = pad(key_padding_mask, (0, 1))
    if plain:
        out = scaled_dot_product_attention(q, k, v, is_causal=is_causal)   # (N, H, L, D)
    else:
        scores = apply_op("matmul", (q, k.transpose(-2, -1))) * (1.0 / math.sqrt(head_dim))
        if add_mask is not None:
            if add_mask.dim() == 2:
                scores = scores + add_mask
            else:  # (N*H, L, S)
                scores = scores + add_mask.reshape(bsz, num_heads, tgt_len, -1)
        if key_padding_mask is not None:
            kpm = _mask_to_additive(key_padding_mask, q.dtype)
            scores = scores + kpm.reshape(bsz, 1, 1, -1)
        attn = softmax(scores, -1)
        if dropout_p > 0.0 and training:
            attn = dropout(attn, dropout_p, True, generator=generator)
        out = apply_op("matmul", (attn, v))                      # (N, H, L, D)
    out = out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
    out = linear(out, out_proj_weight, out_proj_bias)
    weights = None
    if need_weights:
        weights = attn.mean(dim=1) if average_attn_weights else attn
        if unbatched:
            weights = weights.squeeze(0)
    if unbatched:
        out = out.squeeze(1)
    return out, weights


# ---------------------------------------------------------------------------
# resampling
# ---------------------------------------------------------------------------
_INTERP_DIMS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


def interpolate(input: Tensor, size=None, scale_factor=None, mode: str = "nearest",
                align_corners=None, recompute_scale_factor=None, antialias=False) -> Tensor:
    """Resize the spatial dims: nearest, nearest-exact, (bi/tri)linear, bicubic (separable,
    torch's source-index rules and A = -0.75) and area (adaptive average pooling). Each dim
    is index gathers times constant weights, so it traces and differentiates."""
    modes = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area")
    if mode not in modes:
        raise NotImplementedError(f"Input Error: Only 3D, 4D and 5D input Tensors supported "
                                  f"(got {input.dim()}D) for the modes: nearest | linear | "
                                  f"bilinear | bicubic | trilinear | area | nearest-exact "
                                  f"(got {mode})")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    nsp = input.dim() - 2
    if nsp < 1 or nsp > 3:
        raise NotImplementedError(f"Input Error: Only 3D, 4D and 5D input Tensors supported "
                                  f"(got {input.dim()}D) for the modes: nearest | linear | "
                                  f"bilinear | bicubic | trilinear | area | nearest-exact "
                                  f"(got {mode})")
    if mode in _INTERP_DIMS and _INTERP_DIMS[mode] != nsp:
        raise NotImplementedError(f"Got {input.dim()}D input, but {mode} mode needs "
                                  f"{_INTERP_DIMS[mode] + 2}D input")
    if align_corners is not None and mode not in ("linear", "bilinear", "bicubic",
                                                  "trilinear"):
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    align = bool(align_corners)
    sizes = tuple(input.shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    if size is not None:
        out = _tuple(size, nsp, "size")
        scales = [None] * nsp
    else:
        sf = (float(scale_factor),) * nsp if isinstance(scale_factor, (int, float)) else \
            tuple(float(f) for f in scale_factor)
        if len(sf) != nsp:
            raise ValueError(f"Input and scale_factor must have the same number of spatial "
                             f"dimensions, but got input with spatial dimensions of "
                             f"{list(sizes)} and scale_factor of shape {list(sf)}.")
        out = tuple(int(math.floor(s * f)) for s, f in zip(sizes, sf))
        # the given factor sets the source positions unless recompute_scale_factor asks for
        # in/out (torch)
        scales = [None if recompute_scale_factor else 1.0 / f for f in sf]
    if mode == "area":
        if nsp == 1:
            return adaptive_avg_pool1d(input, out)
        if nsp == 2:
            return adaptive_avg_pool2d(input, out)
        return _adaptive_avg_3d(input, out)
    x = input
    for i, (n_in, n_out, sc) in enumerate(zip(sizes, out, scales)):
        x = _resize_dim(x, 2 + i, n_in, n_out, sc, mode, align)
    return x


def _resize_dim(x: Tensor, dim: int, n_in: int, n_out: int, scale, mode: str,
                align: bool) -> Tensor:
    """One spatial dim resized: gathers of source rows times per-output weights."""
    i = np.arange(n_out, dtype=np.float64)
    ratio = (n_in / n_out if n_out else 0.0) if scale is None else scale
    if mode in ("nearest", "nearest-exact"):
        src = np.floor((i + (0.5 if mode == "nearest-exact" else 0.0)) * ratio)
        idx = np.minimum(src.astype(np.int64), n_in - 1)
        return x.index_select(dim, _const_long(idx))
    if align:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(i)
    else:
        src = (i + 0.5) * ratio - 0.5
    shape = [1] * x.dim()
    shape[dim] = n_out
    from .._creation import tensor

    def weight(wv):
        return tensor(wv.reshape(shape), dtype=x.dtype)

    if mode in ("linear", "bilinear", "trilinear"):
        if not align:
            src = np.maximum(src, 0.0)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        lam = src - lo
        a = x.index_select(dim, _const_long(lo))
        b = x.index_select(dim, _const_long(hi))
        return apply_op("add", (apply_op("mul", (a, weight(1.0 - lam))),
                                apply_op("mul", (b, weight(lam)))))
    # bicubic: torch's cubic convolution with A = -0.75, border indices clamped
    fl = np.floor(src)
    t = src - fl
    A = -0.75

    def c1(v):
        return ((A + 2) * v - (A + 3)) * v * v + 1

    def c2(v):
        return ((A * v - 5 * A) * v + 8 * A) * v - 4 * A

    ws = [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)]
    out = None
    for k, wk in enumerate(ws):
        idx = np.clip(fl.astype(np.int64) - 1 + k, 0, n_in - 1)
        term = apply_op("mul", (x.index_select(dim, _const_long(idx)), weight(wk)))
        out = term if out is None else apply_op("add", (out, term))
    return out


def _adaptive_avg_3d(input: Tensor, out) -> Tensor:
    """Adaptive average pooling over three dims, one dim at a time (torch's windows:
    [floor(i*in/out), ceil((i+1)*in/out)))."""
    x = input
    for k, n_out in enumerate(out):
        d = 2 + k
        n_in = x.shape[d]
        parts = []
        for i in range(n_out):
            s = (i * n_in) // n_out
            e = -((-(i + 1) * n_in) // n_out)
            parts.append(apply_op("mean", (x.narrow(d, s, e - s),), {"dims": (d,),
                                                                      "keepdim": True}))
        x = apply_op("cat", tuple(parts), {"dim": d})
    return x


# ---------------------------------------------------------------------------
# transposed convolution (matmul + col2im, the adjoint of conv's im2col)
# ---------------------------------------------------------------------------
def _conv_transposend(input: Tensor, weight: Tensor, bias, stride, padding, output_padding,
                      groups: int, dilation, nsp: int, name: str) -> Tensor:
    input, weight, bias, unbatched, kernel, stride, dilation = _conv_prelude(
        input, weight, bias, stride, dilation, nsp, name)
    padding = _tuple(padding, nsp, "padding")
    output_padding = _tuple(output_padding, nsp, "output_padding")
    for op_, s, d in zip(output_padding, stride, dilation):
        if op_ >= s and op_ >= d:
            raise RuntimeError(f"{name}: output padding must be smaller than either stride or "
                               f"dilation, but got output_padding={output_padding}, "
                               f"stride={stride}, dilation={dilation}")
    n, cin = input.shape[:2]
    if cin != weight.shape[0]:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected "
                           f"input{list(input.shape)} to have {weight.shape[0]} channels, but "
                           f"got {cin} channels instead")
    if cin % groups:
        raise RuntimeError(f"{name}: in_channels ({cin}) must be divisible by groups "
                           f"({groups})")
    if input.dtype is not weight.dtype:
        raise RuntimeError(f"{name}: Input type ({input.dtype}) and weight type "
                           f"({weight.dtype}) should be the same")
    cout = weight.shape[1] * groups
    k = int(np.prod(kernel))
    sp_in = tuple(input.shape[2:])
    length = int(np.prod(sp_in)) if sp_in else 1
    out_sp = tuple((i - 1) * s - 2 * p + d * (kk - 1) + op_ + 1
                   for i, s, p, d, kk, op_ in zip(sp_in, stride, padding, dilation, kernel,
                                                  output_padding))
    if any(o <= 0 for o in out_sp):
        raise RuntimeError(f"{name}: output size {out_sp} is too small")
    x = input.reshape(n, cin, length)
    if groups == 1:
        w2 = weight.reshape(cin, cout * k).transpose(0, 1)                 # (Cout*K, Cin)
        cols = apply_op("matmul", (w2, x))                                 # (N, Cout*K, L)
    else:
        cg = cin // groups
        w3 = weight.reshape(groups, cg, (cout // groups) * k).transpose(1, 2)
        x4 = x.reshape(n, groups, cg, length)
        cols = apply_op("matmul", (w3, x4)).reshape(n, cout * k, length)
    # col2im reads windows over (out + output_padding); the extra rows/cols at the end get
    # nothing from the sum but exist in the output, as torch
    attrs = {"spatial": out_sp, "kernel": kernel, "stride": stride, "padding": padding,
             "dilation": dilation, "ones_row": False}
    from ir.ops.nn import _spatial_out
    if _spatial_out(out_sp, kernel, stride, padding, dilation) != sp_in:
        raise RuntimeError(f"{name}: inconsistent output size {out_sp} for input {sp_in}")
    out = apply_op("col2im", (cols,), attrs, "ConvolutionBackward0")
    if bias is not None:
        out = apply_op("add", (out, bias.reshape((cout,) + (1,) * nsp)))
    return out.squeeze(0) if unbatched else out


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    """1-D transposed convolution (the gradient of conv1d with respect to its input)."""
    return _conv_transposend(input, weight, bias, stride, padding, output_padding, groups,
                             dilation, 1, "conv_transpose1d")


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    """2-D transposed convolution."""
    return _conv_transposend(input, weight, bias, stride, padding, output_padding, groups,
                             dilation, 2, "conv_transpose2d")


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    """3-D transposed convolution."""
    return _conv_transposend(input, weight, bias, stride, padding, output_padding, groups,
                             dilation, 3, "conv_transpose3d")


# ---------------------------------------------------------------------------
# normalisation, activations and reshuffles
# ---------------------------------------------------------------------------
def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,
             eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x^2 over the last dims) + eps) * weight (eps: the dtype's epsilon)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else \
        tuple(normalized_shape)
    if tuple(input.shape[input.dim() - len(shape):]) != shape:
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, shape))}], but got input of size"
                           f"{list(input.shape)}")
    if eps is None:
        eps = float(np.finfo(input.dtype.np).eps)
    dims = tuple(range(input.dim() - len(shape), input.dim()))
    ms = apply_op("mean", (apply_op("mul", (input, input)),), {"dims": dims, "keepdim": True})
    out = apply_op("mul", (input, apply_op("rsqrt", (apply_op("add", (ms, float(eps))),))))
    if weight is not None:
        out = apply_op("mul", (out, weight))
    return out


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """max(0, x) + weight * min(0, x), weight per channel (dim 1) or shared."""
    w = weight
    if weight.numel() != 1:
        if input.dim() < 2 and input.dim() != 1:
            raise RuntimeError("prelu: Not allow zero-dim input tensor.")
        ch = input.shape[1] if input.dim() >= 2 else input.shape[0]
        if weight.numel() != ch:
            raise RuntimeError(f"Mismatch of parameter numbers and input channel size. Found "
                               f"parameter numbers = {weight.numel()} and channel size = {ch}.")
        w = weight.reshape((ch,) + (1,) * (input.dim() - 2)) if input.dim() >= 2 else weight
    elif input.dim() == 0:
        w = weight.reshape(())  # a 0-d input keeps its shape (torch)
    neg = apply_op("mul", (input, w))
    return apply_op("where", (apply_op("ge", (input, 0)), input, neg), grad_name="PreluBackward0")


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """(*, C r^2, H, W) -> (*, C, H r, W r)."""
    r = int(upscale_factor)
    if input.dim() < 3:
        raise RuntimeError(f"pixel_shuffle expects input to have at least 3 dimensions, but got "
                           f"input with {input.dim()} dimension(s)")
    *lead, c, h, w = input.shape
    if c % (r * r):
        raise RuntimeError(f"pixel_shuffle expects its input's 'channel' dimension to be "
                           f"divisible by the square of upscale_factor, but input.size(-3)={c} "
                           f"is not divisible by {r * r}")
    nb = len(lead)
    x = input.reshape(*lead, c // (r * r), r, r, h, w)
    x = x.permute(*range(nb), nb, nb + 3, nb + 1, nb + 4, nb + 2)
    return x.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """(*, C, H r, W r) -> (*, C r^2, H, W)."""
    r = int(downscale_factor)
    if input.dim() < 3:
        raise RuntimeError(f"pixel_unshuffle expects input to have at least 3 dimensions, but "
                           f"got input with {input.dim()} dimension(s)")
    *lead, c, h, w = input.shape
    if h % r or w % r:
        raise RuntimeError(f"pixel_unshuffle expects height and width to be divisible by "
                           f"downscale_factor, but got {h} and {w} for factor {r}")
    nb = len(lead)
    x = input.reshape(*lead, c, h // r, r, w // r, r)
    x = x.permute(*range(nb), nb, nb + 2, nb + 4, nb + 1, nb + 3)
    return x.reshape(*lead, c * r * r, h // r, w // r)


def embedding_bag(input: Tensor, weight: Tensor, offsets: Tensor | None = None,
                  max_norm=None, norm_type: float = 2, scale_grad_by_freq: bool = False,
                  mode: str = "mean", sparse: bool = False,
                  per_sample_weights: Tensor | None = None, include_last_offset: bool = False,
                  padding_idx: int | None = None) -> Tensor:
    """Sums, means or maxima of bags of embeddings: rows of a 2-D input, or the 1-D input cut
    at ``offsets`` (their values shape the result, so they are read with .tolist())."""
    if mode not in ("sum", "mean", "max"):
        raise ValueError(f"mode has to be one of sum, mean or max, got {mode}")
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding_bag: max_norm, scale_grad_by_freq and sparse are "
                                  "not supported")
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError("embedding_bag: per_sample_weights was not None. "
                                  "per_sample_weights is only supported for mode='sum' "
                                  f"(got mode='{mode}'). Please open a feature request on "
                                  "GitHub.")
    if input.dim() == 2:
        if offsets is not None:
            raise ValueError("if input is 2D, then offsets has to be None, as input is treated "
                             "is a mini-batch of fixed length sequences.")
        nb, length = input.shape
        bag = np.repeat(np.arange(nb), length)
        flat = input.reshape(-1)
        psw = per_sample_weights.reshape(-1) if per_sample_weights is not None else None
    elif input.dim() == 1:
        if offsets is None or offsets.dim() != 1:
            raise ValueError("offsets has to be a 1D Tensor but got None" if offsets is None
                             else "offsets has to be a 1D Tensor")
        offs = [int(v) for v in offsets.tolist()]
        n = input.shape[0]
        ends = offs[1:] + ([] if include_last_offset else [n])
        starts = offs[:len(ends)]
        nb = len(starts)
        bag = np.zeros(n, np.int64)
        for b_, (s, e) in enumerate(zip(starts, ends)):
            bag[s:e] = b_
        bag = bag[:ends[-1] if ends else 0]
        flat = input[:len(bag)]
        psw = per_sample_weights[:len(bag)] if per_sample_weights is not None else None
    else:
        raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension "
                         f"{input.dim()}")
    rows = embedding(flat, weight)                               # (L, D)
    keep = None
    if padding_idx is not None:
        keep = apply_op("cast", (apply_op("ne", (flat, padding_idx)),), {"dtype": weight.dtype})
        rows = apply_op("mul", (rows, keep.unsqueeze(1)))
    if psw is not None:
        rows = apply_op("mul", (rows, psw.to(weight.dtype).unsqueeze(1)))
    bag_t = _const_long(bag)
    d = weight.shape[1]
    zeros = apply_op("full_like", (weight[:1].expand(nb, d),), {"value": 0.0, "dtype": None})
    if mode == "max":
        idx = bag_t.unsqueeze(1).expand(len(bag), d)
        from .._functions import scatter_reduce
        return scatter_reduce(zeros, 0, idx, rows, "amax", include_self=False)
    spec = (("t", 0),)
    out = apply_op("index_put", (zeros, rows, bag_t), {"index": spec, "accumulate": True})
    if mode == "mean":
        ones = keep if keep is not None else apply_op(
            "full_like", (flat,), {"value": 1.0, "dtype": weight.dtype})
        cnt = apply_op("index_put", (apply_op("full_like", (zeros[:, 0],),
                                              {"value": 0.0, "dtype": None}), ones, bag_t),
                       {"index": spec, "accumulate": True})
        cnt = apply_op("maximum", (cnt, 1.0))
        out = apply_op("div", (out, cnt.unsqueeze(1)))
    return out


def _const_long(a) -> Tensor:
    from .._creation import tensor
    return tensor(np.asarray(a, np.int64))


def grid_sample(input: Tensor, grid: Tensor, mode: str = "bilinear",
                padding_mode: str = "zeros", align_corners: bool | None = None) -> Tensor:
    """Sample 4-D input at grid's normalised (x, y) locations ([-1, 1]); bilinear or nearest,
    zeros or border padding. Gathers and weights are ops, so gradients reach input and grid."""
    if input.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2:
        raise NotImplementedError("grid_sample: only 4-D input with a (N, H, W, 2) grid is "
                                  "supported")
    if mode not in ("bilinear", "nearest"):
        raise NotImplementedError(f"grid_sample: mode {mode!r} is not supported")
    if padding_mode not in ("zeros", "border"):
        raise NotImplementedError(f"grid_sample: padding_mode {padding_mode!r} is not "
                                  "supported")
    align = bool(align_corners)
    n, c, h, w = input.shape
    _, ho, wo, _ = grid.shape
    g = grid.to(input.dtype)
    gx, gy = g[..., 0], g[..., 1]

    def unnorm(v, size):
        if align:
            return apply_op("mul", (apply_op("add", (v, 1.0)), (size - 1) / 2.0))
        return apply_op("div", (apply_op("sub", (apply_op("mul", (apply_op("add", (v, 1.0)),
                                                                  float(size))), 1.0)), 2.0))

    x, y = unnorm(gx, w), unnorm(gy, h)
    if padding_mode == "border":
        x = apply_op("clamp", (x,), {"min": 0.0, "max": float(w - 1)})
        y = apply_op("clamp", (y,), {"min": 0.0, "max": float(h - 1)})
    flat = input.reshape(n, c, h * w)

    def tap(xi, yi, wgt):
        """input at integer (xi, yi) (float tensors holding integers) times wgt, 0 outside."""
        inside = apply_op("logical_and", (
            apply_op("logical_and", (apply_op("ge", (xi, 0.0)), apply_op("le", (xi, w - 1.0)))),
            apply_op("logical_and", (apply_op("ge", (yi, 0.0)), apply_op("le", (yi, h - 1.0))))))
        xc = apply_op("clamp", (xi,), {"min": 0.0, "max": float(w - 1)})
        yc = apply_op("clamp", (yi,), {"min": 0.0, "max": float(h - 1)})
        lin = apply_op("cast", (apply_op("add", (apply_op("mul", (yc, float(w))), xc)),),
                       {"dtype": dt.int64}).reshape(n, 1, ho * wo).expand(n, c, ho * wo)
        vals = apply_op("gather", (flat, lin), {"dim": 2}).reshape(n, c, ho, wo)
        wm = apply_op("where", (inside, wgt, 0.0)).unsqueeze(1)
        return apply_op("mul", (vals, wm))

    if mode == "nearest":
        xr, yr = apply_op("round", (x,)), apply_op("round", (y,))
        one = apply_op("full_like", (xr,), {"value": 1.0, "dtype": None})
        return tap(xr, yr, one)
    x0, y0 = apply_op("floor", (x,)), apply_op("floor", (y,))
    x1, y1 = apply_op("add", (x0, 1.0)), apply_op("add", (y0, 1.0))
    wx1, wy1 = apply_op("sub", (x, x0)), apply_op("sub", (y, y0))
    wx0, wy0 = apply_op("rsub", (wx1, 1.0)), apply_op("rsub", (wy1, 1.0))
    out = tap(x0, y0, apply_op("mul", (wx0, wy0)))
    out = apply_op("add", (out, tap(x1, y0, apply_op("mul", (wx1, wy0)))))
    out = apply_op("add", (out, tap(x0, y1, apply_op("mul", (wx0, wy1)))))
    return apply_op("add", (out, tap(x1, y1, apply_op("mul", (wx1, wy1)))))


def affine_grid(theta: Tensor, size, align_corners: bool | None = None) -> Tensor:
    """Sampling grid (N, H, W, 2) of the 2-D affine maps theta (N, 2, 3)."""
    if len(size) != 4 or theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise NotImplementedError("affine_grid: only 2-D (N, 2, 3) theta is supported")
    n, _, h, w = size

    def lin(k):
        if k == 1:
            return np.zeros(1)
        v = np.linspace(-1.0, 1.0, k)
        return v if align_corners else v * (k - 1) / k

    xs, ys = np.meshgrid(lin(w), lin(h))
    base = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(1, h * w, 3)
    from .._creation import tensor
    b = tensor(base, dtype=theta.dtype)
    return apply_op("matmul", (b.expand(n, h * w, 3), theta.transpose(1, 2))).reshape(n, h, w, 2)


def upsample(input: Tensor, size=None, scale_factor=None, mode: str = "nearest",
             align_corners=None) -> Tensor:
    """Deprecated torch alias of interpolate."""
    return interpolate(input, size, scale_factor, mode, align_corners)


from ._functional_extra import *  # noqa: E402,F401,F403  (more layers, composed the same way)
from ._functional_extra import __all__ as _extra_all  # noqa: E402

__all__ += [n for n in _extra_all if n not in __all__]
