"""The whole-step min-cut (ir.passes.partition): what the backward reads from the forward."""
from __future__ import annotations

import numpy as np

from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes.fusion import fuse
from ir.passes.partition import (SINK, SOURCE, cut_network, min_cut, recompute_for_backward,
                                  sink_side)
from ir.verify import verify


def _bw(v):
    v.producer.meta["step_backward"] = True
    return v


def _mlp_layer():
    """h = x @ w; a = h + b; r = relu(a); the backward reads a (ReLU's mask) and r (the
    next weight gradient): saving both costs twice what saving a alone costs."""
    g = Graph("step")
    x = g.add_input((8, 16), dt.float32, "x")
    w = g.add_input((16, 32), dt.float32, "w")
    b = g.add_input((32,), dt.float32, "b")
    gy = g.add_input((8, 32), dt.float32, "gy")
    h = g.add_node("matmul", [x, w])
    a = g.add_node("add", [h, b])
    r = g.add_node("relu", [a])
    loss = g.add_node("sum", [g.add_node("tanh", [r])], {"dims": (0, 1), "keepdim": False})
    m = _bw(g.add_node("gt", [a, 0.0]))
    ga = _bw(g.add_node("where", [m, gy, 0.0]))
    gw = _bw(g.add_node("matmul", [_bw(g.add_node("permute", [r], {"dims": (1, 0)})), ga]))
    gx = _bw(g.add_node("matmul", [ga, _bw(g.add_node("permute", [w], {"dims": (1, 0)}))]))
    g.set_outputs([loss, gw, gx])
    return g, (h, a, r)


def _inputs(g, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for v in g.inputs:
        if v.dtype is dt.int64:
            out.append(np.array(seed + 7, np.int64).reshape(v.shape))
        else:
            out.append(rng.standard_normal(v.shape).astype(v.dtype.np))
    return out


def test_min_cut_saves_less_than_saving_everything():
    g, (h, a, r) = _mlp_layer()
    ref = g.copy()
    cut = recompute_for_backward(g)
    verify(g)
    assert cut.saved_bytes_no_recompute == a.nbytes + r.nbytes
    # h or a cost the same; a needs less recomputation (the cut nearest the backward)
    assert cut.saved == [a.name] and cut.saved_bytes == a.nbytes
    assert cut.saved_bytes < cut.saved_bytes_no_recompute
    assert cut.recomputed == [r.name]
    # the backward reads no forward value but a (and graph inputs)
    fwd_vals = {id(n.out) for n in g.nodes if not n.meta.get("step_backward")}
    read = {a2.name for n in g.nodes if n.meta.get("step_backward")
            for a2 in n.value_inputs if id(a2) in fwd_vals}
    assert read == {a.name}
    assert sum(1 for n in g.nodes if n.op == "matmul") == 3  # no matmul recomputed
    # same bits: the recomputed ops are the same ops on the same operands
    ins = _inputs(g)
    for want, got in zip(interpret(ref, ins), interpret(g, ins)):
        np.testing.assert_array_equal(want, got)


def test_recomputed_values_stay_out_of_forward_kernels():
    g, _ = _mlp_layer()
    fusion = fuse(g)
    for grp in fusion.groups:
        kinds = {bool(n.meta.get("step_backward")) for n in grp.nodes}
        if any(n.meta.get("recomputed") for n in grp.nodes):
            assert kinds == {True}, grp.describe()


def test_chain_of_an_input_is_recomputed_not_saved():
    g = Graph("step")
    x = g.add_input((64,), dt.float32, "x")
    gy = g.add_input((64,), dt.float32, "gy")
    e = g.add_node("exp", [x])
    t = g.add_node("tanh", [e])
    s = g.add_node("sum", [t], {"dims": (0,), "keepdim": False})
    d = _bw(g.add_node("mul", [gy, e]))
    d2 = _bw(g.add_node("mul", [d, t]))
    g.set_outputs([s, d2])
    cut = recompute_for_backward(g)
    assert cut.saved == [] and cut.saved_bytes == 0
    assert cut.saved_bytes_no_recompute == e.nbytes + t.nbytes


def test_random_draws_are_kept_never_recomputed():
    # dropout-like: the backward reads two values derived from one draw; keeping the
    # draw and recomputing both is cheapest, and the draw itself is never repeated
    g = Graph("step")
    seed = g.add_input((), dt.int64, "seed")
    x = g.add_input((32, 32), dt.float32, "x")
    gy = g.add_input((32, 32), dt.float32, "gy")
    u = g.add_node("rand_uniform", [seed], {"shape": (32, 32), "dtype": dt.float32})
    k = g.add_node("mul", [u, 3.0])
    e = g.add_node("exp", [u])
    y = g.add_node("sum", [g.add_node("mul", [x, k])], {"dims": (0, 1), "keepdim": False})
    gx = _bw(g.add_node("mul", [_bw(g.add_node("mul", [gy, k])), e]))
    g.set_outputs([y, gx])
    ref = g.copy()
    cut = recompute_for_backward(g)
    assert cut.saved == [u.name]
    assert sum(1 for n in g.nodes if n.op == "rand_uniform") == 1
    ins = _inputs(g)
    for want, got in zip(interpret(ref, ins), interpret(g, ins)):
        np.testing.assert_array_equal(want, got)


def test_min_cut_prefers_the_cut_nearest_the_backward():
    # a chain of same-sized values: every cut costs the same; the one needing no
    # recomputation is taken
    g = Graph("step")
    x = g.add_input((16,), dt.float32, "x")
    w = g.add_input((16, 16), dt.float32, "w")
    h = g.add_node("matmul", [g.add_node("reshape", [x], {"shape": (1, 16)}), w])
    a = g.add_node("exp", [h])
    b = g.add_node("tanh", [a])
    fwd = [n for n in g.nodes]
    assert min_cut(fwd, [b], set()) == [b]
    assert min_cut(fwd, [a, b], set()) in ([h], [a])  # one value either way


def test_graph_without_backward_is_unchanged():
    g = Graph("fwd")
    x = g.add_input((4,), dt.float32, "x")
    g.set_outputs([g.add_node("exp", [x])])
    before = g.format()
    assert recompute_for_backward(g) is None
    assert g.format() == before


def _nx_sink_side(edges):
    import networkx as nx
    g = nx.DiGraph()
    for u, v, c in edges:
        if g.has_edge(u, v):
            if c is None or g[u][v].get("capacity") is None:
                g[u][v].pop("capacity", None)
            else:
                g[u][v]["capacity"] += c
        elif c is None:
            g.add_edge(u, v)
        else:
            g.add_edge(u, v, capacity=c)
    g.add_node(SOURCE)
    g.add_node(SINK)
    value, (_, near_sink) = nx.minimum_cut(g, SOURCE, SINK)
    return value, set(near_sink)


def _cut_value(edges, near):
    return sum(c for u, v, c in edges if u not in near and v in near)


def test_max_flow_matches_networkx_on_random_networks():
    # the hand-written max-flow gives networkx's minimum cut nearest the sink
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 30))
        edges = []
        for i in range(k):
            kind = rng.random()
            cap = (None if kind < 0.1 else 0 if kind < 0.15 else
                   int(rng.choice([4, 8, 64, 256, 1024])))
            edges.append((("in", i), ("out", i), cap))
            if cap is not None and rng.random() < 0.3:  # views are never pinned
                edges.append((SOURCE, ("in", i), None))
            for j in rng.choice(i, size=min(i, int(rng.integers(0, 3))), replace=False):
                edges.append((("out", int(j)), ("in", i), None))
        for i in rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False):
            edges.append((("out", int(i)), SINK, None))
        near = sink_side(edges)
        value, want = _nx_sink_side(edges)
        assert near == want
        assert _cut_value(edges, near) == value


def test_max_flow_matches_networkx_on_a_layer():
    g, _ = _mlp_layer()
    bw = {id(n) for n in g.nodes if n.meta.get("step_backward")}
    fwd = [n for n in g.nodes if id(n) not in bw]
    ids = {id(n.out) for n in fwd}
    needed = list({id(a): a for n in g.nodes if id(n) in bw for a in n.value_inputs
                   if id(a) in ids}.values())
    edges = cut_network(fwd, needed, {id(o) for o in g.outputs})
    assert sink_side(edges) == _nx_sink_side(edges)[1]
