"""Reverse-mode autodiff as a graph pass, and the forward/backward split.

``joint_graph`` differentiates a forward graph with the same gradient rules
the eager tape uses (``ir.registry.vjp`` through a builder that emits graph
nodes; an op with a decomposition and no rule of its own is differentiated
through its decomposition, ``ir.passes.decompose.derived_vjp``). ``partition``
splits the joint graph into a forward graph that also returns what the backward
needs, and a backward graph taking those values plus the output gradients. What
is saved is chosen by a minimum cut over the joint graph (as AOTAutograd does):
cheap elementwise and view chains are recomputed in the backward when that
saves fewer bytes than keeping their results.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph, Node, Value
from ..registry import REGISTRY, GradBuilder, vjp

class GraphGradBuilder(GradBuilder):
    """Emits every op a gradient rule asks for as a node of ``graph``."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.emitted: list[Node] = []

    def op(self, name, *args, **attrs):
        v = self.graph.add_node(name, args, attrs)
        v.producer.meta["backward"] = True
        self.emitted.append(v.producer)
        return v


@dataclass
class Joint:
    """The joint graph: forward outputs, then one gradient per ``wrt`` input."""

    graph: Graph
    num_forward_outputs: int
    grad_inputs: list[Value]        # one per forward output that carries a gradient
    wrt: list[Value]
    grads: list[Value | None]       # d(outputs)/d(wrt), None where independent
    differentiable_outputs: list[int] = field(default_factory=list)


def joint_graph(forward: Graph, wrt: list[int] | None = None,
                diff_outputs: list[int] | None = None) -> Joint:
    """Differentiate ``forward`` w.r.t. its inputs at indices ``wrt`` (default:
    every floating-point input). Output gradients become extra graph inputs, for
    the outputs at ``diff_outputs`` (default: every output that depends on wrt)."""
    g = forward.copy()
    g.name = forward.name + "_joint"
    wrt_idx = list(range(len(g.inputs))) if wrt is None else list(wrt)
    wrt_vals = [g.inputs[i] for i in wrt_idx if g.inputs[i].dtype.is_floating_point]
    # values that depend on a wrt input: only these carry gradients
    active: set[int] = {id(v) for v in wrt_vals}
    for n in g.nodes:
        if REGISTRY[n.op].differentiable and any(id(a) in active for a in n.value_inputs):
            if n.out.dtype.is_floating_point:
                active.add(id(n.out))
    grads: dict[int, Value] = {}
    b = GraphGradBuilder(g)
    grad_inputs, diff_outs = [], []
    for k, o in enumerate(g.outputs):
        if id(o) not in active or (diff_outputs is not None and k not in diff_outputs):
            continue
        gi = g.add_input(o.shape, o.dtype, name=f"grad_{o.name}")
        gi.meta["tangent"] = True
        grad_inputs.append(gi)
        diff_outs.append(k)
        grads[id(o)] = gi if id(o) not in grads else b.add(grads[id(o)], gi)
    forward_nodes = [n for n in g.nodes if not n.meta.get("backward")]
    for n in reversed(forward_nodes):
        gout = grads.get(id(n.out))
        if gout is None:
            continue
        op = REGISTRY[n.op]
        if not op.differentiable:
            continue
        in_grads = vjp(op, b, gout, list(n.inputs), n.out, n.attrs)
        for a, ga in zip(n.inputs, in_grads):
            if ga is None or not isinstance(a, Value) or id(a) not in active:
                continue
            prev = grads.get(id(a))
            grads[id(a)] = ga if prev is None else b.add(prev, ga)
    out_grads = [grads.get(id(v)) for v in wrt_vals]
    nfwd = len(g.outputs)
    g.set_outputs(list(g.outputs) + [x for x in out_grads if x is not None])
    from .cleanup import dce
    dce(g)
    return Joint(g, nfwd, grad_inputs, wrt_vals, out_grads, diff_outs)


@dataclass
class Partition:
    forward: Graph        # inputs: primals; outputs: user outputs + saved values
    backward: Graph       # inputs: saved values + output grads; outputs: grads of wrt
    num_user_outputs: int
    saved: list[str]      # names of saved values (joint graph names)
    saved_bytes: int
    saved_bytes_no_recompute: int
    recomputed: list[str]


def _bw_needed(joint: Joint) -> tuple[list[Node], list[Node]]:
    g = joint.graph
    fwd = [n for n in g.nodes if not n.meta.get("backward")]
    bw = [n for n in g.nodes if n.meta.get("backward")]
    return fwd, bw


def partition(joint: Joint, recompute: bool = True) -> Partition:
    """Split ``joint`` into forward and backward graphs (min-cut on saved bytes)."""
    g = joint.graph
    fwd_nodes, bw_nodes = _bw_needed(joint)
    fwd_ids = {id(n.out) for n in fwd_nodes}
    primal = [v for v in g.inputs if not v.meta.get("tangent")]
    tangents = [v for v in g.inputs if v.meta.get("tangent")]
    producer_is_fwd = {id(v): True for v in primal + g.constants}
    for n in fwd_nodes:
        producer_is_fwd[id(n.out)] = True
    # values computed in the forward that the backward reads directly
    direct = []
    seen = set()
    for n in bw_nodes:
        for a in n.value_inputs:
            if producer_is_fwd.get(id(a)) and id(a) not in seen and a.kind != "const":
                seen.add(id(a))
                direct.append(a)
    for o in g.outputs[joint.num_forward_outputs:]:
        if producer_is_fwd.get(id(o)) and id(o) not in seen and o.kind != "const":
            seen.add(id(o))
            direct.append(o)
    no_recompute_bytes = sum(v.nbytes for v in direct)
    if recompute:
        saved = _min_cut(g, fwd_nodes, primal, direct)
    else:
        saved = direct
    saved_ids = {id(v) for v in saved}
    # forward graph: the original forward plus the saved values as extra outputs
    user_outs = g.outputs[:joint.num_forward_outputs]
    fw = _subgraph(g, primal, fwd_nodes, list(user_outs) + saved, g.name + "_fw")
    # backward graph: saved + tangents in; recompute what's missing; grads out
    bw_outs = g.outputs[joint.num_forward_outputs:]
    needed = _needed_nodes(g, bw_outs, saved_ids | {id(v) for v in tangents})
    recomputed = [n.out.name for n in needed if id(n.out) in fwd_ids]
    bw = _subgraph(g, saved + tangents, needed, list(bw_outs), g.name + "_bw")
    return Partition(fw, bw, len(user_outs), [v.name for v in saved],
                     sum(v.nbytes for v in saved), no_recompute_bytes, recomputed)


def _needed_nodes(g: Graph, outs: list[Value], stop: set[int]) -> list[Node]:
    need: set[int] = set()
    stack = [o for o in outs]
    while stack:
        v = stack.pop()
        if id(v) in stop or v.producer is None or id(v.producer) in need:
            continue
        need.add(id(v.producer))
        stack.extend(v.producer.value_inputs)
    return [n for n in g.nodes if id(n) in need]


def _min_cut(g: Graph, fwd_nodes: list[Node], primal: list[Value], direct: list[Value]
             ) -> list[Value]:
    """Values to save: a minimum cut between the primal inputs and the backward's
    needs, where saving a value costs its bytes and only cheap forward ops may be
    recomputed (everything else is pinned to the forward side). The max-flow is
    ``ir.passes.partition``'s (networkx's import would cost ~10 MB)."""
    from .partition import SINK, SOURCE, recomputable, sink_side

    edges: list[tuple[object, object, int | None]] = []
    for v in primal:
        # a primal input already exists outside the plan: keeping it costs less than
        # materialising a new value of the same size
        edges.append((SOURCE, ("in", id(v)), None))
        edges.append((("in", id(v)), ("out", id(v)), max(v.nbytes // 2, 1)))
    for n in fwd_nodes:
        v = n.out
        # saving a view would copy it out of the plan: prefer saving its source
        bias = 1 if REGISTRY[n.op].category in ("view", "creation") else 0
        edges.append((("in", id(v)), ("out", id(v)), max(v.nbytes, 1) + bias))
        if not recomputable(n):
            edges.append((SOURCE, ("in", id(v)), None))
        for a in n.value_inputs:
            if a.kind == "const":
                continue
            edges.append((("out", id(a)), ("in", id(v)), None))
    if not direct:
        return []
    edges += [(("out", id(v)), SINK, None) for v in direct]
    near = sink_side(edges)
    by_id = {id(v): v for v in primal}
    by_id.update({id(n.out): n.out for n in fwd_nodes})
    saved = [v for key, v in by_id.items()
             if ("in", key) not in near and ("out", key) in near]
    # keep joint-graph order for stable signatures
    order = {id(v): i for i, v in enumerate(g.all_values())}
    saved.sort(key=lambda v: order[id(v)])
    return saved


def _subgraph(g: Graph, inputs: list[Value], nodes: list[Node], outputs: list[Value],
              name: str) -> Graph:
    """A new graph over copies of ``nodes`` with the given boundary."""
    sub = Graph(name)
    vmap: dict[int, Value] = {}
    for v in inputs:
        nv = sub.add_input(v.shape, v.dtype, name=v.name, device=v.device)
        nv.meta = dict(v.meta)
        vmap[id(v)] = nv
    for n in nodes:
        ins = []
        for a in n.inputs:
            if isinstance(a, Value):
                if id(a) not in vmap:
                    if a.kind == "const":
                        vmap[id(a)] = sub.add_const(a.data, name=a.name)
                    else:
                        raise ValueError(f"{name}: %{a.name} is used but neither computed nor "
                                         "an input")
                ins.append(vmap[id(a)])
            else:
                ins.append(a)
        nv = sub.add_node(n.op, ins, n.attrs, shape=n.out.shape, dtype=n.out.dtype)
        nv.producer.meta = dict(n.meta)
        vmap[id(n.out)] = nv
    outs = []
    for o in outputs:
        if id(o) not in vmap:
            if o.kind == "const":
                vmap[id(o)] = sub.add_const(o.data, name=o.name)
            else:
                raise ValueError(f"{name}: output %{o.name} is not computed")
        outs.append(vmap[id(o)])
    sub.set_outputs(outs)
    return sub
