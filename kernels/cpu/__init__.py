"""CPU kernels: ``compile_kernel(spec)`` turns a ``KernelSpec`` into a callable.

The returned ``CompiledKernel`` is generic in sizes and strides. On each call
it collapses dimensions that are contiguous for every operand, picks a loop
variant (flat when everything is one contiguous run, else strided with the
innermost axis classed unit/zero/general stride per operand; serial below
``PARALLEL_THRESHOLD`` elements, ``prange`` above), generates that variant's
Numba source once (``kernels.cpu.codegen``), loads it through the disk cache
(``kernels.cache``) and runs it. Outputs are always passed in; an input that
is exactly an output (same memory, same strides) is read from the output, so
in-place epilogues vectorise.
"""
from __future__ import annotations

import os
import threading

import numpy as np
from numba.core.errors import NumbaError
from numpy.lib.stride_tricks import as_strided

from .. import cache as _cache
from ..spec import KernelSpec
from . import codegen

__all__ = ["compile_kernel", "CompiledKernel", "cache_stats", "PARALLEL_THRESHOLD",
           "set_parallel_threshold"]

# Elements per call above which the prange variant is used. Parallel kernels cost
# 2-11 us per call here (measured: benchmarks/kernels_micro.py prints the crossover).
PARALLEL_THRESHOLD = int(os.environ.get("GCOMPILE_PARALLEL_THRESHOLD", 1 << 17))

_STATS = {"memory_hits": 0, "disk_hits": 0, "compiles": 0}
_KERNELS: dict[KernelSpec, CompiledKernel] = {}
_LOCK = threading.RLock()


def set_parallel_threshold(n: int) -> int:
    """Set the parallel threshold (elements); returns the previous value."""
    global PARALLEL_THRESHOLD
    old = PARALLEL_THRESHOLD
    PARALLEL_THRESHOLD = int(n)
    return old


def cache_stats() -> dict:
    """Kernel cache counters for this process, and the cache folder."""
    return dict(_STATS, dir=str(_cache.cache_dir()))


def compile_kernel(spec: KernelSpec) -> CompiledKernel:
    """The compiled kernel for ``spec`` (one object per structurally equal spec)."""
    with _LOCK:
        k = _KERNELS.get(spec)
        if k is not None:
            _STATS["memory_hits"] += 1
            return k
        spec.validate()
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


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class CompiledKernel:
    """A kernel generic in sizes and strides; call with lists of input and output arrays."""

    def __init__(self, spec: KernelSpec) -> None:
        self.spec = spec
        self._fns: dict[tuple, object] = {}
        self._sources: dict[tuple, str] = {}
        self._checked: set[tuple] = set()
        nin = len(spec.inputs)
        alias = (-1,) * nin
        if spec.kind == "elementwise":
            primary = ("flat", False, alias, None)
        else:
            primary = ("rows", False, alias, ("c",) * (nin + len(spec.outputs)))
        self.source = self._source(primary)

    def __repr__(self) -> str:
        return (f"CompiledKernel({self.spec.kind}, inputs={list(self.spec.inputs)}, "
                f"outputs={list(self.spec.outputs)}, variants={len(self._fns)})")

    # ---- variants ------------------------------------------------------------------------
    def _source(self, variant: tuple) -> str:
        src = self._sources.get(variant)
        if src is None:
            if self.spec.kind == "elementwise":
                src = codegen.elementwise_source(self.spec, variant)
            elif variant[0] == "rowsblk":
                src = codegen.rows_blocked_source(self.spec, variant)
            else:
                src = codegen.rows_source(self.spec, variant)
            self._sources[variant] = src
        return src

    def _fn(self, variant: tuple):
        fn = self._fns.get(variant)
        if fn is None:
            with _LOCK:
                mod, _ = _cache.load_module(self._source(variant))
                fn = self._fns[variant] = mod.kernel
        return fn

    def _run(self, variant: tuple, args: tuple) -> None:
        fn = self._fn(variant)
        if variant in self._checked:
            fn(*args)
            return
        with _LOCK:
            st = fn.stats
            h0, m0 = sum(st.cache_hits.values()), sum(st.cache_misses.values())
            try:
                fn(*args)
            except NumbaError:
                raise
            except Exception:
                # a corrupt on-disk entry is rebuilt, never trusted: drop it and retry once
                src = self._source(variant)
                mod, path = _cache.load_module(src)
                if not _cache.has_numba_cache(path):
                    raise
                _cache.drop_numba_cache(path)
                _cache.forget_module(src)
                self._fns.pop(variant, None)
                fn = self._fn(variant)
                st = fn.stats
                h0, m0 = sum(st.cache_hits.values()), sum(st.cache_misses.values())
                fn(*args)
            st = fn.stats
            h1, m1 = sum(st.cache_hits.values()), sum(st.cache_misses.values())
            _STATS["disk_hits"] += h1 - h0
            _STATS["compiles"] += m1 - m0
            self._checked.add(variant)

    def _blocked(self, merged, inner_n, inner_s, live, nin) -> bool:
        """Column blocking pays when the row axis is strided but the next axis is not."""
        if not merged or inner_n < 2 or merged[-1][0] < 4:
            return False
        full = [k for k in live if not (k >= nin and self.spec.outputs[k - nin][1] == "row")]
        strided = [k for k in full if inner_s[k] not in (0, 1)]
        return bool(strided) and all(merged[-1][1 + k] in (0, 1) for k in strided)

    def _run_blocked(self, ops, merged, inner_n, inner_s, live, nin, alias, total) -> None:
        blk = merged[-1]
        rest = merged[:-1]
        m = blk[0]
        n_outer = 1
        for r in rest:
            n_outer *= r[0]
        row_out = {nin + o for o, (_, kind) in enumerate(self.spec.outputs) if kind == "row"}
        jpat = tuple("b" if k in row_out else _cls(inner_s[k]) for k in range(len(ops)))
        bpat = tuple(_cls(blk[1 + k]) for k in range(len(ops)))
        args = []
        for k in live:
            a = ops[k]
            span = 1 + (inner_n - 1) * inner_s[k] + (m - 1) * blk[1 + k]
            for r in rest:
                span += (r[0] - 1) * r[1 + k]
            args.append(as_strided(a, (span,), (a.itemsize,), writeable=k >= nin))
        oshape = np.array([r[0] for r in rest], dtype=np.int64)
        ostr = np.array([[r[1 + k] for r in rest] for k in range(len(ops))],
                        dtype=np.int64).reshape(len(ops), len(rest))
        istr = np.array(inner_s, dtype=np.int64)
        bstr = np.array(blk[1:], dtype=np.int64)
        ntask = n_outer * ((m + codegen.BLOCK - 1) // codegen.BLOCK)
        par = total >= PARALLEL_THRESHOLD and ntask >= 2
        nchunks = min(ntask, 8 * _nthreads()) if par else 1
        args += [n_outer, m, inner_n, oshape, ostr, istr, bstr, nchunks]
        self._run(("rowsblk", par, alias, jpat, bpat), tuple(args))

    # ---- call ----------------------------------------------------------------------------
    def __call__(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
        spec = self.spec
        if len(inputs) != len(spec.inputs) or len(outputs) != len(spec.outputs):
            raise ValueError(f"kernel expects {len(spec.inputs)} inputs and "
                             f"{len(spec.outputs)} outputs, got {len(inputs)} and "
                             f"{len(outputs)}")
        for i, (a, d) in enumerate(zip(inputs, spec.inputs)):
            if a.dtype.name != ("bool" if d == "bool" else d):
                raise TypeError(f"kernel input {i}: expected dtype {d}, got {a.dtype}")
        for o, (a, (d, _)) in enumerate(zip(outputs, spec.outputs)):
            if a.dtype.name != d:
                raise TypeError(f"kernel output {o}: expected dtype {d}, got {a.dtype}")
            if not a.flags.writeable:
                raise ValueError(f"kernel output {o} is read-only")
        if spec.kind == "elementwise":
            self._call_elementwise(list(inputs), list(outputs))
        else:
            self._call_rows(list(inputs), list(outputs))

    def _aliases(self, inputs, outputs) -> tuple[int, ...]:
        alias = []
        optr = [(_ptr(o), o.strides, o.shape, o.dtype) for o in outputs]
        for a in inputs:
            k = -1
            p = _ptr(a)
            for o, (q, st, sh, dt) in enumerate(optr):
                if p == q and a.strides == st and a.shape == sh and a.dtype == dt:
                    k = o
                    break
            alias.append(k)
        return tuple(alias)

    def _call_elementwise(self, inputs, outputs) -> None:
        shape = outputs[0].shape
        for i, a in enumerate(inputs):
            if a.shape != shape:
                raise ValueError(f"kernel input {i} has shape {a.shape}, expected the "
                                 f"iteration shape {shape}")
        for o, a in enumerate(outputs):
            if a.shape != shape:
                raise ValueError(f"kernel output {o} has shape {a.shape}, expected {shape}")
        n = 1
        for s in shape:
            n *= s
        if n == 0:
            return
        alias = self._aliases(inputs, outputs)
        # fast path: everything C-contiguous
        if all(a.flags.c_contiguous for a in outputs) and all(
                alias[i] >= 0 or a.flags.c_contiguous for i, a in enumerate(inputs)):
            par = n >= PARALLEL_THRESHOLD
            args = [_ro_flat(a) for i, a in enumerate(inputs) if alias[i] < 0]
            args += [a.reshape(-1) for a in outputs]
            args.append(n)
            self._run(("flat", par, alias, None), tuple(args))
            return
        self._strided(inputs, outputs, shape, alias, rows=False)

    def _call_rows(self, inputs, outputs) -> None:
        spec = self.spec
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
        outs = []
        for o, a in enumerate(outputs):
            if spec.outputs[o][1] == "full":
                if a.shape != shape:
                    raise ValueError(f"kernel output {o} has shape {a.shape}, expected {shape}")
                outs.append(a)
            else:
                if a.shape == outer + (1,):
                    st = a.strides[:-1]
                elif a.shape == outer:
                    st = a.strides
                else:
                    raise ValueError(f"kernel row output {o} has shape {a.shape}, expected "
                                     f"{outer} or {outer + (1,)}")
                outs.append(as_strided(a, shape, tuple(st) + (0,)))
        n_outer = 1
        for s in outer:
            n_outer *= s
        if n_outer == 0:
            return
        alias = self._aliases(inputs, outputs)
        self._strided(inputs, outs, shape, alias, rows=True, orig_outputs=outputs)

    def _strided(self, inputs, outputs, shape, alias, rows, orig_outputs=None) -> None:
        spec = self.spec
        nin = len(inputs)
        ops = list(inputs) + list(outputs)
        # negative strides: copy such inputs, compute such outputs into temporaries
        fixups = []
        for k, a in enumerate(ops):
            if any(s < 0 for s in a.strides):
                if k < nin:
                    ops[k] = np.ascontiguousarray(a)
                    alias = alias[:k] + (-1,) + alias[k + 1:]
                else:
                    if rows and spec.outputs[k - nin][1] == "row":
                        raise NotImplementedError("kernels: a row output with negative strides")
                    tmp = np.empty(a.shape, a.dtype)
                    fixups.append((a, tmp))
                    ops[k] = tmp
                    alias = tuple(-1 if x == k - nin else x for x in alias)
        live = [k for k in range(len(ops)) if k >= nin or alias[k] < 0]
        st = [_estrides(a) for a in ops]
        nd = len(shape)
        if rows:
            inner_n = shape[-1]
            inner_s = [s[-1] for s in st]
            dims = [d for d in range(nd - 1) if shape[d] != 1]
        else:
            dims = [d for d in range(nd) if shape[d] != 1]
            ref = st[nin] if outputs else st[0]
            dims.sort(key=lambda d: -abs(ref[d]))
        merged: list[list[int]] = []  # [size, d0 stride per op...]
        for d in dims:
            cur = [shape[d]] + [st[k][d] for k in range(len(ops))]
            if merged:
                prev = merged[-1]
                if all(prev[1 + k] == cur[1 + k] * cur[0] for k in live):
                    prev[0] *= cur[0]
                    for k in range(len(ops)):
                        prev[1 + k] = cur[1 + k]
                    continue
            merged.append(cur)
        if not rows:
            if not merged:
                merged = [[1] + [0] * len(ops)]
            inner = merged.pop()
            inner_n = inner[0]
            inner_s = inner[1:]
        n_outer = 1
        for m in merged:
            n_outer *= m[0]
        total = n_outer * inner_n
        if not rows and n_outer == 1 and all(inner_s[k] == 1 for k in live):
            # one contiguous run per operand after collapsing
            par = total >= PARALLEL_THRESHOLD
            args = [as_strided(ops[k], (inner_n,), (ops[k].itemsize,), writeable=k >= nin)
                    for k in live]
            args.append(inner_n)
            self._run(("flat", par, alias, None), tuple(args))
        elif rows and self._blocked(merged, inner_n, inner_s, live, nin):
            self._run_blocked(ops, merged, inner_n, inner_s, live, nin, alias, total)
        else:
            pattern = []
            for k in range(len(ops)):
                s = inner_s[k]
                pattern.append("c" if s == 1 else "b" if s == 0 else "s")
            if rows:
                for o, (_, kind) in enumerate(spec.outputs):
                    if kind == "row":
                        pattern[nin + o] = "b"
            pattern = tuple(pattern)
            args = []
            for k in live:
                a = ops[k]
                span = 1 + (inner_n - 1) * inner_s[k] if inner_n else 1
                for m in merged:
                    span += (m[0] - 1) * m[1 + k]
                args.append(as_strided(a, (span,), (a.itemsize,), writeable=k >= nin))
            oshape = np.array([m[0] for m in merged], dtype=np.int64)
            ostr = np.array([[m[1 + k] for m in merged] for k in range(len(ops))],
                            dtype=np.int64).reshape(len(ops), len(merged))
            istr = np.array(inner_s, dtype=np.int64)
            par = total >= PARALLEL_THRESHOLD and n_outer >= 2
            kind = "rows" if rows else "strided"
            args += [n_outer, inner_n, oshape, ostr, istr]
            if rows:
                args.append(min(n_outer, 8 * _nthreads()) if par else 1)
            self._run((kind, par, alias, pattern), tuple(args))
        for dst, tmp in fixups:
            np.copyto(dst, tmp)


def _cls(s: int) -> str:
    return "c" if s == 1 else "b" if s == 0 else "s"


def _nthreads() -> int:
    import numba
    return numba.get_num_threads()


def _ro_flat(a: np.ndarray) -> np.ndarray:
    v = a.reshape(-1)
    if v.flags.writeable:
        v = v.view()
        v.flags.writeable = False
    return v
