"""Lazy modules (LazyLinear, LazyConv*, LazyConvTranspose*, LazyBatchNorm*,
LazyInstanceNorm*): the input size is read from the first input (or from a loaded state
dict), as torch's ``LazyModuleMixin``; then the module becomes the plain class
(``cls_to_become``) with torch's default initialisation."""
from __future__ import annotations

from ... import _creation
from ..._tensor import Tensor
from ..parameter import Parameter
from .conv import Conv1d, Conv2d, Conv3d
from .convtranspose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .linear import Linear
from .module import Module
from .normalization import (BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d,
                            InstanceNorm2d, InstanceNorm3d, _InstanceNorm)


class _LazyMixin:
    """What every lazy module does: until its sizes are known (first input, or a loaded
    state dict), call or load materialises it and it becomes ``cls_to_become``."""
    cls_to_become: type = Module

    def __call__(self, *args, **kwargs):
        become = type(self).cls_to_become
        if self.has_uninitialized_params():
            self.initialize_parameters(args[0] if args else kwargs["input"])
        return become.__call__(self, *args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        become = type(self).cls_to_become
        if self.has_uninitialized_params():
            n = self._size_in_state(state_dict, prefix)
            if n is not None:
                self._materialize(int(n), reset=False)
        become._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


class _LazyConvMixin(_LazyMixin):
    cls_to_become: type = Conv2d
    _transposed = False

    def __init__(self, out_channels: int, kernel_size, *args, groups: int = 1, **kwargs) -> None:
        # built with in_channels == groups, then the weight is left without its input size
        super().__init__(groups, out_channels, kernel_size, *args, groups=groups, **kwargs)
        self.in_channels = 0
        w = self.weight
        shape = ((0,) + tuple(w.shape[1:]) if self._transposed
                 else (w.shape[0], 0) + tuple(w.shape[2:]))
        self.weight = Parameter(_creation.empty(shape, dtype=w.dtype))

    def has_uninitialized_params(self) -> bool:
        return self.in_channels == 0

    def _materialize(self, in_channels: int, reset: bool = True) -> None:
        g, w = self.groups, self.weight
        self.in_channels = in_channels
        shape = ((in_channels,) + tuple(w.shape[1:]) if self._transposed
                 else (w.shape[0], in_channels // g) + tuple(w.shape[2:]))
        self.weight = Parameter(_creation.empty(shape, dtype=w.dtype))
        if reset:
            self.reset_parameters()
        self.__class__ = self.cls_to_become

    def initialize_parameters(self, input: Tensor) -> None:
        """Size the weight from ``input``'s channels (unbatched input has them first)."""
        batched = input.dim() == self._nsp + 2
        self._materialize(input.shape[1 if batched else 0])

    def _size_in_state(self, state_dict, prefix):
        w = state_dict.get(prefix + "weight")
        if w is None:
            return None
        return w.shape[0] if self._transposed else w.shape[1] * self.groups


class LazyLinear(_LazyMixin, Linear):
    """Linear whose ``in_features`` is the first input's last dimension."""
    cls_to_become = Linear

    def __init__(self, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(0, out_features, bias, device, dtype)

    def has_uninitialized_params(self) -> bool:
        return self.in_features == 0

    def _materialize(self, in_features: int, reset: bool = True) -> None:
        self.in_features = in_features
        self.weight = Parameter(_creation.empty((self.out_features, in_features),
                                                dtype=self.weight.dtype))
        if reset:
            self.reset_parameters()
        self.__class__ = self.cls_to_become

    def initialize_parameters(self, input: Tensor) -> None:
        self._materialize(input.shape[-1])

    def _size_in_state(self, state_dict, prefix):
        w = state_dict.get(prefix + "weight")
        return None if w is None else w.shape[1]


class _LazyNormMixin(_LazyMixin):
    """Batch and instance norm whose ``num_features`` is the first input's channels."""

    def __init__(self, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__(0, eps, momentum, affine, track_running_stats, device, dtype)

    def has_uninitialized_params(self) -> bool:
        return self.num_features == 0

    def _materialize(self, n: int, reset: bool = True) -> None:
        self.num_features = n
        dtype = self.running_mean.dtype if self.running_mean is not None else (
            self.weight.dtype if self.weight is not None else None)
        if self.weight is not None:
            self.weight = Parameter(_creation.ones(n, dtype=dtype))
        if self.bias is not None:
            self.bias = Parameter(_creation.zeros(n, dtype=dtype))
        if self.running_mean is not None:
            self.running_mean = _creation.zeros(n, dtype=dtype)
            self.running_var = _creation.ones(n, dtype=dtype)
        if reset:
            self.reset_parameters()
        self.__class__ = self.cls_to_become

    def initialize_parameters(self, input: Tensor) -> None:
        unbatched = isinstance(self, _InstanceNorm) and input.dim() == self._ranks[0]
        self._materialize(input.shape[0 if unbatched else 1])

    def _size_in_state(self, state_dict, prefix):
        for name in ("weight", "running_mean"):
            t = state_dict.get(prefix + name)
            if t is not None:
                return t.shape[0]
        return None


class LazyBatchNorm1d(_LazyNormMixin, BatchNorm1d):
    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyNormMixin, BatchNorm2d):
    cls_to_become = BatchNorm2d


class LazyBatchNorm3d(_LazyNormMixin, BatchNorm3d):
    cls_to_become = BatchNorm3d


class _LazyInstanceNormMixin(_LazyNormMixin):
    def __init__(self, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None) -> None:
        super().__init__(eps, momentum, affine, track_running_stats, device, dtype)


class LazyInstanceNorm1d(_LazyInstanceNormMixin, InstanceNorm1d):
    cls_to_become = InstanceNorm1d


class LazyInstanceNorm2d(_LazyInstanceNormMixin, InstanceNorm2d):
    cls_to_become = InstanceNorm2d


class LazyInstanceNorm3d(_LazyInstanceNormMixin, InstanceNorm3d):
    cls_to_become = InstanceNorm3d


class LazyConv1d(_LazyConvMixin, Conv1d):
    cls_to_become = Conv1d


class LazyConv2d(_LazyConvMixin, Conv2d):
    cls_to_become = Conv2d


class LazyConv3d(_LazyConvMixin, Conv3d):
    cls_to_become = Conv3d


class LazyConvTranspose1d(_LazyConvMixin, ConvTranspose1d):
    cls_to_become = ConvTranspose1d
    _transposed = True


class LazyConvTranspose2d(_LazyConvMixin, ConvTranspose2d):
    cls_to_become = ConvTranspose2d
    _transposed = True


class LazyConvTranspose3d(_LazyConvMixin, ConvTranspose3d):
    cls_to_become = ConvTranspose3d
    _transposed = True
