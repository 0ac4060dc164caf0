"""Zero-copy interop: other libraries' arrays as NumPy arrays sharing their memory.

``gcompile.tensor`` (copies), ``gcompile.as_tensor`` and ``gcompile.from_dlpack``
(share) accept PyTorch tensors, JAX arrays, CuPy-style DLPack producers, legacy DLPack
capsules and anything with ``__array_interface__``/``__array_struct__``; the array
returned here is a view of the producer's memory whenever the producer allows it
(CPU memory, a dtype NumPy has). Nothing here imports torch or JAX.
"""
from __future__ import annotations

import numpy as np


class _Capsule:
    """A legacy DLPack capsule dressed as a producer, for ``np.from_dlpack``."""

    def __init__(self, capsule) -> None:
        self._capsule = capsule

    def __dlpack__(self, stream=None, **kwargs):
        return self._capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU: NumPy refuses the capsule itself if it is not


def _is_capsule(obj) -> bool:
    return type(obj).__name__ == "PyCapsule"


def _torch_array(t) -> np.ndarray:
    """A torch tensor's memory as an ndarray (shared for CPU tensors; a copy from
    another device, as ``Tensor.cpu()`` would make)."""
    if t.requires_grad:
        t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    try:
        return np.from_dlpack(t)
    except (TypeError, BufferError, RuntimeError):
        # a dtype DLPack or NumPy lacks (bfloat16, ...): torch's own conversion says why
        try:
            return t.numpy()
        except TypeError as e:
            raise TypeError(f"cannot share a torch tensor of dtype {t.dtype} with NumPy: "
                            f"{e}") from None


def shared_array(obj) -> np.ndarray | None:
    """``obj`` as an ndarray sharing its memory, or None when ``obj`` is not an array
    from another library (lists, scalars and NumPy arrays are left to the caller)."""
    if isinstance(obj, np.ndarray) or isinstance(obj, (list, tuple, int, float, bool, complex)):
        return None
    mod = type(obj).__module__ or ""
    if mod.startswith("torch") and hasattr(obj, "detach") and hasattr(obj, "__dlpack__"):
        return _torch_array(obj)
    if _is_capsule(obj):
        return np.from_dlpack(_Capsule(obj))
    if hasattr(obj, "__array_interface__") or hasattr(obj, "__array_struct__"):
        return np.asarray(obj)
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        return from_dlpack_array(obj)
    if hasattr(obj, "__array__") and not isinstance(obj, np.generic):
        return np.asarray(obj)
    return None


def from_dlpack_array(ext) -> np.ndarray:
    """The ndarray sharing a DLPack producer's (or a legacy capsule's) memory.

    Raises RuntimeError, as torch does, for memory a CPU array cannot see."""
    if _is_capsule(ext):
        ext = _Capsule(ext)
    mod = type(ext).__module__ or ""
    if mod.startswith("torch") and hasattr(ext, "detach"):
        if ext.device.type != "cpu":
            raise RuntimeError(f"from_dlpack: the tensor is on {ext.device}; gcompile tensors "
                               "live in CPU memory (call .cpu() first, which copies)")
        return _torch_array(ext)
    if not hasattr(ext, "__dlpack__"):
        raise TypeError(f"from_dlpack: expected an object with __dlpack__ or a DLPack "
                        f"capsule, got {type(ext).__name__}")
    try:
        return np.from_dlpack(ext)
    except BufferError as e:
        raise RuntimeError(f"from_dlpack: cannot share this {type(ext).__name__}'s memory "
                           f"({e})") from None
