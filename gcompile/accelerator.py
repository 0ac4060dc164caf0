"""torch.accelerator: the accelerator eager tensors can use, which is CUDA when
``gcompile.cuda.is_available()`` (numba-cuda with a device, or numba's simulator)."""
from __future__ import annotations

from . import cuda
from ._device import device

__all__ = ["is_available", "current_accelerator", "device_count", "current_device_index",
           "set_device_index", "synchronize"]


def is_available() -> bool:
    return cuda.is_available()


def current_accelerator(check_available: bool = False):
    """``device('cuda')`` when CUDA is usable, else None."""
    return device("cuda") if cuda.is_available() else None


def device_count() -> int:
    return cuda.device_count()


def current_device_index() -> int:
    if not cuda.is_available():
        raise RuntimeError("torch.accelerator: no accelerator is available")
    return cuda.current_device()


def set_device_index(device) -> None:
    if not cuda.is_available():
        raise RuntimeError("torch.accelerator: no accelerator is available")
    cuda.set_device(device)


def synchronize(device=None) -> None:
    """Wait for the accelerator's work (nothing to wait for without one)."""
    cuda.synchronize()
