"""Padding layers over F.pad: Zero/Constant/Reflection/Replication/Circular, 1d-3d."""
from __future__ import annotations

from ..._tensor import Tensor
from .. import functional as F
from .module import Module


class _PadNd(Module):
    _n = 2
    _mode = "constant"

    def __init__(self, padding, value: float = 0.0) -> None:
        super().__init__()
        self.padding = (padding,) * (2 * self._n) if isinstance(padding, int) else tuple(padding)
        if len(self.padding) != 2 * self._n:
            raise ValueError(f"{type(self).__name__}: padding must be an int or a "
                             f"{2 * self._n}-tuple, got {padding}")
        self.value = value

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() not in (self._n + 1, self._n + 2):
            raise ValueError(f"{type(self).__name__} expected {self._n + 1}D or {self._n + 2}D "
                             f"input, got shape {tuple(input.shape)}")
        if self._mode == "constant":
            return F.pad(input, self.padding, "constant", self.value)
        return F.pad(input, self.padding, self._mode)

    def extra_repr(self) -> str:
        if self._mode == "constant" and not isinstance(self, _ZeroPad):
            return f"padding={self.padding}, value={self.value}"
        return f"{self.padding}"


class _ZeroPad(_PadNd):
    def __init__(self, padding) -> None:
        super().__init__(padding, 0.0)


def _make(name: str, base, n: int, mode: str):
    return type(name, (base,), {"_n": n, "_mode": mode, "__doc__": f"{mode} padding, {n}-D."})


ZeroPad1d = _make("ZeroPad1d", _ZeroPad, 1, "constant")
ZeroPad2d = _make("ZeroPad2d", _ZeroPad, 2, "constant")
ZeroPad3d = _make("ZeroPad3d", _ZeroPad, 3, "constant")
ConstantPad1d = _make("ConstantPad1d", _PadNd, 1, "constant")
ConstantPad2d = _make("ConstantPad2d", _PadNd, 2, "constant")
ConstantPad3d = _make("ConstantPad3d", _PadNd, 3, "constant")
ReflectionPad1d = _make("ReflectionPad1d", _PadNd, 1, "reflect")
ReflectionPad2d = _make("ReflectionPad2d", _PadNd, 2, "reflect")
ReflectionPad3d = _make("ReflectionPad3d", _PadNd, 3, "reflect")
ReplicationPad1d = _make("ReplicationPad1d", _PadNd, 1, "replicate")
ReplicationPad2d = _make("ReplicationPad2d", _PadNd, 2, "replicate")
ReplicationPad3d = _make("ReplicationPad3d", _PadNd, 3, "replicate")
CircularPad1d = _make("CircularPad1d", _PadNd, 1, "circular")
CircularPad2d = _make("CircularPad2d", _PadNd, 2, "circular")
CircularPad3d = _make("CircularPad3d", _PadNd, 3, "circular")
