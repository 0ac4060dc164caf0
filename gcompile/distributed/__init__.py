"""gcompile.distributed: torch.distributed's API and semantics on MPI (mpi4py).

Launch with ``mpiexec -n N python train.py`` (or ``gcompile run -n N train.py``);
install with ``pip install 'gcompile[distributed]'``. See docs/distributed.md.
"""
from ._mpi import DistBackendError, DistError
from .distributed_c10d import (GroupMember, ReduceOp, Work, all_gather, all_gather_into_tensor,
                               all_reduce, barrier, broadcast, default_pg_timeout,
                               destroy_process_group, get_backend, get_rank, get_world_size, group,
                               init_process_group, irecv, is_available, is_initialized,
                               is_mpi_available, isend, recv, reduce_scatter_tensor, send)

__all__ = ["DistBackendError", "DistError", "GroupMember", "ReduceOp", "Work", "all_gather",
           "all_gather_into_tensor", "all_reduce", "barrier", "broadcast", "default_pg_timeout",
           "destroy_process_group", "get_backend", "get_rank", "get_world_size", "group",
           "init_process_group", "irecv", "is_available", "is_initialized", "is_mpi_available",
           "isend", "recv", "reduce_scatter_tensor", "send"]
