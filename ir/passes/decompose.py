"""Rewrite ops into the primitives of their ``OpDef.decomposition``.

An op's decomposition is written once, against the builder interface gradient rules
use (``b.mul(x, y)``, ``b.op("sum", x, dims=...)``); here the builder inserts each
primitive into the graph just before the node it replaces. The back end decomposes
composites whose pieces fuse better than the whole (softmax and log_softmax into row
reductions, gelu into an elementwise chain) and drops ``detach`` once autodiff is done.

``derived_vjp`` is the gradient of an op that has a decomposition and no ``grad`` rule:
the decomposition is built as a small graph for the call's input shapes and dtypes, the
autodiff pass differentiates it (each primitive with its own rule), dead-code
elimination keeps only what the gradients read, and the result is replayed through the
caller's builder: the eager tape (ops run now, recorded again under
``create_graph=True``) or the autodiff pass of a traced graph (nodes of the backward).
The gradient recomputes nothing it does not read (a linear layer's backward has no
forward GEMM). The replay recipe is cached per op, shapes, dtypes and attributes.

Rules are only ever called with graph ``Value``s (``x.numel``, ``x.ndim``, ``x.shape``
and ``x.dtype`` as properties), never with tensors.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import dtypes as dt
from ..graph import Graph, Node, Value
from ..registry import REGISTRY, GradBuilder, OpDef


class InsertBuilder(GradBuilder):
    """Adds each op it is asked for to ``graph`` at ``index`` (moving forward)."""

    def __init__(self, graph: Graph, index: int) -> None:
        self.graph = graph
        self.index = index

    def op(self, name, *args, **attrs):
        v = self.graph.add_node(name, list(args), attrs, index=self.index)
        self.index += 1
        return v


def decompose_node(graph: Graph, n: Node) -> bool:
    """Replace ``n`` by its op's decomposition; False (graph untouched) when the op has
    none or it declines for these inputs."""
    rule = REGISTRY[n.op].decomposition
    if rule is None:
        return False
    b = InsertBuilder(graph, graph.nodes.index(n))
    out = rule(b, *n.inputs, **n.attrs)
    if out is None:
        if b.index != graph.nodes.index(n):
            raise RuntimeError(f"decomposition of {n.op} added nodes, then declined: a rule "
                               "must decide before it builds")
        return False
    if tuple(out.shape) != tuple(n.out.shape):
        raise RuntimeError(f"decomposition of {n.op} gives shape {out.shape}, not "
                           f"{n.out.shape}")
    if out.dtype is not n.out.dtype:
        out = b.op("cast", out, dtype=n.out.dtype)
    graph.replace_all_uses(n.out, out)
    graph.remove_node(n)
    return True


def decompose_ops(graph: Graph, ops: Iterable[str] | None = None) -> int:
    """Decompose every node whose op is in ``ops`` (default: every op that has a
    decomposition), and the composites among their primitives (cross_entropy's
    log_softmax); returns how many were rewritten."""
    names = None if ops is None else set(ops)
    return decompose_while(graph, lambda n: REGISTRY[n.op].decomposition is not None
                           and (names is None or n.op in names))


def decompose_while(graph: Graph, wanted: Callable[[Node], bool]) -> int:
    """Decompose every node ``wanted`` picks, and then the primitives it picks among
    theirs, until none is left (a rule that declines leaves its node); returns how many
    were rewritten. New nodes keep the composite's ``source`` (its user's line)."""
    declined: set[int] = set()
    count = 0
    while True:
        todo = [n for n in graph.nodes if id(n) not in declined and wanted(n)]
        if not todo:
            return count
        for n in todo:
            first = graph._next  # values (so nodes) made from here on are the rule's
            if not decompose_node(graph, n):
                declined.add(id(n))
                continue
            count += 1
            if "source" in n.meta:
                for m in graph.nodes:
                    if m.out.id >= first:
                        m.meta.setdefault("source", n.meta["source"])


# ---- gradients through decompositions ------------------------------------------------------
# dtypes a rule may decline that its gradient is then derived in (float32, cast back after)
_LOW = ("float16", "bfloat16")


class _Ref(int):
    """A slot of a replay recipe (a value computed earlier), as opposed to a literal."""


@dataclass
class _Recipe:
    inputs: list[tuple[int, int, dt.DType]]             # (slot, op input position, dtype)
    tangent: tuple[int, dt.DType] | None                # (slot, dtype) of the output grad
    steps: list[tuple[str, tuple, dict, int, tuple]]    # (op, args, attrs, slot, slots freed)
    grads: list[int | None]                             # one slot (or None) per op input
    n_slots: int
    # the same gradients as one graph (outputs: the non-None grads in input order; inputs:
    # an op input position each, or "tangent"), which an eager builder may run as a
    # compiled plan instead of the steps (``run_gradient_graph``)
    graph: Graph | None = None
    graph_inputs: tuple = ()
    work_steps: int = 0  # steps that are neither GEMMs nor views (what a plan would fuse)


_RECIPES: dict[Any, _Recipe] = {}
_MAX_RECIPES = 1024


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, dt.DType):
        return ("dtype", v.name)
    return (type(v).__name__, v)


def _spec(x: Any) -> Any:
    if isinstance(x, (bool, int, float)):
        return x
    return (tuple(int(s) for s in x.shape), x.dtype)


def decomposition_graph(op: OpDef, specs: list, attrs: dict, *, upcast: bool = False
                        ) -> Graph | None:
    """``op``'s decomposition as a graph over inputs of these (shape, dtype) specs (Python
    numbers stay literal); None when the rule declines. ``upcast``: float16/bfloat16
    inputs become float32 inputs."""
    g = Graph(f"{op.name}_decomposition")
    args = []
    for i, s in enumerate(specs):
        if isinstance(s, tuple):
            d = dt.float32 if upcast and s[1].name in _LOW else s[1]
            v = g.add_input(s[0], d, name=f"x{i}")
            v.meta["position"] = i
            args.append(v)
        else:
            args.append(s)
    out = op.decomposition(InsertBuilder(g, 0), *args, **attrs)
    if out is None:
        if g.nodes:
            raise RuntimeError(f"decomposition of {op.name} added nodes, then declined: a "
                               "rule must decide before it builds")
        return None
    g.set_outputs([out])
    return g


def _layout_rewrites(jg: Graph, grads: dict) -> None:
    """The weight-gradient GEMM rewrites the compiler applies (``ir.passes.rewrites``), on
    the gradient graph, so that eager calls get them too: a Linear weight's gradient is
    one GEMM over all leading dims, computed in the weight's own (out, in) layout (not a
    transposed view the optimizer then reads strided or ``.grad`` copies)."""
    from .rewrites import fold_summed_matmul, transpose_matmul_products
    keys = list(grads)
    saved = jg.outputs
    jg.set_outputs([grads[k] for k in keys])
    if fold_summed_matmul(jg) + transpose_matmul_products(jg):
        for k, v in zip(keys, jg.outputs):
            grads[k] = v
    jg.set_outputs(saved)


def _build_recipe(op: OpDef, specs: list, out_shape, attrs: dict, want: list[bool]
                  ) -> _Recipe:
    from .autodiff import joint_graph
    g = decomposition_graph(op, specs, attrs)
    if g is None and any(isinstance(s, tuple) and s[1].name in _LOW for s in specs):
        g = decomposition_graph(op, specs, attrs, upcast=True)
    if g is None:
        shown = [s if not isinstance(s, tuple) else (s[0], s[1].name) for s in specs]
        raise RuntimeError(f"{op.name}: no gradient for inputs {shown}: the op has no "
                           "gradient rule and its decomposition declines them")
    if tuple(g.outputs[0].shape) != tuple(out_shape):
        raise RuntimeError(f"decomposition of {op.name} gives shape {g.outputs[0].shape}, not "
                           f"{tuple(out_shape)}")
    wrt = [k for k, v in enumerate(g.inputs) if want[v.meta["position"]]]
    joint = joint_graph(g, wrt=wrt)
    jg = joint.graph
    grads = {}
    for v, gv in zip(joint.wrt, joint.grads):
        if gv is not None:
            grads[v.meta["position"]] = gv
    _layout_rewrites(jg, grads)
    slot: dict[int, int] = {}
    inputs = []
    tangent = None
    for v in jg.inputs:
        slot[id(v)] = len(slot)
        if v.meta.get("tangent"):
            tangent = (slot[id(v)], v.dtype)
        else:
            inputs.append((slot[id(v)], v.meta["position"], v.dtype))
    # the nodes the gradients read, in graph order
    need: set[int] = set()
    stack = list(grads.values())
    while stack:
        v = stack.pop()
        if v.producer is None or id(v.producer) in need:
            continue
        need.add(id(v.producer))
        stack.extend(v.producer.value_inputs)
    nodes = [n for n in jg.nodes if id(n) in need]
    for n in nodes:
        for a in n.value_inputs:
            if a.kind == "const":
                raise RuntimeError(f"decomposition of {op.name}: its gradient reads a constant "
                                   "tensor; write it with Python numbers")
        slot[id(n.out)] = len(slot)
    last: dict[int, int] = {}
    for k, n in enumerate(nodes):
        for a in n.value_inputs:
            last[slot[id(a)]] = k
    kept = {slot[id(v)] for v in grads.values()}
    steps = []
    for k, n in enumerate(nodes):
        args = tuple(_Ref(slot[id(a)]) if isinstance(a, Value) else a for a in n.inputs)
        freed = tuple(s for s in {slot[id(a)] for a in n.value_inputs}
                      if last[s] == k and s not in kept)
        steps.append((n.op, args, dict(n.attrs), slot[id(n.out)], freed))
    used = set(last) | kept
    inputs = [i for i in inputs if i[0] in used]
    if tangent is not None and tangent[0] not in used:
        tangent = None
    out_grads = [slot[id(grads[i])] if i in grads else None for i in range(len(specs))]
    work = sum(1 for name, *_ in steps if REGISTRY[name].category not in ("matmul", "view"))
    return _Recipe(inputs, tangent, steps, out_grads, len(slot),
                   *_gradient_graph(jg, grads), work)


def _gradient_graph(jg: Graph, grads: dict) -> tuple[Graph, tuple]:
    """``jg`` cut down to the gradients: outputs the grads in input order, inputs only
    those they read (the op's inputs by position, and the tangent)."""
    from .cleanup import dce
    jg.set_outputs([grads[i] for i in sorted(grads)])
    dce(jg)
    outs = {id(v) for v in jg.outputs}
    jg.inputs = [v for v in jg.inputs if v.users or id(v) in outs]
    return jg, tuple("tangent" if v.meta.get("tangent") else v.meta["position"]
                     for v in jg.inputs)


def derived_vjp(op: OpDef, b: GradBuilder, g, inputs: list, out, attrs: dict) -> list:
    """The gradients of ``op`` at ``inputs`` (one per input, None where there is none),
    through its decomposition's primitives, built with ``b``."""
    needs = getattr(b, "needs", None)
    specs = [_spec(x) for x in inputs]
    want = [isinstance(s, tuple) and s[1].is_floating_point and (needs is None or bool(needs[i]))
            for i, s in enumerate(specs)]
    key = (op.name, tuple(s if not isinstance(s, tuple) else (s[0], s[1].name) for s in specs),
           _freeze(attrs), tuple(want), tuple(out.shape))
    recipe = _RECIPES.get(key)
    if recipe is None:
        recipe = _build_recipe(op, specs, out.shape, attrs, want)
        if len(_RECIPES) >= _MAX_RECIPES:
            _RECIPES.clear()
        _RECIPES[key] = recipe
    run = getattr(b, "run_gradient_graph", None)
    if run is not None:
        got = run(recipe, key, inputs, g)
        if got is not None:  # one per graph output, in input order
            it = iter(got)
            return [None if s is None else next(it) for s in recipe.grads]
    slots: list = [None] * recipe.n_slots
    for s, pos, d in recipe.inputs:
        slots[s] = b.cast(inputs[pos], d)
    if recipe.tangent is not None:
        slots[recipe.tangent[0]] = b.cast(g, recipe.tangent[1])
    for name, args, at, s, freed in recipe.steps:
        slots[s] = b.op(name, *[slots[a] if isinstance(a, _Ref) else a for a in args], **at)
        for f in freed:
            slots[f] = None
    return [None if s is None else slots[s] for s in recipe.grads]
