"""The on-disk kernel cache: generated source as real ``.py`` files.

Numba's ``cache=True`` needs a function defined in a file (``exec``-made
functions cannot be cached), so each generated module is written to the cache
folder under a name derived from a hash of its source and of the library
versions, imported by path, and its ``@njit(cache=True)`` functions keep their
machine code in ``__pycache__`` beside it. A second process therefore imports
the same file and loads compiled code instead of compiling.

Writes are atomic (temporary file + ``os.replace``); an existing file whose
contents differ from the expected source (truncated, edited, corrupt) is
rewritten and its Numba cache entries dropped, never trusted.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import numba
import numpy as np

_LOCK = threading.RLock()
CODEGEN_VERSION = "1"


def cache_dir() -> Path:
    """The kernel cache folder: ``$GCOMPILE_CACHE_DIR`` or ``~/.cache/gcompile/kernels``."""
    d = os.environ.get("GCOMPILE_CACHE_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gcompile" / "kernels"


def _gcompile_version() -> str:
    try:
        from importlib.metadata import version
        return version("gcompile")
    except Exception:  # noqa: BLE001 - not installed: fall back to the source tree
        return "src"


def _library_salt() -> str:
    # the fast math library is compiled into every kernel, so its source is part of the key
    fm = Path(__file__).with_name("cpu") / "fastmath.py"
    h = hashlib.sha256()
    for part in (numba.__version__, np.__version__, _gcompile_version(), CODEGEN_VERSION,
                 sys.version.split()[0]):
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


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_" + path.stem, suffix=".py", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def drop_numba_cache(path: Path) -> None:
    """Remove Numba's cached machine code for the module at ``path``."""
    for f in glob.glob(str(path.parent / "__pycache__" / (path.stem + ".*"))):
        try:
            os.unlink(f)
        except OSError:
            pass


def has_numba_cache(path: Path) -> bool:
    """Whether Numba keeps cached machine code for the module at ``path``."""
    return bool(glob.glob(str(path.parent / "__pycache__" / (path.stem + ".*"))))


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
        if not ok:
            if path.exists():
                drop_numba_cache(path)
            _atomic_write(path, source)
        # registered in sys.modules under a top-level name before it runs: Numba's cache
        # pickles references to the module's globals by module name, and an unregistered
        # module is '<dynamic>', which a second process cannot load (it recompiles)
        modname = f"gcompile_kernel_{name}"
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


def forget_module(source: str) -> None:
    """Drop a module from the in-process table (after its cache entry proved bad)."""
    with _LOCK:
        _MODULES.pop(module_name(source), None)
