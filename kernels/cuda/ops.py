"""Eager ops on the device: one op call -> a ``KernelSpec`` -> ``CudaKernel``.

Elementwise ops are the op's registry ``expr`` in one stmt (with the operand casts
eager dispatch applies: ``ir.registry.compute_dtype``; Python scalars become typed
constants); reductions (sum, mean, prod, amax, amin, var, std, logsumexp, any, all,
sum_to_size) are rows specs over the reduced dims; softmax / log_softmax / layer_norm the
rows specs of their decompositions (``ir.ops.decompositions``: finite-guarded row max,
the sum of exponentials; mean and biased variance); matmul / linear go to
``kernels.cuda.gemm``; index ops (gather, scatter, index_select, embedding and its
backward, cumsum, check) to ``kernels.cuda.indexing``; im2col / col2im and max pooling to
``kernels.cuda.conv``; cat and the ``*_like``/``full`` fills are copies and fills. A
composite op with none of these runs its decomposition rule primitive by primitive.
Anything else returns None: the caller falls back through host memory.
"""
from __future__ import annotations

import numpy as np

from ir import dtypes as dt
from ir.registry import REGISTRY, compute_dtype

from ..spec import KernelSpec, Phase, Stmt, attrs_tuple, const
from . import compile_kernel, empty
from .views import elem_strides, is_device_array, strided

__all__ = ["launch", "elementwise_spec", "reduction_spec", "softmax_spec", "layer_norm_spec"]

_REDUCE = {"sum": "sum", "mean": "sum", "prod": "prod", "amax": "max", "amin": "min"}
_FLOATS = ("float16", "float32", "float64")


def _is_scalar(a) -> bool:
    return isinstance(a, (bool, int, float, np.generic))


def _scalar_const(a, cdt: str | None):
    if cdt is not None:
        return const(np.dtype(cdt).type(a).item(), cdt)
    if isinstance(a, (bool, np.bool_)):
        return const(bool(a), "bool")
    if isinstance(a, (int, np.integer)):
        return const(int(a), "int64")
    return const(float(a), "float32")


def elementwise_spec(op: str, attrs: dict, inputs: list, out_dtype: str
                     ) -> tuple[KernelSpec, list]:
    """The one-op elementwise spec for ``inputs`` (device arrays and scalars) and the
    arrays it reads, in order (scalars are constants of the spec)."""
    od = REGISTRY[op]
    arrays = [a for a in inputs if not _is_scalar(a)]
    stmts: list = []
    if op == "clone" or od.dtype_rule == "cast":
        if len(arrays) != 1:
            raise NotImplementedError("cast of a scalar")
        stmts.append(Stmt("t0", "cast", (("in", 0),), (("dtype", out_dtype),), out_dtype))
    else:
        specs = []
        for a in inputs:
            if _is_scalar(a):
                specs.append(a.item() if isinstance(a, np.generic) else a)
            else:
                specs.append((dt.as_dtype(np.dtype(a.dtype).name), len(a.shape)))
        cspecs = specs[1:] if od.dtype_rule == "where" else specs
        cdt = compute_dtype(od, cspecs).name
        args = []
        k = 0
        for i, a in enumerate(inputs):
            skip = od.dtype_rule == "where" and i == 0
            if _is_scalar(a):
                args.append(_scalar_const(a, None if skip else cdt))
                continue
            ref = ("in", k)
            d = np.dtype(a.dtype).name
            if not skip and d != cdt:
                stmts.append(Stmt(f"c{i}", "cast", (ref,), (("dtype", cdt),), cdt))
                ref = ("v", f"c{i}")
            args.append(ref)
            k += 1
        stmts.append(Stmt("t0", op, tuple(args), attrs_tuple(attrs), out_dtype))
    spec = KernelSpec(tuple(np.dtype(a.dtype).name for a in arrays), ((out_dtype, "full"),),
                      (Phase("map", tuple(stmts), stores=((0, ("v", "t0")),)),),
                      "elementwise")
    return spec, arrays


def reduction_spec(op: str, in_dtype: str, out_dtype: str, correction: float = 1
                   ) -> KernelSpec:
    """A rows spec reducing its one input into one row output."""
    x = ("in", 0)
    pre: tuple = ()
    if in_dtype != out_dtype:
        pre = (Stmt("x", "cast", (x,), (("dtype", out_dtype),), out_dtype),)
        x = ("v", "x")
    d = out_dtype
    if op in ("var", "std"):
        p0 = Phase("reduce", pre, reduce_op="sum", reduce_value=x,
                   post=(Stmt("mean", "div", (("r", 0), ("n", d)), (), d),))
        cen = pre + (Stmt("dx", "sub", (x, ("v", "mean")), (), d),
                     Stmt("d2", "mul", (("v", "dx"), ("v", "dx")), (), d))
        post = [Stmt("den", "sub", (("n", d), const(float(correction), d)), (), d),
                Stmt("var", "div", (("r", 1), ("v", "den")), (), d)]
        if op == "std":
            post.append(Stmt("std", "sqrt", (("v", "var"),), (), d))
        p1 = Phase("reduce", cen, reduce_op="sum", reduce_value=("v", "d2"),
                   store_result=0, post=tuple(post))
        return KernelSpec((in_dtype,), ((d, "row"),), (p0, p1), "rows")
    post: tuple = ()
    if op == "mean":
        post = (Stmt("mean", "div", (("r", 0), ("n", d)), (), d),)
    return KernelSpec((in_dtype,), ((d, "row"),), (Phase(
        "reduce", pre, reduce_op=_REDUCE[op], reduce_value=x, store_result=0, post=post),),
        "rows")


def logsumexp_spec(d: str) -> KernelSpec:
    """log(sum(exp(x - m))) + m over the row, m the max (0 where not finite), as
    decomposed (``ir.ops.decompositions._logsumexp``)."""
    x = ("in", 0)
    p0 = Phase("reduce", (), reduce_op="max", reduce_value=x, post=(
        Stmt("fin", "isfinite", (("r", 0),), (), "bool"),
        Stmt("m", "where", (("v", "fin"), ("r", 0), const(0.0, d)), (), d)))
    body = (Stmt("s", "sub", (x, ("v", "m")), (), d), Stmt("e", "exp", (("v", "s"),), (), d))
    p1 = Phase("reduce", body, reduce_op="sum", reduce_value=("v", "e"), store_result=0,
               post=(Stmt("lt", "log", (("r", 1),), (), d),
                     Stmt("y", "add", (("v", "lt"), ("v", "m")), (), d)))
    return KernelSpec((d,), ((d, "row"),), (p0, p1), "rows")


def truth_spec(op: str, in_dtype: str) -> KernelSpec:
    """any / all: the max / min of the elements' truth values."""
    pre = (Stmt("b", "cast", (("in", 0),), (("dtype", "bool"),), "bool"),)
    return KernelSpec((in_dtype,), (("bool", "row"),), (Phase(
        "reduce", pre, reduce_op="max" if op == "any" else "min", reduce_value=("v", "b"),
        store_result=0),), "rows")


def softmax_spec(d: str, log: bool) -> KernelSpec:
    """softmax / log_softmax over the row, as decomposed: m = max (0 where not finite),
    s = x - m, then exp(s) / sum(exp(s)) or s - log(sum(exp(s)))."""
    x = ("in", 0)
    p0 = Phase("reduce", (), reduce_op="max", reduce_value=x, post=(
        Stmt("fin", "isfinite", (("r", 0),), (), "bool"),
        Stmt("m", "where", (("v", "fin"), ("r", 0), const(0.0, d)), (), d)))
    body = (Stmt("s", "sub", (x, ("v", "m")), (), d), Stmt("e", "exp", (("v", "s"),), (), d))
    if log:
        p1 = Phase("reduce", body, reduce_op="sum", reduce_value=("v", "e"),
                   post=(Stmt("lt", "log", (("r", 1),), (), d),))
        mp = Phase("map", (Stmt("s", "sub", (x, ("v", "m")), (), d),
                           Stmt("y", "sub", (("v", "s"), ("v", "lt")), (), d)),
                   stores=((0, ("v", "y")),))
    else:
        p1 = Phase("reduce", body, reduce_op="sum", reduce_value=("v", "e"),
                   post=(Stmt("rt", "reciprocal", (("r", 1),), (), d),))
        mp = Phase("map", body + (Stmt("y", "mul", (("v", "e"), ("v", "rt")), (), d),),
                   stores=((0, ("v", "y")),))
    return KernelSpec((d,), ((d, "full"),), (p0, p1, mp), "rows")


def layer_norm_spec(d: str, eps: float, has_weight: bool, has_bias: bool) -> KernelSpec:
    """layer_norm as decomposed: c = x - mean, var = mean(c * c), c * rsqrt(var + eps),
    times weight, plus bias."""
    x = ("in", 0)
    p0 = Phase("reduce", (), reduce_op="sum", reduce_value=x,
               post=(Stmt("mean", "div", (("r", 0), ("n", d)), (), d),))
    cen = (Stmt("c", "sub", (x, ("v", "mean")), (), d),
           Stmt("c2", "mul", (("v", "c"), ("v", "c")), (), d))
    p1 = Phase("reduce", cen, reduce_op="sum", reduce_value=("v", "c2"), post=(
        Stmt("var", "div", (("r", 1), ("n", d)), (), d),
        Stmt("ve", "add", (("v", "var"), const(float(eps), d)), (), d),
        Stmt("rs", "rsqrt", (("v", "ve"),), (), d)))
    st = [Stmt("c", "sub", (x, ("v", "mean")), (), d),
          Stmt("y", "mul", (("v", "c"), ("v", "rs")), (), d)]
    last, k = "y", 1
    if has_weight:
        st.append(Stmt("yw", "mul", (("v", last), ("in", k)), (), d))
        last, k = "yw", k + 1
    if has_bias:
        st.append(Stmt("yb", "add", (("v", last), ("in", k)), (), d))
        last = "yb"
    mp = Phase("map", tuple(st), stores=((0, ("v", last)),))
    return KernelSpec((d,) * (1 + has_weight + has_bias), ((d, "full"),), (p0, p1, mp),
                      "rows")


def _out(out_shapes, out_dtypes, i=0):
    return empty(tuple(out_shapes[i]), np.dtype(out_dtypes[i]))


def _dims(attrs: dict, nd: int) -> tuple | None:
    dims = attrs.get("dims")
    if dims is None:
        return tuple(range(nd))
    if isinstance(dims, int):
        dims = (dims,)
    return tuple(sorted({int(x) % nd for x in dims})) if nd else ()


def _matmul(a, b, out) -> None:
    """``out = a @ b`` with NumPy's matmul rules for 1-d, 2-d and stacked operands."""
    from .gemm import matmul_into
    from .views import broadcast_view
    sa, sb, so = tuple(a.shape), tuple(b.shape), tuple(out.shape)
    ta, tb, to = elem_strides(a), elem_strides(b), elem_strides(out)
    if len(sa) == 1:  # a row vector; its dim is gone from the output
        sa, ta = (1,) + sa, (0,) + ta
        so, to = so[:-1] + (1,) + so[-1:], to[:-1] + (0,) + to[-1:]
    if len(sb) == 1:  # a column vector
        sb, tb = sb + (1,), tb + (0,)
        so, to = so + (1,), to + (0,)
    va, vb, vo = strided(a, sa, ta), strided(b, sb, tb), strided(out, so, to)
    if len(so) == 2:
        matmul_into(va, vb, vo)
        return
    batch = so[:-2]
    xa = broadcast_view(va, batch + sa[-2:])
    xb = broadcast_view(vb, batch + sb[-2:])
    lead = batch[:-1]  # one 3-D GEMM per leading index (one call with one batch dim)
    for ix in (np.ndindex(*lead) if lead else [()]):
        def sub(x, ix=ix):
            st = elem_strides(x)
            off = sum(i * s for i, s in zip(ix, st))
            return strided(x, tuple(x.shape)[len(lead):], st[len(lead):], off)
        matmul_into(sub(xa), sub(xb), sub(vo))


def launch(op: str, attrs: dict, inputs: list, out_shapes: list, out_dtypes: list
           ) -> list | None:
    """See ``kernels.cuda.launch``."""
    od = REGISTRY.get(op)
    if od is None or len(out_shapes) != 1 or len(out_dtypes) != 1:
        return None
    attrs = dict(attrs or {})
    arrays = [a for a in inputs if not _is_scalar(a)]
    if any(a is not None and not is_device_array(a) for a in arrays):
        return None
    if any(s < 0 for a in arrays for s in a.strides):
        return None
    out_dtype = np.dtype(out_dtypes[0]).name
    shape = tuple(out_shapes[0])
    try:
        if od.expr is not None or op == "clone":
            spec, ins = elementwise_spec(op, attrs, inputs, out_dtype)
            k = compile_kernel(spec)
            out = _out(out_shapes, out_dtypes)
            k.elementwise(ins, [out], shape)
            return [out]
        if op in _REDUCE or op in ("var", "std"):
            x = inputs[0]
            nd = len(x.shape)
            dims = _dims(attrs, nd)
            if not dims and nd:
                return None  # nothing reduced: a cast, left to the caller
            spec = reduction_spec(op, np.dtype(x.dtype).name, out_dtype,
                                  attrs.get("correction", 1))
            if any(x.shape[d] == 0 for d in dims):
                return None  # empty rows: identities / nan, as the host computes
            out = _out(out_shapes, out_dtypes)
            compile_kernel(spec).rows([x], [out], tuple(x.shape), dims)
            return [out]
        if op in ("logsumexp", "any", "all"):
            x = inputs[0]
            nd = len(x.shape)
            dims = _dims(attrs, nd)
            d = np.dtype(x.dtype).name
            if not dims or any(x.shape[k] == 0 for k in dims):
                return None
            if op == "logsumexp":
                if d not in _FLOATS or d != out_dtype:
                    return None
                spec = logsumexp_spec(d)
            else:
                spec = truth_spec(op, d)
            out = _out(out_shapes, out_dtypes)
            compile_kernel(spec).rows([x], [out], tuple(x.shape), dims)
            return [out]
        if op == "sum_to_size":
            return _sum_to_size(inputs[0], tuple(attrs["shape"]), out_shapes, out_dtypes)
        if op in ("zeros_like", "ones_like", "full_like", "full"):
            from . import fill
            value = {"zeros_like": 0, "ones_like": 1}.get(op, attrs.get("value"))
            if not isinstance(value, (bool, int, float, np.generic)):
                return None
            out = _out(out_shapes, out_dtypes)
            fill(out, value)
            return [out]
        if op in ("softmax", "log_softmax"):
            x = inputs[0]
            d = np.dtype(x.dtype).name
            if d not in _FLOATS or d != out_dtype or not len(x.shape) or \
                    0 in tuple(x.shape):
                return None
            out = _out(out_shapes, out_dtypes)
            compile_kernel(softmax_spec(d, op == "log_softmax")).rows(
                [x], [out], tuple(x.shape), (int(attrs["dim"]) % len(x.shape),))
            return [out]
        if op == "layer_norm":
            x = inputs[0]
            d = np.dtype(x.dtype).name
            if d not in _FLOATS or any(np.dtype(a.dtype).name != d for a in arrays) or \
                    len(arrays) != len(inputs) or d != out_dtype or 0 in tuple(x.shape):
                return None
            nn = int(attrs["normalized_ndim"])
            nd = len(x.shape)
            spec = layer_norm_spec(d, float(attrs["eps"]), bool(attrs.get("has_weight")),
                                   bool(attrs.get("has_bias")))
            out = _out(out_shapes, out_dtypes)
            compile_kernel(spec).rows(list(inputs), [out], tuple(x.shape),
                                      tuple(range(nd - nn, nd)))
            return [out]
        if op in ("matmul", "linear"):
            return _launch_matmul(op, inputs, out_shapes, out_dtypes)
        if op == "cat":
            return _cat(inputs, int(attrs["dim"]), shape, out_dtypes[0])
        if op in ("im2col", "col2im", "max_pool_indices"):
            from . import conv
            fn = {"im2col": conv.im2col, "col2im": conv.col2im,
                  "max_pool_indices": conv.max_pool_indices}[op]
            out = fn(inputs[0], attrs, shape, out_dtypes[0])
            return None if out is None else [out]
        if op in ("pool_gather", "pool_scatter"):
            from . import conv
            if op == "pool_gather":
                out = conv.pool_gather(inputs[0], inputs[1], shape, out_dtypes[0])
            else:
                out = conv.pool_scatter(inputs[0], inputs[1], tuple(attrs["shape"]),
                                        out_dtypes[0])
            return None if out is None else [out]
        if op in ("index_select", "embedding", "embedding_backward", "cumsum"):
            from . import indexing
            if op == "index_select":
                out = indexing.index_select(inputs[0], inputs[1], int(attrs["dim"]), shape,
                                            out_dtypes[0])
            elif op == "embedding":
                out = indexing.embedding(inputs[0], inputs[1], shape, out_dtypes[0])
            elif op == "embedding_backward":
                out = indexing.embedding_backward(inputs[0], inputs[1],
                                                  attrs["num_weights"],
                                                  attrs.get("padding_idx"), out_dtypes[0])
            else:
                out = indexing.cumsum(inputs[0], int(attrs["dim"]), shape, out_dtypes[0])
            return None if out is None else [out]
        if op in ("gather", "scatter", "check"):
            from . import indexing
            if op == "gather":
                out = indexing.gather(inputs[0], inputs[1], int(attrs["dim"]), shape,
                                      out_dtypes[0])
            elif op == "scatter":
                out = indexing.scatter(inputs[0], inputs[1], inputs[2], int(attrs["dim"]),
                                       attrs.get("reduce"), shape, out_dtypes[0])
            else:
                out = indexing.check(inputs[0], attrs)
            return None if out is None else [out]
        if od.decomposition is not None:
            return _decomposed(od, attrs, inputs, shape, out_dtype)
    except NotImplementedError:
        return None
    return None


def _sum_to_size(x, shape: tuple, out_shapes, out_dtypes) -> list | None:
    """``sum_to_size``: sum over the leading dims and the dims ``shape`` has as 1 (a
    broadcast operand's gradient), in ``x``'s dtype."""
    from . import copy_into
    xs = tuple(x.shape)
    d = np.dtype(x.dtype).name
    if np.dtype(out_dtypes[0]).name != d:
        return None
    lead = len(xs) - len(shape)
    if lead < 0:
        return None
    dims = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                      if s == 1 and xs[i + lead] != 1)
    out = _out(out_shapes, out_dtypes)
    if not dims:
        copy_into(out, strided(x, shape, elem_strides(x)[lead:]))
        return [out]
    if any(xs[k] == 0 for k in dims):
        return None
    # the output viewed with x's rank: leading dims of size 1 (stride 0)
    o = strided(out, (1,) * lead + tuple(shape), (0,) * lead + elem_strides(out))
    compile_kernel(reduction_spec("sum", d, d)).rows([x], [o], xs, dims)
    return [out]


def _cat(xs: list, dim: int, shape: tuple, out_dtype) -> list | None:
    """``torch.cat``: each input copied (and converted) into its slice of the output."""
    from . import copy_into
    if not xs or any(_is_scalar(x) for x in xs) or not shape:
        return None
    dim %= len(shape)
    out = empty(shape, np.dtype(out_dtype))
    st = elem_strides(out)
    off = 0
    for x in xs:
        xs_ = tuple(x.shape)
        if len(xs_) != len(shape):
            if xs_ == (0,):  # torch skips legacy empty 1-d inputs
                continue
            return None
        if xs_[dim]:
            copy_into(strided(out, xs_, st, off * st[dim]), x)
        off += xs_[dim]
    return [out]


class _Dev:
    """A device array as a decomposition rule sees a value: shape, dtype (``ir``'s),
    ndim, numel."""

    __slots__ = ("arr", "shape", "dtype", "ndim", "numel")

    def __init__(self, arr) -> None:
        self.arr = arr
        self.shape = tuple(int(n) for n in arr.shape)
        self.dtype = dt.as_dtype(np.dtype(arr.dtype).name)
        self.ndim = len(self.shape)
        n = 1
        for k in self.shape:
            n *= k
        self.numel = n


class _NoDevice(Exception):
    """A primitive of a decomposition has no device kernel."""


def _builder():
    from ir.registry import GradBuilder

    class DeviceBuilder(GradBuilder):
        """Runs a decomposition rule's primitives through ``launch`` (views by stride
        arithmetic), so a composite op without a kernel of its own still runs on the
        device."""

        def op(self, name, *args, **attrs):
            od = REGISTRY[name]
            specs = [(a.shape, a.dtype) if isinstance(a, _Dev) else a for a in args]
            shape, odt = od.infer(specs, attrs)
            raw = [a.arr if isinstance(a, _Dev) else a for a in args]
            if od.category == "view":
                return _Dev(_view(od, attrs, raw, tuple(shape)))
            res = launch(name, attrs, raw, [tuple(shape)], [odt.name])
            if res is None:
                raise _NoDevice(name)
            return _Dev(res[0])
    return DeviceBuilder()


def _view(od, attrs: dict, raw: list, shape: tuple):
    """A view op on a device array: the same view by strides, or for a reshape no
    strides express, a contiguous copy viewed with the new shape."""
    from . import copy_into
    from .views import view_layout
    k = next(i for i, a in enumerate(raw) if not _is_scalar(a) and a is not None)
    lay = view_layout(od, attrs, raw, k, raw[k])
    if lay is not None:
        return strided(raw[k], *lay)
    if od.name != "reshape":
        raise _NoDevice(od.name)
    x = raw[k]
    c = empty(tuple(x.shape), np.dtype(x.dtype))
    copy_into(c, x)
    st, acc = [], 1
    for n in reversed(shape):
        st.append(acc)
        acc *= n
    return strided(c, shape, tuple(reversed(st)))


def _decomposed(od, attrs: dict, inputs: list, shape: tuple, out_dtype: str) -> list | None:
    """``od`` through its decomposition rule, each primitive on the device; None when a
    primitive has no device kernel (or the rule declines these operands)."""
    args = [_Dev(a) if not _is_scalar(a) and a is not None else a for a in inputs]
    try:
        res = od.decomposition(_builder(), *args, **attrs)
    except _NoDevice:
        return None
    if res is None or not isinstance(res, _Dev) or res.shape != tuple(shape):
        return None
    if np.dtype(res.arr.dtype).name != out_dtype:
        from . import copy_into
        out = empty(tuple(shape), np.dtype(out_dtype))
        copy_into(out, res.arr)
        return [out]
    return [res.arr]


def _launch_matmul(op: str, inputs: list, out_shapes, out_dtypes) -> list | None:
    d = np.dtype(out_dtypes[0]).name
    arrays = [a for a in inputs if a is not None]
    if d not in ("float32", "float64") or any(np.dtype(a.dtype).name != d for a in arrays):
        return None
    if any(len(a.shape) == 0 for a in arrays[:2]):
        return None
    out = _out(out_shapes, out_dtypes)
    if 0 in tuple(out.shape):
        return [out]
    a, b = inputs[0], inputs[1]
    if op == "linear":
        if len(b.shape) == 2:
            st = elem_strides(b)
            b = strided(b, (b.shape[1], b.shape[0]), (st[1], st[0]))
        if len(a.shape) == 0 or len(b.shape) not in (1, 2):
            return None
    if tuple(a.shape)[-1] == 0:
        from . import fill
        fill(out, 0)
    else:
        _matmul(a, b, out)
    if op == "linear" and len(inputs) > 2 and inputs[2] is not None:
        from . import compile_kernel as ck
        spec, ins = elementwise_spec("add", {}, [out, inputs[2]], d)
        ck(spec).elementwise(ins, [out], tuple(out.shape))
    return [out]
