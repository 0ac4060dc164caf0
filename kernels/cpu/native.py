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

``load`` checks an object against what its caller expects before the engine
sees it, and refuses it (``ObjectRejected``) rather than letting a wrong header
crash the process: the entry symbol must belong to the caller's module and be
a function the object itself defines, and every symbol the object leaves
undefined (read from its own ELF symbol table, not only from the header) must
be resolvable. The caller then rebuilds the kernel.
"""
from __future__ import annotations

import ctypes
import os
import struct
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
_LOADED: dict[str, tuple[int, int]] = {}  # symbol -> (address, nargs) of objects in the engine


class ObjectRejected(RuntimeError):
    """Stored object code that is not what its caller expects; it is never added to the
    engine, and the kernel is rebuilt."""


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


def provide(name: str, address: int) -> None:
    """Make ``name`` resolve to ``address`` for MCJIT, ours and Numba's (LLVM keeps one
    table per process): a C function of a library loaded privately, which the process
    does not export (NumPy's OpenBLAS, ``blas_calls``), for kernels that call it."""
    ll = _ll()
    with _LOCK:
        if _PROVIDED.get(name) != address:
            ll.add_symbol(name, address)
            _PROVIDED[name] = address


_PROVIDED: dict[str, int] = {}  # name -> address given to LLVM by ``provide``


def unresolved(externals: list[str]) -> list[str]:
    """The names in ``externals`` that neither the helpers, ``provide`` nor the process
    define."""
    proc = ctypes.CDLL(None)
    missing = []
    for name in externals:
        if name in HELPER_SYMBOLS or name in _PROVIDED or name.startswith("llvm."):
            continue
        try:
            getattr(proc, name)
        except AttributeError:
            missing.append(name)
    return missing


def elf_symbols(obj: bytes) -> tuple[frozenset[str], frozenset[str]] | None:
    """(global and weak functions defined, symbols left undefined) by an ELF64
    little-endian object file; None for other object formats. ValueError when the
    file is not a well-formed ELF object (a table runs past its end)."""
    if obj[:4] != b"\x7fELF" or obj[4:6] != b"\x02\x01":
        if obj[:4] == b"\x7fELF":
            raise ValueError("an ELF object that is not 64-bit little-endian")
        return None
    n = len(obj)
    if n < 64:
        raise ValueError("a truncated ELF header")
    if struct.unpack_from("<H", obj, 0x10)[0] != 1:  # ET_REL: what MCJIT links
        raise ValueError("an ELF file that is not a relocatable object")
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    if shentsize != 64 or shoff + shnum * 64 > n:
        raise ValueError("a section table outside the file")
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + 64 * i) for i in range(shnum)]
    defined: set[str] = set()
    undefined: set[str] = set()
    for _, sh_type, _, _, off, size, link, _, _, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        if entsize != 24 or off + size > n or link >= shnum:
            raise ValueError("a symbol table outside the file")
        str_off, str_size = sections[link][4], sections[link][5]
        if str_off + str_size > n:
            raise ValueError("a string table outside the file")
        for k in range(1, size // 24):
            st_name, info, _, shndx, _, _ = struct.unpack_from("<IBBHQQ", obj, off + 24 * k)
            bind, typ = info >> 4, info & 0xF
            if bind not in (1, 2) or not st_name:  # only global and weak symbols link
                continue
            if st_name >= str_size:
                raise ValueError("a symbol name outside its string table")
            end = obj.find(b"\0", str_off + st_name, str_off + str_size)
            if end < 0:
                raise ValueError("an unterminated symbol name")
            name = obj[str_off + st_name:end].decode("utf-8", "replace")
            if shndx == 0:  # SHN_UNDEF
                undefined.add(name)
            elif typ == 2 and shndx < shnum:  # STT_FUNC in one of the object's sections
                defined.add(name)
    return frozenset(defined), frozenset(undefined)


def load(obj: bytes, symbol: str, nargs: int, externals=(), owner: str | None = None):
    """Add the object code to the engine and return ``symbol`` as a ctypes function of
    ``nargs`` 64-bit integer arguments (the GIL is released during calls).

    ``owner``: the module name the entry symbol must belong to. Refuses with
    ``ObjectRejected``, before the engine sees the object, an entry symbol of another
    module or that the object does not define, and an object needing a symbol
    (in ``externals`` or its own symbol table) that cannot be resolved: MCJIT
    would abort the process on it."""
    def refuse(why: str) -> ObjectRejected:
        return ObjectRejected(f"kernels: refused stored object code for {owner or symbol!r}: "
                              f"{why}")

    if not isinstance(symbol, str) or not symbol:
        raise refuse(f"its entry symbol {symbol!r} is not a name")
    if type(nargs) is not int or not 0 <= nargs <= 1024:
        raise refuse(f"an argument count of {nargs!r}")
    if owner is not None and owner not in symbol:
        raise refuse(f"its entry symbol {symbol!r} is not a function of module {owner}")
    try:
        syms = elf_symbols(obj)
    except (ValueError, struct.error) as e:
        raise refuse(f"malformed object code ({e})") from None
    need = set(externals)
    if syms is not None:
        defined, undefined = syms
        if symbol not in defined:
            raise refuse(f"its entry symbol {symbol!r} is not a function the object defines")
        need |= undefined
    missing = unresolved(sorted(need))
    if missing:
        raise refuse(f"it needs symbols {missing} that this process does not define")
    proto = ctypes.CFUNCTYPE(None, *([ctypes.c_int64] * nargs))
    ll = _ll()
    with _LOCK:
        known = _LOADED.get(symbol)
        if known is not None:  # already in the engine: never define a symbol twice
            if known[1] != nargs:
                raise refuse(f"{symbol!r} was loaded before with {known[1]} arguments, "
                             f"not {nargs}")
            return proto(known[0])
        eng = _engine()
        if syms is None and eng.get_function_address(symbol):
            raise refuse(f"its entry symbol {symbol!r} is already defined in the engine")
        eng.add_object_file(ll.ObjectFileRef.from_data(obj))
        eng.finalize_object()
        addr = eng.get_function_address(symbol)
        if not addr:
            raise refuse(f"symbol {symbol!r} not found in its object code")
        _LOADED[symbol] = (addr, nargs)
    return proto(addr)
