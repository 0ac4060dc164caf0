"""The op registry: every op defined once.

An ``OpDef`` carries what each consumer needs: the eager NumPy
implementation (also the reference interpreter's), shape/dtype inference,
the scalar expression elementwise codegen fuses, and the gradient rule.
Gradient rules are written against a *builder* (see ``GradBuilder``) so the
eager tape and the graph autodiff pass share them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import dtypes as dt
from .shapes import broadcast_shapes

ELEMENTWISE = ("unary", "binary", "ternary")
CATEGORIES = ELEMENTWISE + ("reduction", "view", "movement", "matmul", "indexing", "scan",
                            "creation", "other")


@dataclass(eq=False)
class OpDef:
    """One primitive.

    impl(*arrays, **attrs) -> ndarray runs it eagerly on NumPy arrays.
    infer(specs, attrs) -> (shape, dtype) where specs are (shape, dtype)
    pairs or Python scalars, one per input.
    expr: for elementwise ops, a Python expression template over ``{0}``,
    ``{1}``... that kernels generate code from (see ``kernels``).
    grad(b, g, inputs, out, **attrs) -> one gradient (or None) per input.
    saves: indices of inputs the gradient needs (-1 means the output); the
    tape saves exactly these, and version counters guard them.
    dtype_rule: for elementwise ops: 'promote', 'float' (ints compute in the
    default float dtype), 'bool' (comparisons), 'int_only', 'same'.
    """

    name: str
    category: str
    impl: Callable[..., Any]
    infer: Callable[..., tuple] | None = None
    grad: Callable[..., tuple] | None = None
    expr: str | None = None
    saves: tuple[int, ...] = ()
    dtype_rule: str = "promote"
    attrs: tuple[str, ...] = ()
    backward_name: str | None = None
    float_only: bool = False
    nondiff_inputs: tuple[int, ...] = ()
    doc: str = ""
    extra: dict = field(default_factory=dict)
    reference: Callable[..., Any] | None = None  # the NumPy impl once a native one serves
    # decomposition(b, *inputs, **attrs) -> value | None: the op written once in
    # primitives through a builder (``GradBuilder``'s interface); None declines (e.g. a
    # dtype the primitives would compute differently). The compiler's decompose pass
    # (``ir.passes.decompose``) rewrites traced graphs into it, the ONNX exporter emits it
    # for an op it has no translation for, and an op with no ``grad`` rule gets its
    # gradient by differentiating it (``derived_vjp``); eager calls keep ``impl``.
    # Attach one with ``set_decomposition``. ``extra["cuts_gradient"]``: the
    # decomposition is not the op's gradient (detach).
    decomposition: Callable[..., Any] | None = None

    def use_native(self, fn: Callable[..., Any]) -> None:
        """Serve this op from ``fn`` (a native kernel with ``impl``'s signature and
        results): eager calls, the interpreter and plans' library steps all call
        ``impl``. The NumPy implementation stays as ``reference`` for tests and as
        the fallback a native kernel may call for cases it does not cover."""
        if self.reference is None:
            self.reference = self.impl
        self.impl = fn

    @property
    def differentiable(self) -> bool:
        return self.grad is not None or self.derives_grad

    @property
    def derives_grad(self) -> bool:
        """No hand-written rule: the gradient is that of the decomposition's primitives."""
        return (self.grad is None and self.decomposition is not None
                and not self.extra.get("cuts_gradient"))

    @property
    def is_elementwise(self) -> bool:
        return self.category in ELEMENTWISE

    @property
    def grad_fn_name(self) -> str:
        if self.backward_name:
            return self.backward_name
        return "".join(p.capitalize() for p in self.name.split("_")) + "Backward0"

    def __repr__(self) -> str:
        return f"OpDef({self.name}, {self.category})"


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.category not in CATEGORIES:
        raise ValueError(f"op {op.name}: unknown category {op.category!r}")
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name} is already registered")
    if op.is_elementwise and op.infer is None:
        op.infer = _elementwise_infer(op)
    if op.infer is None:
        raise ValueError(f"op {op.name} needs a shape/dtype rule")
    # facts the eager dispatcher reads on every call, computed once here
    op._ew = op.is_elementwise
    op._view = op.category == "view"
    _grad_facts(op)
    op._eager_infer = op.extra.get("eager_infer", True)
    op._grad_fn_name = op.grad_fn_name
    op._plans = {}  # the eager dispatcher's per-signature dtype plans
    REGISTRY[op.name] = op
    return op


# a derived gradient runs the decomposition again on the op's inputs: the tape keeps them all
# (einsum/getitem's bound on the number of tensor inputs)
_ALL_INPUTS = tuple(range(16))


def _grad_facts(op: OpDef) -> None:
    op._diff = op.differentiable
    if op.derives_grad and not op.saves:
        op.saves = _ALL_INPUTS


def set_decomposition(op: OpDef | str, rule: Callable[..., Any] | None) -> OpDef:
    """Attach ``rule`` as ``op``'s decomposition (None removes it). An op without a
    ``grad`` rule becomes differentiable through it."""
    op = get_op(op) if isinstance(op, str) else op
    if op.derives_grad and op.saves is _ALL_INPUTS:
        op.saves = ()
    op.decomposition = rule
    _grad_facts(op)
    return op


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; registered ops: {sorted(REGISTRY)}") from None


def spec_of(x):
    """(dtype, ndim) for tensors/values, the scalar itself for Python numbers."""
    if isinstance(x, (bool, int, float)):
        return x
    return (x.dtype, len(x.shape))


def compute_dtype(op: OpDef, specs) -> dt.DType:
    """The dtype an elementwise op computes in (before bool results)."""
    d = dt.result_type(*specs)
    rule = op.dtype_rule
    if rule in ("float",):
        return dt.float_type(d)
    if rule == "int_only" and d.is_floating_point:
        raise RuntimeError(f"{op.name}: not implemented for floating-point dtype {d}")
    return d


def output_dtype(op: OpDef, specs) -> dt.DType:
    if op.dtype_rule == "bool":
        return dt.bool_
    return compute_dtype(op, specs)


def _elementwise_infer(op: OpDef):
    def infer(specs, attrs):
        shapes = [s[0] for s in specs if isinstance(s, tuple)]
        shape = broadcast_shapes(*shapes, op=op.name) if len(shapes) > 1 else (
            tuple(shapes[0]) if shapes else ())
        dspecs = [(s[1], len(s[0])) if isinstance(s, tuple) else s for s in specs]
        return shape, output_dtype(op, dspecs)
    return infer


class GradBuilder:
    """What a gradient rule may call. Implemented by the eager tape
    (``gcompile.autograd``) and by the graph autodiff pass (``ir.passes``).

    ``op(name, *args, **attrs)`` applies a registered op; Python numbers are
    allowed as elementwise operands. Every registered op is also reachable as
    an attribute: ``b.mul(g, y)``.
    """

    def op(self, name: str, *args, **attrs):  # pragma: no cover - interface
        raise NotImplementedError

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in REGISTRY:
            raise AttributeError(f"GradBuilder has no op {name!r}")
        return lambda *args, **attrs: self.op(name, *args, **attrs)

    # conveniences built on ops
    def sum_to(self, g, shape):
        shape = tuple(shape)
        if _same_shape(g.shape, shape):
            return g
        return self.op("sum_to_size", g, shape=shape)

    def expand_to(self, g, shape):
        shape = tuple(shape)
        if _same_shape(g.shape, shape):
            return g
        return self.op("expand", g, shape=shape)

    def cast(self, g, dtype):
        if g.dtype is dtype:
            return g
        return self.op("cast", g, dtype=dtype)


def _same_shape(a, b) -> bool:
    """Shape equality that compares sizes only between shapes of one rank (a traced
    dynamic size compared with an unrelated one would add a needless guard)."""
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and a == b


def vjp(op: OpDef, b: GradBuilder, g, inputs, out, attrs) -> list:
    """Apply ``op``'s gradient rule and fit each gradient to its input's
    shape and dtype (undoing broadcasting), so rules can ignore both. An op with a
    decomposition and no rule is differentiated through the decomposition."""
    if op.grad is not None:
        grads = op.grad(b, g, inputs, out, **attrs)
    elif op.derives_grad:
        from .passes.decompose import derived_vjp
        grads = derived_vjp(op, b, g, inputs, out, attrs)
    else:
        raise RuntimeError(f"{op.name} has no gradient")
    result = []
    for x, gx in zip(inputs, grads):
        if gx is None or isinstance(x, (bool, int, float)) or not x.dtype.is_floating_point:
            result.append(None)
            continue
        if not _same_shape(gx.shape, x.shape):
            gx = b.sum_to(gx, x.shape)
        result.append(b.cast(gx, x.dtype))
    return result
