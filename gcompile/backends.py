"""torch.backends: the flags programs set (cudnn.benchmark, matmul.allow_tf32...). They are
accepted and remembered; gcompile computes on the CPU with NumPy and Numba, so none of them
changes results."""
from __future__ import annotations

import types

__all__ = ["cudnn", "cuda", "mps", "mkldnn", "openmp", "mkl", "opt_einsum", "cpu"]


class _Flags(types.SimpleNamespace):
    """A namespace of flags with ``is_available()``."""

    def __init__(self, available: bool, **flags) -> None:
        super().__init__(**flags)
        self._available = available

    def is_available(self) -> bool:
        return self._available


cudnn = _Flags(False, enabled=True, benchmark=False, deterministic=False, allow_tf32=True)
cudnn.version = lambda: None
cuda = types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=False,
                                                          allow_fp16_reduced_precision_reduction=True,
                                                          allow_bf16_reduced_precision_reduction=True),
                             is_built=lambda: False)
cuda.enable_flash_sdp = lambda enabled: None
cuda.enable_math_sdp = lambda enabled: None
cuda.enable_mem_efficient_sdp = lambda enabled: None
mps = _Flags(False)
mps.is_built = lambda: False
mkldnn = _Flags(False, enabled=False)
mkl = _Flags(False)
openmp = _Flags(False)
opt_einsum = _Flags(False, enabled=False, strategy=None)
cpu = types.SimpleNamespace(get_cpu_capability=lambda: "DEFAULT")
