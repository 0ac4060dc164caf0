"""ir.passes.rewrites: weight-gradient matmuls folded into one GEMM, sum_to_size as sums,
transposed matmul products computed in their readers' layout, split's gradient as a cat,
a copy (clone) before a reshape that no strides can view, an output copy of a fresh
intermediate dropped, a scan backward's packed gradient narrowed to the blocks it reads, a
cat of merging reshapes done before the reshape, an embedding table multiplied instead of
the rows looked up from it, attention's gradients written side by side by its backward
op.

Each rewritten graph is run by the reference interpreter and compared with NumPy."""
import numpy as np
import pytest

from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes.cleanup import dce
from ir.passes.rewrites import (attention_gradients_in_place, attention_output_in_place,
                                cat_before_reshape,
                                cat_slice_puts, copy_before_reshape,
                                decompose_sum_to_size, drop_output_clones,
                                fold_embedding_projections, fold_summed_matmul, masked_one_hot,
                                matmul_before_permute, narrow_scan_gradients, pool_before_relu,
                                transpose_matmul_products)

F32 = dt.float32
rng = np.random.default_rng(0)


def _run(g: Graph, *arrays):
    return [np.asarray(o) for o in interpret(g, list(arrays))]


def test_linear_weight_grad_becomes_one_2d_gemm():
    """sum_b x_b^T @ g_b (a Linear weight gradient on [B, T, K] activations) is one
    [K, B*T] @ [B*T, N] matmul of views, with no batched matmul left."""
    B, T, K, N = 3, 5, 4, 6
    g = Graph()
    x = g.add_input((B, T, K), F32)
    gy = g.add_input((B, T, N), F32)
    xt = g.add_node("permute", [x], {"dims": (0, 2, 1)})
    mm = g.add_node("matmul", [xt, gy])
    out = g.add_node("sum_to_size", [mm], {"shape": (K, N)})
    g.set_outputs([out])
    assert fold_summed_matmul(g) == 1
    mms = [n for n in g.nodes if n.op == "matmul"]
    assert len(mms) == 1 and mms[0].out.shape == (K, N)
    assert [a.shape for a in mms[0].inputs] == [(K, B * T), (B * T, N)]
    assert not any(n.op == "sum_to_size" for n in g.nodes)
    xa = rng.standard_normal((B, T, K)).astype(np.float32)
    ga = rng.standard_normal((B, T, N)).astype(np.float32)
    (got,) = _run(g, xa, ga)
    np.testing.assert_allclose(got, np.einsum("btk,btn->kn", xa, ga), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transposed_rhs", [False, True])
def test_not_folded_when_stacking_would_copy_an_operand(transposed_rhs):
    """A left operand that is not a transpose (stacking it is a transposing copy), or a
    transposed right one (a conv's weight gradient: g [N, Cout, L] times the transposed
    im2col columns): the batched GEMMs stay, and the result is right either way."""
    g = Graph()
    a = g.add_input((2, 3, 4, 5), F32)
    if transposed_rhs:
        bt = g.add_input((2, 3, 6, 5), F32)
        b = g.add_node("permute", [bt], {"dims": (0, 1, 3, 2)})
    else:
        b = g.add_input((2, 3, 5, 6), F32)
    mm = g.add_node("matmul", [a, b])
    out = g.add_node("sum_to_size", [mm], {"shape": (1, 4, 6)})
    g.set_outputs([out])
    assert fold_summed_matmul(g) == 0
    if transposed_rhs:
        return
    aa = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    ba = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    (got,) = _run(g, aa, ba)
    assert got.shape == (1, 4, 6)
    np.testing.assert_allclose(got[0], (aa @ ba).sum((0, 1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keep_batch", [True, False])
def test_not_folded_when_a_batch_dim_survives_or_the_matmul_is_reused(keep_batch):
    g = Graph()
    a = g.add_input((2, 4, 5), F32)
    b = g.add_input((2, 5, 6), F32)
    mm = g.add_node("matmul", [a, b])
    if keep_batch:
        out = g.add_node("sum_to_size", [mm], {"shape": (2, 1, 6)})
        g.set_outputs([out])
    else:
        out = g.add_node("sum_to_size", [mm], {"shape": (4, 6)})
        g.set_outputs([out, mm])
    assert fold_summed_matmul(g) == 0


@pytest.mark.parametrize("xshape,shape", [
    ((4, 5, 6), (6,)),          # bias gradient: leading dims dropped
    ((4, 5, 6), (4, 5, 1)),     # LayerNorm backward: a trailing dim kept as 1
    ((4, 5, 6), (1, 5, 1)),     # several, kept
    ((3, 4, 5, 6), (4, 1, 6)),  # leading dropped and one kept
    ((4, 5), (4, 5)),           # nothing summed
])
def test_sum_to_size_becomes_sum(xshape, shape):
    g = Graph()
    x = g.add_input(xshape, F32)
    out = g.add_node("sum_to_size", [x], {"shape": shape})
    g.set_outputs([out])
    assert decompose_sum_to_size(g) == 1
    assert not any(n.op == "sum_to_size" for n in g.nodes)
    xa = rng.standard_normal(xshape).astype(np.float32)
    (got,) = _run(g, xa)
    lead = len(xshape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and xshape[lead + i] != 1)
    want = xa.sum(axis=axes, keepdims=True).reshape(shape)
    assert got.shape == tuple(shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_integer_sum_to_size_is_left_alone():
    g = Graph()
    x = g.add_input((4, 5), dt.int32)
    g.set_outputs([g.add_node("sum_to_size", [x], {"shape": (5,)})])
    assert decompose_sum_to_size(g) == 0


@pytest.mark.parametrize("through_reshape", [False, True])
def test_transposed_product_is_computed_transposed(through_reshape):
    """(x^T g)^T (a Linear weight's gradient, read by the optimizer) becomes g^T x: the
    transpose of x cancels the permute it came from, and the product is contiguous."""
    B, K, N = 5, 7, 3
    g = Graph()
    x = g.add_input((B, K), F32)
    gy = g.add_input((B, N), F32)
    w = g.add_input((N, K), F32)
    mm = g.add_node("matmul", [g.add_node("permute", [x], {"dims": (1, 0)}), gy])
    if through_reshape:
        mm = g.add_node("reshape", [mm], {"shape": (K, N)})
    gw = g.add_node("permute", [mm], {"dims": (1, 0)})
    out = g.add_node("sub", [w, gw])
    g.set_outputs([out])
    assert transpose_matmul_products(g) == 1
    g.toposort()
    from ir.passes import simplify
    simplify(g)
    mms = [n for n in g.nodes if n.op == "matmul"]
    assert len(mms) == 1 and mms[0].out.shape == (N, K)
    assert mms[0].inputs[1] is x and mms[0].inputs[0].producer.op == "permute"
    assert out.producer.inputs[1] is mms[0].out
    xa = rng.standard_normal((B, K)).astype(np.float32)
    ga = rng.standard_normal((B, N)).astype(np.float32)
    wa = rng.standard_normal((N, K)).astype(np.float32)
    (got,) = _run(g, xa, ga, wa)
    np.testing.assert_allclose(got, wa - (xa.T @ ga).T, rtol=1e-5, atol=1e-5)


def test_transposed_product_left_alone_when_read_otherwise():
    """A product also read untransposed (or a graph output) keeps its layout."""
    g = Graph()
    a = g.add_input((4, 6), F32)
    b = g.add_input((6, 5), F32)
    mm = g.add_node("matmul", [a, b])
    t = g.add_node("permute", [mm], {"dims": (1, 0)})
    g.set_outputs([t, mm])
    assert transpose_matmul_products(g) == 0


def _split_grad_graph(ranges, base_value=0.0, dim=2, shape=(2, 3, 12)):
    """sum_i index_put(zeros, g_i, slice ranges[i] along dim): split's gradient."""
    g = Graph()
    gs = []
    for a, b in ranges:
        part = list(shape)
        part[dim] = b - a
        gs.append(g.add_input(tuple(part), F32))
    acc = None
    for (a, b), v in zip(ranges, gs):
        base = g.add_const(np.full(shape, base_value, np.float32))
        index = tuple(("s", None, None, None) if d != dim else ("s", a, b, None)
                      for d in range(len(shape)))
        put = g.add_node("index_put", [base, v], {"index": index, "accumulate": True})
        acc = put if acc is None else g.add_node("add", [acc, put])
    g.set_outputs([g.add_node("mul", [acc, 2.0])])
    return g, gs


def test_split_gradient_becomes_cat():
    ranges = [(8, 12), (0, 4), (4, 8)]   # any order of the pieces
    g, ins = _split_grad_graph(ranges)
    arrays = [rng.standard_normal(v.shape).astype(np.float32) for v in ins]
    (want,) = _run(g, *arrays)
    assert cat_slice_puts(g) == 1
    from ir.passes import simplify
    simplify(g)
    ops = [n.op for n in g.nodes]
    assert "index_put" not in ops and "add" not in ops and ops.count("cat") == 1
    cat = next(n for n in g.nodes if n.op == "cat")
    assert cat.inputs == [ins[1], ins[2], ins[0]] and cat.attrs["dim"] == 2
    (got,) = _run(g, *arrays)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("ranges,base", [([(0, 4), (4, 8)], 0.0),        # a gap: not a cat
                                         ([(0, 6), (4, 12)], 0.0),       # overlapping
                                         ([(0, 4), (4, 8), (8, 12)], 1.0)])  # base not zero
def test_slice_puts_left_alone_unless_they_tile_zeros(ranges, base):
    g, _ = _split_grad_graph(ranges, base)
    assert cat_slice_puts(g) == 0


@pytest.mark.parametrize("dims, shape, copies", [
    ((1, 0, 2), (4, 3 * 5), 1),       # a conv's output gradient (N, Cout, L) -> (Cout, N*L)
    ((1, 0, 2), (4, 3, 5), 0),        # same shape: a view
    ((0, 2, 1), (3, 20), 1),
    ((1, 0, 2), (4 * 3, 5), 1),
    ((0, 1, 2), (12, 5), 0),          # identity permute: still contiguous
])
def test_copy_before_reshape(dims, shape, copies):
    """reshape(permute(x)) gets a clone in between exactly when the reshape cannot be a
    view of the permuted strides; the values are unchanged."""
    g = Graph()
    a = g.add_input((3, 4, 5), F32)
    x = g.add_node("cumsum", [a], {"dim": 2})
    p = g.add_node("permute", [x], {"dims": dims})
    out = g.add_node("reshape", [p], {"shape": shape})
    g.set_outputs([out])
    arr = rng.standard_normal((3, 4, 5)).astype(np.float32)
    (want,) = _run(g, arr)
    assert copy_before_reshape(g) == copies
    assert sum(n.op == "clone" for n in g.nodes) == copies
    assert out.producer.inputs[0].producer.op == ("clone" if copies else "permute")
    (got,) = _run(g, arr)
    np.testing.assert_array_equal(got, want)


def test_copy_before_reshape_leaves_graph_inputs_alone():
    """An input's strides are not known when the graph is built: no copy is added."""
    g = Graph()
    a = g.add_input((3, 4, 5), F32)
    p = g.add_node("permute", [a], {"dims": (1, 0, 2)})
    g.set_outputs([g.add_node("reshape", [p], {"shape": (4, 15)})])
    assert copy_before_reshape(g) == 0


def test_elementwise_producer_writes_the_permuted_layout():
    """reshape(permute(where(m, g, 0))) (a convolution's ReLU gradient going to (Cout,
    N*L)): the where computes the permuted layout from permuted views of its operands,
    and no clone is added; a broadcast operand of the same rank is permuted too."""
    g = Graph()
    m = g.add_input((3, 4, 5), dt.bool_)
    gy = g.add_input((3, 4, 5), F32)
    b = g.add_input((1, 4, 1), F32)
    w = g.add_node("where", [m, gy, 0.0])
    x = g.add_node("mul", [w, b])
    p = g.add_node("permute", [x], {"dims": (1, 0, 2)})
    out = g.add_node("reshape", [p], {"shape": (4, 15)})
    g.set_outputs([out])
    arrs = (rng.standard_normal((3, 4, 5)) > 0, rng.standard_normal((3, 4, 5)).astype(np.float32),
            rng.standard_normal((1, 4, 1)).astype(np.float32))
    (want,) = _run(g, *arrs)
    assert copy_before_reshape(g) == 1
    assert not any(n.op == "clone" for n in g.nodes)
    mul = out.producer.inputs[0].producer
    assert mul.op == "mul" and mul.out.shape == (4, 3, 5)
    assert all(a.producer.op == "permute" for a in mul.value_inputs)
    (got,) = _run(g, *arrs)
    np.testing.assert_array_equal(got, want)


def test_elementwise_producer_with_other_readers_gets_a_copy():
    """An elementwise result also read elsewhere keeps its layout: the copy stays."""
    g = Graph()
    a = g.add_input((3, 4, 5), F32)
    x = g.add_node("exp", [a])
    p = g.add_node("permute", [x], {"dims": (1, 0, 2)})
    out = g.add_node("reshape", [p], {"shape": (4, 15)})
    g.set_outputs([out, x])
    assert copy_before_reshape(g) == 1
    assert sum(n.op == "clone" for n in g.nodes) == 1


def test_output_clone_of_a_fresh_intermediate_is_dropped():
    """clone(detach(x @ w)) as an output (a .grad a traced backward copied) is x @ w
    itself, so the matmul writes the output buffer; the later reader reads it too."""
    g = Graph()
    x, w, p = g.add_input((4, 3), F32), g.add_input((3, 5), F32), g.add_input((4, 5), F32)
    mm = g.add_node("matmul", [x, w])
    c = g.add_node("clone", [g.add_node("detach", [mm])])
    upd = g.add_node("sub", [p, mm])
    g.set_outputs([c, upd])
    arrs = [rng.standard_normal(s).astype(np.float32) for s in ((4, 3), (3, 5), (4, 5))]
    want = _run(g, *arrs)
    assert drop_output_clones(g) == 1
    dce(g)
    assert g.outputs[0] is mm and not any(n.op == "clone" for n in g.nodes)
    for a, b in zip(_run(g, *arrs), want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["input", "view", "twice", "also_output"])
def test_output_clone_kept_where_dropping_it_would_alias(case):
    """The copy stays for an input (the caller's tensor), a view, a value returned
    twice (two outputs, one buffer) and a value that is an output itself."""
    g = Graph()
    x = g.add_input((4, 3), F32)
    y = g.add_node("exp", [x])
    if case == "input":
        outs = [g.add_node("clone", [x])]
    elif case == "view":
        outs = [g.add_node("clone", [g.add_node("reshape", [y], {"shape": (3, 4)})])]
    elif case == "twice":
        outs = [g.add_node("clone", [y]), g.add_node("clone", [y])]
    else:
        outs = [y, g.add_node("clone", [y])]
    g.set_outputs(outs)
    dropped = drop_output_clones(g)
    assert dropped == (1 if case == "twice" else 0)
    ids = [id(o) for o in g.outputs]
    assert len(set(ids)) == len(ids)


def _scan_backward_graph(op: str, index: int, also_read: bool = False):
    """g -> select_block_backward(index) -> the scan backward of a packed forward."""
    T, B, H = 5, 3, 4
    blocks, w = (7, (4 * H, H)) if op == "lstm_scan_backward" else (5, (3 * H, H))
    g = Graph()
    gh = g.add_input((T, B, H), F32)
    fwd = g.add_input((blocks, T, B, H), F32)
    s0 = g.add_input((B, H), F32)
    whh = g.add_input(w, F32)
    wide = g.add_node("select_block_backward", [gh], {"shape": (blocks, T, B, H),
                                                      "index": index})
    back = g.add_node(op, [wide, fwd, s0, whh])
    g.set_outputs([back, wide] if also_read else [back])
    args = [rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs]
    if op == "lstm_scan_backward":  # gate activations in (0, 1) as the forward makes them
        args[1][2:6] = 1 / (1 + np.exp(-args[1][2:6]))
    return g, args


@pytest.mark.parametrize("op, index, narrowed", [
    ("lstm_scan_backward", 0, 2), ("lstm_scan_backward", 1, 2), ("lstm_scan_backward", 3, None),
    ("gru_scan_backward", 0, 1), ("gru_scan_backward", 1, None)])
def test_scan_backward_reads_only_the_gradient_blocks_it_needs(op, index, narrowed):
    g, args = _scan_backward_graph(op, index)
    want = _run(g, *args)
    assert narrow_scan_gradients(g) == (narrowed is not None)
    dce(g)
    sbb = [n for n in g.nodes if n.op == "select_block_backward"]
    assert len(sbb) == 1
    assert sbb[0].attrs["shape"][0] == (narrowed or sbb[0].attrs["shape"][0])
    for a, b in zip(_run(g, *args), want):
        np.testing.assert_array_equal(a, b)


def test_wide_scan_gradient_kept_where_something_else_reads_it():
    g, args = _scan_backward_graph("lstm_scan_backward", 0, also_read=True)
    want = _run(g, *args)
    assert narrow_scan_gradients(g) == 1
    dce(g)
    shapes = sorted(n.attrs["shape"][0] for n in g.nodes if n.op == "select_block_backward")
    assert shapes == [2, 7]
    for a, b in zip(_run(g, *args), want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["heads", "three_dims", "mixed_split", "not_a_merge"])
def test_cat_of_merging_reshapes_cats_first(case):
    """cat([reshape(permute(h_i))], dim=2) of attention head gradients (B, T, H, D) ->
    (B, T, H*D) becomes reshape(cat([permute(h_i)], dim=2)): the reshape copies go."""
    B, T, H, D = 2, 3, 4, 5
    g = Graph()
    outs = []
    for i in range(3):
        h = g.add_input((B, H, T, D) if case != "three_dims" else (B, H, T, D, 2), F32)
        p = g.add_node("permute", [h], {"dims": (0, 2, 1, 3) if case != "three_dims"
                                        else (0, 2, 1, 3, 4)})
        if case == "mixed_split" and i == 1:  # another split of the same width: H*D = 20
            shape = (B, T, H * D)
            p = g.add_node("reshape", [p], {"shape": (B, T, 2, 2 * D)})
        elif case == "not_a_merge" and i == 1:
            shape = (B, T * H, D)  # merges the wrong dims: no rewrite
        else:
            shape = (B, T, H * D * (2 if case == "three_dims" else 1))
        outs.append(g.add_node("reshape", [p], {"shape": shape}))
    if case == "not_a_merge":
        outs[1] = g.add_node("reshape", [outs[1]], {"shape": (B, T, H * D)})
    cat = g.add_node("cat", outs, {"dim": 2})
    g.set_outputs([cat])
    args = [rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs]
    want = _run(g, *args)
    got = cat_before_reshape(g)
    dce(g)
    assert got == (case in ("heads", "three_dims"))
    if got:
        (c,) = [n for n in g.nodes if n.op == "cat"]
        assert all(a.producer.op == "permute" for a in c.inputs)
        assert sum(1 for n in g.nodes if n.op == "reshape") == 1
    for a, b in zip(_run(g, *args), want):
        np.testing.assert_array_equal(a, b)


def _relu_pool_graph(shape, pool: dict, mask_from: str = "relu", extra: str | None = None):
    """relu -> max pool forward, and the ReLU gradient of the pool's scattered output
    gradient, as a whole training step's graph has them (``extra``: another reader of
    the ReLU output or of the indices, which must keep the graph as it is)."""
    g = Graph()
    x = g.add_input(shape, F32)
    r = g.add_node("relu", [x])
    idx = g.add_node("max_pool_indices", [r], dict(pool))
    p = g.add_node("pool_gather", [r, idx])
    gp = g.add_input(tuple(p.shape), F32)
    back = g.add_node("pool_scatter", [gp, idx], {"shape": tuple(shape)})
    mask = g.add_node("gt", [r if mask_from == "relu" else x, 0])
    gx = g.add_node("where", [mask, back, 0.0])
    outs = [p, gx]
    if extra == "relu":
        outs.append(g.add_node("mul", [r, 2.0]))
    elif extra == "indices":
        outs.append(g.add_node("pool_scatter", [gp, idx], {"shape": tuple(shape)}))
    g.set_outputs(outs)
    return g, x, gp


POOL_2 = dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1), ceil_mode=False)
POOL_3 = dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), ceil_mode=True)


@pytest.mark.parametrize("pool", [POOL_2, POOL_3], ids=["2x2", "3x3-overlapping-padded"])
@pytest.mark.parametrize("mask_from", ["relu", "input"])
def test_max_pool_moves_before_relu_with_the_same_values_and_gradients(pool, mask_from):
    """Windows all negative, all zero, tied, mixed, with NaN: the rewritten graph gives
    the same pooled values and input gradient bit for bit, and the ReLU and its mask run
    on the pooled shape."""
    shape = (2, 3, 7, 8)
    g, x, gp = _relu_pool_graph(shape, pool, mask_from)
    xa = rng.standard_normal(shape).astype(np.float32)
    xa[0, 0] = -np.abs(xa[0, 0])  # every window negative
    xa[0, 1] = 0.0  # every window zero
    xa[0, 2, :4, :4] = 0.5  # ties
    xa[1, 0, 2, 3] = np.nan
    ga = rng.standard_normal(tuple(gp.shape)).astype(np.float32)
    want = _run(g, xa, ga)
    assert pool_before_relu(g) == 1
    dce(g)
    relus = [n for n in g.nodes if n.op == "relu"]
    assert len(relus) == 1 and relus[0].out.shape == tuple(gp.shape)
    assert all(n.out.shape == tuple(gp.shape) for n in g.nodes if n.op in ("gt", "where"))
    assert [n.inputs[0] for n in g.nodes if n.op == "max_pool_indices"] == [x]
    for got, ref in zip(_run(g, xa, ga), want):
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("extra", ["relu", "indices"])
def test_relu_pool_left_alone_when_read_otherwise(extra):
    g, _, _ = _relu_pool_graph((2, 3, 6, 6), POOL_2, extra=extra)
    before = [n.op for n in g.nodes]
    assert pool_before_relu(g) == 0
    assert [n.op for n in g.nodes] == before


def _nll_graph(n: int, c: int, ignore: int | None = -100, checked: bool = True):
    """nll_loss's pieces as a training step has them: range-checked targets (ignored ones
    sent to class 0), the target log-probability gathered, and the gradient scattered
    into zeros."""
    g = Graph()
    logp = g.add_input((n, c), F32)
    t = g.add_input((n,), dt.int64)
    src = g.add_input((n, 1), F32)
    if checked:
        t = g.add_node("check", [t], {"kind": "range", "low": 0, "high": c - 1,
                                      "ignore": ignore, "error": "IndexError",
                                      "message": "bad {bad}"})
    if ignore is not None:
        t = g.add_node("where", [g.add_node("eq", [t, ignore]), 0, t])
    idx = g.add_node("reshape", [t], {"shape": (n, 1)})
    picked = g.add_node("gather", [logp, idx], {"dim": 1})
    zeros = g.add_node("zeros_like", [logp])
    grad = g.add_node("scatter", [zeros, idx, src], {"dim": 1, "reduce": "add"})
    g.set_outputs([picked, grad])
    return g


@pytest.mark.parametrize("ignore", [-100, None])
def test_loss_gather_and_scatter_become_masked_rows(ignore):
    """Same bits as the gather and scatter-add: NaN and infinities elsewhere in a row do
    not leak, -0.0 scattered lands as +0.0, ignored targets read class 0."""
    n, c = 9, 7
    g = _nll_graph(n, c, ignore)
    logp = rng.standard_normal((n, c)).astype(np.float32)
    logp[1, 3], logp[2, 0], logp[4, 5] = np.nan, np.inf, -np.inf
    t = rng.integers(0, c, n)
    if ignore is not None:
        t[3] = ignore
    src = rng.standard_normal((n, 1)).astype(np.float32)
    src[5, 0] = -0.0
    want = _run(g, logp, t, src)
    assert masked_one_hot(g) == 2
    dce(g)
    assert not any(nd.op in ("gather", "scatter") for nd in g.nodes)
    got = _run(g, logp, t, src)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.signbit(a), np.signbit(b))


def test_unchecked_indices_keep_gather_and_scatter():
    """Indices not known to be in range (a user's gather): an out-of-range one must still
    raise, so the library ops stay."""
    g = _nll_graph(4, 5, ignore=None, checked=False)
    assert masked_one_hot(g) == 0
    assert {"gather", "scatter"} <= {nd.op for nd in g.nodes}


def _lookup_graph(V, B, T, D, M, back_dims=(1, 0, 2)):
    """A batch_first lookup E[idx] (B, T, D) made time-major, its projection r @ W, the
    projection's weight gradient G^T r and the table's gradient through it (the views
    from G @ W^T back to (B, T, D) undo the forward's with ``back_dims``)."""
    g = Graph()
    E = g.add_input((V, D), F32)
    idx = g.add_input((B, T), dt.int64)
    W = g.add_input((D, M), F32)
    G = g.add_input((T * B, M), F32)
    emb = g.add_node("embedding", [E, idx], {"padding_idx": None})
    r = g.add_node("reshape", [g.add_node("permute", [emb], {"dims": (1, 0, 2)})],
                   {"shape": (T * B, D)})
    fwd = g.add_node("matmul", [r, W])
    gw = g.add_node("matmul", [g.add_node("permute", [G], {"dims": (1, 0)}), r])
    gr = g.add_node("matmul", [G, g.add_node("permute", [W], {"dims": (1, 0)})])
    ge = g.add_node("permute", [g.add_node("reshape", [gr], {"shape": (T, B, D)})],
                    {"dims": back_dims})
    ge_shape = tuple(ge.shape)
    if ge_shape != (B, T, D):
        ge = g.add_node("reshape", [ge], {"shape": (B, T, D)})
    ge_table = g.add_node("embedding_backward", [ge, idx], {"num_weights": V,
                                                            "padding_idx": None})
    g.set_outputs([fwd, gw, ge_table])
    return g


def _lookup_arrays(V, B, T, D, M):
    return [rng.standard_normal((V, D)).astype(np.float32), rng.integers(0, V, (B, T)),
            rng.standard_normal((D, M)).astype(np.float32),
            rng.standard_normal((T * B, M)).astype(np.float32)]


def test_embedding_projection_runs_on_the_table():
    """r @ W, G^T r and the table gradient through W: no product of the T*B rows left,
    a lookup of the table's product and one scatter-add (shared) instead; same values."""
    V, B, T, D, M = 5, 4, 6, 3, 7
    g = _lookup_graph(V, B, T, D, M)
    arrays = _lookup_arrays(V, B, T, D, M)
    want = _run(g, *arrays)
    assert fold_embedding_projections(g) == 3
    mms = [n for n in g.nodes if n.op == "matmul"]
    assert all(V in (a.shape[0] for a in n.inputs) or n.out.shape[0] == V or
               n.inputs[1].shape[0] == V for n in mms), [n.out.shape for n in mms]
    assert not any(n.op == "matmul" and n.inputs[0].shape[0] == T * B for n in g.nodes)
    got = _run(g, *arrays)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_embedding_projection_left_alone_for_a_large_table():
    """A table of at least as many rows as tokens: multiplying it would cost more."""
    g = _lookup_graph(24, 4, 6, 3, 7)
    assert fold_embedding_projections(g) == 0


def test_table_gradient_through_mismatched_views_is_left_alone():
    """Views that do not put each token back where the lookup took it (here the
    gradient's batch and time axes come back swapped, as a (T, B) reshape read as
    (B, T)): the table gradient keeps its own product; the rest still folds."""
    V, B, T, D, M = 5, 4, 6, 3, 7
    g = _lookup_graph(V, B, T, D, M, back_dims=(0, 1, 2))
    arrays = _lookup_arrays(V, B, T, D, M)
    want = _run(g, *arrays)
    assert fold_embedding_projections(g) == 2
    got = _run(g, *arrays)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_table_gradient_through_a_feature_reshape_is_left_alone():
    """A view between the product and the table gradient that regroups the feature axis
    (a (2N, D/2) product read as (B, T, D)) does not keep tokens whole: the table
    gradient keeps its own product, and the values stay right."""
    V, B, T, D, M = 5, 4, 6, 4, 7
    g = Graph()
    E = g.add_input((V, D), F32)
    idx = g.add_input((B, T), dt.int64)
    W = g.add_input((M, D // 2), F32)
    G = g.add_input((2 * B * T, M), F32)
    g.add_node("embedding", [E, idx], {"padding_idx": None})
    ge = g.add_node("reshape", [g.add_node("matmul", [G, W])], {"shape": (B, T, D)})
    table = g.add_node("embedding_backward", [ge, idx], {"num_weights": V, "padding_idx": None})
    g.set_outputs([table])
    arrays = [rng.standard_normal((V, D)).astype(np.float32), rng.integers(0, V, (B, T)),
              rng.standard_normal((M, D // 2)).astype(np.float32),
              rng.standard_normal((2 * B * T, M)).astype(np.float32)]
    want = _run(g, *arrays)
    assert fold_embedding_projections(g) == 0
    np.testing.assert_allclose(_run(g, *arrays)[0], want[0], rtol=1e-6)


def _attention_gradient_cat(reader: bool):
    """sdpa_backward's [dq, dk, dv], each (B, H, T, D) -> (B, T, H, D), side by side along
    the head axis (a fused q/k/v projection's gradient); ``reader``: R read elsewhere too."""
    B, H, T, D = 2, 3, 5, 4
    g = Graph()
    ins = [g.add_input((B, H, T, D), F32) for _ in range(4)]
    R = g.add_node("sdpa_backward", ins, {"scale": 0.5, "causal": True})
    parts = [g.add_node("permute", [g.add_node("select_block", [R], {"index": i})],
                        {"dims": (0, 2, 1, 3)}) for i in range(3)]
    cat = g.add_node("cat", parts, {"dim": 2})
    g.set_outputs([cat, R] if reader else [cat])
    arrays = [rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(4)]
    return g, arrays


def test_attention_gradients_are_written_where_the_cat_puts_them():
    g, arrays = _attention_gradient_cat(reader=False)
    want = _run(g, *arrays)
    assert attention_gradients_in_place(g) == 1
    assert [n.op for n in g.nodes] == ["sdpa_backward"]
    assert g.nodes[0].attrs["perm"] == (0, 2, 1, 3) and g.nodes[0].attrs["cat_dim"] == 2
    np.testing.assert_allclose(_run(g, *arrays)[0], want[0], rtol=1e-6)


def test_attention_gradient_read_elsewhere_keeps_its_cat():
    g, arrays = _attention_gradient_cat(reader=True)
    assert attention_gradients_in_place(g) == 0
    assert any(n.op == "cat" for n in g.nodes)


def _attention_output_copy(reader: bool):
    """sdpa's (B, H, T, D) output permuted to (B, T, H, D) and copied (for the reshape
    merging the heads); ``reader``: the attention read elsewhere too."""
    B, H, T, D = 2, 3, 5, 4
    g = Graph()
    ins = [g.add_input((B, H, T, D), F32) for _ in range(3)]
    a = g.add_node("sdpa", ins, {"scale": 0.5, "causal": True})
    c = g.add_node("clone", [g.add_node("permute", [a], {"dims": (0, 2, 1, 3)})])
    g.set_outputs([g.add_node("reshape", [c], {"shape": (B, T, H * D)})]
                  + ([a] if reader else []))
    arrays = [rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(3)]
    return g, arrays


def test_attention_output_is_written_in_its_readers_layout():
    g, arrays = _attention_output_copy(reader=False)
    want = _run(g, *arrays)
    assert attention_output_in_place(g) == 1
    assert [n.op for n in g.nodes] == ["sdpa", "reshape"]
    assert g.nodes[0].attrs["perm"] == (0, 2, 1, 3) and g.nodes[0].out.shape == (2, 5, 3, 4)
    np.testing.assert_allclose(_run(g, *arrays)[0], want[0], rtol=1e-6)


def test_attention_output_read_elsewhere_keeps_its_copy():
    g, arrays = _attention_output_copy(reader=True)
    assert attention_output_in_place(g) == 0
    assert any(n.op == "clone" for n in g.nodes)


@pytest.mark.parametrize("dims, rewritten", [((1, 0, 2), True), ((0, 1, 2), False)])
def test_matmul_of_permuted_rows_multiplies_the_rows_first(dims, rewritten):
    """permute(h) @ w (a batch_first LSTM's time-major output into its decoder) becomes
    permute(h @ w) where the permuted rows are no view: equal values, and the permute
    left only for the other reader; a permute that is a view already stays."""
    g = Graph()
    a = g.add_input((6, 4, 8), F32)
    w = g.add_input((8, 5), F32)
    h = g.add_node("tanh", [a])
    p = g.add_node("permute", [h], {"dims": dims})
    y = g.add_node("matmul", [p, w])
    out = g.add_node("relu", [y])
    other = g.add_node("sum", [p], {"dims": (0,), "keepdim": False})
    g.set_outputs([out, other])
    arrs = (rng.standard_normal((6, 4, 8)).astype(np.float32),
            rng.standard_normal((8, 5)).astype(np.float32))
    want = _run(g, *arrs)
    assert matmul_before_permute(g) == int(rewritten)
    (mm,) = [n for n in g.nodes if n.op == "matmul"]
    assert (mm.inputs[0] is h) == rewritten
    if rewritten:
        assert out.producer.inputs[0].producer.op == "permute"
    got = _run(g, *arrs)
    for a_, b_ in zip(got, want):
        np.testing.assert_allclose(a_, b_, rtol=1e-6, atol=1e-6)


def test_matmul_of_permuted_graph_input_is_left_alone():
    """An input's strides are not known when the graph is built: its rows may be a view."""
    g = Graph()
    a = g.add_input((6, 4, 8), F32)
    w = g.add_input((8, 5), F32)
    p = g.add_node("permute", [a], {"dims": (1, 0, 2)})
    g.set_outputs([g.add_node("relu", [g.add_node("matmul", [p, w])])])
    assert matmul_before_permute(g) == 0
