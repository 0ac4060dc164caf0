"""Plan steps: how each kind of step runs at call time.

A generated kernel (``_KernelRun``: arguments bound once per layout), a BLAS
matmul (``matmul_step``: stacked operands folded into one 2-D GEMM on views), a
view (``_ViewRun``: cached views of arena buffers) or a library op run through its
implementation (``node_step``; into its planned buffer where the implementation takes
``out=``, ``_IntoRun``). ``lower.py`` decides which step each group
becomes; this module only knows how to run them."""
from __future__ import annotations


import functools
import threading
import weakref

import numpy as np

from ir.graph import Node, Value
from ir.interpreter import eval_op
from ir.ops.linalg import gemm_swaps_operands
from ir.passes.fusion import Group
from ir.registry import REGISTRY
from ir.shapes import view_strides

from .plan import Plan, Step
from .logs import log as _log
from .specs import Lowered


RECORDING = threading.local()
_UNSEEN = object()


SERIAL_EPILOGUE_MAX = 1 << 20
# bytes: a stacked left operand whose rows do not collapse by a view is copied into a
# buffer the step keeps, up to this size, for one GEMM (larger: one GEMM per leading
# index, each large enough to run at the BLAS rate)
FOLD_COPY_MAX = 8 << 20


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
        rec = getattr(RECORDING, "variants", None)
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
            # bound first, then run through the binding: the call's layout is planned
            # and its arguments marshalled once (a GPT step's first run did both twice
            # for each of its 213 kernel steps)
            b = self._bind(env, ins + outs)
            if b is not None:
                b()
            elif self.serial:
                self.kernel(ins, outs, parallel=False)
            else:
                self.kernel(ins, outs)
        except Exception as e:  # noqa: BLE001 - generation failed at first call
            from .reference import ReferenceKernel
            self.bound = None
            if isinstance(self.kernel, ReferenceKernel):
                raise
            _log("kernels", f"kernel for {self.name} failed ({type(e).__name__}: {e}); "
                 "using the NumPy evaluation of its spec")
            self.kernel = ReferenceKernel(self.low.spec)
            self.kernel(ins, outs)

    def _bind(self, env, ops: list):
        """Bind the kernel to this call's layout (``self.bound``), and return the binding;
        None where the call takes the general path. Errors (a kernel that does not
        compile) are the caller's, as a general call's would be."""
        bind = getattr(self.kernel, "bind", None)
        if bind is None:
            return None
        raws = [env[s] for s in self.slots]
        layout = tuple(r.strides for r in raws)
        if layout == self.refused:
            return None  # binding this layout was refused before (e.g. a threaded call)
        self.ptr = ptr = _ptr_reader()
        b = None
        if all(ptr(r) == ptr(o) for r, o in zip(raws, ops)):  # no transform copied
            nin = len(self.pairs_in)
            b = bind(ops[:nin], ops[nin:], False if self.serial else None)
        if b is None:
            self.refused = layout
            return None
        self.objs = [(s, r) for s, r in zip(self.slots, raws) if s in self.stable]
        self.var = [[k, s, weakref.ref(r)] for k, (s, r) in enumerate(zip(self.slots, raws))
                    if s not in self.stable]
        self.strides = [r.strides for r in raws]
        self.sharing = b.sharing()
        self.bound = b
        return b


def _ptr_reader():
    """The kernels package's fast data-pointer read (loaded by the time a kernel is
    bound), or the array interface's."""
    try:
        from kernels.cpu import _ptr
        return _ptr
    except ImportError:  # pragma: no cover - kernels without the CPU back end
        return lambda a: a.__array_interface__["data"][0]


def _blas_leaves_cores() -> bool:
    try:
        from kernels.cpu import blas_leaves_cores
    except ImportError:  # pragma: no cover - kernels without the CPU back end
        return False
    return blas_leaves_cores()


def kernel_step(low: Lowered, kernel, slot, g: Group, name: str) -> Step:
    in_slots = [slot[id(v)] for v in low.ext]
    out_slots = [slot[id(v)] for v in low.out_vals]
    # An epilogue right after a BLAS call runs serially unless it is large, where
    # OpenBLAS's threads still spin then (its default ~0.1 s): a parallel kernel's threads
    # would fight them (measured: a 256x512 bias+relu went from 0.2 ms serial to 20 ms
    # parallel). With BLAS's jobs on the native pool or its spin shortened
    # (kernels.cpu.blas_leaves_cores) the rule is off: GPT's
    # GELU and attention softmax epilogues then split over threads.
    numel = int(np.prod(low.full_shape, dtype=np.int64))
    serial = numel <= SERIAL_EPILOGUE_MAX and any(
        v.producer is not None and v.producer.op == "matmul" for v in low.ext) and \
        not _blas_leaves_cores()
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


def matmul_step(n: Node, slot) -> Step:
    """One BLAS call straight into the planned output buffer. A stacked left operand
    times a matrix (a Linear layer's ``[B, T, K] @ [K, N]``) is folded into one 2-D GEMM
    when its leading dims collapse by a view (NumPy would call BLAS once per batch
    entry); transposed operands reach BLAS as views (NumPy passes the transpose flag
    when one stride is unit), and batched operands (attention's 4-D views) are given
    to NumPy's matmul loop as the views the trace made, never copied here. A 2-D weight
    gradient ``g @ x^T`` that BLAS runs faster swapped (``gemm_swaps_operands``) is
    computed as ``x @ g^T`` into a small buffer kept by the step, then copied. A plain
    or folded product is bound once per layout (``_MatmulRun``)."""
    a, b = n.inputs
    sa, sb, so = slot[id(a)], slot[id(b)], slot[id(n.out)]
    run = _MatmulRun(sa, sb, so, a.ndim >= 3 and b.ndim == 2)
    return Step("matmul", f"matmul {list(a.shape)} @ {list(b.shape)}", run, [sa, sb], [so], [n],
                bytes_moved=a.nbytes + b.nbytes + n.out.nbytes)


@functools.cache
def _gemm_binder():
    """``kernels.cpu.bound_gemm`` (prepared GEMM calls), or None without the CPU back
    end (looked up once: a step with a fresh output asks on every call)."""
    try:
        from kernels.cpu import bound_gemm
        return bound_gemm
    except ImportError:  # pragma: no cover - kernels without the CPU back end
        return None


class _MatmulRun:
    """The ``run`` of a matmul step. The first call on a layout runs NumPy's matmul
    (``_gemm``) and binds the product (``kernels.cpu.bound_gemm``: the same GEMM call
    NumPy made, its arguments built once); while the step sees the same three arrays,
    a call is the native call alone (0.86 us a step around a 2 x 2 product, against
    1.7-1.9 us through NumPy's matmul), and other arrays of that layout are repointed.
    Layouts NumPy would not run as one plain GEMM keep NumPy's matmul. A large float32
    product may bind as tiles (``kernels.cpu.tiled_gemm``), which sum in another order:
    the first call then reruns them, so that every call gives the tiles' bits."""

    __slots__ = ("sa", "sb", "so", "fold", "modes", "swaps", "binds", "bound", "refs",
                 "swapped")

    def __init__(self, sa: int, sb: int, so: int, fold: bool) -> None:
        self.sa, self.sb, self.so, self.fold = sa, sb, so, fold
        self.swapped = _Binding((so, sa, sb))  # a swapped product's GEMM and copy
        # operand layouts -> (a's 2-D shape, out's 2-D shape, a's copy buffer) or None
        self.modes: dict = {}
        self.swaps: dict = {}  # operand layouts -> the (N, M) buffer of a swapped GEMM
        self.binds: dict = {}  # 2-D layouts -> BoundGemm, or None (NumPy runs them)
        self.bound = None      # the BoundGemm of the last call, and its arrays (weak)
        self.refs: tuple = ()

    def __call__(self, env) -> None:
        if self.swapped.call is not None and self.swapped.run(env):
            return
        x, y, o = env[self.sa], env[self.sb], env[self.so]
        b = self.bound
        if b is not None:
            r = self.refs
            if r[0]() is x and r[1]() is y and r[2]() is o:
                b()
                return
            self.bound = None
        if not self.fold and x.ndim == 2:
            key = (x.shape, y.shape, x.strides, y.strides, o.strides)
            if key not in self.swaps:
                swap = o.flags.c_contiguous and gemm_swaps_operands(x, y)
                self.swaps[key] = np.empty(o.shape[::-1], o.dtype) if swap else None
            tmp = self.swaps[key]
            if tmp is not None:
                # through the layout's binding, as the swapped binding runs it: tiles
                # (``bound_gemm``) give the same bits whichever of the two runs
                self._product(y.T, x.T, tmp, y.T, tmp, keep=False)
                o[...] = tmp.T
                if _gemm_binder() is not None:
                    self.swapped.make("matmul", _bind_swapped, env, [x, y, o, tmp], {})
                return
            self._product(x, y, o, x, o)
            return
        if self.fold:
            key = (x.shape, x.strides, o.strides)
            mode = self.modes.get(key, 0)
            if mode == 0:
                mode = self.modes[key] = _fold_mode(x, o)
            if mode is not None:
                if mode[2] is not None:  # the copy runs on every call: no fast path
                    np.copyto(mode[2], x)
                    self._product(x, y, o, mode[2].reshape(mode[0]), o.reshape(mode[1]),
                                  keep=False)
                    return
                self._product(x, y, o, x.reshape(mode[0]), o.reshape(mode[1]))
                return
        _gemm(x, y, o)

    def _product(self, x, y, o, a2, o2, keep: bool = True) -> None:
        """``o2 = a2 @ y`` (2-D views of the step's ``x`` and ``o``, or of a copy of x):
        through the layout's binding where it has one, else NumPy's matmul, binding it
        for the next call; ``keep``: the next call with these arrays may skip straight
        to the binding."""
        binder = _gemm_binder()
        if binder is None:
            _gemm(a2, y, o2)
            return
        layout = binder.layout_of(a2, y, o2)
        bd = self.binds.get(layout, _UNSEEN)
        if bd is _UNSEEN:
            _gemm(a2, y, o2)  # NumPy's matmul the first time (tests watch this call)
            try:
                bd = self.binds[layout] = binder.bind(a2, y, o2)
            except binder.Deferred:
                return  # its kernel compiles with the plan's batch: bind next call
            if bd is None:
                return
            if not bd.exact:
                bd()   # tiles sum in another order: every call of the plan gets their bits
        elif bd is None or not bd.repoint(a2, y, o2):
            _gemm(a2, y, o2)  # NumPy's layout, or these arrays overlap
            return
        else:
            bd()
        if keep:
            self.bound = bd
        self.refs = (weakref.ref(x), weakref.ref(y), weakref.ref(o))


def _bind_swapped(x: np.ndarray, y: np.ndarray, o: np.ndarray, tmp: np.ndarray):
    """``tmp = y.T @ x.T`` then ``o = tmp.T`` (a swapped product: ``_MatmulRun``) as one
    prepared call, or None."""
    from kernels.cpu import block_copy
    from kernels.cpu import handwritten as hw
    gemm = _gemm_binder().bind(y.T, x.T, tmp)
    t = block_copy.transpose_task(tmp, o, "matmul")
    if gemm is None or not o.flags.c_contiguous or not tmp.flags.c_contiguous:
        return None
    if t.kernel._fn is None:
        hw.run_tasks([t])   # compiles (or loads) the kernel; the step's result is unchanged
    return hw.chain([gemm, t.kernel.bind(*t.args, n=t.n, parallel=t.parallel)])


def _fold_mode(x: np.ndarray, o: np.ndarray):
    """How a stacked ``x`` (..., M, K) times a matrix runs as one GEMM into ``o``:
    ``(x's 2-D shape, o's 2-D shape, None)`` on views, ``(rows, o's 2-D shape, buffer)``
    where x's rows are copied into a buffer the step keeps, or None (NumPy's loop)."""
    if any(s < 0 for s in x.strides):
        return None
    xs = _fold_rows(x.shape, x.strides, x.itemsize)
    os_ = _fold_rows(o.shape, o.strides, o.itemsize)
    if os_ is None:
        return None
    if xs is not None:
        return (xs, os_, None)
    if x.nbytes <= FOLD_COPY_MAX:
        # rows that do not collapse by a view (a batch_first RNN's permuted output
        # into its decoder): copied into a kept buffer, then one GEMM, as eager's
        # matmul does (NumPy would run one small GEMM per leading index)
        rows = (int(np.prod(x.shape[:-1], dtype=np.int64)), x.shape[-1])
        return (rows, os_, np.empty(x.shape, x.dtype))
    return None


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


def mark_stable(plan: Plan) -> None:
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


class _Binding:
    """A library step's prepared native call (an implementation's ``bind``) and what it
    was made for: the arrays in ``slots`` (weakly, and as data pointer, shape, strides
    and dtype) and the kernels' thread count. ``run`` calls it while the step sees the
    same arrays, or arrays over the same memory laid out the same (a view of an input is
    made anew on each call), and the same thread count. Once arrays have outdated two
    bindings (an output allocated anew on each call), a binding is made only after two
    calls in a row saw the same memory: GPT's embedding gradients, fresh outputs that
    the allocator hands the same memory on every call once training runs, moved
    during the first calls."""

    __slots__ = ("slots", "call", "refs", "threads", "sig", "misses", "ptr", "last")

    def __init__(self, slots: tuple) -> None:
        self.slots = slots
        self.call = None
        self.refs: list = []
        self.threads = 0
        self.sig: list = []
        self.misses = 0  # bindings these arrays outdated: from 2 on, bind when settled
        self.ptr = None
        self.last: list | None = None  # the last call's signature, from 2 misses on

    def run(self, env) -> bool:
        """Call the binding if it holds for ``env``; False (and it is dropped) if not."""
        b = self.call
        if b is None:
            return False
        if _threads() == self.threads:
            if all(r() is env[s] for r, s in zip(self.refs, self.slots)):
                b()
                return True
            if self._signature(env) == self.sig:
                self.refs = [weakref.ref(env[s]) for s in self.slots]
                b()
                return True
        self.call = None
        self.misses += 1
        return False

    def _signature(self, env) -> list:
        """Each array's memory and layout: data pointer, shape, strides, dtype."""
        ptr = self.ptr
        return [(ptr(a), a.shape, a.strides, a.dtype) for a in (env[s] for s in self.slots)]

    def make(self, name: str, binder, env, args: list, attrs: dict, **arrays) -> None:
        """Bind ``binder(*args, **arrays, **attrs)`` (after a call of the step: its
        kernels are loaded); from two misses on, only if the previous call saw the same
        memory."""
        if getattr(RECORDING, "variants", None) is not None or \
                not all(isinstance(env[s], np.ndarray) for s in self.slots):
            return
        self.ptr = self.ptr or _ptr_reader()
        if self.misses >= 2:
            sig, last = self._signature(env), self.last
            self.last = sig
            if sig != last:
                return
        try:
            self.call = binder(*args, **arrays, **attrs)
        except Exception as e:  # noqa: BLE001 - no binding: the step calls the op
            _log("kernels", f"binding {name} failed ({type(e).__name__}: {e})")
            return
        self.refs = [weakref.ref(env[s]) for s in self.slots]
        self.threads = _threads()
        self.sig = self._signature(env)


class _BoundRun:
    """A step's ``run`` whose prepared native call is a ``_Binding`` (``binding``)."""

    __slots__ = ()

    @property
    def bound(self):
        """The prepared call in use, or None."""
        return self.binding.call


class _IntoRun(_BoundRun):
    """The ``run`` of a library step whose op implementation takes ``out=``
    (``kernels.cpu.handwritten.writes_out``: the native conv, pooling, scatter-add and
    recurrent kernels): it writes into the output's buffer, which the plan provides
    (an arena view, fixed once the plan is built, or the call's fresh output), so a
    steady-state call allocates nothing large. Should the op's implementation have been
    replaced by one without ``out=`` since, its result is copied in.

    An implementation with a ``bind`` (``kernels.cpu.handwritten.serve``) is bound after
    a call (``_Binding``): while the binding holds, a call is the bound native call
    alone. Inside a training step a wrapper's Python ran 5-10x slower than alone, its
    objects out of cache after the kernels before it: GPT's index checks took ~57 us
    each there, ~38 of them around the kernel's call."""

    __slots__ = ("op", "ins", "so", "attrs", "binding")

    def __init__(self, op, ins, so: int, attrs: dict) -> None:
        self.op = op
        self.ins = ins
        self.so = so
        self.attrs = attrs
        self.binding = _Binding((so,) + tuple(s for s, _ in ins if s is not None))

    def __call__(self, env) -> None:
        if self.binding.run(env):
            return
        args = [env[s] if s is not None else c for s, c in self.ins]
        out = env[self.so]
        fn = self.op.impl
        with np.errstate(all="ignore"):
            if getattr(fn, "writes_out", False):
                fn(*args, out=out, **self.attrs)
                binder = getattr(fn, "bind", None)
                if binder is not None:
                    self.binding.make(self.op.name, binder, env, args, self.attrs, out=out)
                return
        np.copyto(out, eval_op(self.op, args, self.attrs), casting="unsafe")


_NTHREADS: list = []


def _threads() -> int:
    """The kernels' thread count (a binding splits its work for it)."""
    if not _NTHREADS:
        try:
            from kernels.cpu import _nthreads as count
        except ImportError:  # pragma: no cover - kernels without the CPU back end
            def count() -> int:
                return 1
        _NTHREADS.append(count)
    return _NTHREADS[0]()


def writes_into(n: Node) -> bool:
    """Whether a library step for ``n`` writes into a buffer the plan gives it: the op's
    implementation takes ``out=`` and the output is an array of the node's dtype."""
    return bool(getattr(REGISTRY[n.op].impl, "writes_out", False)) and \
        getattr(n.out.dtype, "np", None) is not None


class _PoolPairRun(_BoundRun):
    """The ``run`` of ``pool_pair_step``: both results from one pass where the indices
    op's implementation offers ``with_values`` and takes these arrays, else the two
    ops one after the other. A ``with_values`` with a ``bind`` is bound as ``_IntoRun``
    binds its op (``_Binding``)."""

    __slots__ = ("op", "sx", "si", "sv", "attrs", "runs", "binding")

    def __init__(self, op, sx: int, si: int, sv: int, attrs: dict, runs: tuple) -> None:
        self.op = op
        self.sx, self.si, self.sv = sx, si, sv
        self.attrs = attrs
        self.runs = runs
        self.binding = _Binding((si, sv, sx))

    def __call__(self, env) -> None:
        if self.binding.run(env):
            return
        both = getattr(self.op.impl, "with_values", None)
        if both is not None and getattr(RECORDING, "variants", None) is None:
            x, idx, vals = env[self.sx], env[self.si], env[self.sv]
            with np.errstate(all="ignore"):
                if both(x, indices=idx, values=vals, **self.attrs):
                    binder = getattr(both, "bind", None)
                    if binder is not None:
                        self.binding.make(self.op.name, binder, env, [x], self.attrs,
                                          indices=idx, values=vals)
                    return
        for run in self.runs:
            run(env)


def pool_pairs(nodes) -> dict[int, Node]:
    """``max_pool_indices`` nodes whose indices a ``pool_gather`` of the same input
    reads: id(indices node) -> that gather (the first, where several do)."""
    out: dict[int, Node] = {}
    for n in nodes:
        if n.op != "pool_gather" or len(n.inputs) != 2:
            continue
        x, idx = n.inputs
        p = idx.producer if isinstance(idx, Value) else None
        if p is not None and p.op == "max_pool_indices" and p.inputs[0] is x and \
                writes_into(p) and writes_into(n):
            out.setdefault(id(p), n)
    return out


def pool_pair_step(n_idx: Node, n_gather: Node, slot) -> Step:
    """One library step for max pooling's indices and the gather of its values (both
    written into the buffers the plan gives them): see ``_PoolPairRun``."""
    a, b = node_step(n_idx, slot, "library"), node_step(n_gather, slot, "library")
    sx, si, sv = slot[id(n_idx.inputs[0])], slot[id(n_idx.out)], slot[id(n_gather.out)]
    run = _PoolPairRun(REGISTRY[n_idx.op], sx, si, sv, dict(n_idx.attrs), (a.run, b.run))
    return Step("library", f"{a.name} + {b.name}", run, [sx], [si, sv], [n_idx, n_gather],
                bytes_moved=n_idx.inputs[0].nbytes + n_idx.out.nbytes + n_gather.out.nbytes,
                into=True)


def node_step(n: Node, slot, kind: str) -> Step:
    ins = [(slot[id(a)], None) if isinstance(a, Value) else (None, a) for a in n.inputs]
    so = slot[id(n.out)]
    opdef = REGISTRY[n.op]
    attrs = n.attrs
    into = False

    if kind == "view":
        run = _ViewRun(opdef.impl, ins, so, attrs)
    elif writes_into(n):
        run = _IntoRun(opdef, ins, so, attrs)
        into = True
    else:
        def run(env):
            env[so] = eval_op(opdef, [env[s] if s is not None else c for s, c in ins], attrs)
    return Step(kind, f"{n.op} %{n.out.name}", run, [s for s, _ in ins if s is not None], [so],
                [n], bytes_moved=sum(a.nbytes for a in n.value_inputs) + n.out.nbytes,
                into=into)
