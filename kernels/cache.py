"""The on-disk kernel cache: generated source and its machine code.

Each generated module is written to the cache folder as a real ``.py`` file,
under a name derived from a hash of its source, the library versions and the
host CPU; when it must be compiled, the expected source text (never the file,
nor a ``__pycache__`` byte-code file beside it) is executed with the file's
path as its name, so tracebacks and ``explain`` point at real source. Its
compiled entry point is stored beside it as ``<name>.kobj``: a JSON header
line (symbol, argument count, external symbols, size of the code, and an
HMAC-SHA256 tag) followed by the object code. A second process loads that
object with llvmlite (``kernels.cpu.native``) and neither imports the module
nor Numba.

Machine code is native code, so nothing found in the cache folder is trusted
on its own word: the tag is keyed by a per-user secret kept outside the cache
folder (``cache_key_file()``: ``$GCOMPILE_CACHE_KEY_FILE`` or
``~/.config/gcompile/kernel-cache.key``, created with mode 0600), and covers
the header, the code and the *expected* source, which the loader recomputes
from the source it wants. A file planted in the cache folder, an entry written
for another source or with another key, or one that was edited, fails the tag
and is rebuilt, never loaded. Without a usable key (unwritable, or readable by
other users) machine code is neither stored nor loaded, with one warning.

Writes are atomic (temporary file + ``os.replace``). A source file whose
contents differ from the expected source is rewritten and its object dropped;
an object whose header or tag does not verify is rebuilt, never loaded.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
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


def prefer_wide_vectors() -> bool:
    """On a host with AVX-512, let LLVM vectorise kernels 512 bits wide (it prefers 256
    on these CPUs by default): set ``NUMBA_CPU_FEATURES`` to the host's features without
    ``prefer-256-bit`` before Numba reads it, here and in compile workers, which
    inherit it. The transcendental loops are where it pays (a float32 erf loop 0.63 ->
    0.41 ms, exp 0.31 -> 0.21 ms over 512K elements here); results are the same bits
    (no reassociation). ``NUMBA_CPU_FEATURES`` set by the user, or
    ``GCOMPILE_VECTOR_WIDTH=256``, leave LLVM's choice. Numba code of the user's own in
    this process gets the same setting. Returns whether it is on."""
    want = os.environ.get("GCOMPILE_VECTOR_WIDTH", "512")
    current = os.environ.get("NUMBA_CPU_FEATURES")
    if want != "512":
        return False
    if current:
        return current.endswith(",-prefer-256-bit")
    try:
        import llvmlite.binding as ll
        feats = ll.get_host_cpu_features()
        if not feats.get("avx512f"):
            return False
        value = feats.flatten() + ",-prefer-256-bit"
    except Exception:  # noqa: BLE001 - no feature list: leave LLVM's choice
        return False
    os.environ["NUMBA_CPU_FEATURES"] = value
    config = sys.modules.get("numba.core.config")
    if config is not None:  # Numba already imported: read when its codegen is made
        config.CPU_FEATURES = value
    return True


WIDE_VECTORS = prefer_wide_vectors()  # what kernels of this process are compiled for
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


def import_name(source: str) -> str:
    """The name ``source``'s module is registered under in ``sys.modules`` (it is part
    of every symbol Numba generates for it)."""
    return "gcompile_kernel_" + module_name(source)


def object_path(source: str) -> Path:
    """Where the machine code of ``source``'s entry point is kept."""
    return cache_dir() / f"{module_name(source)}.kobj"


# ---- the per-user key that signs stored machine code ----------------------------------------
KOBJ_FORMAT = "gcompile-kobj-2"
_KEY_BYTES = 32
_KEYS: dict[tuple[str, str], bytes | None] = {}


def cache_key_file() -> Path:
    """The secret that signs cached machine code: ``$GCOMPILE_CACHE_KEY_FILE``, or
    ``kernel-cache.key`` in ``$XDG_CONFIG_HOME/gcompile`` (``~/.config/gcompile``),
    outside the cache folder that others may be able to write."""
    f = os.environ.get("GCOMPILE_CACHE_KEY_FILE")
    if f:
        return Path(f)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "gcompile" / "kernel-cache.key"


def _create_key(path: Path) -> None:
    """Create ``path`` (mode 0600) holding a fresh random key, unless it exists; two
    processes racing both end up reading the one that won."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_key_", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(_KEY_BYTES).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces a key another process made
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            try:
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            with os.fdopen(fd2, "wb") as f:
                f.write(Path(tmp).read_bytes())
                f.flush()
                os.fsync(f.fileno())
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _read_key(path: Path) -> bytes:
    """The key in ``path``; ValueError (with the reason) when it cannot be trusted."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        _create_key(path)
        fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())  # the file opened (a symlink's target), not its name
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("it is not a regular file")
        if hasattr(os, "geteuid"):
            if st.st_uid != os.geteuid():
                raise ValueError(f"it belongs to user id {st.st_uid}, not to this user")
            if st.st_mode & 0o077:
                raise ValueError(f"other users can read or write it (mode "
                                 f"{stat.S_IMODE(st.st_mode):04o}; run chmod 600 on it)")
        key = f.read(4096).strip()
    if len(key) < _KEY_BYTES:
        raise ValueError(f"it holds {len(key)} bytes, fewer than the {_KEY_BYTES} a key needs")
    return key


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def _key() -> bytes | None:
    """This user's cache key, or None (with one warning) when there is no usable one."""
    path, folder = cache_key_file(), cache_dir()
    slot = (str(path), str(folder))
    if slot in _KEYS:
        return _KEYS[slot]
    key = None
    try:
        if _within(path, folder):
            raise ValueError("it lies inside the kernel cache folder, where anyone who can "
                             "write the cache could replace it")
        key = _read_key(path)
    except (OSError, ValueError) as e:
        warnings.warn(f"gcompile: the kernel cache key {path} cannot be used ({e}); compiled "
                      f"kernels are neither loaded from nor stored in {folder}, so every "
                      "process compiles its kernels again (set GCOMPILE_CACHE_KEY_FILE to a "
                      "private file outside the cache folder)", RuntimeWarning, stacklevel=4)
    _KEYS[slot] = key
    return key


def cache_key() -> bytes | None:
    """This user's kernel cache key (see ``cache_key_file()``), or None, with one warning,
    when there is no usable one; what signs every kind of cached code (CPU objects here,
    CUDA index and data files in ``kernels.cuda.disk_cache``)."""
    return _key()


def _tag(key: bytes, source: str, head: dict, obj: bytes) -> str:
    """HMAC-SHA256 over the entry's format, expected source, header fields and code."""
    m = hmac.new(key, digestmod=hashlib.sha256)
    fields = {k: v for k, v in head.items() if k != "hmac"}
    for part in (KOBJ_FORMAT.encode(), _SALT.encode(), source.encode("utf-8"),
                 json.dumps(fields, sort_keys=True).encode()):
        m.update(len(part).to_bytes(8, "little"))
        m.update(part)
    m.update(obj)
    return m.hexdigest()


def store_object(source: str, obj: bytes, meta: dict) -> None:
    """Keep ``obj`` (with ``meta``: symbol, nargs, externals) for later processes,
    signed with this user's key (not kept at all without one)."""
    key = _key()
    if key is None:
        return
    head = dict(meta, format=KOBJ_FORMAT, module=module_name(source), nbytes=len(obj))
    head["hmac"] = _tag(key, source, head, obj)
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


def _exec_source(name: str, modname: str, source: str, filename: str) -> ModuleType:
    """Run ``source`` (the text the caller expects, never a file's contents or a
    byte-code file found beside it) as module ``modname``, named ``filename``."""
    mod = ModuleType(modname)
    mod.__file__ = filename
    # registered in sys.modules under a top-level name before it runs, so that the
    # functions Numba compiles have a stable, importable home
    sys.modules[modname] = mod
    try:
        exec(compile(source, filename, "exec", dont_inherit=True), mod.__dict__)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    _MODULES[name] = mod
    return mod


def load_object(source: str) -> tuple[bytes, dict] | None:
    """The stored object code and its header, or None when missing or not intact.

    The entry must carry a valid tag for ``source`` under this user's key (see the
    module docstring), and the source file must be present and equal to ``source``
    as well: an edited or truncated source means the entry is not what its name says.
    The header's fields are checked for type here; whether they are what the caller
    expects (symbol, arity, externals) is checked by the caller before any load."""
    key = _key()
    if key is None:
        return None
    path = object_path(source)
    try:
        data = path.read_bytes()
        ok_src = path.with_suffix(".py").read_text(encoding="utf-8") == source
    except (OSError, UnicodeDecodeError):
        return None
    nl = data.find(b"\n")
    try:
        if nl < 0:
            raise ValueError("no header line")
        head = json.loads(data[:nl])
        obj = data[nl + 1:]
        intact = (ok_src and isinstance(head, dict) and head["format"] == KOBJ_FORMAT
                  and head["module"] == module_name(source) and head["nbytes"] == len(obj)
                  and isinstance(head["hmac"], str)
                  and hmac.compare_digest(head["hmac"], _tag(key, source, head, obj))
                  and isinstance(head["symbol"], str) and type(head["nargs"]) is int
                  and isinstance(head["externals"], list)
                  and all(isinstance(e, str) for e in head["externals"]))
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
    """Write ``source`` to the cache folder (if needed) and run it as a module."""
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
        modname = import_name(source)
        if not ok:
            drop_object(source)
            try:
                _atomic_write(path, source.encode("utf-8"))
            except OSError as e:
                _unwritable(e)
                return _exec_source(name, modname, source, f"<gcompile kernel {name}>"), path
        return _exec_source(name, modname, source, str(path)), path


# ---- hints: which kernels a cold run already prepared ----------------------------------------
def hint_path(source: str) -> Path:
    """An empty file saying that the variants a plan runs of the kernel whose main
    variant is ``source`` were compiled; a warm process then skips looking for them. It
    is only a hint: nothing is loaded because of it, and a missing object still
    compiles on first call."""
    return cache_dir() / f"{module_name(source)}.seen"


def mark_seen(source: str) -> None:
    """Leave the hint for ``source`` (quietly not, where the folder is not writable)."""
    try:
        p = hint_path(source)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    except OSError:
        pass


# ---- inspection and cleanup (``gcompile cache info|clear``) ---------------------------------
def _entries(folder: Path) -> list[Path]:
    """The files this cache wrote in ``folder``: generated sources, objects, leftovers of
    interrupted writes, and their byte-code folder (nothing else is ever touched)."""
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        name = p.name
        if p.is_file() and (name.startswith("gk_") or name.startswith(".tmp_gk_")) \
                and name.endswith((".py", ".kobj", ".seen")):
            out.append(p)
        elif name == "__pycache__" and p.is_dir():
            out.extend(q for q in p.iterdir() if q.name.startswith("gk_"))
        elif name == "cuda" and p.is_dir():  # kernels.cuda.disk_cache: sources, .nbi, .nbc
            out.extend(q for q in p.iterdir() if q.is_file() and (
                q.name.startswith(".tmp_") or q.suffix in (".py", ".nbi", ".nbc")))
    return out


def cache_info() -> dict:
    """The cache folder, its kernels (objects), sources and bytes, and the signing key."""
    folder = cache_dir()
    files = _entries(folder)
    size = 0
    for f in files:
        try:
            size += f.stat().st_size
        except OSError:
            pass
    key = cache_key_file()
    return {"dir": str(folder), "exists": folder.is_dir(),
            "objects": sum(1 for f in files if f.suffix == ".kobj"),
            "sources": sum(1 for f in files if f.suffix == ".py"
                           and f.parent == folder),
            "cuda_files": sum(1 for f in files if f.parent.name == "cuda"),
            "bytes": size, "key_file": str(key), "key_exists": key.is_file()}


def clear_cache() -> tuple[int, int]:
    """Delete this cache's files (not the folder, nor anything else in it, nor the key);
    returns (files removed, bytes freed). Processes running keep what they loaded."""
    removed = freed = 0
    with _LOCK:
        for f in _entries(cache_dir()):
            try:
                n = f.stat().st_size
                f.unlink()
            except OSError:
                continue
            removed += 1
            freed += n
        _MODULES.clear()
    return removed, freed
