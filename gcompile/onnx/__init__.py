"""``gcompile.onnx.export``: a traced graph as a standard ONNX model (needs the ``onnx`` extra).

The function (or eval-mode module) is traced by the compiler with grad off and
no graph breaks; the graph as traced (before the compiler's own decompositions,
so softmax stays Softmax) is translated node by node into ONNX operators.
Parameters, buffers and captured tensors become initializers. Every op in the
registry has a translation here (``CONVERTERS``), or a decomposition (``OpDef.
decomposition``: the op written in primitives, which are exported in its place, e.g.
``linear``, ``layer_norm``, ``mse_loss``, ``cross_entropy``), or is listed in
``UNSUPPORTED`` with the reason; exporting a graph that uses an op with none of these
(or whose decomposition declines its inputs) raises ``NotImplementedError`` naming the
op, the value and the user's source line.

Shapes are static (the example inputs' shapes). Pure data movement (slicing,
im2col, flip, roll, padding, triangular masks, ...) is exported as one
``Gather`` from the flattened input with indices computed by running the op's
own NumPy implementation on ``arange``: exact for every such op, with no
per-op index arithmetic to get wrong. Recurrent scans (LSTM, GRU, RNN) are
unrolled over the (static) sequence length. ``check`` nodes (run-time bound
checks) become ``Identity``: ONNX has no way to raise.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ir import dtypes as dt
from ir.graph import Graph, Value
from ir.interpreter import elementwise_compute_dtype, eval_op
from ir.registry import REGISTRY

from .._tensor import Tensor

__all__ = ["export", "graph_to_onnx", "CONVERTERS", "UNSUPPORTED", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
MIN_OPSET = 13


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ModuleNotFoundError("gcompile.onnx.export needs the 'onnx' package: "
                                  "pip install 'gcompile[onnx]'") from e
    return onnx, helper, numpy_helper


class _Builder:
    """Collects ONNX nodes and initializers with fresh names."""

    def __init__(self, opset: int) -> None:
        _, self.helper, self.numpy_helper = _onnx()
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.names: dict[int, str] = {}   # id(Value) -> ONNX name
        self._k = 0

    def fresh(self, hint: str = "t") -> str:
        self._k += 1
        return f"{hint}_{self._k}"

    def const(self, arr: Any, dtype: Any = None, hint: str = "c") -> str:
        a = np.asarray(arr, dtype=dtype)
        name = self.fresh(hint)
        self.inits.append(self.numpy_helper.from_array(np.array(a, order="C"), name))
        return name

    def op(self, typ: str, inputs: list[str], n_out: int = 1, **attrs: Any):
        outs = [self.fresh(typ.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(typ, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def ref(self, a: Any, dtype: dt.DType | None = None) -> str:
        """The ONNX name of a graph operand (a Python scalar becomes a constant)."""
        if isinstance(a, Value):
            return self.names[id(a)]
        return self.const(np.asarray(a, dtype=(dtype or dt.float32).np))

    # reductions changed from an ``axes`` attribute to an input in opset 18 (13 for sum)
    def reduce(self, typ: str, x: str, axes, keepdim: bool) -> str:
        axes = [int(a) for a in axes]
        if typ == "ReduceSum" or self.opset >= 18:
            if not axes:
                return self.op("Identity", [x])
            return self.op(typ, [x, self.const(np.array(axes, np.int64))], keepdims=int(keepdim))
        if not axes:
            return self.op("Identity", [x])
        return self.op(typ, [x], axes=axes, keepdims=int(keepdim))

    def cast(self, x: str, to: dt.DType) -> str:
        return self.op("Cast", [x], to=_onnx_type(to))

    def shape_const(self, shape) -> str:
        return self.const(np.array(list(shape), np.int64))


def _onnx_type(d: dt.DType) -> int:
    _, helper, _ = _onnx()
    return int(helper.np_dtype_to_tensor_dtype(np.dtype(d.np)))


# ---- converters -------------------------------------------------------------------------
Converter = Callable[[_Builder, Any], str]
CONVERTERS: dict[str, Converter] = {}


def _conv(*names: str):
    def deco(fn):
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return deco


def _ew_inputs(b: _Builder, n) -> tuple[list[str], dt.DType | None]:
    """Operands cast to the dtype eager computes the op in (as the kernel lowering does)."""
    op = REGISTRY[n.op]
    cdt = elementwise_compute_dtype(op, n.inputs)
    out = []
    for i, a in enumerate(n.inputs):
        skip = op.dtype_rule == "where" and i == 0
        if isinstance(a, Value):
            r = b.ref(a)
            if cdt is not None and not skip and a.dtype is not cdt:
                r = b.cast(r, cdt)
            out.append(r)
        else:
            want = dt.bool_ if skip else (cdt or n.out.dtype)
            out.append(b.const(np.asarray(a, want.np)))
    return out, cdt


def _finish(b: _Builder, n, r: str, cdt: dt.DType | None) -> str:
    if cdt is not None and cdt is not n.out.dtype:
        return b.cast(r, n.out.dtype)
    return r


_UNARY = {"abs": "Abs", "ceil": "Ceil", "cos": "Cos", "erf": "Erf", "exp": "Exp",
          "floor": "Floor", "log": "Log", "neg": "Neg", "reciprocal": "Reciprocal",
          "relu": "Relu", "round": "Round", "sigmoid": "Sigmoid", "sign": "Sign", "sin": "Sin",
          "sqrt": "Sqrt", "tan": "Tan", "tanh": "Tanh", "logical_not": "Not",
          "isnan": "IsNaN", "isinf": "IsInf", "acos": "Acos", "acosh": "Acosh", "asin": "Asin",
          "asinh": "Asinh", "atan": "Atan", "atanh": "Atanh", "cosh": "Cosh", "sinh": "Sinh",
          "bitwise_not": "BitwiseNot"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow",
           "maximum": "Max", "minimum": "Min", "eq": "Equal", "lt": "Less", "le": "LessOrEqual",
           "gt": "Greater", "ge": "GreaterOrEqual", "logical_and": "And", "logical_or": "Or",
           "logical_xor": "Xor", "bitwise_and": "BitwiseAnd", "bitwise_or": "BitwiseOr",
           "bitwise_xor": "BitwiseXor"}


@_conv(*_UNARY, *_BINARY)
def _simple(b: _Builder, n) -> str:
    ins, cdt = _ew_inputs(b, n)
    if n.op.startswith("bitwise") and b.opset < 18:
        raise NotImplementedError(f"{n.op} needs opset 18 or newer")
    if n.op.startswith("logical") or n.op == "logical_not":
        ins = [b.cast(x, dt.bool_) for x in ins]
        cdt = dt.bool_
    return _finish(b, n, b.op({**_UNARY, **_BINARY}[n.op], ins), cdt)


@_conv("ne")
def _ne(b, n):
    ins, cdt = _ew_inputs(b, n)
    return b.op("Not", [b.op("Equal", ins)])


@_conv("rsub")
def _rsub(b, n):
    ins, cdt = _ew_inputs(b, n)
    return _finish(b, n, b.op("Sub", [ins[1], ins[0]]), cdt)


@_conv("isfinite")
def _isfinite(b, n):
    x = b.ref(n.inputs[0])
    if n.inputs[0].dtype.kind != "f":
        return b.const(np.ones(n.out.shape, bool))
    bad = b.op("Or", [b.op("IsInf", [x]), b.op("IsNaN", [x])])
    return b.op("Not", [bad])


def _unary_formula(b, n, fn):
    ins, cdt = _ew_inputs(b, n)
    d = cdt or n.out.dtype
    return _finish(b, n, fn(ins[0], lambda v: b.const(np.asarray(v, d.np))), cdt)


@_conv("expm1")
def _expm1(b, n):
    return _unary_formula(b, n, lambda x, c: b.op("Sub", [b.op("Exp", [x]), c(1)]))


@_conv("log1p")
def _log1p(b, n):
    return _unary_formula(b, n, lambda x, c: b.op("Log", [b.op("Add", [x, c(1)])]))


@_conv("log2", "log10")
def _logk(b, n):
    k = np.log(2.0 if n.op == "log2" else 10.0)
    return _unary_formula(b, n, lambda x, c: b.op("Div", [b.op("Log", [x]), c(k)]))


@_conv("rsqrt")
def _rsqrt(b, n):
    return _unary_formula(b, n, lambda x, c: b.op("Reciprocal", [b.op("Sqrt", [x])]))


@_conv("erfc")
def _erfc(b, n):
    return _unary_formula(b, n, lambda x, c: b.op("Sub", [c(1), b.op("Erf", [x])]))


@_conv("silu")
def _silu(b, n):
    return _unary_formula(b, n, lambda x, c: b.op("Mul", [x, b.op("Sigmoid", [x])]))


@_conv("trunc")
def _trunc(b, n):
    if n.inputs[0].dtype.kind != "f":
        return b.op("Identity", [b.ref(n.inputs[0])])
    return _unary_formula(b, n, lambda x, c: b.op(
        "Mul", [b.op("Sign", [x]), b.op("Floor", [b.op("Abs", [x])])]))


@_conv("gelu")
def _gelu(b, n):
    def f(x, c):
        if n.attrs.get("approximate", "none") == "tanh":
            x3 = b.op("Mul", [b.op("Mul", [x, x]), x])
            inner = b.op("Mul", [c(np.sqrt(2 / np.pi)), b.op("Add", [x, b.op("Mul", [c(0.044715),
                                                                                    x3])])])
            t = b.op("Tanh", [inner])
        else:
            t = b.op("Erf", [b.op("Div", [x, c(np.sqrt(2.0))])])
        return b.op("Mul", [b.op("Mul", [c(0.5), x]), b.op("Add", [c(1), t])])
    return _unary_formula(b, n, f)


@_conv("elu")
def _elu(b, n):
    return _unary_formula(b, n, lambda x, c: b.op("Elu", [x], alpha=float(n.attrs["alpha"])))


@_conv("leaky_relu")
def _leaky(b, n):
    return _unary_formula(b, n, lambda x, c: b.op("LeakyRelu", [x],
                                                  alpha=float(n.attrs["negative_slope"])))


@_conv("softplus")
def _softplus(b, n):
    beta, thr = float(n.attrs.get("beta", 1.0)), float(n.attrs.get("threshold", 20.0))

    def f(x, c):
        bx = b.op("Mul", [x, c(beta)])
        soft = b.op("Div", [b.op("Softplus", [bx]), c(beta)])
        return b.op("Where", [b.op("Greater", [bx, c(thr)]), x, soft])
    return _unary_formula(b, n, f)


@_conv("clamp")
def _clamp(b, n):
    x = b.ref(n.inputs[0])
    d = n.out.dtype
    lo, hi = n.attrs.get("min"), n.attrs.get("max")
    ins = [x, b.const(np.asarray(lo, d.np)) if lo is not None else "",
           b.const(np.asarray(hi, d.np)) if hi is not None else ""]
    while ins and ins[-1] == "":
        ins.pop()
    return b.op("Clip", ins)


@_conv("remainder", "floor_divide")
def _floor_ops(b, n):
    ins, cdt = _ew_inputs(b, n)
    d = cdt or n.out.dtype
    if d.kind == "f":
        q = b.op("Floor", [b.op("Div", ins)])
        r = q if n.op == "floor_divide" else b.op("Sub", [ins[0], b.op("Mul", [q, ins[1]])])
    elif n.op == "remainder":
        r = b.op("Mod", ins, fmod=0)  # integer Mod takes the divisor's sign, as Python's %
    else:
        # integer floor division: truncated quotient, minus one where the signs differ
        # and the division is inexact
        q = b.op("Div", ins)
        inexact = b.op("Not", [b.op("Equal", [b.op("Mul", [q, ins[1]]), ins[0]])])
        zero = b.const(np.asarray(0, d.np))
        neg = b.op("Xor", [b.op("Less", [ins[0], zero]), b.op("Less", [ins[1], zero])])
        fix = b.cast(b.op("And", [inexact, neg]), d)
        r = b.op("Sub", [q, fix])
    return _finish(b, n, r, cdt)


@_conv("atan2")
def _atan2(b, n):
    ins, cdt = _ew_inputs(b, n)
    y, x = ins
    d = cdt or n.out.dtype

    def c(v):
        return b.const(np.asarray(v, d.np))
    base = b.op("Atan", [b.op("Div", [y, x])])
    xneg = b.op("Less", [x, c(0)])
    yneg = b.op("Less", [y, c(0)])
    adj = b.op("Where", [yneg, c(-np.pi), c(np.pi)])
    r = b.op("Where", [xneg, b.op("Add", [base, adj]), base])
    xzero = b.op("Equal", [x, c(0)])
    half = b.op("Where", [yneg, c(-np.pi / 2), b.op("Where", [b.op("Greater", [y, c(0)]),
                                                              c(np.pi / 2), c(0)])])
    return _finish(b, n, b.op("Where", [xzero, half, r]), cdt)


@_conv("where")
def _where(b, n):
    ins, cdt = _ew_inputs(b, n)
    return _finish(b, n, b.op("Where", [b.cast(ins[0], dt.bool_)] + ins[1:]), cdt)


@_conv("cast")
def _cast(b, n):
    return b.cast(b.ref(n.inputs[0]), n.out.dtype)


@_conv("clone", "check", "detach")
def _identity(b, n):
    return b.op("Identity", [b.ref(n.inputs[0])])


@_conv("zeros_like", "ones_like", "full_like")
def _full(b, n):
    v = {"zeros_like": 0, "ones_like": 1}.get(n.op, n.attrs.get("value"))
    return b.const(np.full(n.out.shape, v, n.out.dtype.np))


@_conv("arange", "full")
def _creation(b, n):
    """Made from sizes alone: at the exported graph's sizes, a constant."""
    return b.const(np.asarray(REGISTRY[n.op].impl(**n.attrs)))


# ---- reductions -------------------------------------------------------------------------
_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "amax": "ReduceMax", "amin": "ReduceMin",
           "prod": "ReduceProd", "logsumexp": "ReduceLogSumExp"}


@_conv(*_REDUCE)
def _reduce(b, n):
    x = b.ref(n.inputs[0])
    if n.inputs[0].dtype is not n.out.dtype:
        x = b.cast(x, n.out.dtype)
    return b.reduce(_REDUCE[n.op], x, n.attrs["dims"], n.attrs.get("keepdim", False))


@_conv("all", "any")
def _allany(b, n):
    x = b.cast(b.cast(b.ref(n.inputs[0]), dt.bool_), dt.int32)
    r = b.reduce("ReduceMin" if n.op == "all" else "ReduceMax", x, n.attrs["dims"],
                 n.attrs.get("keepdim", False))
    return b.cast(r, n.out.dtype)


@_conv("argmax", "argmin")
def _arg(b, n):
    x = b.ref(n.inputs[0])
    dim, keep = n.attrs.get("dim"), bool(n.attrs.get("keepdim", False))
    if dim is None:
        x = b.op("Reshape", [x, b.shape_const([-1])])
        dim, keep = 0, False
    r = b.op("ArgMax" if n.op == "argmax" else "ArgMin", [x], axis=int(dim), keepdims=int(keep),
             select_last_index=0)
    return b.op("Reshape", [r, b.shape_const(n.out.shape)])


@_conv("var", "std")
def _var(b, n):
    x = b.ref(n.inputs[0])
    src = n.inputs[0]
    dims = n.attrs["dims"]
    cnt = int(np.prod([src.shape[d] for d in dims])) if dims else 1
    corr = n.attrs.get("correction", 1)
    d = n.out.dtype
    mean = b.reduce("ReduceMean", x, dims, True)
    diff = b.op("Sub", [x, mean])
    ss = b.reduce("ReduceSum", b.op("Mul", [diff, diff]), dims, n.attrs.get("keepdim", False))
    r = b.op("Div", [ss, b.const(np.asarray(max(cnt - corr, 0), d.np))])
    return b.op("Sqrt", [r]) if n.op == "std" else r


@_conv("vector_norm")
def _norm(b, n):
    x, o = b.ref(n.inputs[0]), float(n.attrs.get("ord", 2.0))
    dims, keep = n.attrs["dims"], n.attrs.get("keepdim", False)
    if o == 2.0:
        return b.reduce("ReduceL2", x, dims, keep)
    if o == 1.0:
        return b.reduce("ReduceL1", x, dims, keep)
    if o == float("inf"):
        return b.reduce("ReduceMax", b.op("Abs", [x]), dims, keep)
    if o == float("-inf"):
        return b.reduce("ReduceMin", b.op("Abs", [x]), dims, keep)
    if o == 0.0:
        nz = b.cast(b.op("Not", [b.op("Equal", [x, b.const(np.zeros((), n.out.dtype.np))])]),
                    n.out.dtype)
        return b.reduce("ReduceSum", nz, dims, keep)
    p = b.const(np.asarray(o, n.out.dtype.np))
    s = b.reduce("ReduceSum", b.op("Pow", [b.op("Abs", [x]), p]), dims, keep)
    return b.op("Pow", [s, b.op("Reciprocal", [p])])


@_conv("sum_to_size")
def _sum_to(b, n):
    src, shape = n.inputs[0].shape, tuple(n.attrs["shape"])
    lead = len(src) - len(shape)
    axes = list(range(lead)) + [lead + i for i, s in enumerate(shape)
                                if s == 1 and src[lead + i] != 1]
    r = b.reduce("ReduceSum", b.ref(n.inputs[0]), axes, True)
    return b.op("Reshape", [r, b.shape_const(n.out.shape)])


@_conv("softmax", "log_softmax")
def _softmax(b, n):
    x = b.ref(n.inputs[0])
    if n.inputs[0].dtype is not n.out.dtype:
        x = b.cast(x, n.out.dtype)
    return b.op("Softmax" if n.op == "softmax" else "LogSoftmax", [x], axis=int(n.attrs["dim"]))


@_conv("cumsum")
def _cumsum(b, n):
    x = b.ref(n.inputs[0])
    if n.inputs[0].dtype is not n.out.dtype:
        x = b.cast(x, n.out.dtype)
    return b.op("CumSum", [x, b.const(np.asarray(int(n.attrs["dim"]), np.int64))])


# ---- shapes and data movement -----------------------------------------------------------
@_conv("reshape")
def _reshape(b, n):
    return b.op("Reshape", [b.ref(n.inputs[0]), b.shape_const(n.out.shape)])


@_conv("permute")
def _permute(b, n):
    return b.op("Transpose", [b.ref(n.inputs[0])], perm=[int(d) for d in n.attrs["dims"]])


@_conv("expand")
def _expand(b, n):
    return b.op("Expand", [b.ref(n.inputs[0]), b.shape_const(n.out.shape)])


@_conv("cat")
def _cat(b, n):
    ins = [b.ref(a) for a in n.inputs if isinstance(a, Value) and a.numel > 0]
    if not ins:
        return b.const(np.zeros(n.out.shape, n.out.dtype.np))
    ins = [x if a.dtype is n.out.dtype else b.cast(x, n.out.dtype)
           for x, a in zip(ins, [a for a in n.inputs if isinstance(a, Value) and a.numel > 0])]
    return b.op("Concat", ins, axis=int(n.attrs["dim"]))


_MOVEMENT = ("getitem", "select_block", "im2col", "flip", "roll", "repeat", "tril", "triu",
             "pad")


@_conv(*_MOVEMENT)
def _movement(b, n):
    """A pure data-movement op as one Gather: the op's own implementation, run on
    ``arange`` (offset by 2: 0 marks a padded element, 1 an element set to one, as
    im2col's ones row), gives the source of every output element."""
    if len(n.value_inputs) != 1:
        raise NotImplementedError(f"{n.op} with tensor operands (advanced indexing)")
    x = n.inputs[0]
    attrs = dict(n.attrs)
    fill = 0.0
    if n.op == "pad":
        if attrs.get("mode", "constant") == "constant":
            fill = float(attrs.get("value") or 0.0)
            attrs["value"] = 0.0
    src = np.arange(2, x.numel + 2, dtype=np.float64).reshape(x.shape)
    idx = np.asarray(eval_op(n.op, [src] + list(n.inputs[1:]), attrs))
    if idx.shape != n.out.shape:
        raise NotImplementedError(f"{n.op}: its index map has shape {idx.shape}, "
                                  f"not {n.out.shape}")
    idx = idx.astype(np.int64)
    idx = np.where(idx >= 2, idx - 2, np.where(idx == 0, x.numel, x.numel + 1))
    flat = b.op("Reshape", [b.ref(x), b.shape_const([-1])])
    if x.dtype is not n.out.dtype:
        flat = b.cast(flat, n.out.dtype)
    extra = b.const(np.array([fill, 1], n.out.dtype.np))
    ext = b.op("Concat", [flat, extra], axis=0)
    return b.op("Gather", [ext, b.const(idx)], axis=0)


@_conv("conv")
def _convolution(b, n):
    """conv's (Cout, C*K [+1]) weight matrix back into Conv's W (and B, its last column
    when ``ones_row``)."""
    x, w2 = n.inputs
    kernel = [int(k) for k in n.attrs["kernel"]]
    ck = int(x.shape[1]) * int(np.prod(kernel))
    cout = int(w2.shape[0])
    wm = b.ref(w2)

    def cols(lo, hi):
        return b.op("Slice", [wm, b.const(np.array([lo], np.int64)),
                              b.const(np.array([hi], np.int64)),
                              b.const(np.array([1], np.int64))])
    ins = [b.ref(x), b.op("Reshape", [cols(0, ck),
                                      b.shape_const([cout, int(x.shape[1])] + kernel)])]
    if n.attrs.get("ones_row"):
        ins.append(b.op("Reshape", [cols(ck, ck + 1), b.shape_const([cout])]))
    pads = [int(p) for p in n.attrs["padding"]]
    return b.op("Conv", ins, kernel_shape=kernel, strides=[int(v) for v in n.attrs["stride"]],
                pads=pads + pads, dilations=[int(v) for v in n.attrs["dilation"]])


@_conv("matmul")
def _matmul(b, n):
    ins = [b.ref(a) for a in n.inputs]
    ins = [x if a.dtype is n.out.dtype else b.cast(x, n.out.dtype)
           for x, a in zip(ins, n.inputs)]
    return b.op("MatMul", ins)


@_conv("linalg_det")
def _det(b, n):
    return b.op("Det", [b.ref(n.inputs[0])])


@_conv("einsum")
def _einsum(b, n):
    return b.op("Einsum", [b.ref(a) for a in n.inputs], equation=n.attrs["equation"])


@_conv("embedding")
def _embedding(b, n):
    w, idx = n.inputs[:2]
    return b.op("Gather", [b.ref(w), b.cast(b.ref(idx), dt.int64)], axis=0)


@_conv("index_select")
def _index_select(b, n):
    x, idx = n.inputs[:2]
    return b.op("Gather", [b.ref(x), b.cast(b.ref(idx), dt.int64)], axis=int(n.attrs["dim"]))


@_conv("gather")
def _gather(b, n):
    x, idx = n.inputs[:2]
    return b.op("GatherElements", [b.ref(x), b.cast(b.ref(idx), dt.int64)],
                axis=int(n.attrs["dim"]))


# ---- pooling ----------------------------------------------------------------------------
def _pool_attrs(n) -> dict:
    k = [int(v) for v in n.attrs["kernel"]]
    s = [int(v) for v in (n.attrs.get("stride") or k)]
    p = [int(v) for v in n.attrs.get("padding", (0,) * len(k))]
    return dict(kernel_shape=k, strides=s, pads=p + p,
                ceil_mode=int(bool(n.attrs.get("ceil_mode", False))))


@_conv("max_pool_indices")
def _max_pool_indices(b, n):
    users = n.out.users
    if not users or any(u.op != "pool_gather" or u.inputs[0] is not n.inputs[0] for u in users):
        raise NotImplementedError("max_pool_indices whose indices are used other than to "
                                  "gather the maximum (return_indices=True)")
    return ""  # the pool_gather that reads it becomes MaxPool


@_conv("pool_gather")
def _pool_gather(b, n):
    x, idx = n.inputs
    p = idx.producer
    if p is None or p.op != "max_pool_indices" or p.inputs[0] is not x:
        raise NotImplementedError("pool_gather not fed by max_pool_indices of the same input")
    attrs = _pool_attrs(p)
    attrs["dilations"] = [int(v) for v in p.attrs.get("dilation", (1,) * len(attrs["strides"]))]
    return b.op("MaxPool", [b.ref(x)], **attrs)


@_conv("avg_pool")
def _avg_pool(b, n):
    if n.attrs.get("divisor_override") is not None:
        raise NotImplementedError("avg_pool with divisor_override (ONNX AveragePool has none)")
    return b.op("AveragePool", [b.ref(n.inputs[0])],
                count_include_pad=int(bool(n.attrs.get("count_include_pad", True))),
                **_pool_attrs(n))


# ---- recurrent scans, unrolled over the static sequence length ----------------------------
def _split_last(b: _Builder, x: str, sizes: list[int]) -> list[str]:
    return b.op("Split", [x, b.const(np.array(sizes, np.int64))], n_out=len(sizes), axis=-1)


def _stack(b: _Builder, parts: list[str]) -> str:
    zero = b.const(np.array([0], np.int64))
    return b.op("Concat", [b.op("Unsqueeze", [p, zero]) for p in parts], axis=0)


def _step_input(b: _Builder, xw: str, t: int) -> str:
    return b.op("Gather", [xw, b.const(np.asarray(t, np.int64))], axis=0)


@_conv("lstm_scan")
def _lstm(b, n):
    xw, h0, c0, w_hh, bias = (b.ref(a) for a in n.inputs)
    t_len, _, h4 = n.inputs[0].shape
    h = h4 // 4
    w_t = b.op("Transpose", [w_hh], perm=[1, 0])
    hp, cp = h0, c0
    blocks: list[list[str]] = [[] for _ in range(7)]  # h, c, i, f, g, o, tanh(c)
    for t in range(t_len):
        gates = b.op("Add", [b.op("Add", [b.op("MatMul", [hp, w_t]), _step_input(b, xw, t)]),
                             bias])
        i, f, g, o = _split_last(b, gates, [h] * 4)
        i, f, o = (b.op("Sigmoid", [v]) for v in (i, f, o))
        g = b.op("Tanh", [g])
        c = b.op("Add", [b.op("Mul", [f, cp]), b.op("Mul", [i, g])])
        tc = b.op("Tanh", [c])
        hn = b.op("Mul", [o, tc])
        for k, v in enumerate((hn, c, i, f, g, o, tc)):
            blocks[k].append(v)
        hp, cp = hn, c
    return _stack(b, [_stack(b, blk) for blk in blocks])


@_conv("gru_scan")
def _gru(b, n):
    xw, h0, w_hh, b_hh = (b.ref(a) for a in n.inputs)
    t_len, _, h3 = n.inputs[0].shape
    h = h3 // 3
    w_t = b.op("Transpose", [w_hh], perm=[1, 0])
    hp = h0
    blocks: list[list[str]] = [[] for _ in range(5)]  # h, r, z, n, W_hn h + b_hn
    for t in range(t_len):
        hh = b.op("Add", [b.op("MatMul", [hp, w_t]), b_hh])
        xr, xz, xn = _split_last(b, _step_input(b, xw, t), [h] * 3)
        hr, hz, hn = _split_last(b, hh, [h] * 3)
        r = b.op("Sigmoid", [b.op("Add", [xr, hr])])
        z = b.op("Sigmoid", [b.op("Add", [xz, hz])])
        nn_ = b.op("Tanh", [b.op("Add", [xn, b.op("Mul", [r, hn])])])
        hnew = b.op("Add", [nn_, b.op("Mul", [z, b.op("Sub", [hp, nn_])])])
        for k, v in enumerate((hnew, r, z, nn_, hn)):
            blocks[k].append(v)
        hp = hnew
    return _stack(b, [_stack(b, blk) for blk in blocks])


@_conv("rnn_scan")
def _rnn(b, n):
    xw, h0, w_hh = (b.ref(a) for a in n.inputs)
    act = "Tanh" if n.attrs.get("nonlinearity", "tanh") == "tanh" else "Relu"
    w_t = b.op("Transpose", [w_hh], perm=[1, 0])
    hp, outs = h0, []
    for t in range(n.inputs[0].shape[0]):
        hp = b.op(act, [b.op("Add", [_step_input(b, xw, t), b.op("MatMul", [hp, w_t])])])
        outs.append(hp)
    return _stack(b, outs)


# ---- ops with no ONNX translation, and why ----------------------------------------------
_BACKWARD = "a backward-pass op (export inference graphs: model.eval(), no backward)"
UNSUPPORTED: dict[str, str] = {
    **{op: _BACKWARD for op in ("avg_pool_backward", "col2im", "conv_input_grad",
                                "conv_weight_grad", "cumprod_backward",
                                "embedding_backward", "gelu_backward", "gru_scan_backward",
                                "lstm_scan_backward", "pad_backward", "pool_scatter",
                                "prod_others", "rnn_scan_backward", "select_block_backward")},
    "cumprod": "ONNX has no cumulative product",
    "index_put": "in-place indexed writes have no static ONNX translation here",
    "scatter": "scatter with reduce modes has no ONNX translation here",
    "erfinv": "ONNX has no inverse error function",
    "lgamma": "ONNX has no log-gamma",
    "polygamma": "ONNX has no polygamma",
    "argsort": "sorting needs TopK with a dynamic k; not translated",
    "searchsorted": "ONNX has no searchsorted",
    "gcd": "ONNX has no greatest common divisor",
    "lcm": "ONNX has no least common multiple",
    "nextafter": "ONNX has no nextafter",
    "cumarg": "ONNX has no cumulative argmax/argmin",
    "allreduce_start": "collectives do not exist in ONNX",
    "allreduce_wait": "collectives do not exist in ONNX",
    "broadcast": "collectives do not exist in ONNX",
    "linalg_cholesky": "ONNX has no Cholesky factorisation",
    "linalg_eigh": "ONNX has no eigendecomposition",
    "linalg_inv": "ONNX has no matrix inverse",
    "linalg_logabsdet": "ONNX has Det but no log|det| (Log(Abs(Det)) underflows where "
                        "slogdet does not)",
    "linalg_solve": "ONNX has no linear solver",
    "linalg_svd": "ONNX has no singular value decomposition",
    "rand_normal": "random number generation is not exported (results would differ from eager)",
    "rand_uniform": "random number generation is not exported (results would differ from eager)",
}


def _where(n) -> str:
    src = n.meta.get("source")
    return f" (at {os.path.basename(src[0])}:{src[1]})" if src else ""


# ---- graph -> ModelProto ------------------------------------------------------------------
def graph_to_onnx(graph: Graph, initial: dict[int, np.ndarray], *, opset_version: int,
                  input_names: list[str], output_names: list[str], graph_inputs: list[Value]):
    """An ``onnx.ModelProto`` for ``graph``: ``graph_inputs`` become model inputs and the
    other graph inputs initializers (``initial``: id(Value) -> array)."""
    onnx, helper, numpy_helper = _onnx()
    if opset_version < MIN_OPSET:
        raise ValueError(f"gcompile.onnx.export: opset_version {opset_version} is older than "
                         f"the oldest supported, {MIN_OPSET}")
    graph, initial, graph_inputs = _decompose_unmapped(graph, initial, graph_inputs)
    b = _Builder(opset_version)
    model_inputs = []
    for v, name in zip(graph_inputs, input_names):
        b.names[id(v)] = name
        model_inputs.append(helper.make_tensor_value_info(name, _onnx_type(v.dtype),
                                                          list(v.shape)))
    for v in graph.inputs:
        if id(v) not in b.names and (v.users or any(o is v for o in graph.outputs)):
            arr = initial[id(v)]
            b.names[id(v)] = b.const(arr, v.dtype.np, hint=_clean(v.name))
    for c in graph.constants:
        b.names[id(c)] = b.const(c.data, c.dtype.np, hint=_clean(c.name))
    for n in graph.nodes:
        conv = CONVERTERS.get(n.op)
        if conv is None:
            why = UNSUPPORTED.get(n.op, "no translation to ONNX has been written for it")
            if REGISTRY[n.op].decomposition is not None:
                why += " (its decomposition into primitives declines these inputs)"
            raise NotImplementedError(f"gcompile.onnx.export: op {n.op!r} (%{n.out.name}"
                                      f"{_where(n)}) cannot be exported to ONNX: {why}")
        try:
            b.names[id(n.out)] = conv(b, n)
        except NotImplementedError as e:
            raise NotImplementedError(f"gcompile.onnx.export: op {n.op!r} (%{n.out.name}"
                                      f"{_where(n)}) cannot be exported to ONNX: {e}") from None
    outputs = []
    for o, name in zip(graph.outputs, output_names):
        b.nodes.append(helper.make_node("Identity", [b.names[id(o)]], [name]))
        outputs.append(helper.make_tensor_value_info(name, _onnx_type(o.dtype), list(o.shape)))
    g = helper.make_graph(b.nodes, _clean(graph.name), model_inputs, outputs, b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset_version)],
                              producer_name="gcompile")
    onnx.checker.check_model(model)
    return model


def _decompose_unmapped(graph: Graph, initial: dict[int, np.ndarray], graph_inputs: list
                        ) -> tuple[Graph, dict[int, np.ndarray], list]:
    """Ops with no translation but a decomposition become its primitives, again and again
    (a primitive may be a composite itself), in a copy of ``graph``; the copy's inputs take
    over ``initial`` and ``graph_inputs``. An op whose rule declines stays, and the
    translation loop names it."""
    from ir.passes.decompose import decompose_while

    def wanted(n):
        return n.op not in CONVERTERS and REGISTRY[n.op].decomposition is not None
    if not any(wanted(n) for n in graph.nodes):
        return graph, initial, graph_inputs
    g = graph.copy()
    new_of = {id(old): new for old, new in zip(graph.inputs, g.inputs)}
    initial = {id(new_of[k]): a for k, a in ((id(v), initial.get(id(v))) for v in graph.inputs)
               if a is not None}
    graph_inputs = [new_of[id(v)] for v in graph_inputs]
    decompose_while(g, wanted)
    return g, initial, graph_inputs


def _clean(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "g"


def export(model: Any, args: Any, f: Any = None, *, opset_version: int | None = None,
           input_names: list[str] | None = None, output_names: list[str] | None = None,
           dynamic_axes: Any = None, **kwargs: Any):
    """Export ``model(*args)`` (a function or an eval-mode module) to ONNX.

    torch's signature: ``export(model, args, f)`` with ``args`` a tensor or a tuple of
    positional arguments; ``f`` a path or a binary file object (None: only return the
    model). Returns the ``onnx.ModelProto``. Shapes are static: ``dynamic_axes`` is
    refused rather than ignored.
    """
    from ..autograd import no_grad
    from ..compiler.api import _flatten, _module_params
    from ..export.program import compiled_function
    onnx, _, _ = _onnx()
    if dynamic_axes:
        raise NotImplementedError("gcompile.onnx.export: dynamic_axes is not supported; the "
                                  "exported model has the example inputs' static shapes")
    unknown = set(kwargs) - {"export_params", "verbose", "training", "do_constant_folding",
                             "keep_initializers_as_inputs"}
    if unknown:
        raise TypeError(f"gcompile.onnx.export() got unexpected keyword arguments "
                        f"{sorted(unknown)}; supported: opset_version, input_names, "
                        "output_names, export_params, verbose, training, do_constant_folding, "
                        "keep_initializers_as_inputs")
    if not kwargs.get("export_params", True) or kwargs.get("keep_initializers_as_inputs"):
        raise NotImplementedError("gcompile.onnx.export: weights are always exported as "
                                  "initializers (export_params=True, "
                                  "keep_initializers_as_inputs=False)")
    training = kwargs.get("training")
    if training and str(training).rsplit(".", 1)[-1].upper() != "EVAL":
        raise NotImplementedError("gcompile.onnx.export: only inference graphs are exported "
                                  f"(training={training!r}); call model.eval()")
    args = args if isinstance(args, tuple) else (args,)
    opset = DEFAULT_OPSET if opset_version is None else int(opset_version)
    # the interpreter backend leaves the traced graph as it was traced
    cf = compiled_function(model, "gcompile.onnx.export", backend="interpreter")
    with no_grad():
        result = cf.call_until_planned(*args)
    if not cf.entries:
        raise RuntimeError("gcompile.onnx.export: the function could not be captured as one "
                           "graph")
    entry = cf.entries[-1]
    if entry.writebacks:
        raise NotImplementedError("gcompile.onnx.export: the model writes to its inputs or "
                                  "state (BatchNorm in training mode?); call model.eval()")
    leaves: list[Tensor] = []
    _flatten(args, leaves)
    out_leaves: list[Tensor] = []
    _flatten(result, out_leaves)
    params = _module_params(cf._module)
    graph = entry.graph
    initial: dict[int, np.ndarray] = {}
    arg_inputs: list[tuple[int, Value]] = []
    for v, (kind, i) in zip(graph.inputs, entry.input_map):
        if kind == "arg":
            arg_inputs.append((i, v))
        elif kind == "param":
            initial[id(v)] = params[i][1]._data
        elif kind == "live":
            initial[id(v)] = entry.live[i][0]._data
        else:
            initial[id(v)] = np.asarray(float(entry.scalars[i]()), np.float64)
    arg_inputs.sort(key=lambda p: p[0])
    names_in = list(input_names or [])
    names_in += [f"input_{i}" for i, _ in arg_inputs[len(names_in):]]
    names_out = list(output_names or [])
    names_out += [f"output_{k}" for k in range(len(names_out), len(graph.outputs))]
    proto = graph_to_onnx(graph, initial, opset_version=opset, input_names=names_in,
                          output_names=names_out, graph_inputs=[v for _, v in arg_inputs])
    if kwargs.get("verbose"):
        print(graph.format())
    if f is not None:
        data = proto.SerializeToString()
        if hasattr(f, "write"):
            f.write(data)
        else:
            from pathlib import Path

            from kernels.cache import _atomic_write
            _atomic_write(Path(os.fspath(f)), data)
    return proto
