"""The on-disk kernel cache: generated source and its machine code.

Each generated module is written to the cache folder as a real ``.py`` file,
under a name derived from a hash of its source, the library versions and the
host CPU, and imported by path when it must be compiled (tracebacks and
``explain`` then point at real source). Its compiled entry point is stored
beside it as ``<name>.kobj``: a JSON header line (symbol, argument count,
external symbols, SHA-256 and size of the code) followed by the object code.
A second process loads that object with llvmlite (``kernels.cpu.native``) and
neither imports the module nor Numba.

Writes are atomic (temporary file + ``os.replace``). A source file whose
contents differ from the expected source is rewritten and its object dropped;
an object whose header or checksum does not verify is rebuilt, never loaded.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

_LOCK = threading.RLock()
CODEGEN_VERSION = "2"


def cache_dir() -> Path:
    """The kernel cache folder: ``$GCOMPILE_CACHE_DIR`` or ``~/.cache/gcompile/kernels``."""
    d = os.environ.get("GCOMPILE_CACHE_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gcompile" / "kernels"


def _version(dist: str) -> str:
    # metadata, not ``import numba``: a warm process never imports Numba
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - not installed: fall back to the source tree
        return "src"


def _host_cpu() -> str:
    """The CPU the machine code is built for: objects are compiled for the host's
    features, so a cache folder shared between machines must not mix them."""
    import llvmlite.binding as ll
    return "|".join([ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten(),
                     os.environ.get("NUMBA_CPU_NAME", ""),
                     os.environ.get("NUMBA_CPU_FEATURES", "")])


def _library_salt() -> str:
    # the fast math library is compiled into every kernel, so its source is part of the key
    fm = Path(__file__).with_name("cpu") / "fastmath.py"
    h = hashlib.sha256()
    for part in (_version("numba"), _version("llvmlite"), np.__version__, _version("gcompile"),
                 CODEGEN_VERSION, sys.version.split()[0], _host_cpu()):
        h.update(part.encode())
        h.update(b"\0")
    try:
        h.update(fm.read_bytes())
    except OSError:
        pass
    return h.hexdigest()


_SALT = _library_salt()
_MODULES: dict[str, ModuleType] = {}


def module_name(source: str) -> str:
    """Cache file stem for a generated source."""
    h = hashlib.sha256()
    h.update(_SALT.encode())
    h.update(source.encode())
    return "gk_" + h.hexdigest()[:32]


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_" + path.stem, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def object_path(source: str) -> Path:
    """Where the machine code of ``source``'s entry point is kept."""
    return cache_dir() / f"{module_name(source)}.kobj"


def store_object(source: str, obj: bytes, meta: dict) -> None:
    """Keep ``obj`` (with ``meta``: symbol, nargs, externals) for later processes."""
    head = dict(meta, sha256=hashlib.sha256(obj).hexdigest(), nbytes=len(obj))
    try:
        _atomic_write(object_path(source),
                            json.dumps(head, sort_keys=True).encode() + b"\n" + obj)
    except OSError as e:
        _unwritable(e)


_WARNED: list[str] = []


def _unwritable(err: OSError) -> None:
    """An unwritable cache folder costs later processes a compile, never a failure."""
    d = str(cache_dir())
    if d not in _WARNED:
        _WARNED.append(d)
        warnings.warn(f"gcompile: the kernel cache folder {d} cannot be written ({err}); "
                      "kernels are compiled in memory and not kept for other processes "
                      "(set GCOMPILE_CACHE_DIR to a writable folder)", RuntimeWarning,
                      stacklevel=4)


def _exec_in_memory(name: str, modname: str, source: str) -> ModuleType:
    mod = ModuleType(modname)
    mod.__file__ = f"<gcompile kernel {name}>"
    sys.modules[modname] = mod
    try:
        exec(compile(source, mod.__file__, "exec"), mod.__dict__)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    _MODULES[name] = mod
    return mod


def load_object(source: str) -> tuple[bytes, dict] | None:
    """The stored object code and its header, or None when missing or not intact.

    The source file must be present and equal to ``source`` as well: an edited or
    truncated source means the entry is not what its name says."""
    path = object_path(source)
    try:
        data = path.read_bytes()
        ok_src = path.with_suffix(".py").read_text(encoding="utf-8") == source
    except (OSError, UnicodeDecodeError):
        return None
    nl = data.find(b"\n")
    try:
        head = json.loads(data[:nl])
        obj = data[nl + 1:]
        intact = (ok_src and len(obj) == head["nbytes"]
                  and hashlib.sha256(obj).hexdigest() == head["sha256"]
                  and isinstance(head["symbol"], str) and isinstance(head["nargs"], int)
                  and isinstance(head["externals"], list))
    except (ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        drop_object(source)
        return None
    return obj, head


def drop_object(source: str) -> None:
    """Remove the stored object code of ``source`` (it proved bad or stale)."""
    try:
        os.unlink(object_path(source))
    except OSError:
        pass


def load_module(source: str) -> tuple[ModuleType, Path]:
    """Write ``source`` to the cache folder (if needed) and import it by path."""
    name = module_name(source)
    with _LOCK:
        mod = _MODULES.get(name)
        if mod is not None:
            return mod, Path(mod.__file__)
        path = cache_dir() / f"{name}.py"
        try:
            ok = path.read_text(encoding="utf-8") == source
        except (OSError, UnicodeDecodeError):
            ok = False
        modname = f"gcompile_kernel_{name}"
        if not ok:
            drop_object(source)
            try:
                _atomic_write(path, source.encode("utf-8"))
            except OSError as e:
                _unwritable(e)
                return _exec_in_memory(name, modname, source), path
        # registered in sys.modules under a top-level name before it runs, so that the
        # functions Numba compiles have a stable, importable home
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(modname, None)
            raise
        _MODULES[name] = mod
        return mod, path
