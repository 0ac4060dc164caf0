"""``gcompile.save`` / ``gcompile.load``: safe checkpoints, never pickle.

A checkpoint is one safetensors file. Tensor data lives in the safetensors
body; the structure around it (dicts, lists, tuples, numbers, strings, None,
dtypes) is JSON in the safetensors metadata under ``gcompile.structure``,
and a SHA-256 over structure and tensor bytes under ``gcompile.sha256``
catches truncation and tampering. Tensors are named by their path in the
structure (``fc.weight``, ``state.0.exp_avg``), so a saved ``state_dict()`` is
an ordinary safetensors state dict other frameworks can read, and a plain
safetensors file written elsewhere loads as a dict of tensors.

Loading only ever builds tensors, numbers, strings and containers: an entry
that names anything else (a class, a function) is refused, so nothing in a
file can run code. A file that carries any of gcompile's metadata records
but not all of them intact (the format, version, structure and checksum
records) is refused with an error naming the record, never loaded unchecked.

Writes go to a temporary file in the target directory, are fsynced and
renamed into place, so an interrupted save leaves the old file. Otherwise a
save to a path behaves as ``open(path, "wb")`` would: an existing file keeps
its permission bits (and, where allowed, owner and group), a symlink's target
is written (the link stays), and a file this process may not write (read-only,
on a read-only mount) raises ``PermissionError`` before anything is written.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import secrets
import stat
from collections import OrderedDict
from typing import Any

import numpy as np
import safetensors.numpy as st_numpy

from ir import dtypes as dt

from ._tensor import Size, Tensor

__all__ = ["save", "load", "SerializationError"]

_FORMAT = "gcompile"
_FORMAT_VERSION = "1"
_KEY_STRUCT = "gcompile.structure"
_KEY_HASH = "gcompile.sha256"
_KEY_VERSION = "gcompile.version"
_CHUNK = 1 << 24
_MAX_DEPTH = 500


class SerializationError(RuntimeError):
    """A checkpoint that cannot be saved or loaded safely (corrupt, truncated,
    tampered, or asking for something other than data)."""


# ---------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------
class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.by_id: dict[int, str] = {}
        self.keep: list = []  # keep encoded objects alive so ids stay unique

    def _name(self, path: str) -> str:
        name = path or "tensor"
        if name in self.arrays:
            i = 1
            while f"{name}#{i}" in self.arrays:
                i += 1
            name = f"{name}#{i}"
        return name

    def _array(self, obj: Any, arr: np.ndarray, path: str) -> str:
        name = self.by_id.get(id(obj))
        if name is None:
            name = self._name(path)
            self.arrays[name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
            self.by_id[id(obj)] = name
            self.keep.append(obj)
        return name

    def encode(self, obj: Any, path: str, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise SerializationError(f"gcompile.save: structure nested deeper than {_MAX_DEPTH} "
                                     f"levels at '{path}'")
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and type(obj) is int:
            return obj
        if type(obj) is float:
            if math.isfinite(obj):
                return obj
            return {"kind": "float", "value": repr(obj)}
        if isinstance(obj, Tensor):
            data = obj.detach()._data
            if data.__class__ is not np.ndarray:  # a CUDA tensor: saved from a host copy
                data = data.host()
            name = self._array(obj, data, path)
            node = {"kind": "tensor", "name": name}
            if obj.requires_grad:
                node["requires_grad"] = True
            if type(obj).__name__ == "Parameter" and type(obj).__module__.startswith("gcompile"):
                node["parameter"] = True
            return node
        if isinstance(obj, np.ndarray):
            if (obj.dtype.kind not in "biuf" or obj.dtype.kind == "u" and obj.dtype != np.uint8
                    ) and obj.dtype != dt.bfloat16.np:
                raise SerializationError(f"gcompile.save: numpy array at '{path}' has dtype "
                                         f"{obj.dtype}, which a safe checkpoint cannot hold")
            return {"kind": "ndarray", "name": self._array(obj, obj, path)}
        if isinstance(obj, np.generic):
            return {"kind": "npscalar", "name": self._array(obj, np.asarray(obj), path)}
        if isinstance(obj, dt.DType):
            return {"kind": "dtype", "name": obj.name}
        if isinstance(obj, Size):
            return {"kind": "size", "items": [int(s) for s in obj]}
        if isinstance(obj, (bytes, bytearray)):
            return {"kind": "bytes", "hex": bytes(obj).hex()}
        if type(obj).__name__ == "device" and type(obj).__module__.startswith("gcompile"):
            return {"kind": "device", "name": str(obj)}
        if isinstance(obj, dict):  # dict, OrderedDict, Counter, defaultdict: saved as data
            keys, values = [], []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (str, int, float, bool, tuple))):
                    raise SerializationError(f"gcompile.save: dict key {k!r} at '{path}' is a "
                                             f"{type(k).__name__}; keys must be str, int, "
                                             "float, bool, None or tuples of them")
                keys.append(self.encode(k, path, depth + 1))
                values.append(self.encode(v, _join(path, k), depth + 1))
            return {"kind": "odict" if isinstance(obj, OrderedDict) else "dict", "keys": keys,
                    "values": values}
        if isinstance(obj, (list, tuple)):  # namedtuples are saved as plain tuples
            items = [self.encode(v, _join(path, i), depth + 1) for i, v in enumerate(obj)]
            return {"kind": "list" if isinstance(obj, list) else "tuple", "items": items}
        hint = ""
        if hasattr(obj, "state_dict"):
            hint = " (save its state_dict() instead)"
        raise SerializationError(
            f"gcompile.save: cannot store an object of type {type(obj).__module__}."
            f"{type(obj).__qualname__} at '{path or '<root>'}'{hint}: checkpoints hold only "
            "tensors, numpy arrays, numbers, strings, None, dtypes and dict/list/tuple "
            "containers of them, so that loading never runs code")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _digest(structure: str, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the structure JSON and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(structure.encode())
    for name in sorted(arrays):
        a = arrays[name]
        h.update(b"\0" + name.encode() + b"\0" + a.dtype.str.encode() + b"\0"
                 + repr(tuple(a.shape)).encode() + b"\0")
        h.update(a.reshape(-1).view(np.uint8).data if a.size else b"")
    return h.hexdigest()


def _prepare(obj: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensor arrays by name, safetensors metadata) for ``obj``."""
    enc = _Encoder()
    structure = json.dumps(enc.encode(obj, ""), separators=(",", ":"), allow_nan=False)
    meta = {"format": _FORMAT, _KEY_VERSION: _FORMAT_VERSION, _KEY_STRUCT: structure,
            _KEY_HASH: _digest(structure, enc.arrays)}
    return enc.arrays, meta


def _write_checkpoint(path: str, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    """Write the safetensors file (safetensors writes straight from the arrays;
    a separate function so tests can make it fail half-way)."""
    st_numpy.save_file(arrays, path, metadata=meta)


def _write_all(f: Any, blob: bytes) -> None:
    """Write ``blob`` in chunks (a separate function so tests can make it fail)."""
    view = memoryview(blob)
    for start in range(0, len(view), _CHUNK):
        f.write(view[start:start + _CHUNK])


def _create_temp(directory: str, base: str, mode: int) -> str:
    """Create an empty temporary file beside the target (``mode`` less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, flags, mode))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "gcompile.save: no free temporary file name in",
                          directory)


def _atomic_write(path: Any, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    """Write to a temporary file beside the target, fsync it, then rename it into place.

    The target is what ``open(path, "wb")`` would write: the file a symlink points to
    (the link is kept). An existing file keeps its permission bits, and one this
    process may not write raises ``PermissionError`` (and is left as it was); a
    device or pipe (``/dev/null``) is written in place, as there is nothing to rename."""
    path = os.fsdecode(os.fspath(path))
    target = os.path.realpath(path)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    if old is not None:
        if stat.S_ISDIR(old.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(old.st_mode):
            with open(target, "wb") as f:
                _write_all(f, st_numpy.save(arrays, metadata=meta))
            return
        # the same check open(path, "wb") makes (mode bits, ACLs, read-only mounts),
        # without truncating: a file we may not write is refused, not replaced
        os.close(os.open(target, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)))
    directory = os.path.dirname(target)
    # a new file gets 0666 less the umask, as open() gives; over an existing file the
    # temporary is private until it takes the old file's bits
    tmp = _create_temp(directory, os.path.basename(target), 0o666 if old is None else 0o600)
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)  # the umask applied, no os.umask() race
        _write_checkpoint(tmp, arrays, meta)  # (safetensors leaves its file 0600)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if old is None:
            os.chmod(tmp, mode)
        else:
            _take_over(tmp, old)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; best effort (not every filesystem allows it)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _take_over(tmp: str, old: os.stat_result) -> None:
    """Give ``tmp`` the replaced file's permission bits, and its owner and group where
    this process may set them (as writing the file in place would have kept them)."""
    st = os.stat(tmp)
    uid = old.st_uid if hasattr(os, "geteuid") and os.geteuid() == 0 else -1
    if (uid != -1 and uid != st.st_uid) or old.st_gid != st.st_gid:
        try:
            os.chown(tmp, uid, old.st_gid)
        except (OSError, AttributeError):
            pass  # not a member of the old file's group: keep ours
    os.chmod(tmp, stat.S_IMODE(old.st_mode) & 0o777)


def save(obj: Any, f: Any, pickle_module: Any = None, pickle_protocol: int = 2,
         _use_new_zipfile_serialization: bool = True) -> None:
    """Save tensors, state dicts, optimiser state and nested containers of them
    to ``f`` (a path, or a writable binary file object), atomically for paths.

    ``pickle_module``/``pickle_protocol`` are accepted for torch compatibility
    and ignored: nothing is pickled.
    """
    arrays, meta = _prepare(obj)
    if hasattr(f, "write"):
        _write_all(f, st_numpy.save(arrays, metadata=meta))
        if hasattr(f, "flush"):
            f.flush()
        return
    if not isinstance(f, (str, bytes, os.PathLike)):
        raise TypeError(f"gcompile.save: f must be a path or a file object, got "
                        f"{type(f).__name__}")
    _atomic_write(f, arrays, meta)


# ---------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------
def _read(f: Any) -> tuple[bytes, str]:
    if hasattr(f, "read"):
        data = f.read()
        name = getattr(f, "name", None)
        return bytes(data), repr(name) if isinstance(name, str) else "<file object>"
    if not isinstance(f, (str, bytes, os.PathLike)):
        raise TypeError(f"gcompile.load: f must be a path or a file object, got "
                        f"{type(f).__name__}")
    with open(f, "rb") as fh:
        return fh.read(), repr(os.fsdecode(f))


def _check_container(blob: bytes, where: str) -> dict:
    """Validate the safetensors framing ourselves so errors say what is wrong."""
    def bad(msg: str) -> SerializationError:
        return SerializationError(f"gcompile.load: {where} is not a valid checkpoint: {msg}")

    n = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else -1
    looks_safetensors = 0 <= n <= len(blob) - 8 and blob[8:9] == b"{"
    if not looks_safetensors and (blob[:4] == b"PK\x03\x04" or (
            blob[:1] == b"\x80" and blob[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))):
        raise bad("it is a pickle/zip file (torch.save's format); gcompile never unpickles. "
                  "Re-save it as safetensors (safetensors.torch.save_file(state_dict, path)) "
                  "and load that")
    if len(blob) < 8:
        raise bad(f"truncated: the file is only {len(blob)} bytes, shorter than the 8-byte "
                  "safetensors header length")
    if n > len(blob) - 8:
        raise bad(f"truncated: the header says it is {n} bytes long but only "
                  f"{len(blob) - 8} bytes follow")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"corrupt safetensors header (not JSON: {e})") from None
    if not isinstance(header, dict):
        raise bad("corrupt safetensors header (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            a, b = info["data_offsets"]
            end = max(end, int(b))
        except (TypeError, KeyError, ValueError):
            raise bad(f"corrupt safetensors header entry for tensor {name!r}") from None
    body = len(blob) - 8 - n
    if body < end:
        raise bad(f"truncated: tensor data should be {end} bytes but the file holds only "
                  f"{body} (the file was cut short)")
    if body > end:
        raise bad(f"{body - end} unexpected trailing bytes after the tensor data")
    return header


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray], where: str) -> None:
        self.arrays = arrays
        self.where = where
        self.made: dict[str, Any] = {}

    def refuse(self, path: str, what: str) -> SerializationError:
        return SerializationError(
            f"gcompile.load: refused {self.where}: the entry at '{path or '<root>'}' {what}. "
            "Checkpoints may hold only tensors, numbers, strings, None, dtypes and "
            "dict/list/tuple containers; nothing in a file may name a type, class or "
            "function to call")

    def decode(self, node: Any, path: str, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise self.refuse(path, f"is nested deeper than {_MAX_DEPTH} levels")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            raise self.refuse(path, "is a bare JSON list (not written by gcompile.save)")
        if not isinstance(node, dict):
            raise self.refuse(path, f"is a {type(node).__name__}")
        kind = node.get("kind")
        fields = set(node)
        if kind in ("tensor", "ndarray", "npscalar"):
            self.expect(node, path, {"kind", "name"}, {"requires_grad", "parameter"})
            return self.tensor(node, path, kind)
        if kind == "float":
            self.expect(node, path, {"kind", "value"})
            if node["value"] not in ("inf", "-inf", "nan"):
                raise self.refuse(path, f"has a bad float value {node['value']!r}")
            return float(node["value"])
        if kind in ("dict", "odict"):
            self.expect(node, path, {"kind", "keys", "values"})
            keys, values = node["keys"], node["values"]
            if not isinstance(keys, list) or not isinstance(values, list) \
                    or len(keys) != len(values):
                raise self.refuse(path, "is a malformed dict entry")
            out = OrderedDict() if kind == "odict" else {}
            for k, v in zip(keys, values):
                key = self.decode(k, path, depth + 1)
                if isinstance(key, list):
                    raise self.refuse(path, "has a list as a dict key")
                out[key] = self.decode(v, _join(path, key), depth + 1)
            return out
        if kind in ("list", "tuple"):
            self.expect(node, path, {"kind", "items"})
            if not isinstance(node["items"], list):
                raise self.refuse(path, "is a malformed sequence entry")
            items = [self.decode(v, _join(path, i), depth + 1)
                     for i, v in enumerate(node["items"])]
            return items if kind == "list" else tuple(items)
        if kind == "size":
            self.expect(node, path, {"kind", "items"})
            if not isinstance(node["items"], list) or not all(
                    type(i) is int for i in node["items"]):
                raise self.refuse(path, "is a malformed Size entry")
            return Size(node["items"])
        if kind == "dtype":
            self.expect(node, path, {"kind", "name"})
            if node["name"] not in {d.name for d in dt.all_dtypes}:
                raise self.refuse(path, f"names an unknown dtype {node['name']!r}")
            return dt.as_dtype(node["name"])
        if kind == "bytes":
            self.expect(node, path, {"kind", "hex"})
            try:
                return bytes.fromhex(node["hex"])
            except (TypeError, ValueError):
                raise self.refuse(path, "is a malformed bytes entry") from None
        if kind == "device":
            self.expect(node, path, {"kind", "name"})
            from ._device import device
            return device(str(node["name"]))
        named = {k: node[k] for k in fields & {"class", "module", "type", "function",
                                               "callable", "reduce", "args"}}
        what = f"asks for kind {kind!r}" + (f" with {named}" if named else "")
        raise self.refuse(path, what)

    def expect(self, node: dict, path: str, required: set, optional: set = frozenset()) -> None:
        keys = set(node)
        if not required <= keys or keys - required - set(optional):
            raise self.refuse(path, f"has unexpected fields {sorted(keys - required)} for kind "
                                    f"{node.get('kind')!r}")

    def tensor(self, node: dict, path: str, kind: str) -> Any:
        name = node["name"]
        if not isinstance(name, str) or name not in self.arrays:
            raise SerializationError(f"gcompile.load: {self.where} is corrupt: the structure "
                                     f"refers to tensor {name!r} at '{path}', which the file "
                                     "does not contain")
        key = (kind, name)
        if key in self.made:
            return self.made[key]
        arr = self.arrays[name]
        if kind == "ndarray":
            out: Any = arr
        elif kind == "npscalar":
            out = arr[()]
        else:
            out = Tensor._make(arr)
            if node.get("parameter"):
                try:
                    from .nn import Parameter
                    out = Parameter(out, requires_grad=bool(node.get("requires_grad")))
                except ImportError:
                    out.requires_grad = bool(node.get("requires_grad"))
            elif node.get("requires_grad"):
                out.requires_grad = True
        self.made[key] = out
        return out


def _without(blob: bytes, header: dict, names: list[str]) -> bytes:
    """The same safetensors file minus the tensors ``names`` (re-serialised)."""
    n = int.from_bytes(blob[:8], "little")
    data = memoryview(blob)[8 + n:]
    keep = {}
    for name, info in header.items():
        if name == "__metadata__" or name in names:
            continue
        keep[name] = info
    arrays = {}
    for name, info in keep.items():
        a, b = info["data_offsets"]
        arrays[name] = (info, bytes(data[a:b]))
    out = {}
    np_types = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
                "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                "BOOL": np.bool_}
    for name, (info, raw) in arrays.items():
        if info.get("dtype") not in np_types:
            raise SerializationError(f"gcompile.load: tensor {name!r} has safetensors dtype "
                                     f"{info.get('dtype')!r}, which gcompile does not support")
        out[name] = np.frombuffer(raw, np_types[info["dtype"]]).reshape(info["shape"])
    return st_numpy.save(out, metadata=header.get("__metadata__"))


def _bf16_arrays(blob: bytes, header: dict, names: list[str], where: str) -> dict:
    """The BF16 tensors of a safetensors file as ml_dtypes bfloat16 arrays (safetensors'
    NumPy reader has no bfloat16; the bytes are the same little-endian halves)."""
    n = int.from_bytes(blob[:8], "little")
    data = memoryview(blob)[8 + n:]
    out = {}
    for name in names:
        info = header[name]
        a, b = info["data_offsets"]
        shape = tuple(int(d) for d in info["shape"])
        if b - a != 2 * int(np.prod(shape, dtype=np.int64)) or a < 0 or b > len(data):
            raise SerializationError(f"gcompile.load: {where} is corrupt: tensor {name!r} "
                                     f"(BF16, shape {list(shape)}) has {b - a} bytes of data")
        raw = np.frombuffer(bytes(data[a:b]), "<u2").astype(np.uint16, copy=True)
        out[name] = raw.view(dt.bfloat16.np).reshape(shape)
    return out


def _check_map_location(map_location: Any) -> None:
    if map_location is None or callable(map_location) or isinstance(map_location, (str, dict)):
        return
    if type(map_location).__name__ == "device":
        return
    raise TypeError(f"gcompile.load: map_location should be a string, a device, a dict or a "
                    f"callable, got {type(map_location).__name__}")


_RECORDS = ("format", _KEY_VERSION, _KEY_STRUCT, _KEY_HASH)


def _is_gcompile_file(meta: dict) -> bool:
    """Whether ``meta`` is (what is left of) gcompile.save's metadata: any one of its
    four records identifies it, so damage to one cannot pass it off as a foreign file
    (which carries no checksum) and load it unchecked."""
    return meta.get("format") == _FORMAT or any(k in meta for k in _RECORDS[1:])


def _check_records(meta: dict, where: str) -> str:
    """The structure JSON of a gcompile checkpoint, once every metadata record is present
    and well-formed; else an error naming the record that is missing or damaged."""
    def damaged(key: str, what: str) -> SerializationError:
        stray = sorted(k for k in meta if k not in _RECORDS)
        hint = f" (the file has unexpected metadata keys {stray})" if stray else ""
        state = "missing" if key not in meta else f"damaged ({meta[key]!r:.80})"
        return SerializationError(f"gcompile.load: {where} is corrupt: its {what} record "
                                  f"{key!r} is {state}{hint}; the checkpoint cannot be "
                                  "verified, so it is not loaded")

    if meta.get("format") != _FORMAT:
        raise damaged("format", "format")
    if _KEY_VERSION not in meta:
        raise damaged(_KEY_VERSION, "format version")
    if meta[_KEY_VERSION] != _FORMAT_VERSION:
        raise SerializationError(f"gcompile.load: {where} was written by an unsupported "
                                 f"gcompile format version {meta[_KEY_VERSION]!r}")
    if not isinstance(meta.get(_KEY_STRUCT), str):
        raise damaged(_KEY_STRUCT, "structure")
    digest = meta.get(_KEY_HASH)
    if not (isinstance(digest, str) and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)):
        raise damaged(_KEY_HASH, "checksum")
    return meta[_KEY_STRUCT]


def load(f: Any, map_location: Any = None, pickle_module: Any = None, *,
         weights_only: bool | None = None, mmap: bool | None = None, **kwargs: Any) -> Any:
    """Load what :func:`save` wrote, or a plain ``.safetensors`` state dict
    written by any framework (returned as a dict of tensors).

    Loading is always weights-only: ``weights_only`` is accepted, and
    ``weights_only=False`` does not enable pickle. ``map_location`` is
    accepted; tensors always load on the CPU, where gcompile keeps them.
    """
    _check_map_location(map_location)
    blob, where = _read(f)
    header = _check_container(blob, where)
    bf16 = [k for k, v in header.items() if k != "__metadata__" and v.get("dtype") == "BF16"]
    try:
        arrays = st_numpy.load(_without(blob, header, bf16) if bf16 else blob)
    except Exception as e:  # safetensors' own validation (dtype, shapes, overlaps)
        raise SerializationError(f"gcompile.load: {where} is not a valid checkpoint: "
                                 f"safetensors rejected it ({e})") from None
    if bf16:
        arrays.update(_bf16_arrays(blob, header, bf16, where))
    for name, arr in list(arrays.items()):
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arrays[name] = np.array(arr, copy=True)
        if arr.dtype not in (d.np for d in dt.all_dtypes):
            raise SerializationError(f"gcompile.load: {where}: tensor {name!r} has dtype "
                                     f"{arr.dtype}, which gcompile does not support")
    meta = header.get("__metadata__") or {}
    if not _is_gcompile_file(meta):
        order = sorted((k for k in header if k != "__metadata__"),
                       key=lambda k: tuple(header[k]["data_offsets"]))
        return {k: Tensor._make(arrays[k]) for k in order}
    structure = _check_records(meta, where)
    if meta[_KEY_HASH] != _digest(structure, arrays):
        raise SerializationError(f"gcompile.load: {where} is corrupt or was tampered with: the "
                                 "SHA-256 of its structure and tensor data does not match the "
                                 "checksum recorded when it was saved")
    try:
        tree = json.loads(structure)
    except json.JSONDecodeError as e:
        raise SerializationError(f"gcompile.load: {where} is corrupt: bad structure JSON "
                                 f"({e})") from None
    return _Decoder(arrays, where).decode(tree, "")


def _bytes_roundtrip(obj: Any) -> Any:
    """save + load through memory (handy for deep-copying a checkpoint)."""
    buf = io.BytesIO()
    save(obj, buf)
    buf.seek(0)
    return load(buf)
