"""CUDA kernels: the GPU launcher of the one code generator, GEMM, and ``launch``.

Kernels come from the same ``KernelSpec``s and registry scalar bodies as the CPU
kernels (``kernels.cuda.codegen`` wraps ``kernels.cpu.codegen``'s body emitter in
grid-stride loops and block reductions). ``CudaKernel(spec)`` runs one spec on device
arrays of any non-negative strides (``elementwise``: operands broadcast to the
iteration shape; ``rows``: reductions over some dims, one block per row). Compiled
kernels are kept in memory per generated source (which names the spec, the rank and
the launch shape), and on disk per GPU architecture (``kernels.cuda.disk_cache``): each
generated source is written to ``cuda/`` in the kernel cache folder and run from there,
and numba-cuda's cache of its compiled PTX/cubin is kept beside it, every file signed
with the kernel cache key (``kernels.cache``) and verified before it is unpickled; a
file that does not verify is recompiled and overwritten, and without a usable key
kernels are compiled in every process. Under the simulator the sources are written
but nothing is compiled or cached.

``launch(op, attrs, inputs, out_shapes, out_dtypes)`` is what eager CUDA dispatch
calls for one op; it returns None where no device kernel serves the op (the caller then
runs the op through host memory).

Importing this package does not import numba.cuda; the first kernel does. Under the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) everything runs, slowly, as Python threads.
"""
from __future__ import annotations

import hashlib
import linecache
import threading
import types

import numpy as np

from ..spec import KernelSpec, Phase, Stmt, canonical, const
from .views import broadcast_view, cuda_module, elem_strides, is_device_array, simulator, strided

__all__ = ["CudaKernel", "compile_kernel", "launch", "empty", "fill", "copy_into",
           "simulator", "is_device_array", "strided", "broadcast_view", "cache_stats"]

_LOCK = threading.RLock()
_MODULES: dict[str, object] = {}
_KERNELS: dict[KernelSpec, CudaKernel] = {}
_STATS = {"kernels": 0, "compiled_sources": 0}


def cache_stats() -> dict:
    """Kernels made and generated sources loaded in this process."""
    return dict(_STATS)


def empty(shape, dtype):
    """A fresh device array: ``kernels.cuda.memory.empty`` (the caching allocator) when
    present, else ``numba.cuda.device_array``."""
    try:
        from . import memory
    except ImportError:
        memory = None
    if memory is not None and hasattr(memory, "empty"):
        return memory.empty(tuple(shape), np.dtype(dtype))
    return cuda_module().device_array(tuple(shape), np.dtype(dtype))


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _load(source: str):
    """The ``entry`` kernel of a generated module (one per distinct source).

    The source is written to the CUDA cache folder as a real file (``disk_cache.
    write_source``), and the expected text (never the file's contents) runs with that
    file's name, so numba can name the kernel's signed disk cache entries after it
    (``disk_cache.attach``; not under the simulator, nor without a usable key). Where
    the file cannot be written the module runs under a pseudo-filename, uncached."""
    fn = _MODULES.get(source)
    if fn is None:
        with _LOCK:
            fn = _MODULES.get(source)
            if fn is None:
                cuda_module()
                from . import disk_cache
                h = hashlib.sha256(source.encode()).hexdigest()[:16]
                name = f"gcompile_cuda_{h}"
                path = disk_cache.write_source(source)
                if path is None:
                    filename = f"<{name}>"
                    linecache.cache[filename] = (len(source), None,
                                                 source.splitlines(True), filename)
                else:
                    filename = str(path)
                mod = types.ModuleType(name)
                mod.__file__ = filename
                exec(compile(source, filename, "exec"), mod.__dict__)
                fn = mod.entry
                if path is not None:
                    disk_cache.attach(fn)
                _MODULES[source] = fn
                _STATS["compiled_sources"] += 1
    return fn


_LAUNCHED: set = set()


def _launch(fn, grid, block, args: tuple) -> None:
    """Launch ``fn``; the first launch of each kernel compiles it, and a kernel the
    device compiler refuses (an unsupported function or dtype on this GPU) raises
    NotImplementedError there, so callers take their host path instead of failing."""
    if id(fn) in _LAUNCHED:
        fn[grid, block](*args)
        return
    try:
        fn[grid, block](*args)
    except Exception as e:  # noqa: BLE001 - numba's typing/lowering errors have no common base here
        raise NotImplementedError(f"kernels.cuda: kernel did not build or run: "
                                  f"{type(e).__name__}: {e}") from e
    _LAUNCHED.add(id(fn))


def _threads(n: int) -> tuple[int, int]:
    """(blocks, threads per block) of a grid-stride launch over ``n`` items."""
    tpb = 8 if simulator() else 256  # the simulator runs a Python thread per CUDA thread
    cap = 1 if simulator() else 4096
    return max(1, min((n + tpb - 1) // tpb, cap)), tpb


class CudaKernel:
    """One ``KernelSpec`` on the device: generic in sizes and strides."""

    def __init__(self, spec: KernelSpec) -> None:
        from ..cpu.codegen import check_dtypes
        spec.validate()
        check_dtypes(spec)
        self.spec = spec
        self.sources: dict[tuple, str] = {}
        self._in_np = [np.dtype(d) for d in spec.inputs]
        self._out_np = [np.dtype(d) for d, _ in spec.outputs]
        # generate the primary variant now: a body the generator refuses (an integer
        # division by a run-time divisor, say) fails here, where lowering can split the
        # group, not at the first call
        sim = simulator()
        self.source = self._source(("ew", 1) if spec.kind == "elementwise" else
                                   ("rows", 1, 1, 4 if sim else 256, not sim))

    def __repr__(self) -> str:
        return (f"CudaKernel({self.spec.kind}, inputs={list(self.spec.inputs)}, "
                f"outputs={list(self.spec.outputs)})")

    def _source(self, key: tuple) -> str:
        src = self.sources.get(key)
        if src is None:
            from . import codegen
            if key[0] == "ew":
                src = codegen.elementwise_source(self.spec, key[1])
            else:
                src = codegen.rows_source(self.spec, key[1], key[2], key[3], key[4])
            self.sources[key] = src
        return src

    def _check(self, ins, outs) -> None:
        spec = self.spec
        if len(ins) != len(spec.inputs) or len(outs) != len(spec.outputs):
            raise ValueError(f"kernel expects {len(spec.inputs)} inputs and "
                             f"{len(spec.outputs)} outputs, got {len(ins)} and {len(outs)}")
        for i, a in enumerate(ins):
            if np.dtype(a.dtype) != self._in_np[i]:
                raise TypeError(f"kernel input {i}: expected dtype {spec.inputs[i]}, "
                                f"got {a.dtype}")
        for o, a in enumerate(outs):
            if np.dtype(a.dtype) != self._out_np[o]:
                raise TypeError(f"kernel output {o}: expected dtype {spec.outputs[o][0]}, "
                                f"got {a.dtype}")

    def elementwise(self, ins: list, outs: list, shape: tuple | None = None) -> None:
        """Run an elementwise spec: inputs broadcast to ``shape`` (default: the first
        output's shape), outputs of exactly that shape."""
        self._check(ins, outs)
        if shape is None:
            shape = tuple(outs[0].shape)
        shape = tuple(int(s) for s in shape)
        for o in outs:
            if tuple(o.shape) != shape:
                raise ValueError(f"kernel output of shape {tuple(o.shape)} for iteration "
                                 f"shape {shape}")
        n = _prod(shape)
        if n == 0:
            return
        ops = list(ins) + list(outs)
        if all(tuple(a.shape) == shape and _c_contiguous(a) for a in ops):
            views = [strided(a, (n,), (1,)) for a in ops]
            sizes = [n]
        elif not shape:
            views = [strided(a, (1,), (0,)) for a in ops]
            sizes = [1]
        else:
            views = [broadcast_view(a, shape) for a in ops]
            sizes = list(shape)
        fn = _load(self._source(("ew", len(sizes))))
        blocks, tpb = _threads(n)
        _launch(fn, blocks, tpb, (*views, n, *sizes))

    def rows(self, ins: list, outs: list, shape: tuple, dims: tuple) -> None:
        """Run a rows spec over iteration shape ``shape`` reducing ``dims``: inputs
        broadcast to ``shape``; "full" outputs of ``shape``; "row" outputs of the shape
        with ``dims`` removed or kept as 1 (keepdim)."""
        self._check(ins, outs)
        shape = tuple(int(s) for s in shape)
        nd = len(shape)
        dims = tuple(sorted({int(d) % nd for d in dims})) if nd else ()
        keep = [d for d in range(nd) if d not in dims]
        outer = [shape[d] for d in keep]
        red = [shape[d] for d in dims]
        M, R = _prod(outer), _prod(red)
        if M == 0:
            return
        if R == 0:
            raise NotImplementedError("kernels.cuda: a reduction over no elements")
        nin = len(self.spec.inputs)
        views = []
        for k, a in enumerate(list(ins) + list(outs)):
            row = k >= nin and self.spec.outputs[k - nin][1] == "row"
            if row:
                views.append(_row_view(a, shape, keep, outer))
                continue
            if k >= nin and tuple(a.shape) != shape:
                raise ValueError(f"kernel output of shape {tuple(a.shape)} for iteration "
                                 f"shape {shape}")
            b = broadcast_view(a, shape)
            st = elem_strides(b)
            vs = [shape[d] for d in keep] or [1]
            vt = [st[d] for d in keep] or [0]
            vs += [shape[d] for d in dims] or [1]
            vt += [st[d] for d in dims] or [0]
            views.append(strided(b, tuple(vs), tuple(vt)))
        outer = outer or [1]
        red = red or [1]
        sim = simulator()
        tpb = 4 if sim else (256 if R > 128 else 64)
        key = ("rows", len(outer), len(red), tpb, not sim)
        fn = _load(self._source(key))
        blocks = max(1, min(M, 1 if sim else 65535))
        _launch(fn, blocks, tpb, (*views, M, R, *outer, *red))

    def __call__(self, ins: list, outs: list, shape: tuple | None = None,
                 dims: tuple = ()) -> None:
        if self.spec.kind == "elementwise":
            self.elementwise(ins, outs, shape)
        else:
            if shape is None:
                raise ValueError("a rows kernel needs the iteration shape")
            self.rows(ins, outs, shape, dims)


def _c_contiguous(a) -> bool:
    st = elem_strides(a)
    want = 1
    for n, s in zip(reversed(tuple(a.shape)), reversed(st)):
        if n != 1 and s != want:
            return False
        want *= n
    return True


def _row_view(a, shape: tuple, keep: list, outer: list):
    """A row output (reduced dims removed, or kept as size 1) viewed over the kept dims."""
    ash, st = tuple(a.shape), elem_strides(a)
    if len(ash) == len(shape):
        if any(ash[d] != (shape[d] if d in keep else 1) for d in range(len(shape))):
            raise ValueError(f"row output of shape {ash} for iteration shape {shape}")
        vs, vt = [ash[d] for d in keep], [st[d] for d in keep]
    elif list(ash) == outer:
        vs, vt = list(ash), list(st)
    else:
        raise ValueError(f"row output of shape {ash} for iteration shape {shape}")
    if not vs:
        vs, vt = [1], [0]
    return strided(a, tuple(vs), tuple(vt))


def compile_kernel(spec: KernelSpec) -> CudaKernel:
    """The device kernel of ``spec`` (one per canonical spec, kept for the process)."""
    spec = canonical(spec)
    k = _KERNELS.get(spec)
    if k is None:
        with _LOCK:
            k = _KERNELS.get(spec)
            if k is None:
                k = _KERNELS[spec] = CudaKernel(spec)
                _STATS["kernels"] += 1
    return k


def fill(a, value) -> None:
    """Set every element of device array ``a`` to ``value``."""
    d = np.dtype(a.dtype).name
    spec = KernelSpec((), ((d, "full"),), (Phase("map", (
        Stmt("t0", "cast", (const(np.dtype(d).type(value), d),), (("dtype", d),), d),),
        stores=((0, ("v", "t0")),)),), "elementwise")
    compile_kernel(spec).elementwise([], [a], tuple(a.shape))


def copy_into(dst, src) -> None:
    """``dst[...] = src`` on the device (``src`` broadcast, converted to dst's dtype)."""
    d, s = np.dtype(dst.dtype).name, np.dtype(src.dtype).name
    spec = KernelSpec((s,), ((d, "full"),), (Phase("map", (
        Stmt("t0", "cast", (("in", 0),), (("dtype", d),), d),),
        stores=((0, ("v", "t0")),)),), "elementwise")
    compile_kernel(spec).elementwise([src], [dst], tuple(dst.shape))


def launch(op_name: str, attrs: dict, inputs: list, out_shapes: list, out_dtypes: list
           ) -> list | None:
    """Run op ``op_name`` on device ``inputs`` (numba device arrays of any strides, or
    Python scalars) into fresh device outputs (``empty``) of ``out_shapes`` /
    ``out_dtypes``; None when no device kernel serves this op and these attributes (the
    eager side then runs it through host memory). See ``kernels.cuda.ops``."""
    from .ops import launch as _launch
    return _launch(op_name, attrs, inputs, out_shapes, out_dtypes)
