"""torch.cuda: reports what numba.cuda finds; tensors stay on the CPU here."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def _numba_cuda_available() -> bool:
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:  # numba-cuda missing or no driver
        return False


def is_available() -> bool:
    """True only when numba finds a usable GPU."""
    return _numba_cuda_available()


def device_count() -> int:
    if not is_available():
        return 0
    from numba import cuda
    return len(cuda.gpus)


def manual_seed(seed: int) -> None:
    """Seeds the (CPU-side) generator used for CUDA tensors' random ops."""
    from ._random import default_generator
    default_generator.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    manual_seed(seed)


def synchronize(device=None) -> None:
    if is_available():
        from numba import cuda
        cuda.synchronize()


def current_device() -> int:
    if not is_available():
        raise RuntimeError("No CUDA GPUs are available")
    return 0
