"""The on-disk CUDA kernel cache: numba-cuda's cache files, signed like ``kernels.cache``'s.

numba-cuda can keep compiled kernels on disk (``cache=True``: ``CUDACache``, built on
``numba.cuda.core.caching``): per function an index file (``.nbi``) maps each signature,
GPU architecture (the codegen's magic tuple: CUDA runtime version and compute
capability) and numba-cuda version to a data file (``.nbc``) holding the kernel's PTX
and cubin. Both are pickles, loaded as they are found. Here the same machinery runs
under the rules of the CPU kernel cache (``kernels.cache``):

- the files live in the kernel cache folder, under ``cuda/`` (``cuda_cache_dir()``),
  beside the generated CUDA sources, which are written there as real ``.py`` files
  (``write_source``) so that numba has a file to name the cache entries after;
- every index and data file is ``MAGIC + HMAC-SHA256 tag + payload``, the tag keyed by
  this user's kernel cache key (``kernels.cache.cache_key()``, kept outside the cache
  folder) and covering the file's name and payload; it is verified before anything is
  unpickled, and a file that fails it (planted, edited, swapped with another entry's,
  or written with another key) is a miss: the kernel is compiled and the file
  overwritten. A data file also names the index key it was stored under;
- the source stamp that invalidates an index is a hash of the kernel's source file and
  of what generated CUDA code imports (``devmath``, the CPU fast-math helpers) and the
  library versions, not a modification time;
- writes are atomic (temporary file + ``os.replace``); without a usable key nothing is
  stored or loaded (kernels compile in memory, as without this module), and an
  unwritable folder or a kernel numba cannot serialise costs a compile, never a failure.

Kernels whose compilation depends on the launch configuration are never stored. Under
the CUDA simulator there is no compiled code and ``attach`` does nothing.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import pickle
import sys
from pathlib import Path

from numba.cuda.core.caching import Cache, CacheImpl, IndexDataCacheFile, _CacheLocator

from .. import cache as _kcache
from .views import simulator

__all__ = ["cuda_cache_dir", "source_path", "write_source", "attach",
           "SignedCUDACache", "SignedIndexDataCacheFile"]

MAGIC = b"gcompile-cuda-cache-1\n"
_TAG_BYTES = 32


def cuda_cache_dir() -> Path:
    """Where CUDA sources and their cache files live: ``cuda/`` in the kernel cache folder."""
    return _kcache.cache_dir() / "cuda"


def source_path(source: str) -> Path:
    """The file a generated CUDA module's ``source`` is written to (named by its hash)."""
    return cuda_cache_dir() / f"gk_cuda_{hashlib.sha256(source.encode()).hexdigest()[:32]}.py"


def write_source(source: str) -> Path | None:
    """Write ``source`` to ``source_path(source)`` unless the file already holds exactly
    that text (atomically; rewritten when it differs); None when it cannot be written.
    Callers run ``source`` itself, never the file's contents."""
    path = source_path(source)
    try:
        if path.read_text(encoding="utf-8") == source:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    try:
        _kcache._atomic_write(path, source.encode("utf-8"))
    except OSError as e:
        _kcache._unwritable(e)
        return None
    return path


@functools.cache
def _salt() -> bytes:
    """What compiled CUDA code depends on besides its own source file."""
    h = hashlib.sha256()
    for dist in ("numba", "numba-cuda", "llvmlite", "numpy", "gcompile"):
        h.update(_kcache._version(dist).encode() + b"\0")
    h.update(f"{_kcache.CODEGEN_VERSION}\0{sys.version.split()[0]}\0".encode() + MAGIC)
    here = Path(__file__).resolve().parent
    for f in (here / "devmath.py", here.parent / "cpu" / "fastmath.py"):
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(b"<missing>")
    return h.digest()


# ---- the signed file layer ------------------------------------------------------------------
def _tag(key: bytes, name: str, payload: bytes) -> bytes:
    m = hmac.new(key, digestmod=hashlib.sha256)
    for part in (MAGIC, name.encode("utf-8")):
        m.update(len(part).to_bytes(8, "little"))
        m.update(part)
    m.update(payload)
    return m.digest()


class SignedIndexDataCacheFile(IndexDataCacheFile):
    """numba's index and data files, each written as ``MAGIC + tag + payload`` and
    unpickled only after the tag verifies (anything else is a miss)."""

    def _seal(self, path: str, payload: bytes) -> bool:
        key = _kcache.cache_key()
        if key is None:
            return False
        name = os.path.basename(path)
        _kcache._atomic_write(Path(path), MAGIC + _tag(key, name, payload) + payload)
        return True

    def _unseal(self, path: str) -> bytes | None:
        """The verified payload of ``path``, or None (missing, foreign, or not intact)."""
        key = _kcache.cache_key()
        if key is None:
            return None
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        head = len(MAGIC) + _TAG_BYTES
        if len(data) < head or not data.startswith(MAGIC):
            return None
        payload = data[head:]
        if not hmac.compare_digest(data[len(MAGIC):head],
                                   _tag(key, os.path.basename(path), payload)):
            return None
        return payload

    def _load_index(self) -> dict:
        payload = self._unseal(self._index_path)
        if payload is None:
            return {}
        try:
            version, stamp, overloads = pickle.loads(payload)
        except Exception:  # noqa: BLE001 - signed by us, but unreadable by this numba
            return {}
        if version != self._version or stamp != self._source_stamp or \
                not isinstance(overloads, dict):
            return {}
        return overloads

    def _save_index(self, overloads: dict) -> None:
        self._seal(self._index_path, self._dump((self._version, self._source_stamp,
                                                 overloads)))

    def _load_data(self, name: str):
        payload = self._unseal(self._data_path(name))
        if payload is None:
            return None
        try:
            return pickle.loads(payload)
        except Exception:  # noqa: BLE001 - signed by us, but unreadable by this numba
            return None

    def _save_data(self, name: str, data) -> None:
        self._seal(self._data_path(name), self._dump(data))

    def save(self, key, data) -> None:
        """Store ``data`` under index ``key``; the data file records the key too."""
        if _kcache.cache_key() is None:
            return
        super().save(key, (key, data))

    def load(self, key):
        """The data stored under ``key``, or None."""
        got = super().load(key)
        if not (isinstance(got, tuple) and len(got) == 2):
            return None
        try:
            same = got[0] == key
        except Exception:  # noqa: BLE001 - a key object that cannot be compared
            return None
        return got[1] if same is True else None


# ---- the numba cache on top of it -----------------------------------------------------------
class _Locator(_CacheLocator):
    """Cache files in ``cuda_cache_dir()``, stamped by the content of the function's
    source file (plus ``_salt()``)."""

    def __init__(self, py_func, py_file: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = str(cuda_cache_dir())

    def get_cache_path(self) -> str:
        return self._cache_path

    def get_source_stamp(self) -> str:
        with open(self._py_file, "rb") as f:
            return hashlib.sha256(_salt() + f.read()).hexdigest()

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    def foreign(self) -> bool:
        """Whether the function's file lies outside the CUDA cache folder (a module of
        gcompile's own, not a generated source)."""
        return os.path.dirname(os.path.abspath(self._py_file)) != \
            os.path.abspath(self._cache_path)

    @classmethod
    def from_function(cls, py_func, py_file: str):
        if not os.path.isfile(py_file):
            return None
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


class SignedCUDACacheImpl(CacheImpl):
    """numba-cuda's ``CUDACacheImpl`` with gcompile's locator."""

    _locator_classes = [_Locator]

    def get_filename_base(self, fullname: str, abiflags: str) -> str:
        base = super().get_filename_base(fullname, abiflags)
        if self._locator.foreign():  # two installs' gemm.py must not share an index
            where = os.path.dirname(os.path.abspath(self._locator._py_file))
            base = f"src_{hashlib.sha1(where.encode()).hexdigest()[:10]}_{base}"
        return base

    def reduce(self, kernel):
        return kernel._reduce_states()

    def rebuild(self, target_context, payload):
        from numba.cuda.dispatcher import _Kernel
        return _Kernel._rebuild(**payload)

    def check_cachable(self, data) -> bool:
        return True


class SignedCUDACache(Cache):
    """A ``CUDADispatcher``'s disk cache (its ``_cache``) with signed files.

    It is deliberately not a ``CUDACache``: numba-cuda gives the launch-configuration
    specialisations of a ``CUDACache`` user a fresh, unsigned ``CUDACache``; here those
    stay in memory, and kernels that depend on the launch configuration are neither
    stored nor taken from disk."""

    _impl_class = SignedCUDACacheImpl

    def __init__(self, py_func) -> None:
        super().__init__(py_func)
        self._cache_file = SignedIndexDataCacheFile(
            cache_path=self._cache_path, filename_base=self._impl.filename_base,
            source_stamp=self._cache_file._source_stamp)

    def load_overload(self, sig, target_context):
        try:
            from numba.cuda.utils import numba_target_override
            override = numba_target_override()
        except ImportError:  # pragma: no cover - depends on the numba-cuda version
            override = contextlib.nullcontext()
        with override:
            return super().load_overload(sig, target_context)

    def _load_overload(self, sig, target_context):
        try:
            kernel = super()._load_overload(sig, target_context)
        except Exception:  # noqa: BLE001 - an entry this numba cannot rebuild: a miss
            return None
        if getattr(kernel, "launch_config_sensitive", False):
            return None
        return kernel

    def _save_overload(self, sig, data) -> None:
        if getattr(data, "launch_config_sensitive", False) or _kcache.cache_key() is None:
            return
        try:
            super()._save_overload(sig, data)
        except OSError as e:
            _kcache._unwritable(e)
        except Exception:  # noqa: BLE001 - not serialisable (numba refuses some kernels)
            pass


def attach(dispatcher) -> bool:
    """Give a ``@cuda.jit`` dispatcher the signed disk cache; returns whether it has it.

    Nothing is attached under the simulator, without a usable cache key, to a function
    whose source is not a file, or where the cache folder cannot be written."""
    if simulator() or not hasattr(dispatcher, "_cache") or \
            getattr(dispatcher, "py_func", None) is None:
        return False
    if _kcache.cache_key() is None:
        return False
    try:
        dispatcher._cache = SignedCUDACache(dispatcher.py_func)
    except (OSError, RuntimeError):  # no locator (no file, unwritable folder)
        return False
    return True
