"""LazyConv1d/2d/3d and LazyConvTranspose1d/2d/3d: ``in_channels`` is read from the first
input (or from a loaded state dict), as torch's ``LazyModuleMixin``; then the module
becomes the plain class (``cls_to_become``) with torch's default initialisation."""
from __future__ import annotations

from ... import _creation
from ..._tensor import Tensor
from ..parameter import Parameter
from .conv import Conv1d, Conv2d, Conv3d
from .convtranspose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d


class _LazyConvMixin:
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        w = state_dict.get(prefix + "weight")
        become = type(self).cls_to_become
        if w is not None and self.has_uninitialized_params():
            c = w.shape[0] if self._transposed else w.shape[1] * self.groups
            self._materialize(int(c), reset=False)
        become._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        become = type(self).cls_to_become
        if self.has_uninitialized_params():
            self.initialize_parameters(args[0] if args else kwargs["input"])
        return become.__call__(self, *args, **kwargs)


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
