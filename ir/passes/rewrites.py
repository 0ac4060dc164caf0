"""Graph rewrites that put work in a form the back end runs well.

- ``fold_summed_matmul``: ``sum_to_size(A @ B)`` summing away every batch dim of a
  batched matmul (a Linear layer's weight gradient on ``[B, T, K]`` activations:
  ``sum_b x_b^T @ g_b``) becomes one 2-D GEMM over the stacked rows,
  ``x.reshape(B*T, K)^T @ g.reshape(B*T, N)``: one BLAS call with a long inner dim
  instead of B small ones and a B-times larger intermediate summed afterwards.
- ``transpose_matmul_products``: ``permute(A @ B, (1, 0))`` of a 2-D matmul read only
  through that transpose becomes ``B^T @ A^T`` (views, or the permutes the operands came
  from undone): a Linear weight's gradient ``(x^T g)^T`` is computed in the weight's own
  layout, so the optimizer kernel reading it streams a contiguous array instead of a
  strided transpose (the MNIST CNN's fc1 update: a 128 x 9216 transposed read).
- ``cat_slice_puts``: a sum of ``index_put``s of values into disjoint slices along one
  dim of an all-zero constant, covering it (the gradient of ``split``/``chunk``: a
  fused attention projection's ``q, k, v = qkv.split(d, dim=2)``), becomes ``cat`` of
  the values: one copy instead of zero-filled copies, strided adds and a sum.
- ``matmul_before_permute``: ``permute(h) @ W`` that keeps the last axis in place, ``h``
  a fresh (contiguous) value whose permuted rows do not collapse by a view (a
  batch_first LSTM's time-major output into its decoder) becomes ``permute(h @ W)``:
  one GEMM over h's own rows, and the permuted view of its result goes to the readers
  (the decoder's bias add reads it strided), where the matmul step copied h's 1 MB of
  rows into a buffer first.
- ``copy_before_reshape``: ``reshape(permute(x))`` that no strides can view (a
  convolution's output gradient (N, Cout, L) -> (Cout, N*L) for its batch-wide GEMMs)
  becomes ``reshape(clone(permute(x)))``: the copy NumPy would make anyway, unplanned, at
  each call is a kernel writing a planned buffer, and the reshape a view of it. Where
  ``x`` is an elementwise op's result read only there (a ReLU gradient), the op itself
  computes the permuted layout instead (its operands permuted views), and no copy runs.
- ``attention_output_in_place``: that copy of attention's output (its heads side by
  side again, for the output projection) is written by the ``sdpa`` op itself, given
  the permutation (attribute ``perm``); ``attention_gradients_in_place`` does the same
  for the gradients' concatenation.
- ``drop_output_clones``: an output that is ``clone`` of an intermediate nothing else
  returns (a ``.grad`` a traced backward copied, as eager's ``AccumulateGrad`` does) is
  the intermediate itself: its producer writes the output buffer directly instead of
  an arena buffer copied at the end (a training step held every weight gradient twice).
- ``decompose_sum_to_size``: ``sum_to_size`` over float dims becomes ``sum`` over those
  dims (plus a reshape), which the fuser runs as a rows reduction fused with its
  producers (bias gradients, LayerNorm backward) instead of a NumPy call.
- ``cat_before_reshape``: ``cat`` of values that are each a ``reshape`` merging dims of
  another value into the cat dim (attention's head gradients, (B, T, H, D) ->
  (B, T, H*D), each a copy since they are permuted) becomes ``reshape(cat(...))`` of
  the unmerged values: the cat reads the permuted views itself and its contiguous
  result reshapes as a view, so the three copies before it go.
- ``narrow_scan_gradients``: a recurrent scan's backward reads only the leading blocks
  of its packed output's gradient (LSTM: h and c of its 7; GRU: h of its 5), so a
  ``select_block_backward`` feeding it builds just those blocks: the LSTM LM's zero
  (7, T, B, H) gradient (7.3 MB filled per step to carry one 1 MB block) shrinks to 2.
- ``pool_before_relu``: ``max_pool(relu(x))`` becomes ``relu(max_pool(x))`` and its
  gradient ``relu'(x) * scatter(g)`` becomes ``scatter(relu'(pooled) * g)``: the ReLU,
  its mask and the mask's gradient product run on the pooled values (a quarter of the
  elements for a 2x2 pool) instead of the convolution's whole output. The values and
  gradients are the same: ReLU is monotone, so the window's maximum is the same element
  wherever it is positive, and where it is not, both forms give zero.
- ``masked_one_hot``: a ``gather`` of one index per row along a short dim (a loss
  picking each row's target log-probability), or a ``scatter`` of one value per row
  into zeros (its gradient), whose indices are range-checked targets, becomes a
  comparison with the dim's positions, ``where`` and (for the gather) a ``sum``:
  elementwise work the fuser puts in the log-softmax kernels instead of two library
  steps (which took 0.1-0.2 ms each in a plan, their NumPy code cold after the
  kernels before them). The values are the same: the sum adds zeros to the one value,
  and the scatter's ``0 + v`` is kept as such.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, Value
from ..shapes import contiguous_strides, view_strides


def _summed_axes(x_shape: tuple, shape: tuple) -> tuple[tuple[int, ...], bool] | None:
    """The axes ``sum_to_size(x, shape)`` sums, and whether the result is those axes
    dropped (True: only leading axes) or kept as size 1 (False); None if not a valid
    broadcast (left to the op, which raises)."""
    lead = len(x_shape) - len(shape)
    if lead < 0:
        return None
    axes = list(range(lead))
    for i, s in enumerate(shape):
        xs = x_shape[lead + i]
        if s == xs:
            continue
        if s != 1:
            return None
        axes.append(lead + i)
    return tuple(axes), all(a < lead for a in axes)


def decompose_sum_to_size(graph: Graph) -> int:
    """``sum_to_size`` on float values -> ``sum`` (+ ``reshape``); returns rewrites."""
    count = 0
    for n in list(graph.nodes):
        if n.op != "sum_to_size":
            continue
        x = n.inputs[0]
        if not isinstance(x, Value) or x.dtype.name not in ("float32", "float64") or \
                x.numel == 0:
            continue
        shape = tuple(n.attrs["shape"])
        got = _summed_axes(tuple(x.shape), shape)
        if got is None:
            continue
        axes, drop = got
        idx = graph.nodes.index(n)
        if not axes:
            out = graph.add_node("reshape", [x], {"shape": shape}, index=idx)
        else:
            out = graph.add_node("sum", [x], {"dims": axes, "keepdim": not drop}, index=idx)
            if tuple(out.shape) != shape:
                out = graph.add_node("reshape", [out], {"shape": shape}, index=idx + 1)
        if out.dtype is not n.out.dtype:
            continue  # not expected for floats; leave the node as it was
        graph.replace_all_uses(n.out, out)
        graph.remove_node(n)
        count += 1
    return count


def _same_type(new: Value, old: Value, what: str) -> None:
    """A rewrite's replacement must have the shape and dtype of the value it replaces."""
    if tuple(new.shape) != tuple(old.shape) or new.dtype is not old.dtype:
        raise AssertionError(f"{what}: shape or dtype changed")


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _swaps_last_two(n: Node | None) -> bool:
    if n is None or n.op != "permute":
        return False
    d = tuple(n.attrs["dims"])
    k = len(d)
    return k >= 2 and d == tuple(range(k - 2)) + (k - 1, k - 2)


def fold_summed_matmul(graph: Graph) -> int:
    """``sum_to_size(matmul(A, B), (M, N))`` with A ``[*batch, M, K]`` and B
    ``[*batch, K, N]`` (same batch shape, every batch dim summed) -> one 2-D matmul of
    the stacked operands. Returns rewrites."""
    count = 0
    for n in list(graph.nodes):
        if n.op != "sum_to_size":
            continue
        mm = n.inputs[0]
        if not isinstance(mm, Value) or mm.producer is None or mm.producer.op != "matmul":
            continue
        if len(mm.users) != 1 or any(o is mm for o in graph.outputs):
            continue
        a, b = mm.producer.inputs
        if not (isinstance(a, Value) and isinstance(b, Value)) or a.ndim < 3 or \
                a.ndim != b.ndim or tuple(a.shape[:-2]) != tuple(b.shape[:-2]):
            continue
        if a.dtype.name not in ("float32", "float64") or b.dtype is not a.dtype:
            continue
        batch = tuple(a.shape[:-2])
        M, K = a.shape[-2:]
        N = b.shape[-1]
        shape = tuple(n.attrs["shape"])
        if shape[-2:] != (M, N) or any(s != 1 for s in shape[:-2]) or len(shape) > mm.ndim:
            continue  # some batch dim is kept, or M / N is summed too
        Bt = _prod(batch)
        idx = graph.nodes.index(n)
        pos = [idx]

        def add(op, ins, attrs, pos=pos):
            v = graph.add_node(op, ins, attrs, index=pos[0])
            pos[0] += 1
            return v
        src = a.producer
        lhs_view = _swaps_last_two(src) and isinstance(src.inputs[0], Value)
        if not (lhs_view or Bt == 1) or (b.producer is not None and
                                          b.producer.op in ("permute", "expand", "getitem")):
            # stacking would copy an operand (e.g. a conv's weight gradient: g [N, Cout, L]
            # and the transposed im2col columns): the batched GEMMs and a small sum of
            # [*batch, M, N] cost less than those copies
            continue
        if lhs_view:
            # A = X^T per batch entry, X [*batch, K, M]: stacked X is [Bt*K, M]
            lhs = add("permute", [add("reshape", [src.inputs[0]], {"shape": (Bt * K, M)})],
                      {"dims": (1, 0)})
        else:
            a3 = add("reshape", [a], {"shape": (Bt, M, K)})
            lhs = add("reshape", [add("permute", [a3], {"dims": (1, 0, 2)})],
                      {"shape": (M, Bt * K)})
        rhs = add("reshape", [b], {"shape": (Bt * K, N)})
        out = add("matmul", [lhs, rhs], {})
        if tuple(out.shape) != shape:
            out = add("reshape", [out], {"shape": shape})
        graph.replace_all_uses(n.out, out)
        graph.remove_node(n)
        graph.remove_node(mm.producer)
        count += 1
    return count


def _transpose_2d(n: Node | None) -> bool:
    return n is not None and n.op == "permute" and tuple(n.attrs["dims"]) == (1, 0)


def transpose_matmul_products(graph: Graph) -> int:
    """``permute(A @ B, (1, 0))`` (possibly through a same-shape reshape) of a 2-D matmul
    whose product is read by nothing else -> ``B^T @ A^T``, each operand's transpose
    being the value a 2-D ``permute`` made it from, or a new ``permute`` (a view: BLAS
    takes it as a transposed operand). The product is the same numbers; the readers get
    them contiguous. Returns rewrites."""
    outputs = {id(o) for o in graph.outputs}
    count = 0
    for n in list(graph.nodes):
        if not _transpose_2d(n) or not isinstance(n.inputs[0], Value):
            continue
        v = n.inputs[0]
        chain = [n]
        p = v.producer
        if p is not None and p.op == "reshape" and isinstance(p.inputs[0], Value) and \
                tuple(p.inputs[0].shape) == tuple(v.shape):
            if len(v.users) != 1 or id(v) in outputs:
                continue
            chain.append(p)
            v = p.inputs[0]
            p = v.producer
        if p is None or p.op != "matmul" or len(v.users) != 1 or id(v) in outputs:
            continue
        a, b = p.inputs
        if not (isinstance(a, Value) and isinstance(b, Value)) or a.ndim != 2 or \
                b.ndim != 2 or a.dtype is not b.dtype:
            continue
        pos = [graph.nodes.index(n)]

        def t(x, pos=pos):
            if _transpose_2d(x.producer) and isinstance(x.producer.inputs[0], Value):
                return x.producer.inputs[0]
            r = graph.add_node("permute", [x], {"dims": (1, 0)}, index=pos[0])
            pos[0] += 1
            return r
        out = graph.add_node("matmul", [t(b), t(a)], {}, index=pos[0])
        _same_type(out, n.out, "transpose_matmul_products")
        graph.replace_all_uses(n.out, out)
        for m in chain + [p]:
            graph.remove_node(m)
        count += 1
    return count


_VIEWS = ("reshape", "permute", "expand", "getitem")  # fusion.VIEW_OPS


def matmul_before_permute(graph: Graph) -> int:
    """``matmul(permute(h, dims), W)`` with ``W`` 2-D, ``dims`` keeping the last axis last,
    ``h`` made by a non-view op (contiguous in its buffer) and the permuted rows not
    collapsing by a view -> ``permute(matmul(h, W), dims)``. Each output row is the same
    dot products in the same order, now at its row of h. Returns rewrites."""
    outputs = {id(o) for o in graph.outputs}
    count = 0
    for n in list(graph.nodes):
        if n.op != "matmul" or id(n.out) in outputs:
            continue
        x, w = n.inputs
        if not (isinstance(x, Value) and isinstance(w, Value)) or x.ndim < 3 or w.ndim != 2:
            continue
        p = x.producer
        if p is None or p.op != "permute" or not isinstance(p.inputs[0], Value):
            continue
        dims = tuple(p.attrs["dims"])
        h = p.inputs[0]
        if dims[-1] != x.ndim - 1 or h.producer is None or h.producer.op in _VIEWS or \
                not h.numel or h.dtype is not x.dtype:
            continue
        base = contiguous_strides(tuple(h.shape))
        strides = tuple(base[d] for d in dims)
        rows = (_prod(x.shape[:-1]), x.shape[-1])
        if view_strides(tuple(x.shape), strides, rows) is not None:
            continue  # the permuted rows are a view already: one GEMM as it is
        at = graph.nodes.index(n)
        prod = graph.add_node("matmul", [h, w], {}, index=at)
        out = graph.add_node("permute", [prod], {"dims": dims}, index=at + 1)
        _same_type(out, n.out, "matmul_before_permute")
        graph.replace_all_uses(n.out, out)
        graph.remove_node(n)
        if not p.out.users and id(p.out) not in outputs:
            graph.remove_node(p)
        count += 1
    return count


def copy_before_reshape(graph: Graph) -> int:
    """``reshape(permute(x))``, ``x`` made by a non-view op (so contiguous in its planned
    buffer), whose new shape is no view of the permuted strides -> ``reshape(clone(
    permute(x)))``. Returns rewrites."""
    count = 0
    for n in list(graph.nodes):
        if n.op != "reshape" or not isinstance(n.inputs[0], Value):
            continue
        v = n.inputs[0]
        p = v.producer
        if p is None or p.op != "permute" or not isinstance(p.inputs[0], Value):
            continue
        x = p.inputs[0]
        if x.producer is None or x.producer.op in _VIEWS or not x.numel:
            continue
        base = contiguous_strides(tuple(x.shape))
        strides = tuple(base[d] for d in p.attrs["dims"])
        if view_strides(tuple(v.shape), strides, tuple(n.out.shape)) is not None:
            continue
        count += 1
        if _permuted_elementwise(graph, p, v) is not None:
            continue  # every reader of the permuted value now reads e's own result
        c = graph.add_node("clone", [v], {}, index=graph.nodes.index(n))
        graph.replace_input(n, 0, c)  # reshape's one value operand
    return count


def _permuted_elementwise(graph: Graph, p: Node, v: Value) -> Value | None:
    """``permute(e(a, b, ...))`` with ``e`` elementwise and read only through ``p`` ->
    ``e(permute(a), permute(b), ...)``: ``e`` writes the permuted layout itself (its
    kernel reads its operands through strided views), so no copy pass follows it (a
    convolution's ReLU gradient going to (Cout, N*L): one kernel instead of two). None
    (nothing changed) when ``e`` is not such an op or an operand is not of ``e``'s rank."""
    x = p.inputs[0]
    e = x.producer
    if e is None or not e.opdef.is_elementwise or x.users != [p] or \
            any(o is x for o in graph.outputs) or any(o is v for o in graph.outputs):
        return None
    if any(isinstance(a, Value) and a.ndim != x.ndim for a in e.inputs):
        return None
    dims = p.attrs["dims"]
    at = graph.nodes.index(e) + 1
    args = []
    for a in e.inputs:
        if isinstance(a, Value):
            a = graph.add_node("permute", [a], {"dims": dims}, index=at)
            at += 1
        args.append(a)
    out = graph.add_node(e.op, args, e.attrs, dtype=x.dtype, index=at)
    graph.replace_all_uses(v, out)
    graph.remove_node(p)
    graph.remove_node(e)
    return out


def _slice_put(v: Value, outputs: set) -> tuple | None:
    """``(dim, start, stop, values)`` when ``v`` is ``index_put`` of ``values`` (same
    shape as the slice, same dtype) into one slice ``[start, stop)`` along ``dim`` (every
    other dim whole) of an all-zero constant, read once; else None."""
    n = v.producer
    if n is None or n.op != "index_put" or len(n.inputs) != 2 or len(v.users) != 1 or \
            id(v) in outputs:
        return None
    base, vals = n.inputs
    if not (isinstance(base, Value) and isinstance(vals, Value)) or base.kind != "const" \
            or base.data is None or vals.dtype is not base.dtype:
        return None
    index = n.attrs["index"]
    if len(index) != base.ndim or any(it[0] != "s" for it in index):
        return None
    dim = lo = hi = None
    for d, (_, a, b, step) in enumerate(index):
        size = base.shape[d]
        a = 0 if a is None else a
        b = size if b is None else b
        if step not in (None, 1) or not 0 <= a < b <= size:
            return None
        if (a, b) == (0, size):
            continue
        if dim is not None:
            return None
        dim, lo, hi = d, a, b
    want = tuple(base.shape[:dim or 0]) + ((hi - lo,) if dim is not None else ()) + \
        tuple(base.shape[(dim or 0) + 1:])
    if dim is None or tuple(vals.shape) != want or np.any(base.data):
        return None
    return dim, lo, hi, vals


def cat_slice_puts(graph: Graph) -> int:
    """A tree of ``add``s whose leaves are ``index_put``s of values into disjoint slices
    along one dim of all-zero constants, together covering that dim (``split``'s
    gradient), -> ``cat`` of the values in slice order. Returns rewrites."""
    outputs = {id(o) for o in graph.outputs}
    done: set[int] = set()
    count = 0
    for n in list(reversed(graph.nodes)):
        if n.op != "add" or id(n) in done or n.attrs:
            continue
        leaves: list[Value] = []
        adds: list[Node] = []
        stack = [n.out]
        while stack:
            v = stack.pop()
            p = v.producer
            if p is not None and p.op == "add" and not p.attrs and \
                    (p is n or (len(v.users) == 1 and id(v) not in outputs)) and \
                    all(isinstance(a, Value) for a in p.inputs):
                adds.append(p)
                stack += list(p.inputs)
            else:
                leaves.append(v)
        if len(leaves) < 2 or any(tuple(v.shape) != tuple(n.out.shape) or
                                  v.dtype is not n.out.dtype for v in leaves):
            continue
        puts = [_slice_put(v, outputs) for v in leaves]
        if any(p is None for p in puts) or len({p[0] for p in puts}) != 1:
            continue
        puts.sort(key=lambda p: p[1])
        dim = puts[0][0]
        if puts[0][1] != 0 or puts[-1][2] != n.out.shape[dim] or \
                any(a[2] != b[1] for a, b in zip(puts, puts[1:])):
            continue
        out = graph.add_node("cat", [p[3] for p in puts], {"dim": dim},
                             index=graph.nodes.index(n))
        _same_type(out, n.out, "cat_slice_puts")
        graph.replace_all_uses(n.out, out)
        done.update(id(a) for a in adds)
        count += 1  # the adds and index_puts are left to dead-code elimination
    return count


# producers whose result is always a new buffer (never a view or an operand returned as
# is), so handing it out as an output cannot alias anything the caller holds
_FRESH_CATEGORIES = ("unary", "binary", "ternary", "reduction")
_NOT_FRESH = ("cast", "clamp", "sum_to_size")


def _fresh(n: Node) -> bool:
    from ..registry import REGISTRY
    if n.op in ("clone", "matmul", "linear", "embedding_backward"):
        return True
    return REGISTRY[n.op].category in _FRESH_CATEGORIES and n.op not in _NOT_FRESH


def drop_output_clones(graph: Graph) -> int:
    """Outputs ``clone(x)`` (through ``detach``) of a fresh intermediate ``x`` that no
    other output is -> ``x``, read by the clone's readers too; returns rewrites (the
    clones, now unread, go in dce)."""
    taken: dict[int, int] = {}
    for o in graph.outputs:
        taken[id(o)] = taken.get(id(o), 0) + 1
    count = 0
    for c in list(graph.outputs):
        n = c.producer
        if n is None or n.op != "clone" or not isinstance(n.inputs[0], Value) or \
                taken.get(id(c)) != 1:
            continue
        x = n.inputs[0]
        while x.producer is not None and x.producer.op == "detach" and \
                isinstance(x.producer.inputs[0], Value):
            x = x.producer.inputs[0]
        if x.kind != "node" or x.producer is None or id(x) in taken or \
                not _fresh(x.producer) or x.shape != c.shape or x.dtype is not c.dtype:
            continue
        graph.replace_all_uses(c, x)
        taken[id(x)] = 1
        count += 1
    return count


def narrow_scan_gradients(graph: Graph) -> int:
    """A scan backward whose output gradient is ``select_block_backward(g, index=i)`` of
    the packed output, ``i`` among the blocks it reads -> the same op over just those
    blocks (the others are zeros it never reads; the op says how many it reads in
    ``extra["grad_blocks"]``). Returns rewrites."""
    from ..registry import REGISTRY
    count = 0
    for n in list(graph.nodes):
        keep = REGISTRY[n.op].extra.get("grad_blocks")
        if keep is None or not isinstance(n.inputs[0], Value):
            continue
        v = n.inputs[0]
        p = v.producer
        if p is None or p.op != "select_block_backward" or \
                not p.attrs["index"] < keep < p.attrs["shape"][0]:
            continue
        shape = (keep,) + tuple(p.attrs["shape"][1:])
        small = graph.add_node("select_block_backward", [p.inputs[0]],
                               {"shape": shape, "index": p.attrs["index"]},
                               index=graph.nodes.index(n))
        graph.replace_input(n, 0, small)
        count += 1  # the wide one, if nothing else reads it, goes in dce
    return count


def _merged_into(v: Value, p_shape: tuple, dim: int) -> tuple | None:
    """The dims of ``v`` that ``reshape(v) -> p_shape`` merges into ``p_shape[dim]``
    (the others unchanged), or None when the reshape is not such a merge."""
    vs = tuple(v.shape)
    k = len(vs) - len(p_shape) + 1  # dims merged into one
    if k < 2 or vs[:dim] != tuple(p_shape[:dim]) or \
            vs[dim + k:] != tuple(p_shape[dim + 1:]) or _prod(vs[dim:dim + k]) != p_shape[dim]:
        return None
    return vs[dim:dim + k]


def cat_before_reshape(graph: Graph) -> int:
    """``cat([reshape(v_i)], dim)``, each reshape merging dims ``dim..dim+k`` of ``v_i``
    into ``dim`` with the same trailing sizes for every ``i``, -> ``reshape(cat([v_i],
    dim))``. Returns rewrites (the reshapes, if now unread, go in dce)."""
    count = 0
    for n in list(graph.nodes):
        if n.op != "cat" or len(n.inputs) < 2 or \
                not all(isinstance(a, Value) for a in n.inputs):
            continue
        dim = n.attrs["dim"] % len(n.out.shape)
        parts, rest = [], None
        for a in n.inputs:
            p = a.producer
            if p is None or p.op != "reshape" or not isinstance(p.inputs[0], Value):
                break
            merged = _merged_into(p.inputs[0], tuple(a.shape), dim)
            if merged is None or (rest is not None and merged[1:] != rest):
                break
            rest = merged[1:]
            parts.append(p.inputs[0])
        else:
            at = graph.nodes.index(n)
            joined = graph.add_node("cat", parts, {"dim": dim}, index=at)
            out = graph.add_node("reshape", [joined], {"shape": tuple(n.out.shape)},
                                 index=at + 1)
            _same_type(out, n.out, "cat_before_reshape")
            graph.replace_all_uses(n.out, out)
            count += 1
    return count


def _is_zero(a) -> bool:
    """A Python scalar zero operand (not False)."""
    return isinstance(a, (int, float)) and not isinstance(a, bool) and a == 0



def _mask_grads(m: Node, iv: Value, outputs: set) -> list | None:
    """(m, where, scatter) for each reader of mask ``m`` = ``gt(r, 0)``, each a
    ``where(m, pool_scatter(g, iv), 0)`` whose scatter nothing else reads; else None."""
    if m.op != "gt" or not _is_zero(m.inputs[1]) or id(m.out) in outputs:
        return None
    found = []
    for w in m.out.users:
        s = w.inputs[1] if w.op == "where" else None
        sc = s.producer if isinstance(s, Value) else None
        if w.inputs[0] is not m.out or not _is_zero(w.inputs[2]) or sc is None or \
                sc.op != "pool_scatter" or sc.inputs[1] is not iv or \
                len(s.users) != 1 or id(s) in outputs:
            return None
        found.append((m, w, sc))
    return found


def _relu_mask_grads(rv: Value, x: Value, iv: Value, outputs: set) -> list | None:
    """The ReLU gradients ``where(gt(r, 0), pool_scatter(g, iv), 0)``, ``r`` the ReLU's
    output ``rv`` or its input ``x``, as (mask, where, scatter) nodes, when every reader
    of ``rv`` other than the pool is such a mask and every reader of ``iv`` other than
    the gather is such a scatter; else None."""
    found = []
    for m in rv.users:
        if m.op in ("max_pool_indices", "pool_gather"):
            continue
        got = _mask_grads(m, iv, outputs)
        if got is None:
            return None
        found += got
    for m in x.users:  # masks of the input: those not all such gradients are other uses
        found += _mask_grads(m, iv, outputs) or []
    scatters = {id(sc) for _, _, sc in found}
    if any(u.op != "pool_gather" and id(u) not in scatters for u in iv.users):
        return None
    return found


def pool_before_relu(graph: Graph) -> int:
    """``pool_gather(r, max_pool_indices(r))`` of ``r = relu(x)``, whose other readers
    are only its ReLU gradients ``where(gt(r, 0), pool_scatter(g, indices), 0)`` ->
    ``relu(pool_gather(x, max_pool_indices(x)))`` and gradients ``pool_scatter(where(
    gt(pooled, 0), g, 0), indices of x)``. Returns rewrites (the full-size ReLU, its
    mask and indices go in dce)."""
    outputs = {id(o) for o in graph.outputs}
    count = 0
    for r in list(graph.nodes):
        if r.op != "relu" or not isinstance(r.inputs[0], Value) or id(r.out) in outputs:
            continue
        rv, x = r.out, r.inputs[0]
        mis = [u for u in rv.users if u.op == "max_pool_indices"]
        if len(mis) != 1 or id(mis[0].out) in outputs:
            continue
        mi = mis[0]
        iv = mi.out
        pgs = [u for u in rv.users if u.op == "pool_gather"]
        if len(pgs) != 1 or pgs[0].inputs[0] is not rv or pgs[0].inputs[1] is not iv:
            continue
        pg = pgs[0]
        grads = _relu_mask_grads(rv, x, iv, outputs)
        if grads is None:
            continue
        at = graph.nodes.index(pg)
        idx = _like(graph, mi, [x], at)
        pooled = _like(graph, pg, [x, idx], at + 1)
        act = _like(graph, r, [pooled], at + 2)
        _same_type(act, pg.out, "pool_before_relu")
        graph.replace_all_uses(pg.out, act)
        for m, w, sc in grads:
            at = graph.nodes.index(w)
            mask = _like(graph, m, [act, 0], at)
            g = _like(graph, w, [mask, sc.inputs[0], w.inputs[2]], at + 1)
            back = _like(graph, sc, [g, idx], at + 2)
            _same_type(back, w.out, "pool_before_relu")
            graph.replace_all_uses(w.out, back)
        count += 1
    return count


def _like(graph: Graph, n: Node, inputs: list, at: int) -> Value:
    """``n``'s op and attributes on ``inputs``, inserted at ``at``, carrying ``n``'s meta
    (its source line, and whether it belongs to a training step's backward)."""
    v = graph.add_node(n.op, inputs, dict(n.attrs), index=at)
    v.producer.meta = dict(n.meta)
    return v


ONE_HOT_MAX = 4096  # the longest dim a one-index gather / scatter is rewritten along


def _index_below(v, n: int) -> bool:
    """Whether the int values of ``v`` (a Value or a Python int) are provably in
    ``[0, n)``: a range ``check`` within it (without ignored values), views of such, and
    ``where(eq(t, k), c, t)`` of a check ``t`` ignoring ``k`` with ``c`` in range (how
    ``nll_loss`` sends ignored targets to class 0)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return 0 <= v < n
    p = v.producer if isinstance(v, Value) else None
    if p is None:
        return False
    if p.op in ("reshape", "permute", "expand", "getitem") and isinstance(p.inputs[0], Value):
        return _index_below(p.inputs[0], n)
    if p.op == "check":
        return _checks_below(p, n) and p.attrs.get("ignore") is None
    if p.op == "where":
        cond, c, t = p.inputs
        q = cond.producer if isinstance(cond, Value) else None
        ck = t.producer if isinstance(t, Value) else None
        return (q is not None and q.op == "eq" and ck is not None and _checks_below(ck, n)
                and q.inputs[0] is t and ck.attrs.get("ignore") is not None
                and q.inputs[1] == ck.attrs["ignore"] and _index_below(c, n))
    return False


def _checks_below(ck: Node, n: int) -> bool:
    """``ck`` is a range ``check`` of values within ``[0, n)`` (bar its ignored value)."""
    a = ck.attrs
    return ck.op == "check" and a.get("kind") == "range" and a.get("low") is not None and \
        a["low"] >= 0 and a.get("high") is not None and a["high"] < n


def _one_index(shape: tuple, idx, dim: int) -> bool:
    """``idx`` holds one index per row along ``dim`` of ``shape``, the same size
    elsewhere, each provably below ``shape[dim]``."""
    return (isinstance(idx, Value) and idx.dtype.kind == "i" and len(idx.shape) == len(shape)
            and 1 < shape[dim] <= ONE_HOT_MAX and idx.shape[dim] == 1
            and all(a == b for j, (a, b) in enumerate(zip(idx.shape, shape)) if j != dim)
            and _index_below(idx, shape[dim]))


def _zeros(v) -> bool:
    p = v.producer if isinstance(v, Value) else None
    if p is not None:
        return p.op in ("zeros_like", "zeros")
    return isinstance(v, Value) and v.kind == "const" and v.data is not None and \
        not np.any(v.data)


def masked_one_hot(graph: Graph) -> int:
    """``gather(x, idx, dim)`` -> ``sum(where(eq(iota, idx), x, 0), dim, keepdim)`` and
    ``scatter(zeros, idx, src, dim, reduce)`` -> ``where(eq(iota, idx), src (+ 0 for
    'add'), 0)``, for one in-range index per row along a dim of at most ``ONE_HOT_MAX``
    (``iota``: the dim's positions, a constant). Returns rewrites."""
    count = 0
    for n in list(graph.nodes):
        if n.op == "gather":
            x, idx = n.inputs[0], n.inputs[1]
            shape = tuple(n.out.shape)
        elif n.op == "scatter" and n.attrs.get("reduce") in (None, "add"):
            x, idx, src = n.inputs
            shape = tuple(n.out.shape)
            if not _zeros(x) or not isinstance(src, Value) or not isinstance(idx, Value) or \
                    src.dtype is not n.out.dtype or tuple(src.shape) != tuple(idx.shape):
                continue
        else:
            continue
        if not isinstance(x, Value) or not n.out.dtype.is_floating_point:
            continue
        dim = n.attrs["dim"] % len(shape)
        full = tuple(x.shape) if n.op == "gather" else shape
        if not _one_index(full, idx, dim):
            continue
        pos = [1] * len(full)
        pos[dim] = full[dim]
        iota = graph.add_const(np.arange(full[dim], dtype=idx.dtype.np).reshape(pos))
        at = graph.nodes.index(n)
        hit = graph.add_node("eq", [iota, idx], index=at)
        if n.op == "gather":
            picked = graph.add_node("where", [hit, x, 0.0], index=at + 1)
            new = graph.add_node("sum", [picked], {"dims": (dim,), "keepdim": True},
                                 index=at + 2)
        else:
            val = src
            if n.attrs.get("reduce") == "add":
                val = graph.add_node("add", [src, 0.0], index=at + 1)
                at += 1
            new = graph.add_node("where", [hit, val, 0.0], index=at + 1)
        _same_type(new, n.out, "masked_one_hot")
        new.producer.meta = dict(n.meta)
        graph.replace_all_uses(n.out, new)
        count += 1
    return count


# ---- embedding lookups folded into the matmuls that read them ---------------------------
_TOKEN_VIEWS = ("permute", "reshape", "clone")


def _token_chain(emb: Node, v: Value) -> list[Node] | None:
    """The ops from ``emb``'s output to ``v`` when each only rearranges the token (leading)
    axes and keeps the feature axis last and whole, else None."""
    chain: list[Node] = []
    d = emb.out.shape[-1]
    while v is not emb.out:
        p = v.producer
        if p is None or p.op not in _TOKEN_VIEWS or not isinstance(p.inputs[0], Value) or \
                not v.ndim or v.shape[-1] != d:
            return None
        if p.op == "permute" and tuple(p.attrs["dims"])[-1] != v.ndim - 1:
            return None
        chain.append(p)
        v = p.inputs[0]
    return chain[::-1]


def _on_tokens(chain: list[Node], idx: np.ndarray) -> np.ndarray:
    """``chain`` replayed on token positions (``idx``: the lookup's index shape)."""
    for p in chain:
        if p.op == "permute":
            idx = np.transpose(idx, tuple(p.attrs["dims"])[:-1])
        elif p.op == "reshape":
            idx = idx.reshape(tuple(p.out.shape)[:-1])
    return idx


def fold_embedding_projections(graph: Graph) -> int:
    """An embedding lookup ``r = E[idx]`` (rows of a ``[V, D]`` table; views that only
    rearrange its token axes allowed, ``N`` tokens in all) read by 2-D matmuls, where
    ``V < N`` (a character model's 65 symbols at 2048 tokens):

    - ``r @ W`` -> ``(E @ W)[idx]``: the product on V rows instead of N;
    - ``A @ r`` (a weight gradient ``G^T r``) -> ``S^T @ E``, ``S`` the lookup's
      scatter-add of ``A^T`` (``embedding_backward``, V rows);
    - ``embedding_backward(views(G @ W), idx)`` (the table's gradient through that
      projection) -> ``embedding_backward(G, idx) @ W``, the views checked to put each
      token back where the lookup took it.

    A batch_first LSTM's input projection and both its gradients, three GEMMs of 2048
    rows, become products of 65 rows around one lookup and one scatter-add. The sums
    are the same, grouped by symbol (rounding differs). Returns rewrites."""
    from .cleanup import dce
    count = 0
    for emb in [n for n in graph.nodes if n.op == "embedding"]:
        E, idx = emb.inputs[0], emb.inputs[1]
        if not isinstance(E, Value) or not isinstance(idx, Value) or E.ndim != 2 or \
                not E.dtype.is_floating_point or emb.attrs.get("padding_idx") is not None:
            continue
        V, D = E.shape
        made: dict = {}  # chain signature -> token index value in that order

        def tokens(chain, made=made, emb=emb):
            """The lookup's index in ``chain``'s token order, made right after the
            lookup (every rewrite below reads it) and shared by equal chains."""
            key = tuple((p.op, tuple(p.out.shape), tuple(p.attrs.get("dims", ())))
                        for p in chain)
            if key not in made:
                v, at = emb.inputs[1], graph.nodes.index(emb) + 1
                for p in chain:
                    if p.op == "clone":
                        continue
                    attrs = {"dims": tuple(p.attrs["dims"])[:-1]} if p.op == "permute" \
                        else {"shape": tuple(p.out.shape)[:-1]}
                    v = graph.add_node(p.op, [v], attrs, index=at)
                    v.producer.meta = dict(emb.meta)
                    at += 1
                made[key] = v
            return made[key]

        # every 2-D value the lookup reaches through token views
        reach, stack = [], [emb.out]
        while stack:
            v = stack.pop()
            for u in v.users:
                if u.op in _TOKEN_VIEWS and _token_chain(emb, u.out) is not None:
                    stack.append(u.out)
            if v.ndim == 2 and v is not emb.out and v.shape[0] > V:
                reach.append(v)
        for r in reach:
            chain = _token_chain(emb, r)
            for m in [u for u in r.users if u.op == "matmul"]:
                a, b = m.inputs
                if not (isinstance(a, Value) and isinstance(b, Value)) or a.ndim != 2 or \
                        b.ndim != 2 or a.dtype is not E.dtype or b.dtype is not E.dtype:
                    continue
                ids = tokens(chain)
                at = [graph.nodes.index(m)]
                meta = dict(m.meta)
                if a is r and b is not r:                                   # r @ W
                    proj = graph.add_node("matmul", [E, b], index=at[0])
                    new = graph.add_node("embedding", [proj, ids], {"padding_idx": None},
                                         index=at[0] + 1)
                elif b is r and a is not r:                                 # A @ r
                    at_t = _t2d(graph, a, at)
                    s = graph.add_node("embedding_backward", [at_t, ids],
                                       {"num_weights": V, "padding_idx": None}, index=at[0])
                    st = graph.add_node("permute", [s], {"dims": (1, 0)}, index=at[0] + 1)
                    new = graph.add_node("matmul", [st, E], index=at[0] + 2)
                else:
                    continue
                for v in _new_nodes(new, m, ids):
                    v.producer.meta = dict(meta)
                _same_type(new, m.out, "fold_embedding_projections")
                graph.replace_all_uses(m.out, new)
                count += 1
        count += _fold_table_gradient(graph, emb, V, tokens)
    if count:
        dce(graph)
    return count


def _t2d(graph: Graph, a: Value, at: list) -> Value:
    """``a^T``: the value a 2-D permute made ``a`` from, or a new permute (a view)."""
    if _transpose_2d(a.producer) and isinstance(a.producer.inputs[0], Value):
        return a.producer.inputs[0]
    t = graph.add_node("permute", [a], {"dims": (1, 0)}, index=at[0])
    at[0] += 1
    return t


def _new_nodes(new: Value, old: Node, ids: Value) -> list[Value]:
    """The values a rewrite added for ``old``'s result: ``new`` and its operands back to
    the values ``old`` already read (and the shared token index ``ids``)."""
    seen, out, stack = {id(a) for a in old.value_inputs} | {id(ids)}, [], [new]
    while stack:
        v = stack.pop()
        if id(v) in seen or v.producer is None:
            continue
        seen.add(id(v))
        out.append(v)
        stack.extend(v.producer.value_inputs)
    return out


def _fold_table_gradient(graph: Graph, emb: Node, V: int, tokens) -> int:
    """The third case of ``fold_embedding_projections`` for lookup ``emb``."""
    count = 0
    idx = emb.inputs[1]
    for eb in [u for u in idx.users if u.op == "embedding_backward"]:
        g = eb.inputs[0]
        if eb.inputs[1] is not idx or eb.attrs.get("num_weights") != V or \
                not isinstance(g, Value) or tuple(g.shape) != tuple(emb.out.shape):
            continue
        back: list[Node] = []   # views from the projection's product to g, each
        v = g                   # keeping the feature axis last and whole
        d = g.shape[-1]
        while v.producer is not None and v.producer.op in _TOKEN_VIEWS and \
                isinstance(v.producer.inputs[0], Value) and v.producer.inputs[0].ndim and \
                v.producer.inputs[0].shape[-1] == d and not (
                    v.producer.op == "permute" and
                    tuple(v.producer.attrs["dims"])[-1] != v.ndim - 1):
            back.append(v.producer)
            v = v.producer.inputs[0]
        mm = v.producer
        if mm is None or mm.op != "matmul" or v.ndim != 2 or v.shape[0] <= V or \
                len(v.users) != 1 or any(o is v for o in graph.outputs):
            continue
        G, W = mm.inputs
        if not (isinstance(G, Value) and isinstance(W, Value)) or G.ndim != 2 or W.ndim != 2:
            continue
        # the forward's token order for v's rows: replay back (product -> g) on token
        # positions, then find the lookup chain that maps g's layout back to v's rows
        n_tok = v.shape[0]
        pos = np.arange(n_tok).reshape(n_tok, 1)
        for p in back[::-1]:
            if p.op == "permute":
                pos = np.transpose(pos, tuple(p.attrs["dims"]))
            elif p.op == "reshape":
                pos = pos.reshape(tuple(p.out.shape)[:-1] + (1,))
        pos = pos[..., 0]
        chain = _chain_to_rows(graph, emb, n_tok, pos)
        if chain is None:
            continue
        ids = tokens(chain)
        at = graph.nodes.index(eb)
        s = graph.add_node("embedding_backward", [G, ids],
                           {"num_weights": V, "padding_idx": eb.attrs.get("padding_idx")},
                           index=at)
        new = graph.add_node("matmul", [s, W], index=at + 1)
        for nv in _new_nodes(new, eb, ids):
            nv.producer.meta = dict(eb.meta)
        _same_type(new, eb.out, "fold_embedding_projections")
        graph.replace_all_uses(eb.out, new)
        count += 1
    return count


def _chain_to_rows(graph: Graph, emb: Node, n_tok: int, pos: np.ndarray) -> list | None:
    """A token-view chain from ``emb`` to a 2-D value of ``n_tok`` rows whose row i holds
    the token ``pos`` (positions in the lookup's layout) says row i came from."""
    stack = [emb.out]
    while stack:
        v = stack.pop()
        for u in v.users:
            if u.op in _TOKEN_VIEWS:
                stack.append(u.out)
        if v.ndim == 2 and v.shape[0] == n_tok and v is not emb.out:
            chain = _token_chain(emb, v)
            if chain is not None and np.array_equal(_on_tokens(chain, pos),
                                                    np.arange(n_tok)):
                return chain
    return None


def attention_gradients_in_place(graph: Graph) -> int:
    """``cat(permute(select_block(R, i), P) for i in 0, 1, 2)`` of an ``sdpa_backward``
    result ``R`` read nowhere else (a fused q/k/v projection's gradient: attention's three
    gradients, each back in (batch, time, head, dim) order, side by side) -> one
    ``sdpa_backward`` laid out that way (attributes ``perm`` and ``cat_dim``): its kernel
    writes each gradient where the cat would have copied it. The GPT step's two cats took
    0.2-0.3 ms each in its plan. Returns rewrites."""
    from .cleanup import dce
    if not any(n.op == "sdpa_backward" for n in graph.nodes):
        return 0
    dce(graph)  # earlier rewrites leave the nodes they replaced: count only live readers
    outputs = {id(o) for o in graph.outputs}
    count = 0
    for n in list(graph.nodes):
        if n.op != "cat" or len(n.inputs) != 3:
            continue
        R, perm, parts = None, None, []
        for i, x in enumerate(n.inputs):
            if not isinstance(x, Value) or x.producer is None or len(x.users) != 1 or \
                    id(x) in outputs:
                break
            p, dims = x.producer, None
            if p.op == "permute":
                dims = tuple(p.attrs["dims"])
                y = p.inputs[0]
                if not isinstance(y, Value) or y.producer is None or len(y.users) != 1 or \
                        id(y) in outputs:
                    break
                parts.append(p)
                p = y.producer
            else:
                dims = tuple(range(x.ndim))
            if p.op != "select_block" or p.attrs.get("index") != i or \
                    (perm is not None and dims != perm):
                break
            perm = dims
            parts.append(p)
            r = p.inputs[0]
            if R is not None and r is not R:
                break
            R = r
        else:
            src = R.producer if isinstance(R, Value) else None
            if src is None or src.op != "sdpa_backward" or \
                    src.attrs.get("perm") is not None or len(R.users) != 3 or \
                    id(R) in outputs:
                continue
            dim = n.attrs["dim"] % n.out.ndim
            new = graph.add_node("sdpa_backward", list(src.inputs),
                                 dict(src.attrs, perm=perm, cat_dim=dim),
                                 index=graph.nodes.index(n))
            new.producer.meta = dict(src.meta)
            _same_type(new, n.out, "attention_gradients_in_place")
            graph.replace_all_uses(n.out, new)
            for m in [n] + parts + [src]:   # each once nothing reads it
                graph.remove_node(m)
            count += 1
    return count


def attention_output_in_place(graph: Graph) -> int:
    """``clone(permute(sdpa(q, k, v), P))`` where the permute is the attention's only
    reader and the clone the permute's (attention's output with its heads side by side
    again, copied for the reshape that merges them: ``copy_before_reshape``) -> one
    ``sdpa`` with attribute ``perm`` P, whose kernel writes that layout directly. The
    GPT step's two copies took ~0.05 ms each in its plan. Returns rewrites."""
    outputs = {id(o) for o in graph.outputs}
    count = 0
    for n in list(graph.nodes):
        if n.op != "clone" or not isinstance(n.inputs[0], Value):
            continue
        p = n.inputs[0].producer
        if p is None or p.op != "permute" or len(p.out.users) != 1 or id(p.out) in outputs:
            continue
        a = p.inputs[0].producer if isinstance(p.inputs[0], Value) else None
        if a is None or a.op != "sdpa" or a.attrs.get("perm") is not None or \
                len(a.out.users) != 1 or id(a.out) in outputs:
            continue
        new = graph.add_node("sdpa", list(a.inputs),
                             dict(a.attrs, perm=tuple(int(d) for d in p.attrs["dims"])),
                             index=graph.nodes.index(n))
        new.producer.meta = dict(a.meta)
        _same_type(new, n.out, "attention_output_in_place")
        graph.replace_all_uses(n.out, new)
        for m in (n, p, a):
            graph.remove_node(m)
        count += 1
    return count
