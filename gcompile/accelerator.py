"""torch.accelerator: which accelerator eager tensors use. gcompile's tensors live on the CPU
(CUDA is reached through compiled plans, not eager tensors), so there is none."""
from __future__ import annotations

__all__ = ["is_available", "current_accelerator", "device_count", "current_device_index",
           "set_device_index", "synchronize"]


def is_available() -> bool:
    return False


def current_accelerator(check_available: bool = False):
    """None: no accelerator device type for eager tensors."""
    return None


def device_count() -> int:
    return 0


def current_device_index() -> int:
    raise RuntimeError("torch.accelerator: no accelerator is available")


def set_device_index(device) -> None:
    raise RuntimeError("torch.accelerator: no accelerator is available")


def synchronize(device=None) -> None:
    """Nothing runs asynchronously on the CPU: returns at once."""
