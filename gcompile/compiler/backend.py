"""Glue from a traced graph to the runtime: optimise, lower, plan, execute."""
from __future__ import annotations

import threading

from runtime.lower import compile_graph
from runtime.plan import Executor


class LockedExecutor(Executor):
    """An executor whose calls take turns: a plan's arena buffers are shared by its
    calls, and kernels and BLAS release the GIL, so two threads calling one compiled
    function at once would otherwise overwrite each other's intermediates."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def __call__(self, inputs, out_into=None):
        with self._lock:
            return super().__call__(inputs, out_into)

    def release(self) -> None:
        """Give back the arena (an entry not used lately); the next call takes one anew."""
        with self._lock:
            self.plan.drop_arena()


def build_executable(graph, profile: bool = False, reference: bool = False) -> Executor:
    """An ``Executor`` for ``graph`` (optimised in place); ``.compiled`` keeps the fusion
    and plan for ``explain``. ``reference``: NumPy evaluation of the kernel specs
    instead of generated kernels (``compile(..., options={"kernels": "reference"})``)."""
    from ir.verify import verify

    from .logs import stage
    # structure only: each node's type came from the registry's shape rule when the
    # tracer added it, and running every rule again was 7 of a GPT step's 11 ms here
    # (the tests verify types after every pass)
    with stage("verify", lambda: f"{graph.name}: {len(graph.inputs)} inputs, "
               f"{len(graph.nodes)} nodes, {len(graph.outputs)} outputs: ok"):
        verify(graph, check_types=False)
    if reference:
        from runtime.reference import ReferenceKernel
        compiled = compile_graph(graph, make_kernel=ReferenceKernel)
    else:
        compiled = compile_graph(graph)
    ex = LockedExecutor(compiled.plan, profile=profile)
    ex.compiled = compiled
    _trim_heap()
    return ex


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the OS. Tracing and lowering churn through
    many short-lived arrays and Python objects below glibc's mmap threshold; their
    freed pages would otherwise stay in the process for good (about 50 MB after
    tracing an MLP train step at width 2048). Once per compile, so it costs nothing
    on the hot path."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _MALLOC_TRIM = libc.malloc_trim
            _MALLOC_TRIM.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


class CudaPlanExecutable:
    """A compiled plan run by CUDA kernels (``runtime.cuda_plan``) for tensors whose
    storage is a ``CudaArray``: unwraps their device arrays, moves host scalar inputs
    (an optimizer's lr read from Python) to the device, and wraps the outputs."""

    def __init__(self, executor) -> None:
        self.executor = executor
        self.plan = executor.plan
        self.compiled = executor.compiled

    def __call__(self, inputs, out_into=None):
        from .._device import CudaArray, device, mixed_devices, on
        dev = next((a.device for a in inputs if isinstance(a, CudaArray)), device("cuda"))
        other = next((a.device for a in inputs if isinstance(a, CudaArray) and a.device != dev),
                     None)
        if other is not None:
            raise mixed_devices(dev, other)
        with on(dev):
            return self._run(inputs, out_into, dev)

    def _run(self, inputs, out_into, dev):
        import numpy as np

        from .._device import CudaArray
        arrays = [a.dev if isinstance(a, CudaArray) else
                  CudaArray.from_host(np.asarray(a), dev).dev for a in inputs]
        into, host_into = None, {}
        if out_into:  # device tensors are written in place; host ones (a CPU step count)
            into = {k: a.dev for k, a in out_into.items() if isinstance(a, CudaArray)}
            host_into = {k: a for k, a in out_into.items() if not isinstance(a, CudaArray)}
        outs = self.executor(arrays, into or None)
        res = [CudaArray(o, dev) for o in outs]
        for k, a in host_into.items():  # the caller counts on these being written
            np.copyto(a, res[k].host(), casting="unsafe")
            res[k] = a
        return res

    def release(self) -> None:
        self.executor.release()


def build_cuda_executable(graph) -> CudaPlanExecutable:
    """The plan for ``graph`` on CUDA: lowered like the CPU plan, run by device kernels
    (``runtime.cuda_plan``); ops without a device kernel run through host memory."""
    from ir.verify import verify
    from runtime.cuda_plan import compile_cuda

    from .logs import stage
    with stage("verify", lambda: f"{graph.name}: {len(graph.inputs)} inputs, "
               f"{len(graph.nodes)} nodes, {len(graph.outputs)} outputs: ok"):
        verify(graph)
    return CudaPlanExecutable(compile_cuda(graph))
