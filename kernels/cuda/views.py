"""Strided views of device arrays: one helper for real device arrays and the simulator.

A kernel indexes each operand as an N-d array of the launch's iteration shape, so a
broadcast operand is a view with zero strides and a transposed or permuted operand a
view with permuted strides; nothing is copied. numba.cuda's own ``DeviceNDArray`` has
no ``as_strided``, so the view is built from the array's memory pointer (real GPU) or
from the NumPy array the simulator keeps behind its fake device array.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["simulator", "cuda_module", "strided", "broadcast_view", "elem_strides",
           "is_device_array", "typed_view", "view_layout"]


def simulator() -> bool:
    """Whether numba.cuda runs the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return True
    try:
        from numba import config
        return bool(config.ENABLE_CUDASIM)
    except ImportError:  # pragma: no cover - numba missing
        return False


def cuda_module():
    """``numba.cuda``, or NotImplementedError saying why it cannot be used."""
    try:
        from numba import cuda
    except ImportError as e:  # pragma: no cover - depends on the install
        raise NotImplementedError("kernels.cuda: numba-cuda is not installed "
                                  "(pip install 'gcompile[cuda]')") from e
    return cuda


def is_device_array(a) -> bool:
    """A numba device array (real or simulated) or anything exposing
    ``__cuda_array_interface__``."""
    return hasattr(a, "__cuda_array_interface__") or \
        type(a).__name__ in ("FakeCUDAArray", "DeviceNDArray")


def elem_strides(a) -> tuple[int, ...]:
    """``a``'s strides in elements (NotImplementedError for a stride that is not a
    multiple of the item size)."""
    isz = np.dtype(a.dtype).itemsize
    out = []
    for s in a.strides:
        if s % isz:
            raise NotImplementedError("kernels.cuda: a stride that is not a multiple of "
                                      "the item size")
        out.append(s // isz)
    return tuple(out)


def strided(a, shape: tuple, strides: tuple, offset: int = 0):
    """A view of device array ``a`` with ``shape`` and element ``strides`` starting
    ``offset`` elements after ``a``'s first element. Strides may be zero (broadcast);
    negative strides are refused (NotImplementedError)."""
    shape = tuple(int(n) for n in shape)
    strides = tuple(int(s) for s in strides)
    if any(s < 0 for s in strides) or any(s < 0 for s in elem_strides(a)) or offset < 0:
        raise NotImplementedError("kernels.cuda: negative strides")
    dtype = np.dtype(a.dtype)
    isz = dtype.itemsize
    bstrides = tuple(s * isz for s in strides)
    if hasattr(a, "_ary") and type(a).__name__ == "FakeCUDAArray":
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        from numpy.lib.stride_tricks import as_strided
        base = a._ary
        if base.ndim == 0:
            base = base.reshape(1)
        start = as_strided(base, shape=(offset + 1,), strides=(isz,))[offset:]
        return FakeCUDAArray(as_strided(start, shape=shape, strides=bstrides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    if not hasattr(a, "gpu_data"):  # another library's array: numba's view of it, zero copy
        a = cuda_module().as_cuda_array(a)
    gpu_data = a.gpu_data
    if offset:
        gpu_data = gpu_data.view(offset * isz)
    return DeviceNDArray(shape, bstrides, dtype, stream=getattr(a, "stream", 0),
                         gpu_data=gpu_data)


def broadcast_view(a, shape: tuple):
    """``a`` viewed with ``shape`` by NumPy's broadcasting rules (zero strides)."""
    shape = tuple(shape)
    ash, ast = tuple(a.shape), elem_strides(a)
    if ash == shape:
        return a
    lead = len(shape) - len(ash)
    if lead < 0:
        raise ValueError(f"cannot broadcast shape {ash} to {shape}")
    st = []
    for d, n in enumerate(shape):
        if d < lead:
            st.append(0)
            continue
        m = ash[d - lead]
        if m == n:
            st.append(ast[d - lead])
        elif m == 1:
            st.append(0)
        else:
            raise ValueError(f"cannot broadcast shape {ash} to {shape}")
    return strided(a, shape, tuple(st))


def typed_view(base, offset: int, shape: tuple, dtype):
    """A C-contiguous ``dtype`` array of ``shape`` inside the 1-d uint8 device array
    ``base`` at byte ``offset`` (a planned buffer in a device arena)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    n = 1
    for s in shape:
        n *= s
    nbytes = n * dtype.itemsize
    if type(base).__name__ == "FakeCUDAArray":
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        raw = base._ary[offset:offset + nbytes]
        return FakeCUDAArray(raw.view(dtype).reshape(shape))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    strides = []
    acc = dtype.itemsize
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    gpu_data = base.gpu_data.view(offset, offset + max(nbytes, 0))
    return DeviceNDArray(shape, tuple(reversed(strides)), dtype,
                         stream=getattr(base, "stream", 0), gpu_data=gpu_data)


def view_layout(opdef, attrs: dict, args: list, k: int, x):
    """(shape, element strides, element offset) of ``opdef`` applied to a host array laid
    out as device array ``x`` (argument ``k``), or None when the op would copy."""
    from numpy.lib.stride_tricks import as_strided

    dt_ = np.dtype(x.dtype)
    shape, st = tuple(x.shape), elem_strides(x)
    if any(s < 0 for s in st):
        return None
    extent = 1 + sum((n - 1) * s for n, s in zip(shape, st)) if all(shape) else 1
    buf = np.empty(extent, dt_)  # untouched pages unless the op copies
    proxy = as_strided(buf, shape, tuple(s * dt_.itemsize for s in st), writeable=False)
    call = list(args)
    call[k] = proxy
    out = opdef.impl(*call, **attrs)
    if not isinstance(out, np.ndarray) or out.dtype != dt_ or \
            not np.shares_memory(out, buf) or any(s < 0 for s in out.strides):
        return None
    base = buf.__array_interface__["data"][0]
    off = out.__array_interface__["data"][0] - base
    if off % dt_.itemsize or any(s % dt_.itemsize for s in out.strides):
        return None
    return (tuple(out.shape), tuple(s // dt_.itemsize for s in out.strides),
            off // dt_.itemsize)
