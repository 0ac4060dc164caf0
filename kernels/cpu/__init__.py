"""CPU kernels: ``compile_kernel(spec)`` turns a ``KernelSpec`` into a callable.

The returned ``CompiledKernel`` is generic in sizes and strides. On each call
it collapses dimensions that are contiguous for every operand, picks a loop
variant (flat when everything is one contiguous run, else strided with the
innermost axis classed unit/zero/general stride per operand; serial below
``PARALLEL_THRESHOLD`` elements, split over the threads of ``native_pool`` above),
generates that variant's Numba source once (``kernels.cpu.codegen``), loads its machine code
through the disk cache (``kernels.cache``, ``kernels.cpu.native``: a warm
process does not import Numba) and calls it with raw pointers and sizes.

Cold compiles run in parallel: right before a cold plan's first run, ``prefetch``
gets the loop variant of each kernel the run will use (``runtime.lower`` runs the plan
once on copies of that call's inputs, kernels only recording) and compiles those that
are neither loaded nor on disk in worker processes (Numba holds the GIL while it
compiles, so threads would not help). Workers are fresh interpreters running
``python -m kernels.cpu.worker`` (never ``multiprocessing``, which imports the user's
``__main__`` again); each writes into the same signed disk cache with the same per-user
key, and the parent loads those objects through the ordinary checked path, exactly as a
warm process would. The parent compiles too, taking jobs from the back of the queue
that no worker has started. ``GCOMPILE_COMPILE_WORKERS`` sets the number of workers
(default: one fewer than the usable cores; 0 turns this off).
Outputs are always passed in; an input that is exactly an output (same memory,
same strides) is read from the output, so in-place epilogues vectorise.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np

from .. import cache as _cache
from ..spec import KernelSpec, canonical
from . import codegen, native, native_pool

__all__ = ["compile_kernel", "CompiledKernel", "BoundCall", "RowsCall", "cache_stats",
           "PARALLEL_THRESHOLD", "set_parallel_threshold", "prefetch", "needs_compile",
           "defer_compile", "defer_build", "defer_call", "defer_native", "dry_run",
           "compile_workers", "set_compile_observer"]

# Elements per call above which a kernel's range is split over threads. Dispatching to
# the pool costs ~20-40 us per call on this 2-core machine (benchmarks/kernels_micro.py
# prints the serial/parallel crossover: ~0.5-2M elements for a cheap op when busy).
PARALLEL_THRESHOLD = int(os.environ.get("GCOMPILE_PARALLEL_THRESHOLD", 1 << 19))

_STATS = {"memory_hits": 0, "disk_hits": 0, "compiles": 0, "rejected": 0,
          "worker_compiles": 0, "compile_cpu_s": 0.0, "worker_cpu_s": 0.0}
_KERNELS: dict[KernelSpec, CompiledKernel] = {}
_LOCK = threading.RLock()


def set_parallel_threshold(n: int) -> int:
    """Set the parallel threshold (elements); returns the previous value."""
    global PARALLEL_THRESHOLD
    old = PARALLEL_THRESHOLD
    PARALLEL_THRESHOLD = int(n)
    return old


# per-element calls that cost several plain arithmetic ops each (vector polynomials)
_COSTLY = frozenset({"exp", "expm1", "log", "log1p", "log2", "log10", "tanh", "sigmoid", "erf",
                     "pow", "sin", "cos", "tan", "atan", "atan2", "asin", "acos", "sinh",
                     "cosh", "asinh", "acosh", "atanh", "erfc", "gelu", "gelu_backward",
                     "softplus", "silu", "elu"})


def work_weight(spec: KernelSpec) -> int:
    """How many plain elementwise passes one element of ``spec`` costs: one per pass
    over the data plus three per costly call. ``PARALLEL_THRESHOLD`` is weighed against
    elements times this, since it was set for one cheap pass: the cross-entropy rows of
    the LSTM benchmark ([2048, 65]; three passes and two exps per element) took 325 us
    on one thread, 2.4 ns an element, under a threshold meant for ~0.3 ns ones."""
    calls = sum(1 for ph in spec.phases for st in ph.stmts if st.op in _COSTLY)
    return len(spec.phases) + 3 * calls


def cache_stats() -> dict:
    """Kernel cache counters for this process, and the cache folder."""
    return dict(_STATS, dir=str(_cache.cache_dir()))


def compile_kernel(spec: KernelSpec) -> CompiledKernel:
    """The compiled kernel for ``spec`` (one object per structurally equal spec, up
    to the names of its statements)."""
    spec = canonical(spec)
    with _LOCK:
        k = _KERNELS.get(spec)
        if k is not None:
            _STATS["memory_hits"] += 1
            return k
        spec.validate()
        used = set(spec.inputs) | {d for d, _ in spec.outputs} | {
            st.dtype for p in spec.phases for st in p.stmts + p.post}
        if "float16" in used:
            raise NotImplementedError("kernels.cpu: float16 is not supported by the generated "
                                      "CPU kernels (Numba has no float16 arithmetic)")
        k = CompiledKernel(spec)
        _KERNELS[spec] = k
        return k


def _estrides(a: np.ndarray) -> list[int]:
    isz = a.itemsize
    out = []
    for s in a.strides:
        if s % isz:
            raise NotImplementedError("kernels: array strides that are not a multiple of the "
                                      "item size")
        out.append(s // isz)
    return out


def _ptr_slow(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


_DATA_AT = object.__basicsize__  # PyArrayObject: PyObject_HEAD, then ``char *data``
_read_ptr = ctypes.c_void_p.from_address


def _ptr_fast(a: np.ndarray) -> int:
    """The data pointer read from the array object (7x faster than the interface dict;
    checked against it below, and not used where the layout differs)."""
    return _read_ptr(id(a) + _DATA_AT).value or 0


def _layout_ok() -> bool:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    return all(_ptr_fast(v) == _ptr_slow(v) for v in (base, base[1:, 2:], base.T[3:]))


_ptr = _ptr_fast if _layout_ok() else _ptr_slow
_DUMMY = np.zeros(8, np.float64)  # never read: operands of zero size point here
_MAX_C_ARGS = 1024  # ctypes' limit on a foreign function's arguments


def _load_entry(gen: codegen.Generated):
    """The native entry point of one generated variant: from the disk cache when an
    intact object signed for this source is there and is what this variant expects
    (its module's entry symbol, its arity, resolvable externals), else compiled by
    Numba and stored."""
    nargs = codegen.c_arity(gen.params)
    owner = _cache.import_name(gen.source)
    stored = _cache.load_object(gen.source)
    if stored is not None:
        obj, head = stored
        try:
            if head["nargs"] != nargs:
                raise native.ObjectRejected(f"kernels: stored object code takes "
                                            f"{head['nargs']} arguments, not {nargs}")
            fn = native.load(obj, head["symbol"], nargs, head["externals"], owner)
        except native.ObjectRejected:
            _STATS["rejected"] += 1
            _cache.drop_object(gen.source)
        else:
            _STATS["disk_hits"] += 1
            return fn
    _start_workers_early()
    t0 = time.process_time()
    obj, meta = _compile_object(gen.source)
    _STATS["compile_cpu_s"] += time.process_time() - t0
    meta["nargs"] = nargs
    _STATS["compiles"] += 1
    fn = native.load(obj, meta["symbol"], nargs, meta["externals"], owner)
    _cache.store_object(gen.source, obj, meta)
    return fn


def _compile_object(source: str) -> tuple[bytes, dict]:
    """Compile the variant's ``entry`` cfunc with Numba; its object code and header."""
    from .pipeline import remembered_calls  # imports Numba
    with remembered_calls():
        mod, _ = _cache.load_module(source)
    entry = mod.entry
    lib = entry._library
    final = lib._final_module
    # the object code Numba's JIT produced (nopython libraries keep it for caching);
    # emitting it again would run LLVM's code generator a second time
    try:
        obj = lib._get_compiled_object()
    except (AttributeError, ValueError, RuntimeError):
        obj = lib._codegen._tm.emit_object(final)
    externals = sorted({f.name for f in final.functions if f.is_declaration}
                       | {g.name for g in final.global_variables if g.is_declaration})
    missing = native.unresolved(externals)
    if missing:
        raise RuntimeError(f"kernels: a generated kernel needs runtime symbols {missing} that "
                           "a process without Numba cannot provide (kernels must not "
                           "allocate or call into Numba's helpers)")
    return obj, {"symbol": entry.native_name, "externals": externals}


class CompiledKernel:
    """A kernel generic in sizes and strides; call with lists of input and output arrays."""

    def __init__(self, spec: KernelSpec) -> None:
        self.spec = spec
        self._fns: dict[tuple, object] = {}
        self._sources: dict[tuple, codegen.Generated] = {}
        self._plans: dict[tuple, tuple] = {}
        self._in_np = [np.dtype(d) for d in spec.inputs]
        self._out_np = [np.dtype(d) for d, _ in spec.outputs]
        self._weight = work_weight(spec)
        nin = len(spec.inputs)
        alias = (-1,) * nin
        if spec.kind == "elementwise":
            primary = ("flat", alias, None)
        else:
            primary = ("rows", alias, ("c",) * (nin + len(spec.outputs)))
        self.primary = primary
        self.prefetched = False
        gen = self._source(primary)
        if codegen.c_arity(gen.params) + 16 > _MAX_C_ARGS:  # + the strided variants' tables
            raise NotImplementedError(f"kernels: {len(spec.inputs)} inputs and "
                                      f"{len(spec.outputs)} outputs are more arguments than "
                                      "a ctypes call takes")
        self.source = gen.source

    def __repr__(self) -> str:
        return (f"CompiledKernel({self.spec.kind}, inputs={list(self.spec.inputs)}, "
                f"outputs={list(self.spec.outputs)}, variants={len(self._fns)})")

    # ---- variants ------------------------------------------------------------------------
    def sources_run(self) -> list[tuple[tuple, str]]:
        """(variant, source) of every loop variant this kernel has loaded to run, in the
        order first used: what ``explain`` shows (the primary variant is only what a
        contiguous call would run)."""
        return [(v, self._sources[v].source) for v in list(self._fns) if v in self._sources]

    def _source(self, variant: tuple) -> codegen.Generated:
        gen = self._sources.get(variant)
        if gen is None:
            if self.spec.kind == "elementwise":
                gen = codegen.elementwise_source(self.spec, variant)
            elif variant[0] == "rowsblk":
                gen = codegen.rows_blocked_source(self.spec, variant)
            else:
                gen = codegen.rows_source(self.spec, variant)
            self._sources[variant] = gen
        return gen

    def _fn(self, variant: tuple):
        fn = self._fns.get(variant)
        if fn is None:
            with _LOCK:
                fn = self._fns.get(variant)
                if fn is None:
                    fn = self._fns[variant] = _load_entry(self._source(variant))
        return fn

    # ---- call ----------------------------------------------------------------------------
    def __call__(self, inputs: list[np.ndarray], outputs: list[np.ndarray],
                 parallel: bool | None = None) -> None:
        """Run on ``inputs`` into ``outputs``. ``parallel``: None uses PARALLEL_THRESHOLD,
        False forces one thread (e.g. right after a BLAS call), True splits over threads."""
        spec = self.spec
        if len(inputs) != len(spec.inputs) or len(outputs) != len(spec.outputs):
            raise ValueError(f"kernel expects {len(spec.inputs)} inputs and "
                             f"{len(spec.outputs)} outputs, got {len(inputs)} and "
                             f"{len(outputs)}")
        for i, a in enumerate(inputs):
            if a.dtype != self._in_np[i]:
                raise TypeError(f"kernel input {i}: expected dtype {spec.inputs[i]}, "
                                f"got {a.dtype}")
        for o, a in enumerate(outputs):
            if a.dtype != self._out_np[o]:
                raise TypeError(f"kernel output {o}: expected dtype {spec.outputs[o][0]}, "
                                f"got {a.dtype}")
            if not a.flags.writeable:
                raise ValueError(f"kernel output {o} is read-only")
        shape = self._check_shapes(inputs, outputs)
        if shape is None:
            return  # nothing to compute
        ptrs = [_ptr(a) for a in inputs] + [_ptr(b) for b in outputs]
        alias = _aliases(inputs, outputs, ptrs)
        key = (alias, tuple((a.shape, a.strides) for a in inputs),
               tuple((a.shape, a.strides) for a in outputs))
        plan = self._plans.get(key)
        if plan is None:
            if any(s < 0 for a in list(inputs) + list(outputs) for s in a.strides):
                self._negative_strides(inputs, outputs, parallel)
                return
            plan = self._marshal(self._plan(inputs, outputs, shape, alias), inputs, outputs)
            if len(self._plans) > 256:
                self._plans.clear()
            self._plans[key] = plan
        total, variant, n_split, template, slots, scratch, _keep = plan
        if parallel is None:
            parallel = total * self._weight >= PARALLEL_THRESHOLD
        args = list(template)
        for slot, k in slots:
            args[slot] = ptrs[k]
        nthr = _nthreads() if parallel and n_split >= 2 else 1
        if nthr >= 2:
            self._run_parallel(variant, args, n_split, nthr, scratch)
        else:
            fn = self._fn(variant)
            work = _with_scratch(args, scratch)  # noqa: F841 - alive until the call returns
            fn(*args, 0, n_split)

    def bind(self, inputs: list[np.ndarray], outputs: list[np.ndarray],
             parallel: bool | None = None) -> BoundCall | None:
        """A call prepared once for operands laid out as these (shapes, strides, which
        operands share memory): its C arguments are built here, so a runtime whose
        buffers keep their layout pays only for the native call and the data pointers
        that changed (``BoundCall``). None where such calls take the general path: no
        element to compute, negative strides, or a call that would run on threads."""
        spec = self.spec
        if len(inputs) != len(spec.inputs) or len(outputs) != len(spec.outputs):
            return None
        if any(a.dtype != d for a, d in zip(inputs, self._in_np)) or \
                any(a.dtype != d or not a.flags.writeable for a, d in zip(outputs, self._out_np)):
            return None
        shape = self._check_shapes(inputs, outputs)
        ops = list(inputs) + list(outputs)
        if shape is None or any(s < 0 for a in ops for s in a.strides):
            return None
        ptrs = [_ptr(a) for a in ops]
        alias = _aliases(inputs, outputs, ptrs)
        total, variant, n_split, template, slots, scratch, keep = self._marshal(
            self._plan(inputs, outputs, shape, alias), inputs, outputs)
        if parallel is None:
            parallel = total * self._weight >= PARALLEL_THRESHOLD
        if parallel and n_split >= 2 and _nthreads() >= 2:
            k = min(_nthreads(), n_split)
            if len(template) + 2 > native_pool.MAX_ARGS or not _native_threads(k):
                return None
            rows, blocks = self._rows(template, n_split, k, scratch)
            for slot, j in slots:
                rows[:, slot] = ptrs[j]
            return RowsCall(self._fn(variant), rows, slots, ptrs, (blocks, keep))
        args = list(template) + [0, n_split]
        for slot, k in slots:
            args[slot] = ptrs[k]
        block = _with_scratch(args, scratch)  # one block per binding (callers take turns)
        fn = self._fn(variant)
        row = np.array([args], np.int64)
        task = native_pool.serial_task(fn, row)
        if task is not None:
            return SerialCall(fn, row, slots, ptrs, (block, keep), task)
        return BoundCall(fn, args, slots, ptrs, (block, keep))

    def variant_for(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> tuple | None:
        """The loop variant a call on arrays laid out as these would run (None when it
        would compute nothing or take the negative-stride path); reads no data, so a
        runtime can learn a plan's variants before its first run (see ``prefetch``)."""
        shape = self._check_shapes(inputs, outputs)
        if shape is None:
            return None
        if any(s < 0 for a in list(inputs) + list(outputs) for s in a.strides):
            return None
        ptrs = [_ptr(a) for a in inputs] + [_ptr(b) for b in outputs]
        return self._plan(inputs, outputs, shape, _aliases(inputs, outputs, ptrs))[1]

    @staticmethod
    def _rows(args: list, n: int, k: int, scratch: tuple) -> tuple[np.ndarray, list]:
        """One row of C arguments per chunk of ``[0, n)`` split ``k`` ways, each with
        its own scratch block (returned: they must outlive the calls)."""
        rows = np.empty((k, len(args) + 2), np.int64)
        blocks = []
        for c in range(k):
            a = list(args)
            blocks.append(_with_scratch(a, scratch))
            rows[c, :-2] = a
            rows[c, -2] = c * n // k
            rows[c, -1] = (c + 1) * n // k
        return rows, blocks

    def _run_parallel(self, variant: tuple, args: list, n: int, nthr: int,
                      scratch: tuple = ()) -> None:
        """Disjoint [lo, hi) ranges of the serial nogil entry on ``nthr`` threads."""
        fn = self._fn(variant)
        k = min(nthr, n)
        if len(args) + 2 <= native_pool.MAX_ARGS and _native_threads(k):
            rows, blocks = self._rows(args, n, k, scratch)  # noqa: F841 - kept for the call
            native_pool.run_rows(fn, rows)
            return
        pool = _pool(k - 1)
        chunks = []
        for c in range(k):
            a = list(args)
            chunks.append((a, _with_scratch(a, scratch), c * n // k, (c + 1) * n // k))
        futs = [pool.submit(fn, *a, lo, hi) for a, _, lo, hi in chunks[1:]]
        try:
            a, _, lo, hi = chunks[0]
            fn(*a, lo, hi)
        finally:
            for f in futs:
                f.result()

    def _marshal(self, plan, inputs, outputs) -> tuple:
        """The entry point's C arguments for one layout: constants filled in, and the
        slots that take an operand's data pointer on each call."""
        total, variant, extra, n_split, recipes = plan
        nin = len(inputs)
        template: list[int] = []
        slots: list[tuple[int, int]] = []
        scratch: list[tuple[int, int]] = []
        keep: list[np.ndarray] = []
        ints: dict[str, int] = {}
        rec = iter(recipes)
        ext = iter(extra)
        for name, kind, dtype, size in self._source(variant).params:
            if kind == "arr":
                k, how, data = next(rec)
                a = inputs[k] if k < nin else outputs[k - nin]
                if how == "empty":
                    template += [_ptr(_DUMMY), 1]
                    continue
                if how == "idx":
                    n = a[data].size
                    if _ptr(a[data]) != _ptr(a):
                        raise AssertionError("kernels: an index recipe with an offset")
                else:
                    n = a.size if how == "flat" else data
                slots.append((len(template), k))
                template += [0, n]
            elif kind == "int":
                ints[name] = int(next(ext))
                template.append(ints[name])
            elif kind in ("vec", "mat"):
                t = np.ascontiguousarray(next(ext), dtype=np.int64)
                keep.append(t)
                template += [_ptr(t if t.size else _DUMMY)] + list(t.shape)
            else:  # scratch: per call (and per thread), sized by the row length or BLOCK
                n = ints["R"] if size == "R" else int(size)
                scratch.append((len(template), max(n, 1) * np.dtype(dtype).itemsize))
                template += [0, n]
        return (total, variant, n_split, tuple(template), tuple(slots), tuple(scratch),
                tuple(keep))

    def _check_shapes(self, inputs, outputs):
        """The iteration shape, or None when there is no element to compute."""
        spec = self.spec
        if spec.kind == "elementwise":
            shape = outputs[0].shape
            for i, a in enumerate(inputs):
                if a.shape != shape:
                    raise ValueError(f"kernel input {i} has shape {a.shape}, expected the "
                                     f"iteration shape {shape}")
            for o, a in enumerate(outputs):
                if a.shape != shape:
                    raise ValueError(f"kernel output {o} has shape {a.shape}, expected {shape}")
            return None if 0 in shape else shape
        full = [o for o, (_, k) in enumerate(spec.outputs) if k == "full"]
        if inputs:
            shape = inputs[0].shape
        elif full:
            shape = outputs[full[0]].shape
        else:
            raise ValueError("a rows kernel needs an input or a full output to fix its shape")
        if len(shape) == 0:
            raise ValueError("a rows kernel needs at least one axis (the row)")
        outer = shape[:-1]
        for i, a in enumerate(inputs):
            if a.shape != shape:
                raise ValueError(f"kernel input {i} has shape {a.shape}, expected {shape}")
        for o, a in enumerate(outputs):
            if spec.outputs[o][1] == "full":
                if a.shape != shape:
                    raise ValueError(f"kernel output {o} has shape {a.shape}, expected {shape}")
            elif a.shape != outer and a.shape != outer + (1,):
                raise ValueError(f"kernel row output {o} has shape {a.shape}, expected "
                                 f"{outer} or {outer + (1,)}")
        return None if 0 in outer else shape

    def _negative_strides(self, inputs, outputs, parallel) -> None:
        # rare (flipped views): copy such inputs, compute such outputs into temporaries
        ins = [np.ascontiguousarray(a) if any(s < 0 for s in a.strides) else a for a in inputs]
        tmps = [np.empty(a.shape, a.dtype) if any(s < 0 for s in a.strides) else None
                for a in outputs]
        self(ins, [t if t is not None else a for a, t in zip(outputs, tmps)], parallel)
        for a, t in zip(outputs, tmps):
            if t is not None:
                np.copyto(a, t)

    def _plan(self, inputs, outputs, shape, alias):
        """Collapse dimensions and choose the loop variant for one layout signature."""
        spec = self.spec
        rows = spec.kind == "rows"
        nin = len(inputs)
        ops = list(inputs) + list(outputs)
        nd = len(shape)
        st = []
        for k, a in enumerate(ops):
            e = _estrides(a)
            if rows and k >= nin and spec.outputs[k - nin][1] == "row":
                e = (e[:-1] if a.ndim == nd else e) + [0]
            st.append(e)
        live = [k for k in range(len(ops)) if k >= nin or alias[k] < 0]
        row_out = {nin + o for o, (_, kind) in enumerate(spec.outputs) if kind == "row"}
        if rows:
            inner_n = shape[-1]
            inner_s = [s[-1] for s in st]
            dims = [d for d in range(nd - 1) if shape[d] != 1]
        else:
            dims = [d for d in range(nd) if shape[d] != 1]
            ref = st[nin]
            dims.sort(key=lambda d: -abs(ref[d]))
        merged: list[list[int]] = []  # [size, stride per operand...]
        for d in dims:
            cur = [shape[d]] + [st[k][d] for k in range(len(ops))]
            if merged and all(merged[-1][1 + k] == cur[1 + k] * cur[0] for k in live):
                prev = merged[-1]
                prev[0] *= cur[0]
                for k in range(len(ops)):
                    prev[1 + k] = cur[1 + k]
                continue
            merged.append(cur)
        if not rows:
            if not merged:
                merged = [[1] + [0] * len(ops)]
            inner = merged.pop()
            inner_n, inner_s = inner[0], inner[1:]
        n_outer = 1
        for m in merged:
            n_outer *= m[0]
        total = n_outer * inner_n

        def recipe(k, dims_strides):
            a = ops[k]
            if a.size == 0:
                return (k, "empty", None)  # never read: the row loops run zero times
            span = 1
            for n, s in dims_strides:
                span += (n - 1) * s
            if a.flags.c_contiguous or a.flags.f_contiguous:
                if span == a.size:
                    return (k, "flat", None)
            nz = [d for d in range(a.ndim) if a.strides[d] != 0 and a.shape[d] != 1]
            if a.ndim and len(nz) <= 1:
                if not nz:
                    return (k, "idx", (slice(0, 1),) + (0,) * (a.ndim - 1))
                d = nz[0]
                if a.strides[d] == a.itemsize and a.shape[d] == span:
                    return (k, "idx", tuple(slice(None) if i == d else 0
                                            for i in range(a.ndim)))
            return (k, "strided", span)

        if not rows and n_outer == 1 and (inner_n == 1 or all(inner_s[k] == 1 for k in live)):
            recipes = [recipe(k, [(inner_n, 1)]) for k in live]
            return (total, ("flat", alias, None), (), inner_n, recipes)
        if not rows and n_outer == 1 and all(inner_s[k] == 1 or (k < nin and inner_s[k] == 0)
                                             for k in live):
            # one run with some inputs broadcast from one element (an optimizer's
            # learning rate and step counts): the flat loop, those read once, compiles
            # in about 2/3 of the strided variant's time and splits over threads
            pattern = tuple("b" if k in live and inner_s[k] == 0 else "c"
                            for k in range(len(ops)))
            recipes = [recipe(k, [(inner_n, inner_s[k])]) for k in live]
            return (total, ("flat", alias, pattern), (), inner_n, recipes)

        def all_dims(k, extra):
            return [(m[0], m[1 + k]) for m in merged] + extra

        if rows and merged and inner_n >= 2 and merged[-1][0] >= 4:
            full = [k for k in live if k not in row_out]
            strided = [k for k in full if inner_s[k] not in (0, 1)]
            if strided and all(merged[-1][1 + k] in (0, 1) for k in strided):
                return self._plan_blocked(ops, merged, inner_n, inner_s, live, nin, alias,
                                          total, row_out, all_dims, recipe)
        pattern = [_cls(inner_s[k]) for k in range(len(ops))]
        for k in row_out:
            pattern[k] = "b"
        recipes = [recipe(k, all_dims(k, [(inner_n, inner_s[k])])) for k in live]
        oshape = np.array([m[0] for m in merged], dtype=np.int64)
        ostr = np.array([[m[1 + k] for m in merged] for k in range(len(ops))],
                        dtype=np.int64).reshape(len(ops), len(merged))
        istr = np.array(inner_s, dtype=np.int64)
        extra = (inner_n, oshape, ostr, istr)
        kind = "rows" if rows else "strided"
        return (total, (kind, alias, tuple(pattern)), extra, n_outer, recipes)

    def _plan_blocked(self, ops, merged, inner_n, inner_s, live, nin, alias, total, row_out,
                      all_dims, recipe):
        """Column blocking: the row axis is strided but the next axis is contiguous."""
        blk = merged[-1]
        rest = merged[:-1]
        m = blk[0]
        n_outer = 1
        for r in rest:
            n_outer *= r[0]
        jpat = tuple("b" if k in row_out else _cls(inner_s[k]) for k in range(len(ops)))
        bpat = tuple(_cls(blk[1 + k]) for k in range(len(ops)))
        recipes = [recipe(k, all_dims(k, [(inner_n, inner_s[k])])) for k in live]
        oshape = np.array([r[0] for r in rest], dtype=np.int64)
        ostr = np.array([[r[1 + k] for r in rest] for k in range(len(ops))],
                        dtype=np.int64).reshape(len(ops), len(rest))
        istr = np.array(inner_s, dtype=np.int64)
        bstr = np.array(blk[1:], dtype=np.int64)
        bk = _block_width(m, n_outer, total)
        ntask = n_outer * ((m + bk - 1) // bk)
        extra = (m, bk, inner_n, oshape, ostr, istr, bstr)
        return (total, ("rowsblk", alias, jpat, bpat), extra, ntask, recipes)


def _block_width(m: int, n_outer: int, total: int) -> int:
    """Rows a column-blocked task reduces side by side: ``codegen.BLOCK``, or fewer when
    that leaves too few tasks for the threads (the bias gradient of a [1024, 512]
    activation is one block of 512: one thread did it all, 0.74 ms). Narrower blocks
    keep whole vectors (multiples of 16); every row is still summed in the same order,
    so the result does not depend on the width."""
    bk = codegen.BLOCK
    nthr = _nthreads()
    if total < PARALLEL_THRESHOLD or nthr < 2 or n_outer * ((m + bk - 1) // bk) >= nthr:
        return bk
    per = (nthr + n_outer - 1) // n_outer  # blocks wanted per outer row
    cols = (m + per - 1) // per
    return min(bk, max(16, (cols + 15) // 16 * 16))


class BoundCall:
    """A kernel call with its C arguments built (``CompiledKernel.bind``).
    ``ptrs`` are the operands' data pointers it was built for; ``repoint(k, p)`` moves
    operand ``k`` (inputs then outputs) to data pointer ``p`` with the same layout."""

    __slots__ = ("fn", "args", "ptrs", "_where", "_keep")

    def __init__(self, fn, args: list, slots, ptrs: list[int], keep) -> None:
        self.fn = fn
        self.args = args
        self.ptrs = list(ptrs)
        where: dict[int, list[int]] = {}
        for slot, k in slots:
            where.setdefault(k, []).append(slot)
        self._where = where
        self._keep = keep

    def repoint(self, k: int, p: int) -> None:
        self.ptrs[k] = p
        for slot in self._where.get(k, ()):
            self.args[slot] = p

    def sharing(self) -> tuple[int, ...]:
        """Which operands share a data pointer (the first operand with each pointer):
        a binding stays valid while this pattern does."""
        ptrs = self.ptrs
        return tuple(ptrs.index(p) for p in ptrs)

    def __call__(self) -> None:
        self.fn(*self.args)


class RowsCall(BoundCall):
    """A parallel ``BoundCall``: ``args`` are the C argument rows of its chunks (one
    per thread, ``kernels.cpu.native_pool``), a moved operand is repointed in each."""

    __slots__ = ("_task",)

    def __init__(self, fn, rows: np.ndarray, slots, ptrs: list[int], keep) -> None:
        super().__init__(fn, rows, slots, ptrs, keep)
        self._task = native_pool.rows_task(fn, rows)

    def repoint(self, k: int, p: int) -> None:
        self.ptrs[k] = p
        for slot in self._where.get(k, ()):
            self.args[:, slot] = p

    def __call__(self) -> None:
        self._task()


class SerialCall(RowsCall):
    """A ``BoundCall`` whose one row of C arguments goes to the kernel through the
    native pool's trampoline on the calling thread (``native_pool.serial_task``): two
    arguments to convert per call instead of the kernel's 15-30."""

    __slots__ = ()

    def __init__(self, fn, row: np.ndarray, slots, ptrs: list[int], keep, task) -> None:
        BoundCall.__init__(self, fn, row, slots, ptrs, keep)
        self._task = task


def _aliases(inputs, outputs, ptrs: list[int]) -> tuple[int, ...]:
    """For each input, the output that is exactly the same memory and layout (or -1):
    the same data pointer (``ptrs``: inputs' then outputs'), shape, strides and dtype,
    whichever objects hold them."""
    nin = len(inputs)
    alias = []
    for i, a in enumerate(inputs):
        k = -1
        pa = ptrs[i]
        for o, b in enumerate(outputs):
            if a is b or (pa == ptrs[nin + o] and a.shape == b.shape
                          and a.strides == b.strides and a.dtype == b.dtype):
                k = o
                break
        alias.append(k)
    return tuple(alias)


def _with_scratch(args: list, scratch: tuple):
    """Point the scratch slots of ``args`` at one fresh 64-byte aligned block; returns
    the block, which must outlive the call."""
    if not scratch:
        return None
    offs = []
    total = 0
    for _, nbytes in scratch:
        offs.append(total)
        total += (nbytes + 63) // 64 * 64
    block = np.empty(total + 64, np.uint8)
    base = _ptr(block)
    base += -base % 64
    for (slot, _), off in zip(scratch, offs):
        args[slot] = base + off
    return block


def _cls(s: int) -> str:
    return "c" if s == 1 else "b" if s == 0 else "s"


_POOL: list = [None, 0]


def _native_threads(k: int) -> bool:
    """Whether a ``k``-way call runs on the native pool (``native_pool``), with its
    workers started."""
    return native_pool.ensure_workers(max(k, _nthreads()))


def blas_leaves_cores() -> bool:
    """Whether BLAS's threads keep off the kernels' cores between GEMMs, so a kernel
    right after a GEMM may split over threads: OpenBLAS's jobs run on the native pool
    (``native_pool``), or its idle spin is short (``blas_spin``)."""
    if _native_threads(_nthreads()) and native_pool.routed_blas():
        return True
    from .blas_spin import short_spin
    return short_spin()


def _pool(workers: int):
    """A persistent Python thread pool for the parallel path where the native pool is
    not available (kernels are nogil)."""
    from concurrent.futures import ThreadPoolExecutor
    native_pool.quiesce()  # spinning native workers would share these threads' cores
    with _LOCK:
        if _POOL[0] is None:
            from .blas_spin import quiet
            quiet()  # OpenBLAS's idle spin would take these threads' cores after each GEMM
        if _POOL[0] is None or _POOL[1] < workers:
            _POOL[0] = ThreadPoolExecutor(max_workers=workers,
                                          thread_name_prefix="gcompile-kernel")
            _POOL[1] = workers
        return _POOL[0]


_THREAD_LIMIT: list = [None]  # set_num_threads' value; None: the environment / cores


def set_num_threads(n: int | None) -> None:
    """Threads the parallel path of generated and hand-written kernels uses
    (``gcompile.set_num_threads`` sets it with BLAS's); None goes back to
    GCOMPILE_NUM_THREADS / NUMBA_NUM_THREADS or the usable cores."""
    _THREAD_LIMIT[0] = None if n is None else max(1, int(n))
    if native_pool.routed_blas():  # OpenBLAS's jobs need a thread each on the pool
        native_pool.ensure_workers(_nthreads())


def _nthreads() -> int:
    """Threads for the parallel path: ``set_num_threads``'s value, else
    GCOMPILE_NUM_THREADS or NUMBA_NUM_THREADS if set, else the usable cores."""
    if _THREAD_LIMIT[0] is not None:
        return _THREAD_LIMIT[0]
    env = os.environ.get("GCOMPILE_NUM_THREADS") or os.environ.get("NUMBA_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ---- parallel cold compiles ------------------------------------------------------------------
_OBSERVER: list = [None]  # called with (done, total) while a batch of compiles runs
_WORKERS: list = [None, False]  # [ProcessPoolExecutor | None, broken]


def set_compile_observer(fn):
    """Call ``fn(done, total)`` as a batch of cold compiles progresses (``done == total``
    ends it); returns the previous observer. The default draws a progress bar
    (``kernels.progress``) when a batch lasts longer than about 2 s."""
    old = _OBSERVER[0]
    _OBSERVER[0] = fn
    return old


def _observe(done: int, total: int) -> None:
    fn = _OBSERVER[0]
    if fn is None:
        from ..progress import CompileBar
        fn = _OBSERVER[0] = CompileBar()
    try:
        fn(done, total)
    except Exception:  # noqa: BLE001 - a broken progress display must not fail a compile
        pass


def compile_workers() -> int:
    """Worker processes for cold compiles: ``GCOMPILE_COMPILE_WORKERS``, else one fewer
    than the usable cores (the parent compiles too), at most 8; 0 turns them off.

    Workers are fresh interpreters running ``python -m kernels.cpu.worker`` (never
    ``multiprocessing``, whose spawn and fork server import the user's ``__main__``
    again), so an unguarded script is safe."""
    env = os.environ.get("GCOMPILE_COMPILE_WORKERS")
    if env is not None and env.strip() != "":
        return max(0, int(env))
    return max(0, min(_usable_cores() - 1, 8))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class _Worker:
    """One compile worker process and the thread that feeds it jobs from ``_JOBS``."""

    def __init__(self) -> None:
        import subprocess
        import sys
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        # the package root as working folder: ``-m`` puts it first on sys.path, so a
        # module of the caller's folder cannot shadow ours
        self.proc = subprocess.Popen([sys.executable, "-m", "kernels.cpu.worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=root, env=env)
        self.alive = True
        self.ready = threading.Event()  # set once Numba is warm in the worker
        self.thread = threading.Thread(target=self._serve, name="gcompile-compile-worker",
                                       daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from . import worker as proto
        proc = self.proc
        try:
            hello = proto.recv(proc.stdout)
            if not (isinstance(hello, tuple) and hello[:1] == ("ready",)):
                return
            self.ready.set()
            while True:
                job = _next_job()
                if job is None:
                    self._retire()
                    return
                try:
                    proto.send(proc.stdin, (0, job.args))
                    got = proto.recv(proc.stdout)
                except (OSError, ValueError, EOFError):
                    got = None
                if got is None:  # the worker died: that kernel compiles on first call
                    job.finish(None)
                    return
                job.finish(got[1])
        finally:
            self.alive = False
            with _JOBS_COND:
                _JOBS_COND.notify_all()

    def _retire(self) -> None:
        """Leave the pool (idle too long) and stop the process."""
        with _POOL_LOCK:
            if self in _WORKERS:
                _WORKERS.remove(self)
            if not _WORKERS:
                _POOL_STATE["started"] = False
        self.alive = False
        self.close()

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # the worker exits at the end of its input
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - it does not exit: stop it
            self.proc.kill()
            self.proc.wait()


def _job_args(gen: codegen.Generated) -> tuple:
    """What a worker needs to compile ``gen`` into this process's cache
    (``_compile_in_worker``'s arguments)."""
    return (gen.source, codegen.c_arity(gen.params), os.path.abspath(_cache.cache_dir()),
            os.path.abspath(_cache.cache_key_file()), _cache._SALT)


class _Job:
    """One kernel variant to compile; claimed once, by a worker or by the parent."""

    __slots__ = ("kernel", "variant", "gen", "args", "done", "on_done")

    def __init__(self, kernel, variant, gen, args, on_done) -> None:
        self.kernel, self.variant, self.gen, self.args = kernel, variant, gen, args
        self.done = False
        self.on_done = on_done

    def finish(self, result) -> None:
        if result is not None and result[0] == "ok":
            status, cpu = result[1]
            _STATS["worker_cpu_s"] += cpu
            if status == "compiled":
                _STATS["worker_compiles"] += 1
        with _JOBS_COND:
            self.done = True
            _JOBS_COND.notify_all()
        self.on_done()


MIN_BATCH = 6  # cold kernels in one plan that start the compile workers
_WORKERS: list = []  # live _Worker objects of this process
_JOBS: list = []  # pending _Job objects: workers take from the front, the parent the back
_JOBS_COND = threading.Condition()
_POOL_LOCK = threading.Lock()


def _next_job():
    """The next job for a worker (from the front), waiting while there is none; None
    after ``WORKER_IDLE_S`` seconds without one (the worker then exits: an idle one
    holds a few hundred MB, and a later cold plan starts a new one)."""
    deadline = time.monotonic() + WORKER_IDLE_S
    with _JOBS_COND:
        while not _JOBS:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            _JOBS_COND.wait(left)
        return _JOBS.pop(0)


def _worker_pool(workers: int) -> list:
    """Start the compile workers (once per process; they start in the background, and
    take jobs once Numba is warm in them) and return the live ones."""
    with _POOL_LOCK:
        if not _WORKERS and workers > 0 and not _POOL_STATE["started"]:
            _POOL_STATE["started"] = True
            try:
                for _ in range(workers):
                    _WORKERS.append(_Worker())
            except OSError:
                pass
            if not _POOL_STATE["atexit"]:
                import atexit
                atexit.register(_shutdown_workers)
                _POOL_STATE["atexit"] = True
        return [w for w in _WORKERS if w.alive]


_POOL_STATE = {"started": False, "atexit": False}
EARLY_START = 3  # in-process cold compiles after which the workers start unasked


def _start_workers_early(now: bool = False) -> None:
    """A process compiling its third kernel cold (a model's first, eager, call compiles
    its kernels one by one), or a compiled function's first call leaving a cold kernel
    for its plan (``now``), is likely to compile a plan's batch next: start the workers
    now, in the background, so that their start-up (~1 s, Numba's import and first
    compile) overlaps the trace instead of the batch. Idle, they exit after
    ``WORKER_IDLE_S``; nothing waits for them here."""
    if _POOL_STATE["started"] or (not now and _STATS["compiles"] + 1 < EARLY_START):
        return
    workers = compile_workers()
    if workers > 0 and _cache._key() is not None:
        _worker_pool(workers)


WORKER_TIMEOUT_S = 300.0  # a worker silent this long is not waited for
WORKER_IDLE_S = 60.0  # a worker without a job this long exits


def _forget_workers() -> None:
    """In a child forked from this process: the workers (and their pipes) are the
    parent's; the child starts its own if it compiles."""
    global _JOBS_COND, _POOL_LOCK
    for w in _WORKERS:  # the parent's pipes: the child holding them open would keep a
        for f in (w.proc.stdin, w.proc.stdout):  # worker from seeing its input end
            try:
                f.close()
            except (OSError, ValueError):
                pass
    _WORKERS.clear()
    _JOBS.clear()
    _JOBS_COND = threading.Condition()
    _POOL_LOCK = threading.Lock()
    _POOL_STATE["started"] = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def _shutdown_workers() -> None:
    """Stop the workers (they exit when their input closes) and wait for them."""
    with _POOL_LOCK:
        workers = list(_WORKERS)
        _WORKERS.clear()
    for w in workers:
        w.close()


def _compile_in_worker(source: str, nargs: int, cache_dir: str, key_file: str,
                       salt: str) -> tuple[str, float]:
    """Worker side: compile ``source`` and store its signed object in the cache folder
    the parent uses (the parent verifies and loads it as any cached object)."""
    os.environ["GCOMPILE_CACHE_DIR"] = cache_dir
    os.environ["GCOMPILE_CACHE_KEY_FILE"] = key_file
    if _cache._SALT != salt:
        raise RuntimeError("kernels: a compile worker would build for another configuration")
    t0 = time.process_time()
    if _cache.load_object(source) is not None:
        return "cached", time.process_time() - t0
    obj, meta = _compile_object(source)
    meta["nargs"] = nargs
    _cache.store_object(source, obj, meta)
    return "compiled", time.process_time() - t0


def needs_compile(kernels) -> bool:
    """Whether any of ``kernels`` (generated ``CompiledKernel``s, or hand-written
    ``NativeKernel``s) has a main variant that is neither loaded nor on disk (a cheap
    test: a warm process answers False without looking further)."""
    for k in kernels:
        if isinstance(k, CompiledKernel):
            if k.primary in k._fns or k.prefetched:
                continue
            src = k._source(k.primary).source
        elif getattr(k, "generated", None) is not None and getattr(k, "_fn", True) is None:
            src = k.generated.source  # a hand-written kernel not loaded yet
        else:
            continue
        if not (_cache.object_path(src).exists() or _cache.hint_path(src).exists()):
            return True
    return False


def _not_tracing() -> bool:
    return False


tracing = _not_tracing  # gcompile installs its test: is compile() tracing a function now?


def defer_call(k: CompiledKernel, inputs: list, outputs: list) -> bool:
    """``defer_compile`` for one call of ``k`` on these arrays, exactly: the loop variant
    it would run is neither loaded nor on disk (a plan may have cached another variant
    of the same spec, which ``needs_compile``'s main-variant test would take as warm)."""
    if not tracing():
        return False
    v = k.variant_for(inputs, outputs)
    if v is None or v in k._fns:
        return False
    return not _cache.object_path(k._source(v).source).exists()


_DRY_RUN = threading.local()  # .on while a plan's dry run records its kernels' variants


class dry_run:
    """While a plan runs once to record its kernels' loop variants (``prefetch``):
    hand-written kernels not yet compiled leave their ops to the NumPy path and join
    the batch (``defer_native``)."""

    def __enter__(self) -> None:
        self.prev = getattr(_DRY_RUN, "on", False)
        _DRY_RUN.on = True

    def __exit__(self, *exc) -> None:
        _DRY_RUN.on = self.prev


def defer_native(k) -> bool:
    """Whether hand-written kernel ``k`` (a ``NativeKernel`` whose machine code is not
    loaded) should leave this call of its op to the op's NumPy implementation: a
    compiled function's first call is tracing (its plan runs the op itself) or a plan's
    dry run is recording, and the kernel is not on disk. The compile workers take it
    at once, while the trace goes on, and the plan's batch waits for it (a GPT step's
    trace compiled four such kernels, ~2.3 s, one after another, before)."""
    if not (tracing() or getattr(_DRY_RUN, "on", False)):
        return False
    if _cache.object_path(k.source).exists():
        return False
    with _JOBS_COND:
        _DEFERRED[k.source] = k
    _start_workers_early(now=True)
    _compile_soon(k)
    return True


_DEFERRED: dict = {}  # source -> hand-written kernel deferred, for the next batch
_EARLY: dict[str, _Job] = {}  # source -> job queued by _compile_soon, for workers only


def _compile_soon(k) -> None:
    """Queue hand-written kernel ``k`` for the compile workers now (the parent is busy
    tracing and does not take it); ``prefetch`` later adopts the job into its batch."""
    if not _POOL_STATE["started"] or _cache._key() is None:
        return
    with _JOBS_COND:
        if k.source in _EARLY:
            return
        job = _EARLY[k.source] = _Job(k, None, k.generated, _job_args(k.generated),
                                      lambda: None)
        _JOBS.append(job)
        _JOBS_COND.notify_all()


def defer_compile(kernels) -> bool:
    """Whether an eager call should leave ``kernels`` alone and take its NumPy path: a
    compiled function's first call is running (its trace, and the first training step's
    eager rest) and one of them would compile machine code. The plan fuses those ops
    into kernels of its own, so compiling these for the trace alone only delays the
    first call (a GPT step's trace compiled 12 such kernels, ~7 s on a cold cache);
    once cached, or outside a trace, they serve as usual."""
    return tracing() and needs_compile(kernels)


def defer_build() -> bool:
    """Whether an eager op should not build a plan of its own now (the rows kernels and
    gradient plans of ``runtime.eager_rows``/``eager_gradients``): a compiled function's
    first call is running, whose plan fuses those ops, and building one costs graph
    passes and kernel loads (about 0.1 s of a GPT step's warm first call) even when its
    kernels are on disk. Plans built before still serve."""
    return tracing()


def prefetch(work) -> int:
    """Compile, in parallel, the ``(kernel, variant)`` pairs of ``work`` that are neither
    loaded nor in the disk cache (a bare kernel stands for its main variant); returns
    how many were compiled here or in worker processes.

    Fewer than two, no workers, or no usable cache key (through which workers hand back
    their objects): left to compile on first call as before. Compile errors are not
    raised here: that kernel compiles (and fails) on its first call as before, where the
    runtime falls back to the NumPy evaluation of its spec."""
    workers = compile_workers()
    if workers < 1 or (_POOL_STATE["started"] and not any(w.alive for w in _WORKERS)):
        return 0
    todo: list[tuple[CompiledKernel, tuple, codegen.Generated]] = []
    seen: set[str] = set()
    with _LOCK:
        for item in work:
            k, v = item if isinstance(item, tuple) else (item, getattr(item, "primary", None))
            if not isinstance(k, CompiledKernel) or v is None or v in k._fns:
                continue
            k.prefetched = True  # another plan sharing this kernel needs no second look
            gen = k._source(v)
            if gen.source in seen or _cache.object_path(gen.source).exists():
                continue
            seen.add(gen.source)
            todo.append((k, v, gen))
        with _JOBS_COND:
            deferred = list(_DEFERRED.values())
            _DEFERRED.clear()
        early = []
        for k in deferred:  # hand-written kernels the trace and dry run left (variant None)
            if k._fn is not None or k.source in seen:
                continue
            seen.add(k.source)
            with _JOBS_COND:
                job = _EARLY.pop(k.source, None)
            if job is not None and not job.done:
                early.append(job)  # queued or compiling in a worker already
            elif not _cache.object_path(k.source).exists():
                todo.append((k, None, k.generated))
    if _cache._key() is None:
        return 0
    # starting a worker costs about a second of CPU (Python, NumPy, Numba and a first
    # compile) before it takes a job: worth it for a batch that keeps the parent busy
    # longer than that; a smaller batch compiles here (with its progress shown), or
    # also in workers already running
    if len(todo) >= MIN_BATCH:
        _worker_pool(workers)
    # longest first (by source length, which compile time follows): workers take from
    # the front, the parent from the back, so the batch ends on short jobs, not on a
    # long one that one process compiles while the other waits
    todo.sort(key=lambda t: -len(t[2].source))
    n = _compile_batch(todo, early) if len(todo) + len(early) >= 2 else 0
    # a warm process skips the dry run for these (their variants are on disk, or one
    # compiles on first call)
    for k in {id(k): k for k in (it[0] if isinstance(it, tuple) else it for it in work)
              if isinstance(k, CompiledKernel)}.values():
        src = k._source(k.primary).source
        if not _cache.object_path(src).exists():
            _cache.mark_seen(src)
    return n


def _compile_batch(todo: list, early: list = ()) -> int:
    """Compile ``todo`` ((kernel, variant, generated source) triples): the workers take
    jobs from the front of a shared queue while this thread compiles from the back,
    each job claimed exactly once; returns when every job is done, and the ``early``
    jobs (queued before, ``_compile_soon``) too. A worker that is still starting takes
    nothing (the parent does the work meanwhile), and without workers the parent
    compiles them all."""
    total = len(todo)
    lock = threading.Lock()
    state = {"done": 0}

    def finished() -> None:
        with lock:
            state["done"] += 1
            done = state["done"]
        _observe(done, total)

    jobs = [_Job(k, v, gen, _job_args(gen), finished) for k, v, gen in todo]
    with _JOBS_COND:
        _JOBS.extend(jobs)
        for job in early:  # still queued (the parent may take it too) or in a worker
            if not job.done:
                job.on_done = finished
                jobs.insert(0, job)
                total += 1
        _JOBS_COND.notify_all()
    _observe(0, total)
    try:
        while True:
            with _JOBS_COND:
                mine = [j for j in jobs if j in _JOBS]
                if not mine:
                    break
                job = mine[-1]
                _JOBS.remove(job)
            try:
                with _LOCK:
                    if job.variant is None:  # a hand-written kernel
                        job.kernel.load()
                    else:
                        job.kernel._fn(job.variant)
            except Exception:  # noqa: BLE001 - it fails again, and is handled, on first call
                pass
            job.finish(None)
        with _JOBS_COND:  # jobs in workers' hands
            deadline = time.monotonic() + WORKER_TIMEOUT_S
            left = sum(not j.done for j in jobs)
            while left:
                if not any(w.alive for w in _WORKERS) or time.monotonic() > deadline:
                    break  # what a dead or stuck worker held compiles on first call
                _JOBS_COND.wait(1.0)
                now_left = sum(not j.done for j in jobs)
                if now_left < left:
                    left, deadline = now_left, time.monotonic() + WORKER_TIMEOUT_S
    finally:
        with _JOBS_COND:
            for j in jobs:
                if j in _JOBS:
                    _JOBS.remove(j)
        _observe(total, total)
    return total
