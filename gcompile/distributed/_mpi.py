"""The MPI process group: the only place gcompile talks to MPI (through mpi4py).

Tensors travel as NumPy buffers (mpi4py's upper-case, buffer-based calls), never
pickled. Every wait polls a non-blocking request against the process group's
timeout, so a rank that died or went elsewhere turns into an error naming this
rank and the operation instead of a hang.
"""
from __future__ import annotations

import os
import sys
import time
import zlib
from typing import Any

import numpy as np

EXTRA_HINT = "pip install 'gcompile[distributed]'"


class DistError(RuntimeError):
    """torch.distributed.DistError: an error in the distributed library."""

    __module__ = "gcompile.distributed"


class DistBackendError(DistError):
    """torch.distributed.DistBackendError: the backend (MPI) failed or timed out."""

    __module__ = "gcompile.distributed"


def import_mpi():
    """mpi4py's MPI module, or an ImportError naming the extra that installs it."""
    try:
        from mpi4py import MPI
    except ImportError as e:  # pragma: no cover - exercised only without mpi4py
        raise ImportError("gcompile.distributed needs mpi4py and an MPI library; install them "
                          f"with: {EXTRA_HINT}") from e
    return MPI


def debug_level() -> str:
    """OFF, INFO or DETAIL (DETAIL checks every collective's shape and dtype across ranks)."""
    v = os.environ.get("GCOMPILE_DISTRIBUTED_DEBUG") or os.environ.get(
        "TORCH_DISTRIBUTED_DEBUG") or "OFF"
    return v.upper()


_OP_NAMES = {"sum": "SUM", "avg": "AVG", "max": "MAX", "min": "MIN", "product": "PRODUCT"}
_DTYPE_CODES = {"float32": 1, "float64": 2, "float16": 3, "int64": 4, "int32": 5, "int16": 6,
                "int8": 7, "uint8": 8, "bool": 9}
_DTYPE_NAMES = {v: k for k, v in _DTYPE_CODES.items()}
_TORCH_DTYPE = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
                "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte",
                "bool": "Bool"}
_MAX_DIMS = 8
_OP_BY_CRC = {zlib.crc32(n.encode()): n for n in (
    "ALLREDUCE", "BROADCAST", "ALLGATHER", "REDUCE_SCATTER", "BARRIER")}


class MPIGroup:
    """The default process group on ``MPI.COMM_WORLD`` (a duplicate, so user MPI
    traffic cannot be confused with ours). Also the communicator that the graph's
    collective ops (``ir.ops.collectives``) call."""

    def __init__(self, timeout_s: float) -> None:
        self.MPI = MPI = import_mpi()
        self.comm = MPI.COMM_WORLD.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout_s = float(timeout_s)
        self.seq = 0
        self.debug = debug_level() == "DETAIL"
        self.stats = {"calls": 0, "bytes": 0, "wait_s": 0.0}
        self._mpi_ops = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN,
                         "product": MPI.PROD}

    # ---- waiting -------------------------------------------------------------------
    def wait(self, req, what: str, numel: int = 0, status=None) -> None:
        """Wait for ``req`` up to the timeout, then raise naming rank and operation."""
        t0 = time.perf_counter()
        if not req.Test(status):
            deadline = time.monotonic() + self.timeout_s
            spins = 0
            while not req.Test(status):
                spins += 1
                if spins > 200:
                    time.sleep(0.0002 if spins < 2000 else 0.002)
                if time.monotonic() > deadline:
                    self.stats["wait_s"] += time.perf_counter() - t0
                    raise DistBackendError(
                        f"[Rank {self.rank}] collective operation timeout: WorkMPI(SeqNum="
                        f"{self.seq}, OpType={what}, NumelIn={numel}, Timeout(ms)="
                        f"{int(self.timeout_s * 1000)}) ran for "
                        f"{int((time.perf_counter() - t0) * 1000)} milliseconds before timing "
                        "out; another rank failed, exited or is running a different "
                        "collective")
        self.stats["wait_s"] += time.perf_counter() - t0

    def test(self, req, status=None) -> bool:
        return bool(req.Test(status))

    # ---- metadata checks -------------------------------------------------------------
    def fingerprint(self, what: str, arrays: list[np.ndarray]) -> None:
        """DETAIL mode: every rank must run the same collective on the same shapes
        and dtypes; a mismatch raises here instead of corrupting memory."""
        rows = []
        for a in arrays or [np.zeros(0, np.uint8)]:
            shape = list(a.shape)[:_MAX_DIMS]
            rows.append([zlib.crc32(what.encode()), _DTYPE_CODES.get(a.dtype.name, 0), a.ndim]
                        + shape + [-1] * (_MAX_DIMS - len(shape)))
        mine = np.asarray(rows, np.int64)
        n = np.asarray([mine.size], np.int64)
        counts = np.empty(self.size, np.int64)
        self._blocking(lambda: self.comm.Iallgather(n, counts), "FINGERPRINT", 1)
        if len(set(counts.tolist())) == 1:
            allrows = np.empty((self.size,) + mine.shape, np.int64)
            self._blocking(lambda: self.comm.Iallgather(mine, allrows), "FINGERPRINT", mine.size)
            bad = [r for r in range(self.size) if not np.array_equal(allrows[r], mine)]
            if not bad:
                return
            other = bad[0]
            theirs = allrows[other]
        else:
            other = next(r for r in range(self.size) if counts[r] != mine.size)
            theirs = None
        desc = (self._describe(None, theirs) if theirs is not None else
                "one with a different number of tensors")
        raise RuntimeError(
            "Detected mismatch between collectives on ranks. "
            f"Rank {self.rank} is running collective: {self._describe(what, mine)}, but Rank "
            f"{other} is running collective: {desc}.")

    def _describe(self, what, rows) -> str:
        shapes, dtypes = [], []
        for row in rows:
            nd = int(row[2])
            shapes.append(list(int(s) for s in row[3:3 + nd]))
            dtypes.append(_TORCH_DTYPE.get(_DTYPE_NAMES.get(int(row[1]), "?"), "?"))
        op = what if what is not None else _OP_BY_CRC.get(int(rows[0][0]), "UNKNOWN")
        return (f"CollectiveFingerPrint(SequenceNumber={self.seq}, OpType={op}, "
                f"TensorShape={shapes[0] if len(shapes) == 1 else shapes}, "
                f"TensorDtypes={dtypes[0] if len(dtypes) == 1 else dtypes})")

    def _blocking(self, start, what: str, numel: int) -> None:
        self.wait(start(), what, numel)

    def _count(self, what: str, arrays: list[np.ndarray]) -> None:
        self.seq += 1
        self.stats["calls"] += 1
        self.stats["bytes"] += sum(a.nbytes for a in arrays)
        if self.debug:
            self.fingerprint(what, arrays)

    # ---- allreduce (also the graph ops' communicator) ----------------------------------
    def start_allreduce(self, send: np.ndarray, op: str) -> Any:
        if op == "avg" and send.dtype.kind != "f":
            raise RuntimeError(f"all_reduce: ReduceOp.AVG needs a floating-point tensor, got "
                               f"{send.dtype.name}")
        self._count("ALLREDUCE", [send])
        recv = np.empty_like(send)
        req = self.comm.Iallreduce(send, recv, op=self._mpi_ops[op])
        return (req, recv, op, send.size)

    def test_allreduce(self, handle) -> bool:
        return self.test(handle[0])

    def finish_allreduce(self, handle) -> np.ndarray:
        req, recv, op, numel = handle
        self.wait(req, "ALLREDUCE", numel)
        if op == "avg":
            recv /= recv.dtype.type(self.size)
        return recv

    def allreduce(self, x: np.ndarray, op: str) -> np.ndarray:
        send = np.array(x, copy=True, order="C")
        return self.finish_allreduce(self.start_allreduce(send, op))

    # ---- other collectives on buffers --------------------------------------------------
    def start_broadcast(self, buf: np.ndarray, src: int):
        self._count("BROADCAST", [buf])
        return self.comm.Ibcast(buf, root=src)

    def broadcast(self, x: np.ndarray, src: int) -> np.ndarray:
        buf = np.array(x, copy=True, order="C")
        self.wait(self.start_broadcast(buf, src), "BROADCAST", buf.size)
        return buf

    def start_allgather(self, send: np.ndarray, recv: np.ndarray):
        self._count("ALLGATHER", [send])
        return self.comm.Iallgather(send, recv)

    def start_reduce_scatter(self, send: np.ndarray, recv: np.ndarray, op: str):
        if op == "avg" and send.dtype.kind != "f":
            raise RuntimeError("reduce_scatter_tensor: ReduceOp.AVG needs a floating-point "
                               f"tensor, got {send.dtype.name}")
        self._count("REDUCE_SCATTER", [send])
        return self.comm.Ireduce_scatter_block(send, recv, op=self._mpi_ops[op])

    def start_barrier(self):
        self.seq += 1
        return self.comm.Ibarrier()

    def isend(self, buf: np.ndarray, dst: int, tag: int):
        self.stats["bytes"] += buf.nbytes
        return self.comm.Isend(buf, dest=dst, tag=tag)

    def irecv(self, buf: np.ndarray, src: int | None, tag: int):
        MPI = self.MPI
        status = MPI.Status()
        req = self.comm.Irecv(buf, source=MPI.ANY_SOURCE if src is None else src, tag=tag)
        return req, status

    def allgather_object(self, obj, what: str) -> list:
        """Small JSON metadata (never tensor data) from every rank; first a
        timeout-aware exchange of its size so a missing rank cannot hang us."""
        import json
        payload = np.frombuffer(json.dumps(obj).encode(), np.uint8)
        n = np.asarray([payload.size], np.int64)
        sizes = np.empty(self.size, np.int64)
        self.wait(self.comm.Iallgather(n, sizes), what, 1)
        recv = np.empty(int(sizes.sum()), np.uint8)
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        req = self.comm.Iallgatherv(payload, [recv, sizes.tolist(), displs.tolist(),
                                              self.MPI.BYTE])
        self.wait(req, what, int(sizes.sum()))
        return [json.loads(recv[d:d + s].tobytes()) for d, s in zip(displs, sizes)]

    def abort(self, code: int = 1) -> None:
        sys.stderr.flush()
        sys.stdout.flush()
        self.MPI.COMM_WORLD.Abort(code)

    def free(self) -> None:
        try:
            self.comm.Free()
        except Exception:  # noqa: BLE001 - MPI already finalised at exit
            pass
