"""torch.distributed's functional API on MPI.

``all_reduce`` and ``broadcast`` go through the op registry (``allreduce_start`` /
``allreduce_wait`` / ``broadcast``), so they trace into compiled graphs like any
op; the other collectives hand tensor buffers to MPI directly (and are a graph
break inside a compiled function).
"""
from __future__ import annotations

import enum
import os
import sys
from datetime import timedelta

import numpy as np

from .._state import state
from .._tensor import Tensor, apply_op
from ..autograd.grad_mode import no_grad
from ._mpi import EXTRA_HINT, DistBackendError, DistError, MPIGroup, import_mpi

__all__ = ["ReduceOp", "Work", "GroupMember", "group", "init_process_group", "is_initialized",
           "is_available", "is_mpi_available", "get_rank", "get_world_size", "get_backend",
           "barrier", "all_reduce", "broadcast", "all_gather", "all_gather_into_tensor",
           "reduce_scatter_tensor", "send", "recv", "isend", "irecv", "destroy_process_group",
           "DistError", "DistBackendError", "default_pg_timeout"]

default_pg_timeout = timedelta(minutes=30)


class ReduceOp:
    """torch.distributed.ReduceOp: SUM, AVG, PRODUCT, MIN, MAX."""

    class RedOpType(enum.Enum):
        SUM = "sum"
        AVG = "avg"
        PRODUCT = "product"
        MIN = "min"
        MAX = "max"

    SUM = RedOpType.SUM
    AVG = RedOpType.AVG
    PRODUCT = RedOpType.PRODUCT
    MIN = RedOpType.MIN
    MAX = RedOpType.MAX


class GroupMember:
    """torch.distributed.GroupMember: WORLD is the default group (the only one here)."""

    WORLD = None
    NON_GROUP_MEMBER = -100


class group:  # noqa: N801 - torch's name
    """torch.distributed.group: ``group.WORLD`` names the default group."""

    WORLD = None


_GROUP: list[MPIGroup | None] = [None]
_PREV_EXCEPTHOOK: list = [None]


def is_available() -> bool:
    """True when mpi4py (and so an MPI library) can be imported."""
    try:
        import_mpi()
    except ImportError:
        return False
    return True


def is_mpi_available() -> bool:
    return is_available()


def is_initialized() -> bool:
    return _GROUP[0] is not None


def _group(group=None) -> MPIGroup:
    pg = _GROUP[0]
    if pg is None:
        raise ValueError("Default process group has not been initialized, please make sure to "
                         "call init_process_group.")
    if group is not None and group is not pg:
        raise ValueError("Invalid process group specified: gcompile.distributed has only the "
                         "default group (pass group=None)")
    return pg


def _abort_on_uncaught(exc_type, exc, tb) -> None:
    """A rank that dies of an exception takes the job down (mpiexec then ends every
    rank) instead of leaving the others waiting in a collective."""
    prev = _PREV_EXCEPTHOOK[0] or sys.__excepthook__
    prev(exc_type, exc, tb)
    pg = _GROUP[0]
    if pg is not None and pg.size > 1:
        sys.stderr.write(f"[rank {pg.rank}] uncaught {exc_type.__name__}: aborting the MPI job\n")
        # let mpiexec forward this rank's last words before the abort ends every rank
        # (without the pause the traceback was lost now and then)
        sys.stdout.flush()
        sys.stderr.flush()
        import time
        time.sleep(0.5)
        pg.abort(1)


def init_process_group(backend: str | None = "mpi", init_method: str | None = None,
                       timeout: timedelta | None = None, world_size: int = -1, rank: int = -1,
                       store=None, group_name: str = "", pg_options=None,
                       device_id=None) -> None:
    """Join the job ``mpiexec`` started: rank and world size come from MPI."""
    if _GROUP[0] is not None:
        raise ValueError("trying to initialize the default process group twice!")
    name = (backend or "mpi").lower()
    if name not in ("mpi", "cpu:mpi"):
        raise RuntimeError(f"Distributed package doesn't have {backend} built in; "
                           "gcompile.distributed supports backend='mpi' (launch with mpiexec)")
    if init_method not in (None, "env://"):
        raise ValueError(f"init_method={init_method!r}: with the MPI backend, mpiexec provides "
                         "ranks and addresses; leave init_method unset")
    seconds = (timeout if timeout is not None else default_pg_timeout)
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if seconds <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    try:
        pg = MPIGroup(seconds)
    except ImportError as e:
        raise RuntimeError(f"init_process_group(backend='mpi') needs mpi4py: {EXTRA_HINT}") from e
    if world_size not in (-1, None) and world_size != pg.size:
        raise ValueError(f"world_size={world_size} but mpiexec started {pg.size} processes")
    if rank not in (-1, None) and rank != pg.rank:
        raise ValueError(f"rank={rank} but MPI gave this process rank {pg.rank}")
    _GROUP[0] = pg
    if pg.size > 1:
        # no process pool for cold kernel compiles: forking an MPI process is unsafe, and
        # the children would re-run an unguarded script's init_process_group
        os.environ.setdefault("GCOMPILE_COMPILE_WORKERS", "0")
    from ir.ops.collectives import set_communicator
    set_communicator(pg)
    if sys.excepthook is not _abort_on_uncaught:
        _PREV_EXCEPTHOOK[0] = sys.excepthook
        sys.excepthook = _abort_on_uncaught


def destroy_process_group(group=None) -> None:
    """Leave the process group (MPI itself is finalised when the process exits)."""
    pg = _group(group)
    from ir.ops.collectives import set_communicator
    set_communicator(None)
    _GROUP[0] = None
    if sys.excepthook is _abort_on_uncaught:
        sys.excepthook = _PREV_EXCEPTHOOK[0] or sys.__excepthook__
    pg.free()


def get_rank(group=None) -> int:
    return _group(group).rank


def get_world_size(group=None) -> int:
    return _group(group).size


def get_backend(group=None) -> str:
    _group(group)
    return "mpi"


def _group_state():
    """The process group, for modules that report statistics (benchmarks)."""
    return _group()


# ---- Work ---------------------------------------------------------------------------------
class Work:
    """The handle an ``async_op=True`` collective returns."""

    def __init__(self, test, finish, result=None) -> None:
        self._test = test
        self._finish = finish
        self._result = result
        self._done = False
        self._exc: BaseException | None = None

    def is_completed(self) -> bool:
        """True once the communication finished (does not block)."""
        if self._done:
            return True
        return bool(self._test())

    def wait(self, timeout: timedelta | None = None) -> bool:
        """Block until done (bounded by ``timeout``, else the process group's) and
        write the results."""
        if not self._done:
            pg = _GROUP[0]
            saved = pg.timeout_s if pg is not None else None
            if pg is not None and timeout is not None:
                pg.timeout_s = (timeout.total_seconds() if isinstance(timeout, timedelta)
                                else float(timeout))
            try:
                self._finish()
            except BaseException as e:
                self._exc = e
                raise
            finally:
                self._done = True
                if pg is not None:
                    pg.timeout_s = saved
        if self._exc is not None:
            raise self._exc
        return True

    def is_success(self) -> bool:
        return self._done and self._exc is None

    def exception(self):
        return self._exc

    def result(self) -> list:
        self.wait()
        return list(self._result or [])

    def synchronize(self) -> None:
        self.wait()


def _done_work(result) -> Work:
    w = Work(lambda: True, lambda: None, result)
    w._done = True
    return w


def _op_name(op) -> str:
    if isinstance(op, ReduceOp.RedOpType):
        return op.value
    if isinstance(op, str) and op.lower() in ("sum", "avg", "product", "min", "max"):
        return op.lower()
    raise ValueError(f"unknown reduce op {op!r}; use gcompile.distributed.ReduceOp")


def _check_tensor(t, name: str = "tensor") -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"Invalid function argument. Expected parameter `{name}` of type "
                        f"torch.Tensor\n             but got {type(t)} instead.")


def _graph_break(what: str) -> None:
    if state.tracer is not None:
        state.tracer.graph_break(f"gcompile.distributed.{what} (MPI on tensor buffers)")


def _write(t: Tensor, arr: np.ndarray) -> None:
    """Store a collective's result in ``t`` (in place, bumping its version)."""
    np.copyto(t._data, arr.reshape(t._data.shape), casting="unsafe")
    t._vbox[0] += 1


def _contig(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t._data)


# ---- collectives ----------------------------------------------------------------------------
def all_reduce(tensor: Tensor, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """Reduce ``tensor`` across ranks, in place, the result on every rank."""
    _check_tensor(tensor)
    pg = _group(group)
    name = _op_name(op)
    with no_grad():  # not .detach(): see sync.broadcast_coalesced
        started = apply_op("allreduce_start", (tensor,), {"op": name})

    def finish():
        with no_grad():
            tensor.copy_(apply_op("allreduce_wait", (started,), {"op": name}))

    if not async_op:
        finish()
        return None
    from ir.ops.collectives import _PENDING
    entry = _PENDING.get(id(started._data))

    def test():
        return entry is None or pg.test_allreduce(entry[1])
    return Work(test, finish, [tensor])


def broadcast(tensor: Tensor, src: int = 0, group=None, async_op: bool = False):
    """Copy ``tensor`` of rank ``src`` into ``tensor`` on every rank."""
    _check_tensor(tensor)
    pg = _group(group)
    if not 0 <= src < pg.size:
        raise ValueError(f"Invalid src rank {src} for world size {pg.size}")
    if not async_op:
        with no_grad():
            tensor.copy_(apply_op("broadcast", (tensor,), {"src": src}))
        return None
    _graph_break("broadcast(async_op=True)")
    buf = _contig(tensor).copy()
    req = pg.start_broadcast(buf, src) if pg.size > 1 else None

    def finish():
        if req is not None:
            pg.wait(req, "BROADCAST", buf.size)
        _write(tensor, buf)
    return Work(lambda: req is None or pg.test(req), finish, [tensor])


def _gathered(pg: MPIGroup, tensor: Tensor):
    send = _contig(tensor)
    recv = np.empty((pg.size,) + send.shape, send.dtype)
    if pg.size == 1:
        recv[0] = send
        return None, recv
    return pg.start_allgather(send, recv), recv


def all_gather(tensor_list: list, tensor: Tensor, group=None, async_op: bool = False):
    """``tensor_list[r]`` receives rank r's ``tensor``."""
    _check_tensor(tensor)
    pg = _group(group)
    if not isinstance(tensor_list, (list, tuple)) or len(tensor_list) != pg.size:
        raise ValueError(f"all_gather: tensor_list must hold world_size={pg.size} tensors, got "
                         f"{len(tensor_list) if isinstance(tensor_list, (list, tuple)) else 0}")
    for t in tensor_list:
        _check_tensor(t, "tensor_list")
        if tuple(t.shape) != tuple(tensor.shape) or t.dtype is not tensor.dtype:
            raise RuntimeError(f"all_gather: every output tensor must match the input: got "
                               f"{tuple(t.shape)} {t.dtype} for input {tuple(tensor.shape)} "
                               f"{tensor.dtype}")
    _graph_break("all_gather")
    req, recv = _gathered(pg, tensor)

    def finish():
        if req is not None:
            pg.wait(req, "ALLGATHER", recv.size)
        for r, t in enumerate(tensor_list):
            _write(t, recv[r])
    return _run(pg, req, finish, list(tensor_list), async_op)


def all_gather_into_tensor(output_tensor: Tensor, input_tensor: Tensor, group=None,
                           async_op: bool = False):
    """Ranks' inputs concatenated along dim 0 (or stacked) into ``output_tensor``."""
    _check_tensor(output_tensor, "output_tensor")
    _check_tensor(input_tensor, "input_tensor")
    pg = _group(group)
    ins = tuple(input_tensor.shape)
    outs = tuple(output_tensor.shape)
    cat = (ins[0] * pg.size,) + ins[1:] if ins else (pg.size,)
    if outs not in (cat, (pg.size,) + ins):
        raise ValueError(f"all_gather_into_tensor: output tensor of shape {outs} must be "
                         f"world_size ({pg.size}) times the input {ins} along dim 0, or "
                         "stacked")
    if output_tensor.dtype is not input_tensor.dtype:
        raise ValueError(f"all_gather_into_tensor: dtypes differ: output "
                         f"{output_tensor.dtype}, input {input_tensor.dtype}")
    _graph_break("all_gather_into_tensor")
    req, recv = _gathered(pg, input_tensor)

    def finish():
        if req is not None:
            pg.wait(req, "ALLGATHER", recv.size)
        _write(output_tensor, recv)
    return _run(pg, req, finish, [output_tensor], async_op)


def reduce_scatter_tensor(output: Tensor, input: Tensor, op=ReduceOp.SUM, group=None,  # noqa: A002
                          async_op: bool = False):
    """Reduce ``input`` across ranks; rank r keeps the r-th of world_size chunks along dim 0."""
    _check_tensor(output, "output")
    _check_tensor(input, "input")
    pg = _group(group)
    name = _op_name(op)
    ins, outs = tuple(input.shape), tuple(output.shape)
    ok = (bool(outs) and bool(ins) and ins[0] == outs[0] * pg.size and ins[1:] == outs[1:]) \
        or ins == (pg.size,) + outs
    if not ok:
        raise ValueError(f"reduce_scatter_tensor: input of shape {ins} must be world_size "
                         f"({pg.size}) times the output {outs} along dim 0")
    if output.dtype is not input.dtype:
        raise ValueError(f"reduce_scatter_tensor: dtypes differ: output {output.dtype}, input "
                         f"{input.dtype}")
    _graph_break("reduce_scatter_tensor")
    send = _contig(input).copy()
    recv = np.empty(outs, send.dtype)
    if pg.size == 1:
        recv[...] = send.reshape(outs)
        req = None
    else:
        req = pg.start_reduce_scatter(send, recv, name)

    def finish():
        if req is not None:
            pg.wait(req, "REDUCE_SCATTER", send.size)
            if name == "avg":
                recv[...] = recv / recv.dtype.type(pg.size)
        _write(output, recv)
    return _run(pg, req, finish, [output], async_op)


def _run(pg, req, finish, result, async_op):
    if not async_op:
        finish()
        return None
    return Work(lambda: req is None or pg.test(req), finish, result)


def barrier(group=None, async_op: bool = False, device_ids=None):
    """Wait until every rank reaches the barrier (bounded by the timeout)."""
    pg = _group(group)
    _graph_break("barrier")
    req = pg.start_barrier()

    def finish():
        pg.wait(req, "BARRIER", 0)
    return _run(pg, req, finish, [], async_op)


def _check_peer(pg: MPIGroup, peer: int, what: str) -> None:
    if not 0 <= peer < pg.size:
        raise ValueError(f"Invalid {what} rank {peer} for world size {pg.size}")
    if peer == pg.rank:
        raise ValueError(f"Invalid {what} rank: should not be the same as the rank of the "
                         f"current process ({pg.rank})")


def isend(tensor: Tensor, dst: int, group=None, tag: int = 0) -> Work:
    """Send ``tensor`` to rank ``dst`` without blocking."""
    _check_tensor(tensor)
    pg = _group(group)
    _check_peer(pg, dst, "destination")
    _graph_break("isend")
    buf = _contig(tensor).copy()
    req = pg.isend(buf, dst, tag)
    return Work(lambda: pg.test(req), lambda: pg.wait(req, "SEND", buf.size), [tensor])


def irecv(tensor: Tensor, src: int | None = None, group=None, tag: int = 0) -> Work:
    """Receive into ``tensor`` from ``src`` (any rank when None) without blocking."""
    _check_tensor(tensor)
    pg = _group(group)
    if src is not None:
        _check_peer(pg, src, "source")
    _graph_break("irecv")
    buf = np.empty(tensor._data.shape, tensor._data.dtype)
    req, status = pg.irecv(buf, src, tag)
    work = Work(lambda: pg.test(req, status), None, [tensor])

    def finish():
        pg.wait(req, "RECV", buf.size, status)
        _write(tensor, buf)
        work.source = status.Get_source()
    work._finish = finish
    return work


def send(tensor: Tensor, dst: int, group=None, tag: int = 0) -> None:
    """Send ``tensor`` to rank ``dst``; returns once the buffer may be reused."""
    isend(tensor, dst, group, tag).wait()


def recv(tensor: Tensor, src: int | None = None, group=None, tag: int = 0) -> int:
    """Receive into ``tensor``; returns the sender's rank."""
    w = irecv(tensor, src, group, tag)
    w.wait()
    return w.source
