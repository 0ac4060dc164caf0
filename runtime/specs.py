"""Fusion groups -> kernel specs: the statements, operands and loop shape of each
generated kernel (``lower_elementwise`` for same-shape groups, ``lower_rows`` for
groups with reductions over the last axis), and how each operand array is viewed
for it. A group that cannot be one kernel raises ``Unfusable`` (the driver in
``lower.py`` splits it and tries again)."""
from __future__ import annotations


from dataclasses import dataclass

import numpy as np

from ir.graph import Node, Value
from ir.interpreter import elementwise_compute_dtype
from ir.passes.fusion import Group
from ir.registry import REGISTRY
from ir.shapes import view_strides
from kernels.spec import KernelSpec, Phase, Stmt, attrs_tuple, const



class Unfusable(Exception):
    """A group cannot be lowered as one kernel (it is split and retried)."""


class RowStoreConflict(Unfusable):
    """A reduce loop of a rows group would have to store more than one row-level value
    (a kernel phase stores one): ``values`` are the ones that must move out."""

    def __init__(self, msg: str, values: list) -> None:
        super().__init__(msg)
        self.values = values



# ---- stmt generation -------------------------------------------------------------------
def _vname(v: Value) -> str:
    return "v" + "".join(c if c.isalnum() else "_" for c in v.name)


def _scalar_const(a, cdt):
    if cdt is not None:
        return const(cdt.np.type(a).item(), cdt.name)
    if isinstance(a, bool):
        return const(a, "bool")
    if isinstance(a, int):
        return const(a, "int64")
    return const(a, "float32")


def emit_stmt(node: Node, ref_of, name: str, stmts: list) -> None:
    """Append the stmt(s) computing ``node`` (with explicit operand casts)."""
    op = REGISTRY[node.op]
    out_dt = node.out.dtype.name
    if node.op == "clone":
        stmts.append(Stmt(name, "cast", (ref_of(node.inputs[0]),), (("dtype", out_dt),), out_dt))
        return
    cdt = elementwise_compute_dtype(op, node.inputs)
    args = []
    for i, a in enumerate(node.inputs):
        skip = op.dtype_rule == "where" and i == 0
        if isinstance(a, Value):
            r = ref_of(a)
            if cdt is not None and not skip and a.dtype is not cdt:
                cname = f"{name}_c{i}"
                stmts.append(Stmt(cname, "cast", (r,), (("dtype", cdt.name),), cdt.name))
                r = ("v", cname)
            args.append(r)
        else:
            args.append(_scalar_const(a, None if skip else cdt))
    stmts.append(Stmt(name, node.op, tuple(args), attrs_tuple(node.attrs), out_dt))


# ---- array transforms (kernel operand views) ---------------------------------------------
def _view_reshape(a: np.ndarray, shape) -> np.ndarray:
    v = a.view()
    v.shape = shape  # raises if a copy would be needed: outputs must be views
    return v


@dataclass
class Lowered:
    spec: KernelSpec
    ext: list[Value]
    in_tf: list
    out_vals: list[Value]
    out_tf: list
    full_shape: tuple[int, ...]


def lower_elementwise(g: Group) -> Lowered:
    S = g.shape
    members = {id(n.out) for n in g.nodes}
    ext: list[Value] = []

    def ref_of(v):
        if id(v) in members:
            return ("v", _vname(v))
        for i, e in enumerate(ext):
            if e is v:
                return ("in", i)
        ext.append(v)
        return ("in", len(ext) - 1)

    stmts: list = []
    for n in g.nodes:
        emit_stmt(n, ref_of, _vname(n.out), stmts)
    outs = list(g.outputs)
    spec = KernelSpec(tuple(v.dtype.name for v in ext),
                      tuple((v.dtype.name, "full") for v in outs),
                      (Phase("map", tuple(stmts),
                             stores=tuple((k, ("v", _vname(v))) for k, v in enumerate(outs))),),
                      "elementwise")
    K = S if S else (1,)

    def in_tf_for(v):
        if v.shape == S and S:
            return None
        return lambda a: np.reshape(a, K) if not S else np.broadcast_to(a, S)
    out_tf = [None if S else (lambda a: a.reshape(1)) for _ in outs]
    return Lowered(spec, ext, [in_tf_for(v) for v in ext], outs, out_tf, S)


def lower_rows(g: Group) -> Lowered:
    X, D = g.shape, g.dims
    nd = len(X)
    keep_dims = [d for d in range(nd) if d not in D]
    perm = tuple(keep_dims + list(D))
    outer = tuple(X[d] for d in keep_dims)
    R = 1
    for d in D:
        R *= X[d]
    it_outer = outer if outer else (1,)
    it_shape = it_outer + (R,)
    role = g.role
    member = {id(n.out): n for n in g.nodes}
    ext: list[Value] = []
    outs_full = [v for v in g.outputs if role[id(v.producer)] == "elem"]
    outs_row = [v for v in g.outputs if role[id(v.producer)] != "elem"]
    # the transposed contiguous layout of a full output must collapse by a view
    tstrides = tuple(int(np.prod([X[j] for j in range(d + 1, nd)], dtype=np.int64))
                     for d in perm)
    if outs_full and view_strides(tuple(X[d] for d in perm), tstrides, it_shape) is None:
        raise Unfusable("reduced dims cannot be collapsed into one row without a copy")

    def ext_ref(v):
        for i, e in enumerate(ext):
            if e is v:
                return ("in", i)
        ext.append(v)
        return ("in", len(ext) - 1)

    fin: dict[int, str] = {}  # id(row value) -> stmt name holding it
    phases: list[Phase] = []
    k_red = 0
    pending_rows = [n for n in g.nodes if role[id(n)] in ("row", "alias")]
    row_out_index = {id(v): len(outs_full) + i for i, v in enumerate(outs_row)}

    def elem_closure(v: Value, prefix: str, stmts: list, memo: dict):
        if id(v) in fin:
            return ("v", fin[id(v)])
        n = member.get(id(v))
        if n is None:
            return ext_ref(v)
        if role[id(n)] != "elem":
            raise Unfusable(f"row value %{v.name} used before it is computed")
        if id(v) in memo:
            return ("v", memo[id(v)])
        name = f"{prefix}{_vname(v)}"
        d = n.out.dtype
        den = n.inputs[1] if n.op == "div" and len(n.inputs) == 2 else None
        if isinstance(den, Value) and id(den) in fin and d.is_floating_point and \
                den.dtype is d and isinstance(n.inputs[0], Value) and n.inputs[0].dtype is d:
            # x / row  ->  x * (1 / row): one division per row instead of per element
            num = elem_closure(n.inputs[0], prefix, stmts, memo)
            stmts.append(Stmt(name, "mul", (num, ("v", reciprocal_of(fin[id(den)], d.name))),
                              (), d.name))
        else:
            emit_stmt(n, lambda a: elem_closure(a, prefix, stmts, memo)
                      if isinstance(a, Value) else a, name, stmts)
        memo[id(v)] = name
        return ("v", name)

    rcp: dict[str, str] = {}

    def reciprocal_of(rname: str, d: str) -> str:
        """A post stmt 1/row in the phase that defines ``rname`` (made once)."""
        if rname not in rcp:
            for ph in phases:
                post = ph[4]
                if any(st.name == rname for st in post):
                    rcp[rname] = f"{rname}_rcp"
                    post.append(Stmt(rcp[rname], "reciprocal", (("v", rname),), (), d))
                    break
            else:
                raise Unfusable(f"row value {rname} has no defining phase")
        return rcp[rname]

    def attach_rows(post: list) -> None:
        progressed = True
        while progressed:
            progressed = False
            for n in list(pending_rows):
                src = n.value_inputs
                if all(id(a) in fin for a in src):
                    pending_rows.remove(n)
                    progressed = True
                    if role[id(n)] == "alias":
                        fin[id(n.out)] = fin[id(n.inputs[0])]
                        continue
                    name = f"r_{_vname(n.out)}"
                    emit_stmt(n, lambda a: ("v", fin[id(a)]), name, post)
                    fin[id(n.out)] = name

    def lower_red(n):
        x = n.inputs[0]
        dname = n.out.dtype.name
        rname = _vname(n.out)

        def reduce_phase(op, value_fn, post_fn, store):
            nonlocal k_red
            stmts: list = []
            memo: dict = {}
            ref = value_fn(stmts, memo, f"p{len(phases)}_")
            k = k_red
            post = post_fn(k)
            phases.append(("reduce", stmts, op, ref, post, store))
            k_red += 1
            return k

        def base(stmts, memo, prefix):
            return elem_closure(x, prefix, stmts, memo)
        cast_fin = lambda k, name=rname, d=dname: [  # noqa: E731
            Stmt(name, "cast", (("r", k),), (("dtype", d),), d)]
        if n.op in ("sum", "amax", "amin", "prod"):
            rop = {"sum": "sum", "amax": "max", "amin": "min", "prod": "prod"}[n.op]
            reduce_phase(rop, base, cast_fin, True)
        elif n.op == "mean":
            reduce_phase("sum", base, lambda k, name=rname, d=dname: [
                Stmt(name, "div", (("r", k), ("n", d)), (), d)], True)
        elif n.op in ("var", "std"):
            mname = f"{rname}_mean"
            reduce_phase("sum", base, lambda k, d=dname: [
                Stmt(mname, "div", (("r", k), ("n", d)), (), d)], False)

            def centered(stmts, memo, prefix):
                e = elem_closure(x, prefix, stmts, memo)
                stmts.append(Stmt(f"{prefix}{rname}_d", "sub", (e, ("v", mname)), (), dname))
                stmts.append(Stmt(f"{prefix}{rname}_d2", "mul", (("v", f"{prefix}{rname}_d"),
                                                                 ("v", f"{prefix}{rname}_d")),
                                  (), dname))
                return ("v", f"{prefix}{rname}_d2")
            corr = float(n.attrs.get("correction", 1))

            def var_post(k, d=dname):
                post = [Stmt(f"{rname}_den", "sub", (("n", d), const(corr, d)), (), d)]
                vn = rname if n.op == "var" else f"{rname}_var"
                post.append(Stmt(vn, "div", (("r", k), ("v", f"{rname}_den")), (), d))
                if n.op == "std":
                    post.append(Stmt(rname, "sqrt", (("v", vn),), (), d))
                return post
            reduce_phase("sum", centered, var_post, True)
        else:
            raise Unfusable(f"reduction {n.op} has no rows lowering")
        fin[id(n.out)] = rname
        # attach row-level math that is now computable to this phase's post
        kind, stmts, op, ref, post, store = phases[-1]
        attach_rows(post)
        phases[-1] = (kind, stmts, op, ref, post, store)

    for n in g.nodes:
        if role[id(n)] == "red":
            lower_red(n)

    if pending_rows:
        raise Unfusable("row-level values could not be scheduled")
    # final map phase for full-shape outputs
    map_stmts: list = []
    memo: dict = {}
    stores = []
    for i, v in enumerate(outs_full):
        stores.append((i, elem_closure(v, "m_", map_stmts, memo)))
    built = []
    # each stored row value: the phase whose post defines it stores it (one per phase),
    # after a copy stmt when it is not that post's last value
    phase_of = {s.name: i for i, ph in enumerate(phases) for s in ph[4]}
    store_at: dict[int, tuple[int, Value]] = {}
    post_pos = {s.name: j for ph in phases for j, s in enumerate(ph[4])}
    conflicts = []
    # a phase stores its earliest needed row value; later ones (and what they feed) move
    # to a kernel of their own (see _evict_rows)
    for v in sorted(outs_row, key=lambda v: post_pos.get(fin[id(v)], -1)):
        name = fin[id(v)]
        k = phase_of.get(name)
        if k is None:
            raise Unfusable("a row-level result needed outside has no defining phase")
        if k in store_at:
            conflicts.append(v)
            continue
        store_at[k] = (row_out_index[id(v)], v)
    if conflicts:
        raise RowStoreConflict("two row-level results of one reduce loop are needed outside",
                               conflicts)
    for i, (_kind, stmts, op, ref, post, _store) in enumerate(phases):
        store_result = None
        if i in store_at:
            store_result, v = store_at[i]
            name = fin[id(v)]
            if post[-1].name != name:
                d = v.dtype.name
                post = post + [Stmt(f"{name}_st", "cast", (("v", name),), (("dtype", d),), d)]
        built.append(Phase("reduce", tuple(stmts), reduce_op=op, reduce_value=ref,
                           store_result=store_result, post=tuple(post)))
    if stores:
        built.append(Phase("map", tuple(map_stmts), stores=tuple(stores)))
    outs = outs_full + outs_row
    spec = KernelSpec(tuple(v.dtype.name for v in ext),
                      tuple((v.dtype.name, "full") for v in outs_full) +
                      tuple((v.dtype.name, "row") for v in outs_row),
                      tuple(built), "rows")
    ident = perm == tuple(range(nd))

    def in_tf(a, X=X, perm=perm, ident=ident):
        if a.shape != X:
            a = np.broadcast_to(a, X)
        if not ident:
            a = a.transpose(perm)
        if a.shape != it_shape:
            a = a.reshape(it_shape)
        return a

    def full_tf(a):
        if not ident:
            a = a.transpose(perm)
        return _view_reshape(a, it_shape) if a.shape != it_shape else a

    def row_tf(a):
        return _view_reshape(a, it_outer) if a.shape != it_outer else a
    return Lowered(spec, ext, [in_tf] * len(ext), outs,
                   [full_tf] * len(outs_full) + [row_tf] * len(outs_row), X)


# ---- the plan builder ---------------------------------------------------------------------
