"""Fusion: partition a graph's nodes into groups that each become one step.

Group kinds:

- ``elementwise``: elementwise nodes over one iteration shape (operands from
  outside the group may broadcast into it); values used outside the group
  are stored (multi-output kernels).
- ``rows``: reductions over one set of consecutive dims ``dims`` of one shape
  ``shape``, with the elementwise producers of their inputs (recomputed in
  each reduce loop), elementwise consumers of the reduced values at full
  shape (the final map loop) and row-level scalar math on the reduced values
  (e.g. ``rsqrt(var + eps)``). Softmax and LayerNorm become one group each.
- ``matmul``: one BLAS call (its elementwise consumers form the next group,
  which the memory planner runs in place on the BLAS output: the epilogue).
- ``view``: reshape/permute/expand/getitem: no kernel, a strided view that
  the consuming kernel indexes (absorbed into kernel indexing).
- ``library``: any other op, run through its NumPy implementation.

Groups never form a cycle: a merge is refused when a path between groups (a
group is one step: a path entering it leaves from any of its nodes) leaves the
merged set and comes back. ``Fusion.reasons`` says, for every node that ended up
alone, why it was not fused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph, Node, Value
from .cleanup import attr_key
from .partition import backward_nodes as _backward_nodes
from .partition import recompute_for_backward
from ..registry import REGISTRY

VIEW_OPS = ("reshape", "permute", "expand", "getitem")
ROW_REDUCTIONS = ("sum", "mean", "amax", "amin", "var", "std", "prod")
KERNEL_DTYPES = ("float32", "float64", "bool", "int64", "int32")


@dataclass(eq=False)
class Group:
    id: int
    kind: str
    nodes: list[Node] = field(default_factory=list)
    shape: tuple[int, ...] = ()
    dims: tuple[int, ...] = ()
    role: dict[int, str] = field(default_factory=dict)  # id(node) -> elem|red|row|alias
    outputs: list[Value] = field(default_factory=list)

    @property
    def row_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        keep = tuple(1 if i in self.dims else s for i, s in enumerate(self.shape))
        drop = tuple(s for i, s in enumerate(self.shape) if i not in self.dims)
        return keep, drop

    def describe(self) -> str:
        ops = " ".join(n.op for n in self.nodes)
        extra = f" over dims {self.dims}" if self.kind == "rows" else ""
        shape = f" {list(self.shape)}" if self.kind in ("elementwise", "rows") else ""
        return f"group {self.id} [{self.kind}{shape}{extra}]: {ops}"


@dataclass
class Fusion:
    groups: list[Group]
    reasons: dict[str, str]  # value name of a node left alone -> why

    def group_of(self, node: Node) -> Group:
        for g in self.groups:
            if any(n is node for n in g.nodes):
                return g
        raise KeyError(node)

    def __str__(self) -> str:
        lines = [g.describe() for g in self.groups]
        for name, why in self.reasons.items():
            lines.append(f"  %{name} not fused: {why}")
        return "\n".join(lines)


def is_fusible_elementwise(n: Node) -> bool:
    op = REGISTRY[n.op]
    if not ((op.is_elementwise and op.expr is not None) or n.op == "clone"):
        return False
    if n.out.dtype.name not in KERNEL_DTYPES or n.out.numel == 0:
        return False
    return all(a.dtype.name in KERNEL_DTYPES for a in n.value_inputs)


def row_reduction_dims(n: Node) -> tuple[int, ...] | None:
    """The reduced dims if ``n`` is a reduction a rows kernel can run, else None."""
    if n.op not in ROW_REDUCTIONS or not n.value_inputs:
        return None
    x = n.inputs[0]
    if not isinstance(x, Value) or not x.dtype.is_floating_point or x.numel == 0:
        return None
    if x.dtype.name not in ("float32", "float64") or n.out.dtype is not x.dtype:
        return None
    dims = tuple(sorted(n.attrs.get("dims") or ()))
    if not dims:
        return None
    if list(dims) != list(range(dims[0], dims[0] + len(dims))):
        return None  # not one consecutive run: can't collapse into one row by a view
    return dims


TINY_NUMEL = 4096  # elementwise groups this small merge horizontally (merge_tiny)
TINY_MAX_OPERANDS = 160  # ... up to about this many arrays per kernel (ctypes takes 1024 args)


def _stays_in_backward(n: Node, bw: set[int]) -> bool:
    """A backward node every input of which the backward reads elsewhere too: fused
    into a forward kernel, its result would live until the backward in addition to
    those inputs (ReLU's mask beside its output); computed in the backward it costs no
    memory."""
    if id(n) not in bw:
        return False
    for a in n.value_inputs:
        if a.producer is None:
            continue
        if id(a.producer) in bw or not any(u is not n and id(u) in bw for u in a.users):
            return False
    return True


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _operands(g: Group) -> int:
    """An upper bound on the arrays a group's kernel takes: its outside inputs and one
    output per node."""
    ids = {id(m.out) for m in g.nodes}
    ext = {id(a) for m in g.nodes for a in m.value_inputs if id(a) not in ids}
    return len(ext) + len(g.nodes)


def _structure(g: Group) -> tuple:
    """What a group's kernel source depends on: its ops, attributes, dtypes and shapes,
    and how its operands are shared, with the values themselves left out. Groups of one
    structure (an optimizer's per-parameter math) generate one source."""
    local: dict[int, int] = {}
    ext: dict[int, int] = {}
    members = {id(m) for m in g.nodes}
    sig = []
    for m in g.nodes:
        refs = []
        for a in m.inputs:
            if not isinstance(a, Value):
                refs.append(("c", attr_key(a)))
            elif id(a) in local:
                refs.append(("n", local[id(a)]))
            else:
                refs.append(("x", ext.setdefault(id(a), len(ext)), a.dtype.name, a.shape))
        local[id(m.out)] = len(local)
        used_outside = any(id(u) not in members for u in m.out.users)
        sig.append((m.op, attr_key(m.attrs), m.out.dtype.name, m.out.shape,
                    tuple(refs), used_outside))
    return tuple(sig)


def _padded(shape, ndim):
    return (1,) * (ndim - len(shape)) + tuple(shape)


class _Fuser:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.groups: list[Group] = []
        self.gof: dict[int, Group] = {}
        self.reasons: dict[str, str] = {}
        self.pos = {id(n): i for i, n in enumerate(graph.nodes)}
        self.backward = _backward_nodes(graph)  # empty unless a whole training step

    def new_group(self, kind, n, role_of: str = "elem", **kw) -> Group:
        g = Group(len(self.groups), kind, **kw)
        self.groups.append(g)
        if n is not None:
            self.add(g, n, role_of)
        return g

    def add(self, g: Group, n: Node, role: str) -> None:
        g.nodes.append(n)
        g.role[id(n)] = role
        self.gof[id(n)] = g

    def producer_group(self, v) -> Group | None:
        if isinstance(v, Value) and v.producer is not None:
            return self.gof.get(id(v.producer))
        return None

    def creates_cycle(self, groups: list[Group], n: Node) -> bool:
        """Would merging ``groups`` and adding ``n`` close a cycle between groups?

        Reachability is walked over groups, not nodes: a group runs as one step, so a
        path that enters a group at one node leaves it from any of its nodes (a -> b in
        g1, then c in g1 -> d is a path a -> d between steps though no node path b -> c
        exists). A cycle is a path that leaves the merged set and comes back to it (or
        to ``n``). Nodes before ``n`` all have groups; nodes after it have none yet and
        cannot lead back to ``n`` or to a member (the graph is in topological order)."""
        merged = list({id(g): g for g in groups}.values())
        if len(merged) == 1:
            # one group, which is acyclic already: a new cycle would have to run through
            # n, so enter n from another group
            only = merged[0]
            if all((h := self.producer_group(a)) is None or h is only
                   for a in n.value_inputs):
                return False
        nid = id(n)
        limit = self.pos[nid]
        pos, gof = self.pos, self.gof
        start = {id(g) for g in merged}
        seen = set(start)
        stack = list(merged)
        while stack:
            g = stack.pop()
            outside = id(g) not in start
            for m in g.nodes:
                for u in m.out.users:
                    uid = id(u)
                    if uid == nid:
                        if outside:
                            return True  # left the merged set and came back to n
                        continue
                    if pos.get(uid, limit) >= limit:
                        continue  # not placed yet: cannot lead back
                    h = gof[uid]
                    if id(h) in start:
                        if outside:
                            return True  # left the merged set and came back
                        continue
                    if id(h) not in seen:
                        seen.add(id(h))
                        stack.append(h)
        return False

    def merge(self, groups: list[Group], into: Group) -> None:
        for g in groups:
            if g is into:
                continue
            for m in g.nodes:
                role = g.role[id(m)]
                into.nodes.append(m)
                into.role[id(m)] = role
                self.gof[id(m)] = into
            g.nodes = []
        into.nodes.sort(key=lambda m: self.pos[id(m)])

    # ---- elementwise -------------------------------------------------------------
    def elem_role_ok(self, g: Group, n: Node) -> bool:
        """Can n join rows group g as a full-shape element stmt?"""
        keep, _ = g.row_shapes
        for a in n.value_inputs:
            if self.producer_group(a) is not g:
                continue
            role = g.role[id(a.producer)]
            if role == "elem":
                if a.shape != g.shape:
                    return False
            elif _padded(a.shape, len(g.shape)) != keep:
                return False
        return True

    def row_role_ok(self, g: Group, n: Node) -> bool:
        keep, drop = g.row_shapes
        if n.out.shape not in (keep, drop):
            return False
        for a in n.value_inputs:
            if self.producer_group(a) is not g or g.role[id(a.producer)] == "elem":
                return False
            if a.shape != n.out.shape:
                return False
        return True

    def backward_only(self, g: Group) -> bool:
        return all(id(m) in self.backward for m in g.nodes)

    def join_elementwise(self, n: Node) -> None:
        S = n.out.shape
        cands = []
        for a in n.value_inputs:
            g = self.producer_group(a)
            if g is not None and g.kind in ("elementwise", "rows") and g not in cands:
                cands.append(g)
        # a value recomputed for the backward (the min-cut), or a group computing one,
        # stays out of forward kernels: there it would be computed early and kept after all
        fits = (self.backward_only if n.meta.get("recomputed") or any(
            m.meta.get("recomputed") for g in cands for m in g.nodes) else (lambda g: True))
        cands = [g for g in cands if fits(g)]
        if self.backward and _stays_in_backward(n, self.backward):
            # computed in a forward kernel, its result would be kept for the backward
            # beside the inputs that are kept anyway (ReLU's mask beside its output)
            cands = [g for g in cands if any(id(m) in self.backward for m in g.nodes)]
            if not cands:
                self.new_group("elementwise", n, shape=S)
                self.reasons[n.out.name] = ("a backward value whose inputs are kept for the "
                                            "backward anyway: computed there, not saved")
                return
        if not cands:
            # horizontal fusion: join a sibling group over the same shape that reads one of
            # the same inputs (the input is then read once for both)
            sib = []
            for a in n.value_inputs:
                for u in a.users:
                    g = self.gof.get(id(u))
                    if g is not None and g.kind == "elementwise" and g.shape == S and \
                            g not in sib and fits(g):
                        sib.append(g)
            for g in sib:
                if not self.creates_cycle([g], n):
                    self.add(g, n, "elem")
                    g.nodes.sort(key=lambda m: self.pos[id(m)])
                    return
            self.new_group("elementwise", n, shape=S)
            return
        # row-level math on reduced values (post stmts)
        for g in cands:
            if g.kind == "rows" and g.shape != S and self.row_role_ok(g, n):
                if not self.creates_cycle([g], n):
                    self.add(g, n, "row")
                    return
        compat = []
        rows = None
        for g in cands:
            if g.kind == "elementwise" and g.shape == S:
                compat.append(g)
            elif g.kind == "rows" and g.shape == S and self.elem_role_ok(g, n):
                if rows is None or rows.dims == g.dims:  # same rows: loops concatenate
                    rows = rows or g
                    compat.append(g)
        # try the full merge, then each candidate alone (largest first)
        options = [compat] if len(compat) > 1 else []
        options += [[g] for g in sorted(compat, key=lambda g: -len(g.nodes))]
        for opt in options:
            if self.creates_cycle(opt, n):
                continue
            into = next((g for g in opt if g.kind == "rows"), opt[0])
            self.merge(opt, into)
            self.add(into, n, "elem")
            return
        g = self.new_group("elementwise", n, shape=S)
        if compat:
            self.reasons[n.out.name] = "fusing with its producers would create a cycle"
        else:
            shapes = sorted({str(list(c.shape)) for c in cands})
            self.reasons[n.out.name] = (f"its shape {list(S)} differs from its producers' "
                                        f"group shapes {', '.join(shapes)}")
        del g

    # ---- reductions ------------------------------------------------------------------
    def join_reduction(self, n: Node, dims: tuple[int, ...]) -> None:
        x = n.inputs[0]
        X = x.shape
        g = self.producer_group(x)
        if g is not None and g.shape == X and (
                g.kind == "elementwise" or (g.kind == "rows" and g.dims == dims
                                            and g.role[id(x.producer)] == "elem")):
            if not self.creates_cycle([g], n):
                g.kind = "rows"
                g.dims = dims
                self.add(g, n, "red")
                return
            self.reasons[n.out.name] = "fusing into its producer's loop would create a cycle"
        elif g is not None and g.kind in ("elementwise", "rows"):
            self.reasons[n.out.name] = (f"its input's group has shape {list(g.shape)}"
                                        + (f" over dims {g.dims}" if g.kind == "rows" else "")
                                        + f", this reduction runs over {list(X)} dims {dims}")
        # horizontal: join a rows group over the same rows that already reads x
        for u in x.users:
            sib = self.gof.get(id(u))
            if sib is not None and sib is not g and sib.kind == "rows" and sib.shape == X \
                    and sib.dims == dims and \
                    not self.creates_cycle([sib], n):
                self.add(sib, n, "red")
                sib.nodes.sort(key=lambda m: self.pos[id(m)])
                self.reasons.pop(n.out.name, None)
                return
        self.new_group("rows", n, shape=X, dims=dims, role_of="red")

    # ---- horizontal fusion of tiny groups ---------------------------------------------
    def merge_tiny(self) -> None:
        """Independent elementwise groups of one tiny shape (an optimizer's per-parameter
        scalar math, the updates of bias and norm parameters) run as one kernel: each
        would cost a launch for a few hundred elements of work. Two groups are
        independent when no path joins them through a third group (running them as one
        step would close a cycle); the paths are walked over group edges, kept up to
        date as groups merge.

        Groups of one structure (an optimizer's per-parameter math) stay apart: equal
        sources compile once, and a launch costs about 1.5 us, while compile time grows
        with a kernel's body: thirty parameters' copies of one scalar recipe in one
        kernel took a second to compile."""
        gof = self.gof
        succ: dict[int, set[int]] = {id(g): set() for g in self.groups}
        pred: dict[int, set[int]] = {id(g): set() for g in self.groups}
        for g in self.groups:
            for m in g.nodes:
                for u in m.out.users:
                    h = gof.get(id(u))
                    if h is not None and h is not g:
                        succ[id(g)].add(id(h))
                        pred[id(h)].add(id(g))

        def reaches(src: int, dst: int) -> bool:  # a path src -> ... -> dst of >= 2 edges
            stack = [x for x in succ[src] if x != dst]
            seen = set(stack)
            while stack:
                for y in succ[stack.pop()]:
                    if y == dst:
                        return True
                    if y not in seen:
                        seen.add(y)
                        stack.append(y)
            return False

        def merged(g: Group, h: Group) -> None:  # g's edges become h's
            gi, hi = id(g), id(h)
            for y in succ.pop(gi):
                pred[y].discard(gi)
                if y != hi:
                    pred[y].add(hi)
                    succ[hi].add(y)
            for x in pred.pop(gi):
                succ[x].discard(gi)
                if x != hi:
                    succ[x].add(hi)
                    pred[hi].add(x)

        tiny = [g for g in self.groups
                if g.kind == "elementwise" and g.nodes and _numel(g.shape) <= TINY_NUMEL]
        structure = {id(g): _structure(g) for g in tiny}
        copies: dict[tuple, int] = {}
        for s in structure.values():
            copies[s] = copies.get(s, 0) + 1
        by_shape: dict[tuple, list[Group]] = {}
        for g in tiny:
            if copies[structure[id(g)]] > 1:
                continue
            # a backward group (an optimizer's scalars) merged into a forward one would
            # run in the forward, its results kept until the backward reads them
            for h in by_shape.setdefault((g.shape, self.backward_only(g)), []):
                if _operands(h) + _operands(g) <= TINY_MAX_OPERANDS and \
                        not reaches(id(h), id(g)) and not reaches(id(g), id(h)):
                    self.merge([g], h)
                    merged(g, h)
                    break
            else:
                by_shape[(g.shape, self.backward_only(g))].append(g)

    def alias_ok(self, n: Node) -> Group | None:
        """A reshape that only re-inserts reduced size-1 dims of a row value."""
        if n.op != "reshape":
            return None
        x = n.inputs[0]
        g = self.producer_group(x)
        if g is None or g.kind != "rows" or g.role[id(x.producer)] == "elem":
            return None
        keep, drop = g.row_shapes
        if x.shape in (keep, drop) and n.out.shape in (keep, drop):
            return g
        return None

    def run(self) -> Fusion:
        for n in self.graph.nodes:
            op = REGISTRY[n.op]
            if n.op in VIEW_OPS:
                g = self.alias_ok(n)
                if g is not None:
                    self.add(g, n, "alias")
                    continue
                self.new_group("view", n)
                self.reasons[n.out.name] = "view: no kernel, consumers index it with strides"
            elif is_fusible_elementwise(n):
                self.join_elementwise(n)
            elif row_reduction_dims(n) is not None:
                self.join_reduction(n, row_reduction_dims(n))
            elif n.op == "matmul" and n.out.dtype.name in ("float32", "float64") and \
                    all(a.dtype is n.out.dtype for a in n.value_inputs) and n.out.numel:
                self.new_group("matmul", n)
                self.reasons[n.out.name] = "matmul: a BLAS call into a planned buffer"
            else:
                self.new_group("library", n)
                why = (f"{op.category} op {n.op!r} has no generated kernel" if not
                       op.is_elementwise else f"elementwise {n.op!r} on "
                       f"{n.out.dtype.name} has no kernel")
                if n.op in ROW_REDUCTIONS:
                    why = f"reduction {n.op!r} over dims {n.attrs.get('dims')} of " \
                          f"{n.inputs[0].dtype.name}{list(n.inputs[0].shape)} is not one " \
                          "consecutive run of float dims"
                self.reasons[n.out.name] = why + ": runs its NumPy implementation"
        self.merge_tiny()
        groups = [g for g in self.groups if g.nodes]
        finish(self.graph, groups)
        for g in groups:
            if len(g.nodes) > 1:
                for m in g.nodes:
                    self.reasons.pop(m.out.name, None)
            elif g.kind in ("elementwise", "rows"):
                self.reasons.setdefault(
                    g.nodes[0].out.name, "no fusible neighbour: its operands come from graph "
                    "inputs, views or non-fusible ops, and no sibling reads the same input")
        return Fusion(order_groups(groups), self.reasons)


def finish(graph: Graph, groups: list[Group]) -> None:
    """Compute each group's outputs (values used outside it or returned)."""
    gof = {id(m): g for g in groups for m in g.nodes}
    outs = {id(o) for o in graph.outputs}
    for g in groups:
        g.outputs = []
        for m in g.nodes:
            v = m.out
            if id(v) in outs or any(gof.get(id(u)) is not g for u in v.users):
                g.outputs.append(v)


def order_groups(groups: list[Group]) -> list[Group]:
    """Topological order of groups (by their earliest node, as a tie-break)."""
    gof = {id(m): g for g in groups for m in g.nodes}
    deps: dict[int, set[int]] = {id(g): set() for g in groups}
    for g in groups:
        for m in g.nodes:
            for a in m.value_inputs:
                pg = gof.get(id(a.producer)) if a.producer is not None else None
                if pg is not None and pg is not g:
                    deps[id(g)].add(id(pg))
    done: set[int] = set()
    order: list[Group] = []
    pending = list(groups)
    while pending:
        for g in pending:
            if deps[id(g)] <= done:
                order.append(g)
                done.add(id(g))
                pending.remove(g)
                break
        else:
            raise ValueError("fusion produced a cycle between groups")
    for i, g in enumerate(order):
        g.id = i
    return order


def split(group: Group) -> list[Group]:
    """Undo a group: one group per node (always lowerable)."""
    out = []
    for m in group.nodes:
        role = group.role[id(m)]
        if role == "red":
            out.append(Group(0, "rows", [m], m.inputs[0].shape, group.dims, {id(m): "red"}))
        elif role == "alias":
            out.append(Group(0, "view", [m], (), (), {id(m): "elem"}))
        else:
            out.append(Group(0, "elementwise", [m], m.out.shape, (), {id(m): "elem"}))
    return out


def fuse(graph: Graph) -> Fusion:
    """Partition ``graph`` (in topological order) into fusion groups. A whole training
    step's backward first gets its min-cut: cheap forward values it reads are
    recomputed there instead of kept (``ir.passes.partition``)."""
    recompute_for_backward(graph)
    return _Fuser(graph).run()


def decompose(graph: Graph, *, keep_whole: bool = True) -> int:
    """Rewrite composite ops into the primitives of their decompositions (softmax and
    log_softmax over float rows into max / exp / sum / div, gelu, silu, logsumexp,
    linear, layer_norm and the losses), which the fuser places better than the whole
    op; returns rewrites. ``keep_whole``: ops marked ``extra["whole_on_cpu"]`` (attention,
    whose native kernel beats its pieces) stay whole, for back ends that run them as
    library steps; a back end without their kernels (CUDA) passes False. Then, on the
    primitives, folds weight-gradient matmuls into one GEMM, computes transposed 2-D
    matmul products in their readers' layout, multiplies an embedding table instead of
    the many rows looked up from it, turns ``sum_to_size`` into fusible sums
    and split's gradient into a ``cat`` (of the values before their merging reshapes;
    attention's three gradients laid out side by side by its backward op itself),
    builds only the blocks of a scan's packed gradient its backward reads, max-pools
    before a ReLU (which then runs on the pooled values), turns a loss's one-index
    gather and scatter into masked rows the fuser joins to its log-softmax, multiplies a
    permuted value's own rows and permutes the product (a batch_first LSTM's decoder), copies a
    permuted value that a reshape cannot view by a kernel into a planned buffer (or,
    for attention's output, has the attention op write it permuted), and returns a
    fresh intermediate itself instead of a copy of it (``ir.passes.rewrites``)."""
    from .decompose import decompose_while
    from .rewrites import (attention_gradients_in_place, attention_output_in_place,
                           cat_before_reshape,
                           cat_slice_puts, copy_before_reshape,
                           decompose_sum_to_size, drop_output_clones,
                           fold_embedding_projections, fold_summed_matmul, masked_one_hot,
                           matmul_before_permute, narrow_scan_gradients, pool_before_relu,
                           transpose_matmul_products)
    count = decompose_while(graph, lambda n: REGISTRY[n.op].decomposition is not None and not (
        keep_whole and REGISTRY[n.op].extra.get("whole_on_cpu")))
    count += fold_summed_matmul(graph) + decompose_sum_to_size(graph)
    count += transpose_matmul_products(graph) + cat_slice_puts(graph)
    count += fold_embedding_projections(graph)
    count += cat_before_reshape(graph) + attention_gradients_in_place(graph)
    count += narrow_scan_gradients(graph) + pool_before_relu(graph)
    count += masked_one_hot(graph) + matmul_before_permute(graph)
    count += copy_before_reshape(graph) + attention_output_in_place(graph)
    return count + drop_output_clones(graph)
