"""Lowering: fusion groups -> kernel specs -> plan steps, then memory planning.

``compile_graph(graph)`` runs the whole back end: decompose, clean up, fuse,
lower each group (a group whose kernel cannot be generated is split into
single nodes, and a node without a kernel runs its NumPy implementation),
compute live ranges, choose in-place reuse, place intermediates in the arena,
and check the placement.
"""
from __future__ import annotations

import os
import threading
import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np

from ir.graph import Graph, Node, Value
from ir.interpreter import elementwise_compute_dtype, eval_op
from ir.passes import simplify
from ir.passes.fusion import Fusion, Group, decompose, fuse, order_groups, split
from ir.passes.fusion import finish as finish_groups
from ir.passes.memory import BufferReq, check_plan, plan_memory
from ir.registry import REGISTRY
from ir.shapes import view_strides
from kernels.spec import KernelSpec, Phase, Stmt, attrs_tuple, const

from .plan import Buffer, Plan, Step


class Unfusable(Exception):
    """A group cannot be lowered as one kernel (it is split and retried)."""


class RowStoreConflict(Unfusable):
    """A reduce loop of a rows group would have to store more than one row-level value
    (a kernel phase stores one): ``values`` are the ones that must move out."""

    def __init__(self, msg: str, values: list) -> None:
        super().__init__(msg)
        self.values = values


def _log(channel: str, msg: str) -> None:
    # one GCOMPILE_LOG parser for runtime and compiler (runtime must not import gcompile)
    from .logs import log
    log(channel, msg)


_KERNEL_FACTORY = None


def get_compile_kernel():
    """C2's ``kernels.cpu.compile_kernel``, or the NumPy reference when it is missing
    (or when ``GCOMPILE_KERNELS=reference``)."""
    global _KERNEL_FACTORY
    if _KERNEL_FACTORY is None:
        from .reference import ReferenceKernel
        if os.environ.get("GCOMPILE_KERNELS", "") == "reference":
            _KERNEL_FACTORY = ReferenceKernel
        else:
            try:
                from kernels.cpu import compile_kernel
                _KERNEL_FACTORY = compile_kernel
            except ImportError:
                _KERNEL_FACTORY = ReferenceKernel
    return _KERNEL_FACTORY


_RECORDING = threading.local()


def _prefetch(factory, graph: Graph, plan: Plan) -> None:
    """Compile the plan's new kernels now, in parallel (``kernels.cpu.prefetch``), rather
    than one after another on the plan's first run. Which loop variant each kernel runs
    depends on its operands' layouts (broadcasts, in-place reuse), so a cold plan is run
    once on zero inputs with its kernels only recording the variant they would use."""
    kernels = [s.kernel for s in plan.steps if s.kind == "kernel"]
    if not kernels or factory is not _KERNEL_FACTORY:
        return
    try:
        from kernels.cpu import compile_kernel, compile_workers, needs_compile, prefetch
    except ImportError:
        return
    if factory is not compile_kernel or compile_workers() < 1 or not needs_compile(kernels):
        return
    # a plan with impure ops other than checks (collectives) must not run an extra time:
    # other processes would have to take part; main variants are compiled instead
    impure = any(n.op != "check" and (getattr(REGISTRY.get(n.op), "extra", None) or {}
                                      ).get("impure") for n in graph.nodes)
    work = [] if impure else _dry_run(graph, plan)
    seen = {id(k) for k, _ in work}
    work += [k for k in kernels if id(k) not in seen]  # steps the dry run did not reach
    n = prefetch(work)
    if n:
        _log("kernels", f"compiled {n} kernels in parallel")


def _dry_run(graph: Graph, plan: Plan) -> list:
    """(kernel, variant) for each kernel step of ``plan`` run on zero inputs (contiguous,
    as most inputs are); non-kernel steps run for real so that views and in-place reuse
    lay out operands as on a real call. Stops quietly where a step fails on zeros."""
    from .plan import Executor
    try:
        inputs = [np.zeros(v.shape, v.dtype.np) for v in graph.inputs]
    except (AttributeError, TypeError, ValueError):
        return []
    rec: list = []
    _RECORDING.variants = rec
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Executor(plan)(inputs)
    except Exception:  # noqa: BLE001 - the variants seen so far are still worth compiling
        pass
    finally:
        _RECORDING.variants = None
    return rec


def set_kernel_factory(factory) -> None:
    """Override how specs become kernels (tests use the NumPy reference)."""
    global _KERNEL_FACTORY
    _KERNEL_FACTORY = factory


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
@dataclass
class Compiled:
    graph: Graph
    fusion: Fusion
    plan: Plan
    log: list[str] = field(default_factory=list)


SERIAL_EPILOGUE_MAX = 1 << 20


class _KernelRun:
    """The ``run`` of a kernel step. The first call on a layout binds the kernel
    (``CompiledKernel.bind``: loop variant and C arguments built once); later calls
    check that each operand is the same arena view as before (``stable`` slots, fixed
    once the plan's arena exists) or has the same strides, move the data pointers that
    changed (fresh outputs, new inputs) and make the native call. Anything else
    (another layout, different sharing between operands, a copying operand transform,
    a parallel call, a kernel without ``bind``) takes the general path."""

    __slots__ = ("kernel", "low", "name", "serial", "pairs_in", "pairs_out", "slots", "tfs",
                 "stable", "bound", "objs", "strides", "sharing", "var", "ptr", "refused")

    def __init__(self, low: Lowered, kernel, in_slots, out_slots, serial: bool, name: str):
        self.kernel = kernel
        self.low = low
        self.name = name
        self.serial = serial
        self.pairs_in = list(zip(in_slots, low.in_tf))
        self.pairs_out = list(zip(out_slots, low.out_tf))
        self.slots = list(in_slots) + list(out_slots)
        self.tfs = list(low.in_tf) + list(low.out_tf)
        self.stable: frozenset = frozenset()
        self.bound = None
        self.refused = None

    def __call__(self, env) -> None:
        b = self.bound
        if b is not None:
            for s, o in self.objs:
                if env[s] is not o:
                    break
            else:
                moved = False
                for e in self.var:  # [operand index, slot, weak reference]
                    a = env[e[1]]
                    if e[2]() is a:
                        continue  # the same array as last call (a parameter)
                    k = e[0]
                    if a.strides != self.strides[k]:
                        break
                    p = self.ptr(a)
                    if p != b.ptrs[k]:
                        b.repoint(k, p)
                        moved = True
                    e[2] = weakref.ref(a)
                else:
                    if not moved or b.sharing() == self.sharing:
                        b()
                        return
            self.bound = None
        self.general(env)

    def general(self, env) -> None:
        ins = [env[s] if tf is None else tf(env[s]) for s, tf in self.pairs_in]
        outs = [env[s] if tf is None else tf(env[s]) for s, tf in self.pairs_out]
        rec = getattr(_RECORDING, "variants", None)
        if rec is not None:  # a dry run (see _prefetch): learn the variant, compute nothing
            want = getattr(self.kernel, "variant_for", None)
            if want is not None:
                try:
                    v = want(ins, outs)
                except Exception:  # noqa: BLE001 - this call would fail; not worth compiling
                    v = None
                if v is not None:
                    rec.append((self.kernel, v))
            for o in outs:  # defined values for the steps after it (checks, indices)
                o.fill(0)
            return
        try:
            if self.serial:
                self.kernel(ins, outs, parallel=False)
            else:
                self.kernel(ins, outs)
        except Exception as e:  # noqa: BLE001 - generation failed at first call
            from .reference import ReferenceKernel
            if isinstance(self.kernel, ReferenceKernel):
                raise
            _log("kernels", f"kernel for {self.name} failed ({type(e).__name__}: {e}); "
                 "using the NumPy evaluation of its spec")
            self.kernel = ReferenceKernel(self.low.spec)
            self.kernel(ins, outs)
            return
        self._bind(env, ins + outs)

    def _bind(self, env, ops: list) -> None:
        bind = getattr(self.kernel, "bind", None)
        if bind is None:
            return
        raws = [env[s] for s in self.slots]
        layout = tuple(r.strides for r in raws)
        if layout == self.refused:
            return  # binding this layout was refused before (e.g. a threaded call)
        self.ptr = ptr = _ptr_reader()
        b = None
        if all(ptr(r) == ptr(o) for r, o in zip(raws, ops)):  # no transform copied
            nin = len(self.pairs_in)
            try:
                b = bind(ops[:nin], ops[nin:], False if self.serial else None)
            except Exception:  # noqa: BLE001 - the general path keeps working
                b = None
        if b is None:
            self.refused = layout
            return
        self.objs = [(s, r) for s, r in zip(self.slots, raws) if s in self.stable]
        self.var = [[k, s, weakref.ref(r)] for k, (s, r) in enumerate(zip(self.slots, raws))
                    if s not in self.stable]
        self.strides = [r.strides for r in raws]
        self.sharing = b.sharing()
        self.bound = b


def _ptr_reader():
    """The kernels package's fast data-pointer read (loaded by the time a kernel is
    bound), or the array interface's."""
    try:
        from kernels.cpu import _ptr
        return _ptr
    except ImportError:  # pragma: no cover - kernels without the CPU back end
        return lambda a: a.__array_interface__["data"][0]


def _kernel_step(low: Lowered, kernel, slot, g: Group, name: str) -> Step:
    in_slots = [slot[id(v)] for v in low.ext]
    out_slots = [slot[id(v)] for v in low.out_vals]
    # An epilogue right after a BLAS call runs serially unless it is large: OpenBLAS's
    # threads are still spinning then, and a parallel kernel's threads would fight them
    # (measured: a 256x512 bias+relu went from 0.2 ms serial to 20 ms parallel).
    numel = int(np.prod(low.full_shape, dtype=np.int64))
    serial = numel <= SERIAL_EPILOGUE_MAX and any(
        v.producer is not None and v.producer.op == "matmul" for v in low.ext)
    run = _KernelRun(low, kernel, in_slots, out_slots, serial, name)
    nbytes = sum(v.nbytes for v in low.ext) + sum(v.nbytes for v in low.out_vals)
    return Step("kernel", name, run, in_slots, out_slots, list(g.nodes), kernel, low.spec,
                bytes_moved=nbytes)


def _gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """The one BLAS entry of matmul steps (tests wrap it to see the operands it gets)."""
    np.matmul(a, b, out=out)


def _fold_rows(shape: tuple, strides: tuple, itemsize: int) -> tuple | None:
    """The 2-D shape ``(prod(leading) * M, K)`` viewing ``(..., M, K)`` without a copy,
    or None when the leading dims and M do not collapse by a view."""
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    new = (rows, shape[-1])
    st = view_strides(shape, tuple(s // itemsize for s in strides), new)
    return new if st is not None else None


def _matmul_step(n: Node, slot) -> Step:
    """One BLAS call straight into the planned output buffer. A stacked left operand
    times a matrix (a Linear layer's ``[B, T, K] @ [K, N]``) is folded into one 2-D GEMM
    when its leading dims collapse by a view (NumPy would call BLAS once per batch
    entry); transposed operands reach BLAS as views (NumPy passes the transpose flag
    when one stride is unit), and batched operands (attention's 4-D views) are given
    to NumPy's matmul loop as the views the trace made, never copied here."""
    a, b = n.inputs
    sa, sb, so = slot[id(a)], slot[id(b)], slot[id(n.out)]
    fold = a.ndim >= 3 and b.ndim == 2
    modes: dict = {}  # operand strides -> (a's 2-D shape, out's 2-D shape) or None

    def decide(x: np.ndarray, o: np.ndarray):
        if not fold or any(s < 0 for s in x.strides):
            return None
        xs = _fold_rows(x.shape, x.strides, x.itemsize)
        os_ = _fold_rows(o.shape, o.strides, o.itemsize)
        return (xs, os_) if xs is not None and os_ is not None else None

    def run(env):
        x, y, o = env[sa], env[sb], env[so]
        if fold:
            key = (x.strides, o.strides)
            mode = modes.get(key, 0)
            if mode == 0:
                mode = modes[key] = decide(x, o)
            if mode is not None:
                _gemm(x.reshape(mode[0]), y, o.reshape(mode[1]))
                return
        _gemm(x, y, o)
    return Step("matmul", f"matmul {list(a.shape)} @ {list(b.shape)}", run, [sa, sb], [so], [n],
                bytes_moved=a.nbytes + b.nbytes + n.out.nbytes)


class _ViewRun:
    """The ``run`` of a view step. Over arena buffers and constants (``cache`` is set
    once the plan is built: those arrays are the same objects on every call) the view
    made on the first call is kept and handed out again while its inputs are the same
    objects, so the kernels reading it see a stable operand and skip their checks. A
    view that came back as a copy (a reshape NumPy could not view) is never kept."""

    __slots__ = ("impl", "ins", "so", "attrs", "cache", "_key", "_out")

    def __init__(self, impl, ins, so: int, attrs: dict) -> None:
        self.impl = impl
        self.ins = ins
        self.so = so
        self.attrs = attrs
        self.cache = False
        self._key: list | None = None
        self._out = None

    def __call__(self, env) -> None:
        args = [env[s] if s is not None else c for s, c in self.ins]
        if self.cache:
            key = self._key
            if key is not None and all(a is k for a, k in zip(args, key)):
                env[self.so] = self._out
                return
        out = self.impl(*args, **self.attrs)
        env[self.so] = out
        if self.cache:
            srcs = [a for a in args if isinstance(a, np.ndarray)]
            if isinstance(out, np.ndarray) and any(np.may_share_memory(out, a) for a in srcs):
                self._key, self._out = args, out
            else:
                self._key = None


def _mark_stable(plan: Plan) -> None:
    """Tell view and kernel steps which slots hold the same array object on every call
    of this plan: arena buffers, constants, and views of those."""
    stable = {b.slot for b in plan.buffers if b.planned} | {s for s, _ in plan.const_slots}
    for st in plan.steps:
        if st.kind == "view" and isinstance(st.run, _ViewRun) and st.inputs and \
                all(i in stable for i in st.inputs):
            st.run.cache = True
            stable.update(st.outputs)
        elif st.kind == "kernel" and isinstance(st.run, _KernelRun):
            st.run.stable = frozenset(s for s in st.run.slots if s in stable)


def _node_step(n: Node, slot, kind: str) -> Step:
    ins = [(slot[id(a)], None) if isinstance(a, Value) else (None, a) for a in n.inputs]
    so = slot[id(n.out)]
    opdef = REGISTRY[n.op]
    attrs = n.attrs

    if kind == "view":
        run = _ViewRun(opdef.impl, ins, so, attrs)
    else:
        def run(env):
            env[so] = eval_op(opdef, [env[s] if s is not None else c for s, c in ins], attrs)
    return Step(kind, f"{n.op} %{n.out.name}", run, [s for s, _ in ins if s is not None], [so],
                [n], bytes_moved=sum(a.nbytes for a in n.value_inputs) + n.out.nbytes)


def _evict_rows(g: Group, err: RowStoreConflict) -> list[Group] | None:
    """Split rows group ``g`` into itself minus the nodes computing ``err.values`` (with
    their in-group users, and the row-level math only those need) and one elementwise
    group over the row shape holding what was moved (a LayerNorm forward keeps its one
    kernel and stores ``rstd``; ``rstd**3 / n`` for its backward runs after it).
    None when what would move is not all row-level math of one shape."""
    members = {id(n) for n in g.nodes}
    ev: set[int] = set()
    stack = [v.producer for v in err.values]
    while stack:
        n = stack.pop()
        if id(n) in ev:
            continue
        ev.add(id(n))
        stack += [u for u in n.out.users if id(u) in members]
    changed = True
    while changed:  # row math feeding only moved nodes moves too
        changed = False
        for n in g.nodes:
            if id(n) in ev or g.role[id(n)] != "row":
                continue
            us = n.out.users
            if us and all(id(u) in ev for u in us):
                ev.add(id(n))
                changed = True
    moved = [n for n in g.nodes if id(n) in ev]
    if not moved or len(moved) == len(g.nodes) or \
            any(g.role[id(n)] != "row" for n in moved) or \
            len({n.out.shape for n in moved}) != 1:
        return None
    rest = Group(g.id, "rows", [n for n in g.nodes if id(n) not in ev], g.shape, g.dims,
                 {id(n): g.role[id(n)] for n in g.nodes if id(n) not in ev})
    out = Group(g.id, "elementwise", moved, moved[0].out.shape, (),
                {id(n): "elem" for n in moved})
    return [rest, out]


def _merge_into_consumer(parts: list[Group], queue: list[Group]) -> Group | None:
    """Fold the moved row math (``parts[1]``) into the one later elementwise group of the
    same shape that reads all of it (an optimizer update reading a bias gradient times
    ``1 - beta``), so moving it costs no kernel. No cycle can form: nothing else reads
    the moved nodes, and they read only groups that run before that consumer."""
    moved = parts[1]
    ids = {id(n) for n in moved.nodes}
    users = {id(u) for n in moved.nodes for u in n.out.users if id(u) not in ids}
    if not users:
        return None
    for c in queue:
        cids = {id(n) for n in c.nodes}
        if users <= cids:
            if c.kind == "elementwise" and c.shape == moved.shape:
                c.nodes = moved.nodes + c.nodes  # they read nothing of c: first is in order
                for n in moved.nodes:
                    c.role[id(n)] = "elem"
                del parts[1]
                return c
            return None
    return None


def compile_graph(graph: Graph, *, check: bool = True, make_kernel=None) -> Compiled:
    """Optimise and lower ``graph`` (modified in place) into an executable plan;
    ``make_kernel`` (spec -> kernel) defaults to the generated-kernel factory."""
    decompose(graph)
    simplify(graph)
    graph.toposort()
    fusion = fuse(graph)
    make_kernel = make_kernel or get_compile_kernel()
    slot = {}
    names = []
    for v in graph.all_values():
        slot[id(v)] = len(names)
        names.append(v.name)
    steps: list[Step] = []
    groups = list(fusion.groups)
    final_groups: list[Group] = []
    kernels_made = 0
    while groups:
        g = groups.pop(0)
        if g.kind in ("elementwise", "rows"):
            try:
                low = lower_elementwise(g) if g.kind == "elementwise" else lower_rows(g)
                kernel = make_kernel(low.spec)
            except Exception as e:  # noqa: BLE001 - any failure: split and retry smaller
                parts = _evict_rows(g, e) if isinstance(e, RowStoreConflict) else None
                if parts is not None:
                    ops = ", ".join(n.op for n in parts[1].nodes)
                    into = _merge_into_consumer(parts, groups)
                    finish_groups(graph, parts + groups)
                    _log("kernels", f"moved {ops} out of {g.describe()} ({e}) into "
                         + (into.describe() if into is not None else "a kernel of its own"))
                    groups = parts + groups
                    continue
                if len(g.nodes) > 1:
                    parts = split(g)
                    finish_groups(graph, parts)
                    _log("kernels", f"split {g.describe()}: {e}")
                    for m in g.nodes:
                        fusion.reasons[m.out.name] = f"its group could not be lowered: {e}"
                    groups = parts + groups
                    continue
                n = g.nodes[0]
                _log("kernels", f"no kernel for %{n.out.name} = {n.op}: {e}")
                fusion.reasons[n.out.name] = f"no kernel ({e}): runs its NumPy implementation"
                g.kind = "library"
                steps.append(_node_step(n, slot, "library"))
                final_groups.append(g)
                continue
            kernels_made += 1
            step = _kernel_step(low, kernel, slot, g, g.describe())
            _log("kernels", f"kernel {kernels_made}: {g.describe()}\n"
                 + str(getattr(kernel, "source", "")))
            steps.append(step)
        elif g.kind == "matmul":
            steps.append(_matmul_step(g.nodes[0], slot))
        else:
            steps.append(_node_step(g.nodes[0], slot, "view" if g.kind == "view" else "library"))
        final_groups.append(g)
    fusion.groups = order_groups(final_groups)
    plan = _plan_memory(graph, steps, slot, names)
    _mark_stable(plan)
    if check:
        check_plan(plan.memory, plan._reqs)
    _prefetch(make_kernel, graph, plan)
    _log("memory", str(plan.memory.summary()) + f"\nunplanned (op-by-op) intermediates: "
         f"{plan.unplanned_bytes} bytes")
    return Compiled(graph, fusion, plan)


def _plan_memory(graph: Graph, steps: list[Step], slot: dict, names: list[str]) -> Plan:
    by_slot = {slot[id(v)]: v for v in graph.all_values()}
    out_slots = [slot[id(o)] for o in graph.outputs]
    out_set = set(out_slots)
    buffer_slots: list[int] = []
    def_step: dict[int, int] = {}
    roots: dict[int, frozenset] = {}
    for i, s in enumerate(steps):
        for o in s.outputs:
            def_step[o] = i
            if s.kind in ("kernel", "matmul"):
                roots[o] = frozenset([o])
                buffer_slots.append(o)
            else:
                r: set = set()
                for a in s.inputs:
                    r |= roots.get(a, frozenset())
                roots[o] = frozenset(r)
    n_steps = len(steps)
    last: dict[int, int] = {b: def_step[b] for b in buffer_slots}
    for i, s in enumerate(steps):
        for a in s.inputs:
            for b in roots.get(a, ()):
                last[b] = max(last[b], i)
    copy_outputs = []
    for o in out_slots:
        rs = roots.get(o, frozenset())
        planned_root = any(b not in out_set for b in rs)
        is_const = by_slot[o].kind == "const"
        copy_outputs.append(planned_root or is_const)
        for b in rs:
            last[b] = n_steps  # read by the final output copy
    planned = [b for b in buffer_slots if b not in out_set]
    # in-place: a kernel output may overwrite a dead, same-size planned input
    inplace_src: dict[int, int] = {}
    used_src: set[int] = set()
    for i, s in enumerate(steps):
        if s.kind != "kernel":
            continue
        rows = s.spec is not None and s.spec.kind == "rows"
        for oi, o in enumerate(s.outputs):
            if o in out_set:
                continue
            if rows and s.spec.outputs[oi][1] != "full":
                # a row result is stored when its reduce loop ends, while later loops
                # of the same row may still read the input it would overwrite
                continue
            ov = by_slot[o]
            for a in s.inputs:
                av = by_slot[a]
                if a not in planned or a in used_src or last.get(a) != i:
                    continue
                if av.shape != ov.shape or av.dtype is not ov.dtype:
                    continue
                if any(a in roots.get(x, ()) for x in s.inputs if x != a):
                    continue  # also read through a view: overwriting would corrupt it
                if s.spec is not None and s.spec.kind == "rows" and ov.shape != av.shape:
                    continue
                inplace_src[o] = a
                used_src.add(a)
                s.inplace[o] = a
                break
    reqs = []
    for b in planned:
        v = by_slot[b]
        reqs.append(BufferReq(names[b], v.nbytes, def_step[b], last[b],
                              names[inplace_src[b]] if b in inplace_src else None))
    mem = plan_memory(reqs)
    buffers = []
    for b in buffer_slots:
        v = by_slot[b]
        is_planned = b not in out_set
        buffers.append(Buffer(b, v.name, v.shape, v.dtype.np, v.nbytes, is_planned,
                              mem.offsets[names[b]] if is_planned else -1))
    unplanned = sum(n.out.nbytes for n in graph.nodes
                    if REGISTRY[n.op].category != "view" and slot[id(n.out)] not in out_set)
    plan = Plan(steps, buffers, len(names), [slot[id(v)] for v in graph.inputs],
                [(slot[id(c)], c.data) for c in graph.constants], out_slots, copy_outputs,
                mem, mem.arena_bytes, unplanned, names)
    plan._reqs = reqs
    return plan
