"""Loading compiled kernels as native code, with llvmlite alone.

Numba compiles each kernel once (a ``cfunc`` with a plain C ABI: pointers and
64-bit integers). Its machine code is stored in the kernel cache as an object
file, and every later load, in this process or another, goes through one
llvmlite MCJIT engine and a ``ctypes`` function pointer. A warm process
therefore never imports Numba, whose import and first cache load cost about a
second here (``import numba`` 0.3 s, its typing/target registries 0.5-0.9 s).

The objects reference a few symbols of Numba's runtime: the GIL helpers used on
the (unreachable) error path of the cfunc wrapper, and NRT's destructor call,
reached only when a reference count falls to zero. Kernels never allocate (their
arrays are ``carray`` views over caller memory, with no meminfo), so the
destructor is defined here as a trap; the GIL helpers are the same two lines as
Numba's. Both live inside this engine, so Numba's own symbols, when Numba is
loaded too, are left untouched. Every other external must be a symbol of the
process (the Python C API, libm): ``unresolved`` checks that before a load,
because MCJIT aborts the process on a missing symbol.
"""
from __future__ import annotations

import ctypes
import os
import threading

_HELPERS_IR = r"""
declare i32 @PyGILState_Ensure()
declare void @PyGILState_Release(i32)
declare void @llvm.trap()

define void @numba_gil_ensure(i32* %state) {
  %s = call i32 @PyGILState_Ensure()
  store i32 %s, i32* %state
  ret void
}

define void @numba_gil_release(i32* %state) {
  %s = load i32, i32* %state
  call void @PyGILState_Release(i32 %s)
  ret void
}

define void @NRT_MemInfo_call_dtor(i8* %mi) {
  call void @llvm.trap()
  unreachable
}
"""
HELPER_SYMBOLS = frozenset({"numba_gil_ensure", "numba_gil_release", "NRT_MemInfo_call_dtor"})

_LOCK = threading.Lock()
_STATE: dict = {}


def _ll():
    import llvmlite.binding as ll
    if not _STATE.get("init"):
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        _STATE["init"] = True
    return ll


def host_key() -> str:
    """The CPU the cached machine code is built for (it is compiled for the host's
    features, so a cache folder shared between machines must not mix them)."""
    ll = _ll()
    parts = [ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten(),
             os.environ.get("NUMBA_CPU_NAME", ""), os.environ.get("NUMBA_CPU_FEATURES", "")]
    return "|".join(parts)


def _engine():
    eng = _STATE.get("engine")
    if eng is None:
        ll = _ll()
        tm = ll.Target.from_default_triple().create_target_machine()
        helpers = ll.parse_assembly(_HELPERS_IR)
        helpers.verify()
        eng = ll.create_mcjit_compiler(helpers, tm)
        eng.finalize_object()
        _STATE["engine"] = eng
        _STATE["tm"] = tm
    return eng


def unresolved(externals: list[str]) -> list[str]:
    """The names in ``externals`` that neither the helpers nor the process define."""
    proc = ctypes.CDLL(None)
    missing = []
    for name in externals:
        if name in HELPER_SYMBOLS or name.startswith("llvm."):
            continue
        try:
            getattr(proc, name)
        except AttributeError:
            missing.append(name)
    return missing


def load(obj: bytes, symbol: str, nargs: int):
    """Add the object code to the engine and return ``symbol`` as a ctypes function of
    ``nargs`` 64-bit integer arguments (the GIL is released during calls)."""
    ll = _ll()
    with _LOCK:
        eng = _engine()
        eng.add_object_file(ll.ObjectFileRef.from_data(obj))
        eng.finalize_object()
        addr = eng.get_function_address(symbol)
    if not addr:
        raise RuntimeError(f"kernels: symbol {symbol!r} not found in its object code")
    proto = ctypes.CFUNCTYPE(None, *([ctypes.c_int64] * nargs))
    return proto(addr)
