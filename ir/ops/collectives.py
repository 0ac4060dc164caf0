"""Collective communication as graph ops, so a traced training step keeps its
allreduces (a compiled plan has no Python hooks to run them).

``ir`` knows nothing of MPI or tensors: ``gcompile.distributed`` installs a
communicator with ``set_communicator`` at ``init_process_group``. Without one (a
single process) every collective is over one rank: the identity.

The asynchronous pair: ``allreduce_start(x)`` has the value of ``x`` and, as a
side effect, starts a non-blocking allreduce of it; ``allreduce_wait(y)`` has the
value allreduce(y). When ``y`` is the very array a start returned, the wait only
completes that pending request (the communication overlapped whatever ran in
between); otherwise it runs a blocking allreduce, so the values never depend on
pairing. Both are ``impure``: never merged, folded or dropped.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..registry import OpDef, register

REDUCE_OPS = ("sum", "avg", "max", "min", "product")


class Communicator(Protocol):
    """What a distributed backend provides to the collective ops."""

    rank: int
    size: int

    def start_allreduce(self, send: np.ndarray, op: str) -> Any: ...

    def test_allreduce(self, handle: Any) -> bool: ...

    def finish_allreduce(self, handle: Any) -> np.ndarray: ...

    def allreduce(self, x: np.ndarray, op: str) -> np.ndarray: ...

    def broadcast(self, x: np.ndarray, src: int) -> np.ndarray: ...


_COMM: list = [None]
# id(array a start returned) -> (that array, the backend's handle)
_PENDING: dict[int, tuple[np.ndarray, Any]] = {}


def set_communicator(comm: Communicator | None) -> None:
    """Install (or, with None, remove) the process group's communicator."""
    _COMM[0] = comm
    _PENDING.clear()


def get_communicator() -> Communicator | None:
    return _COMM[0]


def _active():
    c = _COMM[0]
    return c if c is not None and c.size > 1 else None


def _check_op(op: str) -> None:
    if op not in REDUCE_OPS:
        raise ValueError(f"allreduce: unknown reduce op {op!r}; expected one of {REDUCE_OPS}")


def _start_impl(x, op="sum"):
    _check_op(op)
    send = np.array(x, copy=True, order="C")
    comm = _active()
    if comm is not None:
        handle = comm.start_allreduce(send, op)
        send.flags.writeable = False  # MPI reads it until the wait: nobody may write it
        # many MPI libraries move non-blocking collectives along only inside MPI calls:
        # let the ones already in flight progress now
        for _, h in _PENDING.values():
            comm.test_allreduce(h)
        _PENDING[id(send)] = (send, handle)
    return send


def _wait_impl(y, op="sum"):
    _check_op(op)
    entry = _PENDING.get(id(y))
    if entry is not None and entry[0] is y:
        del _PENDING[id(y)]
        comm = _COMM[0]
        return comm.finish_allreduce(entry[1])
    comm = _active()
    if comm is None:
        return np.array(y, copy=True, order="C")
    return comm.allreduce(np.ascontiguousarray(y), op)


def _same(specs, attrs):
    shape, d = specs[0]
    return tuple(shape), d


def _start_grad(b, g, xs, out, op="sum"):
    return (g,)


def _wait_grad(b, g, xs, out, op="sum"):
    # every rank's output depends on every rank's input: the adjoint of a sum
    # (mean) allreduce is the sum (mean) allreduce of the incoming gradients
    if op not in ("sum", "avg"):
        raise NotImplementedError(f"the gradient of allreduce with op={op!r} is not supported "
                                  "(only sum and avg are differentiable)")
    return (b.allreduce_wait(g, op=op),)


def _broadcast_impl(x, src=0):
    comm = _active()
    out = np.array(x, copy=True, order="C")
    if comm is None:
        return out
    if not 0 <= src < comm.size:
        raise ValueError(f"broadcast: src rank {src} is out of range for world size {comm.size}")
    return comm.broadcast(out, src)


def _broadcast_grad(b, g, xs, out, src=0):
    # the adjoint of a broadcast is a reduce to the source rank
    total = b.allreduce_wait(g, op="sum")
    comm = _active()
    if comm is not None and comm.rank != src:
        return (b.zeros_like(total),)
    return (total,)


register(OpDef("allreduce_start", "other", _start_impl, infer=_same, grad=_start_grad,
               attrs=("op",), extra={"impure": True},
               doc="value of x; starts a non-blocking allreduce of x across the process group"))
register(OpDef("allreduce_wait", "other", _wait_impl, infer=_same, grad=_wait_grad,
               attrs=("op",), extra={"impure": True},
               doc="allreduce of y across the process group (completes a started one)"))
register(OpDef("broadcast", "other", _broadcast_impl, infer=_same, grad=_broadcast_grad,
               attrs=("src",), extra={"impure": True},
               doc="x of rank src, on every rank"))
