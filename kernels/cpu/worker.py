"""A compile worker: ``python -m kernels.cpu.worker``, started by ``kernels.cpu``.

Cold kernels compile in parallel in processes like this one (Numba holds the GIL while
it compiles, so threads would not help). It is started as a fresh interpreter on this
module alone, never through ``multiprocessing``: spawn and the fork server import the
user's ``__main__`` again in every worker, which runs an unguarded script's top level a
second time. The parent sends jobs over stdin and reads answers on stdout, both as
length-prefixed pickles between a process and the child it started; the worker writes
each compiled object into the signed disk cache (``kernels.cache``) with the parent's
key, and the parent loads it through the ordinary checked path, as a warm process would.

Numba's first compile in a process initialises its target and typing machinery (about
a second); the worker does that while it starts (``_warm``), before it says it is
ready, so the parent keeps compiling alone meanwhile and no job waits on a cold worker.
"""
from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import BinaryIO

_HEAD = struct.Struct("<Q")


def send(stream: BinaryIO, msg: object) -> None:
    """Write one message (a length-prefixed pickle) and flush it."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEAD.pack(len(data)) + data)
    stream.flush()


def recv(stream: BinaryIO) -> object | None:
    """Read one message; None at the end of the stream (the other side closed it)."""
    head = stream.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    n = _HEAD.unpack(head)[0]
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


def _warm() -> None:
    """Compile a cfunc shaped like a generated entry point (carray and a loop), so that
    Numba's one-off set-up is paid before the first job."""
    import numpy as np
    from numba import carray, cfunc, types

    @cfunc(types.void(types.voidptr, types.intp), nopython=True, error_model="numpy")
    def warm(p, n):
        a = carray(p, (n,), np.float32)
        for i in range(n):
            a[i] = a[i] * np.float32(2.0) + np.float32(1.0)


def main() -> int:
    """Serve compile jobs until stdin closes: ``(job id, args)`` in, ``(job id,
    ("ok", (status, cpu seconds)) | ("err", message))`` out."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    from kernels.cpu import _compile_in_worker
    _warm()
    send(out, ("ready", os.getpid()))
    while True:
        msg = recv(inp)
        if msg is None:
            return 0
        job, args = msg
        try:
            res = ("ok", _compile_in_worker(*args))
        except Exception as e:  # noqa: BLE001 - the parent compiles (and reports) it itself
            res = ("err", f"{type(e).__name__}: {e}")
        send(out, (job, res))


if __name__ == "__main__":
    sys.exit(main())
