"""nn.SyncBatchNorm: batch statistics over the whole global batch (every rank).

The statistics are allreduced with the registered ``allreduce`` ops, whose
gradient rule is an allreduce of the incoming gradients, so autograd (eager or
compiled) gives the backward torch's SyncBatchNorm computes by hand.
"""
from __future__ import annotations

from ... import _creation
from ..._tensor import Tensor, apply_op
from ...autograd.grad_mode import no_grad
from .module import Module
from .normalization import _NormBase


def _allreduce_sum(t: Tensor) -> Tensor:
    return apply_op("allreduce_wait", (apply_op("allreduce_start", (t,), {"op": "sum"}),),
                    {"op": "sum"})


class SyncBatchNorm(_NormBase):
    """BatchNorm over N-D input whose training statistics span all ranks."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        use_batch = self.training or not self.track_running_stats
        if not use_batch:
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.item())
        c = input.shape[1]
        dims = (0,) + tuple(range(2, input.dim()))
        bshape = (1, c) + (1,) * (input.dim() - 2)
        local_count = input.numel() // c
        # one allreduce for the per-channel sums and the element count, one for the
        # squared deviations (two passes: the variance of the global batch exactly)
        count_t = _creation.full((1,), float(local_count), dtype=input.dtype)
        stats = _allreduce_sum(_cat([input.sum(dim=dims), count_t]))
        total = stats.narrow(0, c, 1)
        mean = (stats.narrow(0, 0, c) / total).reshape(bshape)
        centred = input - mean
        var = (_allreduce_sum((centred * centred).sum(dim=dims)) / total).reshape(bshape)
        if self.training and self.track_running_stats and self.running_mean is not None:
            with no_grad():
                n = total.detach().reshape(())
                bm = mean.detach().reshape(c)
                bv = var.detach().reshape(c) * (n / (n - 1))
                self.running_mean.mul_(1 - factor).add_(bm * factor)
                self.running_var.mul_(1 - factor).add_(bv * factor)
        out = centred * (var + self.eps).rsqrt()
        if self.weight is not None:
            out = out * self.weight.reshape(bshape)
        if self.bias is not None:
            out = out + self.bias.reshape(bshape)
        return out

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")
        if input.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm expected input with {self.num_features} channels, "
                             f"got shape {tuple(input.shape)}")

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group=None) -> Module:
        """Replace every BatchNorm*D in ``module`` by a SyncBatchNorm with the same
        parameters and running statistics (returns the converted module)."""
        out = module
        if isinstance(module, _NormBase) and not isinstance(module, SyncBatchNorm) and \
                type(module).__name__.startswith("BatchNorm"):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group)
            if module.affine:
                with no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out


def _cat(ts: list[Tensor]) -> Tensor:
    from ..._functions import cat
    return cat(ts)
