"""Hand-written native kernels: loops no ``KernelSpec`` describes (im2col, pooling,
scatter-adds, recurrent steps), compiled by Numba once and loaded as machine code
through the same signed disk cache and loader as generated kernels
(``kernels.cpu._load_entry``, ``kernels.cpu.native``), so a warm process runs them
without importing Numba.

How to write one
----------------
A kernel is the Python source of a function named ``body``, decorated
``@njit(nogil=True, inline="always")``, plus a tuple of parameters
``(name, kind, dtype)``::

    PARAMS = (("x", "in", "float32"), ("y", "out", "float32"), ("scale", "int", None))
    BODY = '''
    @njit(nogil=True, inline="always")
    def body(x, y, scale, lo, hi):
        for i in range(lo, hi):
            y[i] = x[i] * scale
    '''
    k = kernel("scale", PARAMS, BODY)
    k(x, y, 3, n=x.size)   # body over the work units [0, n), split over threads

``kernel`` caches by source, so build the parameters for each dtype and call it
where needed (the source is generated text, never compiled, on a warm cache). Pass
``op=`` the registry op the kernel serves: ``gcompile.export`` then ships its machine
code with programs whose library steps run that op (``loaded_for``).

Parameters, in ``body``'s order (then ``lo, hi``):

- ``"in"`` / ``"out"``: a NumPy array of exactly that dtype, seen by ``body`` as a
  flat 1-D view starting at the array's first element and covering its span (pass
  element strides as int parameters, ``strides(a)``, and index with them; negative
  strides are refused: ``operand(a)`` makes a usable copy). Outputs must be writeable.
- ``"int"``: a Python int (int64 in ``body``).
- ``"scratch"``: an element count; each range gets its own fresh uninitialised 1-D
  array of that many elements of ``dtype`` (kernels must not allocate).

Rules for ``body``:

- It does the work units ``[lo, hi)`` of a range of ``n``. The caller may run
  disjoint ranges on several threads at once (``PARALLEL_THRESHOLD`` on ``work``,
  ``_nthreads``, the same pool generated kernels use), so two units must never
  write the same memory, and a result must not depend on how the range is split:
  partition the outputs, and sort or segment scatter-adds, never race.
- No allocation (``np.empty`` ...), no exceptions, no calls to jitted functions that
  are not ``inline="always"``: a call to a separately compiled function makes the
  ``cfunc`` wrapper check an error status through Numba's exception helpers, and the
  loader rejects object code that needs Numba's runtime (a warm process does not
  load it). Integer ``//`` and ``%`` follow Python (floor) semantics; divide only by
  values known to be positive. Out-of-range indices are not checked: check ranges
  in Python before the call.
"""
from __future__ import annotations

import functools
import textwrap
import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ir.shapes import view_strides

from . import codegen

__all__ = ["kernel", "NativeKernel", "strides", "operand", "loaded_for", "PRELUDE", "writes_out",
           "serve", "result", "into", "Deferred", "dname", "dtype_name", "flagged", "Task",
           "Checked", "run_checked", "run_tasks", "bind_tasks", "chain", "then_flagged"]

PRELUDE = """# hand-written kernel (gcompile kernels.cpu.handwritten) -- do not edit
import math
import numpy as np
from numba import cfunc, njit, types
from kernels.cpu.fastmath import ptr_matrix, ptr_window
_USED = (math, np, cfunc, njit, types, ptr_matrix, ptr_window)
"""

_KINDS = {"in": "arr", "out": "arr", "int": "int", "scratch": "scratch"}
_KERNELS: dict[tuple, NativeKernel] = {}
_BY_OP: dict[str, dict[str, NativeKernel]] = {}  # op -> {source: kernel}
_LOCK = threading.Lock()


_DTYPE_NAMES: dict = {}


def dtype_name(d: np.dtype) -> str:
    """``d.name``, kept per dtype: NumPy 2 works the name out in Python on every read
    (1.9 us here), and a library call read it three to six times."""
    try:
        return _DTYPE_NAMES[d]
    except KeyError:
        name = _DTYPE_NAMES[d] = d.name
        return name


def dname(a: np.ndarray) -> str:
    """``a.dtype.name`` (``dtype_name``)."""
    return dtype_name(a.dtype)


def strides(a: np.ndarray) -> tuple[int, ...]:
    """Element strides of ``a`` (byte strides divided by the item size)."""
    isz = a.itemsize
    return tuple(s // isz for s in a.strides)


def view_as(a: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``a.reshape(shape)`` where that is a view of ``a``, else None. (Asking NumPy by
    setting ``.shape`` on a view cost ~30 us whenever it refused: its error path.)"""
    if view_strides(a.shape, a.strides, shape) is None:
        return None
    return a.reshape(shape)


@functools.lru_cache(maxsize=128)
def index_offsets(shape: tuple, strides: tuple) -> np.ndarray:
    """The element offset of every index of ``shape`` (C order) at element ``strides``:
    where a kernel's work units (attention's batch items, an embedding gradient's
    rows) start in an operand its loops cannot index by one stride. Read-only, kept
    per layout (a plan's step asks for the same one on every call)."""
    offs = np.zeros((), np.int64)
    for n, s in zip(shape, strides):
        offs = offs[..., None] + np.arange(n, dtype=np.int64) * s
    offs = offs.reshape(-1)
    offs.flags.writeable = False
    return offs


def operand(a: np.ndarray, dtype=None) -> np.ndarray:
    """``a`` as an array a kernel can take: of ``dtype`` (if given), with non-negative
    strides that are multiples of the item size; a contiguous copy otherwise."""
    if dtype is not None and a.dtype != dtype:
        return np.ascontiguousarray(a, dtype=dtype)
    isz = a.itemsize
    if any(s < 0 or s % isz for s in a.strides):
        return np.ascontiguousarray(a)
    return a


def writes_out(fn):
    """Mark ``fn`` (an op implementation served natively) as taking ``out=``: a
    C-contiguous array of the op's result shape and dtype that it fills and returns
    instead of allocating. A plan's library step then runs the op into its planned
    buffer (``runtime.steps``), so a steady-state step allocates nothing large."""
    fn.writes_out = True
    return fn


class Deferred(Exception):
    """A kernel call left to its op's NumPy implementation (``NativeKernel.load``): the
    served op (``serve``) catches it and computes the result with ``op.reference``."""


_SERVING = threading.local()  # .depth: served-op calls running on this thread


def serve(natives: dict) -> None:
    """Make each ``natives[op]`` (taking ``out=``, ``writes_out``) the implementation of
    registry op ``op``, once; the NumPy implementation stays as ``op.reference``.

    Each is wrapped so that a kernel it calls may defer (``Deferred``): while a compiled
    function's first call traces, or a plan's dry run records its kernels, a kernel not
    yet compiled leaves that call to the reference and is compiled with the plan's
    batch (``kernels.cpu.defer_native``), in parallel, instead of alone on the critical
    path.
    ``natives[op]`` becomes the wrapped function."""
    from ir.registry import REGISTRY
    for name, fn in list(natives.items()):
        op = REGISTRY[name]
        if getattr(fn, "serves_op", None) == name and op.impl is fn:
            continue
        ref = op.reference or op.impl
        natives[name] = served = _served(name, writes_out(fn), ref)
        op.use_native(served)


def _served(name: str, fn, ref):
    def impl(*args, out=None, **kw):
        depth = getattr(_SERVING, "depth", 0)
        _SERVING.depth = depth + 1
        try:
            return fn(*args, out=out, **kw)
        except Deferred:
            return into(ref(*args, **kw), out)
        finally:
            _SERVING.depth = depth
    impl.__name__ = impl.__qualname__ = getattr(fn, "__name__", name)
    impl.__doc__ = fn.__doc__
    impl.__wrapped__ = fn
    impl.serves_op = name
    if getattr(fn, "bind", None) is not None:
        impl.bind = fn.bind
    return writes_out(impl)


def result(shape, dtype, out: np.ndarray | None) -> np.ndarray:
    """The array a kernel writes its result into: ``out`` when it is usable as that
    result (same shape and dtype, C-contiguous, writeable), else a fresh one."""
    if out is not None and out.shape == tuple(shape) and out.dtype == dtype and \
            out.flags.c_contiguous and out.flags.writeable:
        return out
    return np.empty(shape, dtype)


def flagged(bad: np.ndarray, fallback) -> bool:
    """Whether a bound call set its ``bad`` flag (an index out of range): then the flag
    is cleared and ``fallback()`` runs (the op's NumPy implementation, which raises as
    the op does, or computes the result)."""
    if not bad[0]:
        return False
    bad[0] = 0
    with np.errstate(all="ignore"):
        fallback()
    return True


class Task(NamedTuple):
    """One native kernel call of an op, described once: an op whose work is several
    calls builds them as tasks, which its implementation runs (``run_tasks``) and a
    plan's step binds (``bind_tasks``), so both do the same calls."""
    kernel: NativeKernel
    args: tuple
    n: int
    work: int | None = None
    parallel: bool | None = None
    one_blas: bool = False  # the kernel calls OpenBLAS: one OpenBLAS thread meanwhile


class Checked(NamedTuple):
    """Native calls that may find they cannot serve their operands (a value that is not
    finite): ``checks``, then ``tasks``; ``flag[0]`` set by either means another path
    must compute the result."""
    checks: list
    tasks: list
    flag: np.ndarray


def run_checked(p: Checked) -> bool:
    """Run ``p``: False (its flag cleared again) where it flagged its operands."""
    run_tasks(p.checks)
    if not p.flag[0]:
        run_tasks(p.tasks)
        if not p.flag[0]:
            return True
    p.flag[0] = 0
    return False


def run_tasks(tasks: list[Task]) -> None:
    """Call each task's kernel, in order."""
    for t in tasks:
        if t.one_blas:
            from . import blas_calls
            with blas_calls.one_thread():
                t.kernel(*t.args, n=t.n, work=t.work, parallel=t.parallel)
        else:
            t.kernel(*t.args, n=t.n, work=t.work, parallel=t.parallel)


def bind_tasks(tasks: list[Task]) -> Callable[[], None] | None:
    """The tasks as one prepared call (``NativeKernel.bind`` each), or None where one of
    them cannot be bound."""
    return chain([t.kernel.bind(*t.args, n=t.n, work=t.work, parallel=t.parallel,
                                one_blas=t.one_blas) for t in tasks])


def chain(calls: list) -> Callable[[], None] | None:
    """One call running ``calls`` in order; None if there are none or one is None. Bound
    native calls run from one native call (``native_pool.task_list``)."""
    if not calls or any(c is None for c in calls):
        return None
    if len(calls) == 1:
        return calls[0]
    listed = _cpu().native_pool.task_list(calls)
    if listed is not None:
        return listed

    def run() -> None:
        for c in calls:
            c()
    return run


def then_flagged(call, flag: np.ndarray, fallback) -> Callable[[], None] | None:
    """``call`` (a bound call, or None: then None), then ``fallback()`` where it set
    ``flag[0]`` (``flagged``): a binding whose kernel can find its operands bad."""
    if call is None:
        return None

    def run() -> None:
        call()
        flagged(flag, fallback)
    return run


def into(res, out: np.ndarray | None):
    """``res`` delivered into ``out`` when one was given (a copy unless the kernel
    already wrote there: the reference fallbacks and unusable ``out`` arrays)."""
    if out is None or res is out:
        return res
    np.copyto(out, res, casting="unsafe")
    return out


def _span(a: np.ndarray) -> int:
    if a.size == 0:
        return 0
    if a.flags.c_contiguous:   # most operands: skip the per-axis sum (~2 us a call)
        return a.size
    isz = a.itemsize
    return 1 + sum((n - 1) * (s // isz) for n, s in zip(a.shape, a.strides))


def kernel(name: str, params: tuple, body: str, op: str | None = None) -> NativeKernel:
    """The native kernel of ``body`` with ``params`` (one object per source). ``op``: the
    registry op it serves, so that an exported program ships the machine code of the
    kernels its library steps use (``loaded_for``)."""
    key = (name, tuple(tuple(p) for p in params), body)
    k = _KERNELS.get(key)
    if k is None:
        with _LOCK:
            k = _KERNELS.get(key)
            if k is None:
                k = _KERNELS[key] = NativeKernel(name, key[1], body)
    if op is not None and k.source not in _BY_OP.get(op, ()):
        with _LOCK:
            _BY_OP.setdefault(op, {})[k.source] = k
    return k


def loaded_for(op: str) -> list[NativeKernel]:
    """The kernels serving registry op ``op`` that this process has loaded (their
    machine code is in the kernel cache)."""
    return [k for k in list(_BY_OP.get(op, {}).values()) if k._fn is not None]


class NativeKernel:
    """One hand-written kernel: its generated module source (``body`` plus a ``cfunc``
    entry with a plain C ABI, see ``codegen.entry_lines``) and, once called, its
    loaded machine code."""

    def __init__(self, name: str, params: tuple, body: str) -> None:
        for p in params:
            if len(p) != 3 or p[1] not in _KINDS:
                raise ValueError(f"kernels: {name}: bad parameter {p!r} (want (name, kind, "
                                 f"dtype), kind one of {sorted(_KINDS)})")
            if p[1] != "int" and p[2] not in codegen._NP:
                raise ValueError(f"kernels: {name}: parameter {p[0]!r} has dtype {p[2]!r}")
        self.name = name
        self.params = params
        self._np = [np.dtype(p[2]) if p[1] != "int" else None for p in params]
        cparams = tuple((p[0], _KINDS[p[1]], p[2], None) for p in params)
        names = ", ".join([p[0] for p in params] + ["lo", "hi"])
        lines = [PRELUDE, f"# kernel: {name}", "", textwrap.dedent(body).strip("\n")]
        lines += codegen.entry_lines(cparams) + [f"    body({names})"]
        self.generated = codegen.Generated("\n".join(lines) + "\n", cparams)
        self.source = self.generated.source
        self._fn = None

    def __repr__(self) -> str:
        return f"NativeKernel({self.name}, {[p[:2] for p in self.params]})"

    def load(self):
        """The entry point (from the disk cache, or compiled by Numba and stored).
        Raises ``Deferred`` instead of compiling inside a served op while
        ``kernels.cpu.defer_native`` says so (the kernel then joins the next batch)."""
        fn = self._fn
        if fn is None:
            cpu = _cpu()
            if getattr(_SERVING, "depth", 0) and cpu.defer_native(self):
                raise Deferred(self.name)
            with cpu._LOCK:
                fn = self._fn
                if fn is None:
                    fn = self._fn = cpu._load_entry(self.generated)
        return fn

    def _arity(self, args: tuple) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"kernels: {self.name} takes {len(self.params)} arguments, got "
                            f"{len(args)}")

    def _cargs(self, args: tuple) -> tuple[list[int], list]:
        """The C arguments of ``args`` (pointer and span per array, scratch slots left
        empty) and the scratch requests, checking each argument."""
        ptr = _cpu()._ptr
        self._arity(args)
        cargs: list[int] = []
        scratch: list[tuple[int, np.dtype, int]] = []
        for (pname, kind, _), want, a in zip(self.params, self._np, args):
            if kind == "int":
                cargs.append(int(a))
            elif kind == "scratch":
                scratch.append((len(cargs), want, int(a)))
                cargs += [0, 0]
            else:
                if not isinstance(a, np.ndarray) or a.dtype != want:
                    raise TypeError(f"kernels: {self.name}: {pname} must be a {want} array, "
                                    f"got {getattr(a, 'dtype', type(a).__name__)}")
                flags = a.flags
                if kind == "out" and not flags.writeable:
                    raise ValueError(f"kernels: {self.name}: output {pname} is read-only")
                if flags.c_contiguous:  # most operands: no per-axis checks (~1 us each)
                    cargs += [ptr(a), a.size]
                    continue
                if any(s < 0 or s % a.itemsize for s in a.strides):
                    raise ValueError(f"kernels: {self.name}: {pname} has negative or "
                                     "misaligned strides (see handwritten.operand)")
                cargs += [ptr(a), _span(a)]
        return cargs, scratch

    def _split(self, n: int, work: int | None, parallel: bool | None) -> int:
        """How many threads a call over ``n`` units runs on."""
        cpu = _cpu()
        if parallel is None:
            parallel = (n if work is None else work) >= cpu.PARALLEL_THRESHOLD
        return min(cpu._nthreads(), n) if parallel else 1

    def __call__(self, *args, n: int, work: int | None = None,
                 parallel: bool | None = None) -> None:
        """Run ``body`` over the work units ``[0, n)`` with ``args`` (one per parameter).
        ``work`` (elements touched; default ``n``) against ``PARALLEL_THRESHOLD`` decides
        whether the range is split over threads; ``parallel`` True/False forces it."""
        if n <= 0:
            self._arity(args)
            return
        cargs, scratch = self._cargs(args)
        fn = self.load()
        cpu = _cpu()
        k = self._split(n, work, parallel)
        if k < 2:
            keep = _fill_scratch(cargs, scratch)  # noqa: F841 - alive until the call returns
            fn(*cargs, 0, n)
            return
        chunks = []
        for c in range(k):
            a = list(cargs)
            chunks.append((a, _fill_scratch(a, scratch), c * n // k, (c + 1) * n // k))
        if len(cargs) + 2 <= cpu.native_pool.MAX_ARGS and cpu._native_threads(k):
            rows = np.array([a + [lo, hi] for a, _, lo, hi in chunks], np.int64)
            cpu.native_pool.run_rows(fn, rows)
            return
        ex = cpu._pool(k - 1)
        futs = [ex.submit(fn, *a, lo, hi) for a, _, lo, hi in chunks[1:]]
        try:
            a, _, lo, hi = chunks[0]
            fn(*a, lo, hi)
        finally:
            for f in futs:
                f.result()

    def bind(self, *args, n: int, work: int | None = None, parallel: bool | None = None,
             one_blas: bool = False):
        """The call ``self(*args, n=n, ...)`` made ready: its C argument rows (and scratch)
        built now, so that calling the result is the native pool's call alone. It holds
        the operands (and so their memory) and reads and writes that memory as it is
        when called: a plan's step keeps it while its arrays are those memory blocks laid
        out the same; the thread count is fixed too. ``one_blas``: a kernel that calls
        OpenBLAS runs inside ``blas_calls.one_thread``'s scope, entered natively. None
        where the native pool cannot take the call (then call the kernel). The kernel
        must be loaded (``load``)."""
        if n <= 0:
            return None
        cargs, scratch = self._cargs(args)
        fn = self.load()
        cpu = _cpu()
        pool = cpu.native_pool
        if len(cargs) + 2 > pool.MAX_ARGS:
            return None
        k = self._split(n, work, parallel)
        if k < 2:
            keep = _fill_scratch(cargs, scratch)
            row = np.array(cargs + [0, n], np.int64)
            task = pool.serial_task(fn, row, one_blas)
        else:
            if not cpu._native_threads(k):
                return None
            keep = []
            rows = []
            for c in range(k):
                a = list(cargs)
                keep.append(_fill_scratch(a, scratch))
                rows.append(a + [c * n // k, (c + 1) * n // k])
            row = np.array(rows, np.int64)
            task = pool.rows_task(fn, row, one_blas)
        if task is None:
            return None
        task.keep = (row, keep, args)  # the rows, scratch and operands: alive with the task
        return task


def _cpu():
    """The ``kernels.cpu`` package, read at call time (its parallel threshold is rebound
    by ``set_parallel_threshold``)."""
    import kernels.cpu as cpu
    return cpu


def _fill_scratch(cargs: list, scratch: list) -> list:
    """Point the scratch slots of ``cargs`` at fresh arrays; returns them (they must
    outlive the call)."""
    _ptr = _cpu()._ptr
    keep = []
    for slot, dtype, count in scratch:
        buf = np.empty(max(count, 1), dtype)
        keep.append(buf)
        cargs[slot] = _ptr(buf)
        cargs[slot + 1] = count
    return keep
