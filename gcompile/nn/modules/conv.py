"""Conv1d/2d/3d: im2col + BLAS matmul (see ``ir/ops/nn.py``)."""
from __future__ import annotations


from ... import _creation
from ..._tensor import Tensor
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .module import Module


def _ntuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v * n if len(v) == 1 and n > 1 else v


class _ConvNd(Module):
    _nsp = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        super().__init__()
        n = self._nsp
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be one of zeros, reflect, replicate, circular; "
                             f"got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _ntuple(kernel_size, n)
        self.stride = _ntuple(stride, n)
        self.padding = padding if isinstance(padding, str) else _ntuple(padding, n)
        self.dilation = _ntuple(dilation, n)
        self.groups = groups
        self.padding_mode = padding_mode
        self.transposed = False
        self.output_padding = (0,) * n
        self.weight = Parameter(_creation.empty(
            (out_channels, in_channels // groups) + self.kernel_size, dtype=dtype))
        if bias:
            self.bias = Parameter(_creation.empty(out_channels, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.reset_weight_and_bias(self.weight, self.bias)

    def _check_input(self, input: Tensor) -> None:
        n = self._nsp
        name = type(self).__name__
        if input.dim() not in (n + 1, n + 2):
            raise RuntimeError(f"{name} expected {n + 1}D (unbatched) or {n + 2}D (batched) "
                               f"input, got shape {tuple(input.shape)}")
        c = input.shape[0] if input.dim() == n + 1 else input.shape[1]
        if c != self.in_channels:
            raise RuntimeError(f"{name} expected input with {self.in_channels} channels, got "
                               f"shape {tuple(input.shape)}")

    def _conv(self, input: Tensor, fn) -> Tensor:
        self._check_input(input)
        if self.padding_mode != "zeros":
            if isinstance(self.padding, str):
                raise NotImplementedError("string padding with a non-zero padding_mode")
            pads = []
            for p in reversed(self.padding):
                pads += [p, p]
            mode = {"reflect": "reflect", "replicate": "replicate",
                    "circular": "circular"}[self.padding_mode]
            return fn(F.pad(input, pads, mode=mode), self.weight, self.bias, self.stride, 0,
                      self.dilation, self.groups)
        return fn(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                  self.groups)

    def extra_repr(self) -> str:
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * len(self.kernel_size):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        return s.format(**self.__dict__)


class Conv1d(_ConvNd):
    _nsp = 1

    def forward(self, input: Tensor) -> Tensor:
        return self._conv(input, F.conv1d)


class Conv2d(_ConvNd):
    """2-D convolution; weight (out, in/groups, kh, kw), torch's default init."""
    _nsp = 2

    def forward(self, input: Tensor) -> Tensor:
        return self._conv(input, F.conv2d)


class Conv3d(_ConvNd):
    _nsp = 3

    def forward(self, input: Tensor) -> Tensor:
        return self._conv(input, F.conv3d)
