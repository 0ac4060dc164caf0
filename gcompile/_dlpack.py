"""DLPack for CUDA tensors: export a device tensor as a capsule, import a device capsule.

NumPy's DLPack covers CPU memory only, so device memory needs the C structs of
``dlpack.h`` itself (the legacy ``DLManagedTensor``, which every consumer accepts).
Export keeps the tensor's storage alive in a registry until the consumer (or the
capsule's destructor, when nobody consumed it) calls the deleter. Import reads the
struct, wraps the memory as a device array (``kernels.cuda.memory.foreign``, no copy)
and calls the producer's deleter once the last gcompile view of it is garbage.
"""
from __future__ import annotations

import ctypes
import gc
import threading

import numpy as np

__all__ = ["to_capsule", "from_capsule", "capsule_device", "exported", "KDL_CPU", "KDL_CUDA"]

KDL_CPU, KDL_CUDA = 1, 2
_INT, _UINT, _FLOAT, _BOOL = 0, 1, 2, 6
_NAME = b"dltensor"
_USED = b"used_dltensor"


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int),
                ("dtype", _DType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _Managed(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Managed))
_Managed._fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p),
                     ("deleter", _DELETER)]

_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]

_LOCK = threading.Lock()
_LIVE: dict[int, tuple] = {}  # address of an exported struct -> what it keeps alive
# manager_ctx of an exported struct: _HELD until the consumer's deleter (or the capsule's
# destructor, when nobody consumed it) sets it to 0; ``_sweep`` then drops the storage
_HELD = 1
_CTX_WORD = ctypes.sizeof(_Tensor) // 8  # manager_ctx's index in int64 words
_C: dict = {}


def _dl_dtype(dtype: np.dtype) -> tuple[int, int]:
    kind = {"f": _FLOAT, "i": _INT, "u": _UINT, "b": _BOOL}.get(dtype.kind)
    if kind is None:
        raise BufferError(f"DLPack: no type code for {dtype}")
    return kind, dtype.itemsize * 8


def _np_dtype(code: int, bits: int, lanes: int) -> np.dtype:
    if lanes != 1:
        raise BufferError("DLPack: vector dtypes (lanes > 1) are not supported")
    if code == _BOOL and bits == 8:
        return np.dtype(np.bool_)
    kind = {_FLOAT: "f", _INT: "i", _UINT: "u"}.get(code)
    if kind is None or bits % 8:
        raise BufferError(f"DLPack: unsupported dtype code {code} with {bits} bits")
    return np.dtype(f"{kind}{bits // 8}")


def _callbacks() -> tuple[int, int]:
    """(deleter, capsule destructor) addresses: C callbacks that only clear the struct's
    ``manager_ctx`` word and never run Python (a destructor may run while an exception
    is being raised, where no Python code may run). Compiled on the first export."""
    if not _C:
        from numba import carray, cfunc, types
        from numba.core import cgutils
        from numba.extending import intrinsic

        @intrinsic
        def as_pointer(typingctx, addr):
            def codegen(context, builder, sig, args):
                return builder.inttoptr(args[0], cgutils.voidptr_t)
            return types.voidptr(addr), codegen

        word = _CTX_WORD
        proto = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        is_valid = proto(ctypes.cast(_api.PyCapsule_IsValid, ctypes.c_void_p).value)
        get_pointer = proto(ctypes.cast(_api.PyCapsule_GetPointer, ctypes.c_void_p).value)
        name = np.frombuffer(_NAME + b"\0", np.uint8)
        name_at = name.ctypes.data

        @cfunc(types.void(types.voidptr), nopython=True)
        def deleter(m):
            carray(m, (word + 1,), np.int64)[word] = 0

        @cfunc(types.void(types.voidptr), nopython=True)
        def destructor(cap):
            key = as_pointer(name_at)
            if is_valid(cap, key):
                m = get_pointer(cap, key)
                carray(as_pointer(m), (word + 1,), np.int64)[word] = 0

        _C.update(deleter=deleter, destructor=destructor, name=name, keep=(is_valid, get_pointer))
    return _C["deleter"].address, _C["destructor"].address


def _sweep(*_args) -> None:
    """Drop the storage of exported structs whose consumer let go."""
    with _LOCK:
        gone = [a for a, v in _LIVE.items() if v[0].manager_ctx != _HELD]
        dropped = [_LIVE.pop(a) for a in gone]
    dropped.clear()


gc.callbacks.append(_sweep)


def to_capsule(arr, device_index: int):
    """A ``dltensor`` capsule sharing ``arr``'s device memory (a ``CudaArray``, kept
    alive until the consumer's deleter call)."""
    dtype = np.dtype(arr.dtype)
    code, bits = _dl_dtype(dtype)
    item = dtype.itemsize
    if any(s % item for s in arr.strides):
        raise BufferError("DLPack: strides must be whole elements")
    ndim = arr.ndim
    shape = (ctypes.c_int64 * max(ndim, 1))(*arr.shape)
    strides = (ctypes.c_int64 * max(ndim, 1))(*(s // item for s in arr.strides))
    deleter, destructor = _callbacks()
    _sweep()
    m = _Managed()
    ptr = arr.__cuda_array_interface__["data"][0] if arr.size else 0
    m.dl_tensor = _Tensor(ptr, _Device(KDL_CUDA, device_index), ndim,
                          _DType(code, bits, 1), shape, strides, 0)
    m.manager_ctx = _HELD
    m.deleter = _DELETER(deleter)
    addr = ctypes.addressof(m)
    with _LOCK:
        _LIVE[addr] = (m, shape, strides, arr)
    return _api.PyCapsule_New(addr, _NAME, destructor)


def exported() -> int:
    """Capsules made here whose memory a consumer (or an unconsumed capsule) still holds."""
    _sweep()
    return len(_LIVE)


def capsule_device(capsule) -> tuple[int, int] | None:
    """(device type, index) of an unconsumed ``dltensor`` capsule, without consuming it;
    None for anything else. A consumed capsule raises BufferError (its memory may be
    gone)."""
    if type(capsule).__name__ != "PyCapsule":
        return None
    if any(_api.PyCapsule_IsValid(capsule, n) for n in (_USED, b"used_dltensor_versioned")):
        raise BufferError("from_dlpack: this DLPack capsule was already consumed (a capsule "
                          "is consumed once)")
    if not _api.PyCapsule_IsValid(capsule, _NAME):
        return None
    t = _Managed.from_address(_api.PyCapsule_GetPointer(capsule, _NAME)).dl_tensor
    return t.device.device_type, t.device.device_id


def from_capsule(capsule):
    """(device index, device array) sharing a CUDA ``dltensor`` capsule's memory; the
    capsule is marked used and the producer's deleter runs when the last array over it
    is garbage."""
    if capsule_device(capsule) is None:
        raise BufferError("from_dlpack: expected a 'dltensor' capsule")
    addr = _api.PyCapsule_GetPointer(capsule, _NAME)
    m = _Managed.from_address(addr)
    t = m.dl_tensor
    dtype = _np_dtype(t.dtype.code, t.dtype.bits, t.dtype.lanes)
    shape = tuple(t.shape[i] for i in range(t.ndim))
    if t.strides:
        strides = tuple(t.strides[i] * dtype.itemsize for i in range(t.ndim))
    else:
        strides, acc = [], dtype.itemsize
        for n in reversed(shape):
            strides.append(acc)
            acc *= max(n, 1)
        strides = tuple(reversed(strides))
    ptr = (t.data or 0) + t.byte_offset
    dev_type, dev_id = t.device.device_type, t.device.device_id
    if dev_type != KDL_CUDA:
        raise BufferError(f"from_dlpack: device type {dev_type} is not CUDA")
    _api.PyCapsule_SetName(capsule, _USED)
    deleter = m.deleter

    def release(addr=addr, deleter=deleter):
        if deleter:
            deleter(ctypes.cast(addr, ctypes.POINTER(_Managed)))
        _sweep()  # when the producer was gcompile itself

    from kernels.cuda.memory import foreign, on_device
    with on_device(dev_id):
        return dev_id, foreign(ptr, shape, strides, dtype, release)
