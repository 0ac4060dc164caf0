"""torch.nn.parallel.DistributedDataParallel on gcompile.distributed (MPI).

All communication goes through ``gcompile.distributed`` (registered collective
ops), so this module never touches tensor storage and a traced training step
keeps its allreduces.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..._state import state
from ...autograd.grad_mode import is_grad_enabled
from ..modules.module import Module


class DistributedDataParallel(Module):
    """Replicates ``module`` on every rank and averages gradients in backward.

    At construction, parameters and buffers are broadcast from rank 0. In
    backward, gradients are bucketed (``bucket_cap_mb``, reverse registration
    order) and each bucket's allreduce starts as soon as its gradients are
    ready; ``.grad`` holds the average over ranks when backward returns.
    ``gradient_as_bucket_view`` and ``static_graph`` are torch's memory and speed
    hints; they are recorded and do not change results here.
    """

    def __init__(self, module: Module, device_ids=None, output_device=None, dim: int = 0,
                 broadcast_buffers: bool = True, process_group=None,
                 bucket_cap_mb: float | None = None, find_unused_parameters: bool = False,
                 check_reduction: bool = False, gradient_as_bucket_view: bool = False,
                 static_graph: bool = False) -> None:
        super().__init__()
        from ... import distributed as dist
        from ...distributed.reducer import Reducer
        from ...distributed.sync import broadcast_coalesced, verify_same_model
        if not dist.is_initialized():
            raise ValueError("Default process group has not been initialized, please make sure "
                             "to call init_process_group.")
        if device_ids is not None or output_device is not None:
            raise ValueError(
                "DistributedDataParallel device_ids and output_device arguments only work with "
                "single-device/multiple-device GPU modules or CPU modules, but got device_ids "
                f"{device_ids}, output_device {output_device}, and module parameters "
                "{device(type='cpu')}.")
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't "
                               "have any parameter that requires a gradient.")
        self.module = module
        self.dim = dim
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.static_graph = static_graph
        self.bucket_cap_mb = 25.0 if bucket_cap_mb is None else float(bucket_cap_mb)
        self.require_backward_grad_sync = True
        self.require_forward_param_sync = True
        pg = dist.distributed_c10d._group(process_group)
        self.process_group = None
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        verify_same_model(pg, named)
        broadcast_coalesced([p for _, p in module.named_parameters()] +
                            [b for _, b in module.named_buffers()], src=0)
        self._reducer = Reducer(params, self.bucket_cap_mb, find_unused_parameters,
                                lambda: self.require_backward_grad_sync, pg)

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        sync = is_grad_enabled() and self.require_backward_grad_sync
        reducer = self._reducer
        if sync and reducer.in_progress() and state.tracer is None:
            raise RuntimeError(
                "Expected to have finished reduction in the prior iteration before starting a "
                "new one. This error indicates that your module has parameters that were not "
                "used in producing loss. You can enable unused parameter detection by passing "
                "the keyword argument `find_unused_parameters=True` to "
                "`torch.nn.parallel.DistributedDataParallel`, and by making sure all `forward` "
                "function outputs participate in calculating loss.\nParameter indices which "
                f"did not receive grad for rank {reducer.pg.rank}: "
                f"{' '.join(map(str, reducer.unready()))}")
        if sync and self.broadcast_buffers:
            from ...distributed.sync import broadcast_coalesced
            bufs = [b for _, b in self.module.named_buffers()]
            if bufs:
                broadcast_coalesced(bufs, src=0)
        out = self.module(*inputs, **kwargs)
        if sync:
            reducer.prepare_for_backward(out)
        return out

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Gradients accumulate locally inside; the first backward after it syncs."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    @property
    def reducer(self):
        """The gradient reducer (buckets, bytes per step) for inspection."""
        return self._reducer

    def extra_repr(self) -> str:
        return (f"broadcast_buffers={self.broadcast_buffers}, bucket_cap_mb={self.bucket_cap_mb}, "
                f"find_unused_parameters={self.find_unused_parameters}")
